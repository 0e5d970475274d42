"""Connections changed without a restart: watch the connections file, load it, apply it.

Kubernetes updates a mounted Secret in place by swapping a ``..data``
symlink to a new timestamped directory: the file's path stays, the file it
leads to (its inode) changes. Editors and ``mv`` replace the file the same
way; some tools rewrite it in place (same inode, new size and mtime). A
small Trio task therefore polls ``os.stat`` (which follows the symlinks)
every ``worker.connections_reload_seconds`` and compares a :class:`FileStamp`
of the connections file and of each file its version last loaded (applied or
refused) read or tried to read (``pass_file``, ``ca_file``: a password or a CA
bundle rotated in another Secret changes no line of the connections file, and
a version refused for such a file not there yet is loaded again once it is):
one ``stat`` call (9 us) per file per period, and the same code for each of those ways. Change
notification would not be simpler: an inotify watch on the file stays on
the old inode after a symlink swap, so one must watch the directory and
re-arm after each swap; a library that does so (watchfiles) brings a
dependency and a thread for a file that changes a few times a year. A change
is acted on only once the stamp has stayed the same for one more period, so
a file being written in place is not read half-way.

A new version is loaded with the start-up loader
(:func:`~ftp_pooler.config.load_connections`). A version that does not load
(or whose session factories cannot be built: a ``ca_file`` that is not PEM)
is refused with one log line (the loader's message: file, section, key,
never a password) and ``ftp_pooler_config_reloads_total{result="refused"}``;
the version in use stays. What changed (:func:`diff_connections`) is decided
on plain data; applying it is :meth:`TransferEngine.reconfigure
<ftp_pooler.transfer.engine.TransferEngine.reconfigure>`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio

from ftp_pooler.config import ConfigError, Connections, load_connections

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ConnectionChanges:
    """Which connection ids differ between two versions (sorted tuples).

    Attributes:
        added: In the new version only.
        removed: In the old version only.
        changed: In both, with any setting different (host, port, user,
            password, TLS, timeouts, ``max_sessions``, ``base_path``, type).
    """

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def diff_connections(old: Connections, new: Connections) -> ConnectionChanges:
    """What changed from ``old`` to ``new``: ids added, removed, and changed (compared by value).

    Passwords compare by value (pydantic's ``SecretStr`` equality). A
    ``ca_file`` or ``pass_file`` is compared by what was loaded: the CA
    file's path and the digest of its bytes, the password file's content.
    """
    return ConnectionChanges(
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        changed=tuple(sorted(i for i in old.keys() & new.keys() if old[i] != new[i])),
    )


@dataclass(frozen=True)
class FileStamp:
    """What ``os.stat`` says of a file, enough to tell that it is another version.

    ``None`` fields: the file could not be stat'ed (missing during a swap).
    The inode catches a symlink swap or ``mv``; size, mtime and ctime catch a
    rewrite in place.
    """

    device: int | None = None
    inode: int | None = None
    size: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None

    @classmethod
    def of(cls, path: Path) -> FileStamp:
        """Stat ``path`` (following symlinks); an empty stamp if that fails."""
        try:
            st = os.stat(path)
        except OSError:
            return cls()
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @property
    def mtime(self) -> float | None:
        """The file's mtime in seconds since the epoch, if it exists."""
        return None if self.mtime_ns is None else self.mtime_ns / 1e9


@dataclass(frozen=True)
class WatchStep:
    """The watcher's state between two looks at the files (plain data).

    Attributes:
        loaded: The stamps (the connections file's first, then each file it
            was read from) of the version last loaded (applied or refused);
            None before the first load.
        seen: The stamps seen at the last look.
    """

    loaded: tuple[FileStamp, ...] | None
    seen: tuple[FileStamp, ...]

    def look(self, now: tuple[FileStamp, ...]) -> tuple[WatchStep, bool]:
        """After stat'ing the file again: the next state, and whether to load it now.

        Load when the file differs from the version last loaded and has not
        changed since the previous look (it is not being written).
        """
        load = now != self.loaded and now == self.seen
        return WatchStep(now if load else self.loaded, now), load


def warn_missing_base_paths(connections: Connections) -> None:
    """Log ``config.base_path_missing`` (a warning) for each local connection whose
    ``base_path`` does not exist: its tasks fail TRANSIENT until the volume is there."""
    for connection_id, base_path in connections.missing_base_paths().items():
        log.warning("config.base_path_missing", connection=connection_id, base_path=str(base_path))


class ConnectionsWatcher:
    """Polls the connections file; loads, checks and applies each new version.

    Args:
        path: The connections file (the same path as at start-up).
        current: The connections in use now.
        apply: Switches to a new version (``TransferEngine.reconfigure``); if
            it raises (an ``Exception``), it must have changed nothing, and the
            version is refused.
        interval: Seconds between two looks at the file.
        environ: Where ``pass_env`` variables are read, as at start-up.
        loaded: Told the file's mtime (seconds since the epoch, None if it was
            missing) of the version in use: at once, and after each reload.
        reloaded: Told ``"applied"`` or ``"refused"`` after each new version
            read (a file touched but unchanged counts as applied).

    The file may have changed between its reading at start-up and this
    watcher's creation, so the first look reads it again: it counts as a
    reload only if it differs.
    """

    def __init__(
        self,
        path: Path,
        current: Connections,
        apply: Callable[[Connections], Awaitable[None]],
        *,
        interval: float,
        environ: Mapping[str, str] = os.environ,
        loaded: Callable[[float | None], None] = lambda mtime: None,
        reloaded: Callable[[str], None] = lambda result: None,
    ) -> None:
        self._path = path
        self._current = current
        self._apply = apply
        self._interval = interval
        self._environ = environ
        self._loaded = loaded
        self._reloaded = reloaded
        self._files = (path, *current.files)
        stamps = self._stamps()
        self._step = WatchStep(None, stamps)
        self._confirmed = False
        loaded(stamps[0].mtime)

    async def run(self) -> None:
        """Look at the file every ``interval`` seconds, forever (cancel to stop)."""
        while True:
            await trio.sleep(self._interval)
            await self.check()

    async def check(self) -> None:
        """One look: load and apply the file if it is a new version that holds still."""
        stamps = self._stamps()
        self._step, load = self._step.look(stamps)
        if not load:
            return
        try:
            new = await trio.to_thread.run_sync(load_connections, self._path, self._environ)
        except ConfigError as exc:
            self._refuse(exc.message, exc.files)
            return
        changes = diff_connections(self._current, new)
        if changes:
            try:
                await self._apply(new)
            except Exception as exc:  # e.g. ssl.SSLError: a ca_file that is not PEM
                self._refuse(f"{self._path}: cannot use it: {type(exc).__name__}: {exc}", new.files)
                return
            self._current = new
            log.info(
                "config.reloaded",
                path=str(self._path),
                added=list(changes.added),
                removed=list(changes.removed),
                changed=list(changes.changed),
            )
            warn_missing_base_paths(new)
        if changes or self._confirmed:
            self._reloaded("applied")
        self._confirmed = True
        self._loaded(stamps[0].mtime)
        self._watch(new.files)

    def _stamps(self) -> tuple[FileStamp, ...]:
        return tuple(FileStamp.of(path) for path in self._files)

    def _watch(self, files: tuple[Path, ...]) -> None:
        """From now on watch the connections file and ``files``: those the version last
        loaded (applied or refused) read or tried to read. A version refused for a
        ``pass_file`` not there yet (a Secret mounted after the ConfigMap naming it) is
        thus loaded again once the file appears, as when any file it read changes."""
        if files != self._files[1:]:
            self._files = (self._path, *files)
            now = self._stamps()
            self._step = WatchStep(now, now)

    def _refuse(self, error: str, files: tuple[Path, ...]) -> None:
        log.error("config.reload_refused", path=str(self._path), error=error)
        self._reloaded("refused")
        self._confirmed = True
        self._watch(files)
