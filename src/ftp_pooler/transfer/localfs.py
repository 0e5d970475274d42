"""The local side of a transfer: paths confined to a base directory, durable atomic writes.

Every local file-system call goes through a volume's :class:`LocalIO`, which
runs it on the event loop while that kind of call is fast (on a local disk or
tmpfs most cost microseconds, less than a hop to a worker thread) and in a
bounded thread pool once it proves slow (a network volume: every open, create,
rename and close is a round trip). A download is durable before it counts as
done: its bytes are fsynced before the rename, the directory after it, and
concurrent downloads land in batches (:class:`GroupCommit`): one hop to a
thread, their fsyncs in parallel, one fsync per directory for all of them.
See ``docs/architecture.md`` ("Local I/O and durability").
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat as stat_module
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import trio

from ftp_pooler.errors import ErrorCode, PoolerError

READ_CHUNK = 256 * 1024

SLOW_CALL_SECONDS = 0.0005
"""A call that blocks the event loop longer than this is slow.

A hop to a worker thread and back costs the loop about 55-70 us of CPU here
(``docs/architecture.md``); a call blocking several times that is cheaper off
the loop."""
SLOW_CALLS_TO_MOVE = 4
"""Slow calls in a row that send a kind of call to threads.

In a row, not on average: a busy machine preempts a fast call now and then
(at a load average of 6 on this project's 2-core machine, 0.2-0.6 % of calls
on tmpfs took over 0.5 ms, the longest 6 ms: enough to push an average over
the line every few hundred calls), and that must not move tmpfs writes off
the loop; on a slow volume every call is slow."""
PROBE_SECONDS = 1.0
"""How long a kind of call stays in threads before one call tries the loop again."""
PROBE_MAX_SECONDS = 60.0
"""The longest a kind stays in threads between probes: each slow probe doubles the
period from :data:`PROBE_SECONDS` up to this. A probe blocks the loop for one slow
call (a landing on the slow test volume: its fsync, rename and directory fsync);
once a second that was 2-4 % of the loop on a volume that stays slow."""
LOCAL_IO_THREADS = 64
"""Worker threads per volume for slow calls (one per concurrent transfer is plenty)."""

T = TypeVar("T")


_ERRNO_CODES: dict[int, ErrorCode] = {
    errno.ENOENT: ErrorCode.FILE_NOT_FOUND,
    errno.EEXIST: ErrorCode.FILE_EXISTS,
    errno.ENOTEMPTY: ErrorCode.FILE_EXISTS,
    errno.EACCES: ErrorCode.PERMISSION_DENIED,
    errno.EPERM: ErrorCode.PERMISSION_DENIED,
    errno.EISDIR: ErrorCode.PATH_NOT_ALLOWED,
    errno.ENOTDIR: ErrorCode.PATH_NOT_ALLOWED,
    errno.ENAMETOOLONG: ErrorCode.PATH_NOT_ALLOWED,
    errno.ELOOP: ErrorCode.PATH_NOT_ALLOWED,
    errno.EILSEQ: ErrorCode.PATH_NOT_ALLOWED,
    errno.EMFILE: ErrorCode.TRANSIENT,
    errno.ENFILE: ErrorCode.TRANSIENT,
    errno.ENOMEM: ErrorCode.TRANSIENT,
    errno.ESTALE: ErrorCode.TRANSIENT,
}
"""errno -> code for local file-system errors (errno(3)); any other errno is IO_ERROR.

The path names nothing: FILE_NOT_FOUND. Something is in the way: FILE_EXISTS.
The kernel refuses this process: PERMISSION_DENIED (EPERM also on a volume
without hard links, for ``if_exists`` skip/fail). The path cannot name a
file here (a directory where the file should be, a file where a directory
should be, a name over ``NAME_MAX``/``PATH_MAX``, a symlink loop, a name the
volume cannot store): PATH_NOT_ALLOWED. The worker ran short of descriptors
or memory, or an NFS handle went stale: TRANSIENT, retried. The volume
failed, is full (ENOSPC, EDQUOT) or read-only (EROFS): IO_ERROR.
"""


def error_for_os_error(exc: OSError, what: str) -> PoolerError:
    """A local file-system error as a :class:`PoolerError` with the code of its errno.

    Args:
        exc: What ``os`` raised.
        what: The operation and the path, e.g. ``"writing '/data/in/.a.bin.1f2e.part'"``
            (paths quoted with :func:`quoted`, so the message stays one line).

    Returns:
        ``"writing '/data/in/.a.bin.1f2e.part': No space left on device"``.
    """
    code = _ERRNO_CODES.get(exc.errno, ErrorCode.IO_ERROR) if exc.errno else ErrorCode.IO_ERROR
    return PoolerError(code, f"{what}: {exc.strerror or type(exc).__name__}")


def quoted(path: str | os.PathLike[str]) -> str:
    """A path for an error message: quoted, its control characters escaped (``repr``)."""
    return repr(os.fspath(path))


class OffloadPolicy:
    """Which kinds of call run on the event loop and which in threads, from their durations.

    Pure bookkeeping (no clock, no I/O): the caller passes the time. A kind
    starts on the loop. Once ``moves_after`` of its calls in a row took longer
    than ``slow`` seconds there, it goes to threads for ``probe_after`` seconds;
    the next call after that runs on the loop again as a probe: fast, and the
    kind stays on the loop; slow, and it goes back to threads for twice the
    last period, up to ``probe_max`` seconds. So a volume that stays slow
    blocks the loop for one call per kind per ``probe_max`` in the end (one
    a second at first), and a fast one never leaves it.
    """

    def __init__(
        self,
        slow: float = SLOW_CALL_SECONDS,
        probe_after: float = PROBE_SECONDS,
        moves_after: int = SLOW_CALLS_TO_MOVE,
        probe_max: float = PROBE_MAX_SECONDS,
    ) -> None:
        self.slow = slow
        self.probe_after = probe_after
        self.moves_after = moves_after
        self.probe_max = probe_max
        self._slow_in_a_row: dict[str, int] = {}
        self._threads_until: dict[str, float] = {}
        self._period: dict[str, float] = {}

    def inline(self, kind: str, now: float) -> bool:
        """Whether the next call of ``kind`` runs on the loop (``now``: seconds, monotonic)."""
        until = self._threads_until.get(kind)
        return until is None or now >= until

    def observe(self, kind: str, seconds: float, now: float) -> None:
        """Record the duration of a call of ``kind`` that ran on the loop."""
        if seconds <= self.slow:
            self._slow_in_a_row[kind] = 0
            self._threads_until.pop(kind, None)
            self._period.pop(kind, None)
            return
        count = self._slow_in_a_row.get(kind, 0) + 1
        self._slow_in_a_row[kind] = count
        if count >= self.moves_after:
            last = self._period.get(kind)
            period = self.probe_after if last is None else min(2 * last, self.probe_max)
            self._period[kind] = period
            self._threads_until[kind] = now + period

    def threaded(self) -> list[str]:
        """The kinds now sent to threads (for tests and logs)."""
        return sorted(self._threads_until)


class LocalIO:
    """Runs one volume's file-system calls on the loop or in its own threads.

    Which, per kind of call, :class:`OffloadPolicy` decides from their durations.

    Args:
        threads: Most calls in worker threads at once (a ``trio.CapacityLimiter``).
        policy: Decides per kind of call; the default measures.
    """

    def __init__(
        self, threads: int = LOCAL_IO_THREADS, policy: OffloadPolicy | None = None
    ) -> None:
        self.policy = policy or OffloadPolicy()
        self._limiter = trio.CapacityLimiter(threads)

    async def run(self, kind: str, call: Callable[..., T], *args: object) -> T:
        """``call(*args)``: on the loop (timed) or in a worker thread; its exceptions pass through.

        A call in a thread is not abandoned when cancelled: it finishes first.
        """
        started = time.perf_counter()
        if not self.policy.inline(kind, started):
            return await trio.to_thread.run_sync(call, *args, limiter=self._limiter)
        try:
            return call(*args)
        finally:
            ended = time.perf_counter()
            self.policy.observe(kind, ended - started, ended)


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Batch:
    """One directory fsync of a group commit, and what it found (set when it ran)."""

    plan: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, OSError] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)


@dataclass
class _Directory:
    """A directory's group commit: the fsync running, and the one its next files wait for."""

    running: _Batch | None = None
    next: _Batch | None = None


class GroupCommit:
    """Lands files durably: each file synced and renamed at once, its directory's fsync shared.

    A file's own steps (fsync, close, rename) run as soon as it is committed,
    in one call through the volume's :class:`LocalIO` (a worker thread on a
    slow volume, so concurrent files overlap theirs). Only the directory fsync
    that makes the new name durable is shared, per directory: a file waits
    for the next fsync of its directory, which begins once the one running
    (if any) has ended, so it covers every rename made in the directory
    before it -- the way databases share one log flush among the commits
    queued behind the last. Directories do not wait for each other. The
    first waiter of a batch runs it: one call through :class:`LocalIO` that
    fsyncs the directory (and, until they are known durable, its parents).
    A file whose directory has no fsync running or waited for adds that
    fsync to its own call: one hop to a thread per file, not two.

    Committing is shielded from cancellation: a batch always runs to the end,
    so no caller is released on a sync that did not happen, and no file is
    left half landed (the cancellation is delivered when the caller next
    checkpoints).
    """

    def __init__(self, root: LocalRoot) -> None:
        self._root = root
        self._directories: dict[str, _Directory] = {}
        self._pool: ThreadPoolExecutor | None = None

    async def land(self, file: AtomicFile, *, replace: bool, mtime: float | None) -> None:
        """fsync ``file``, move it into place, fsync its directory (and new parents).

        Raises:
            PoolerError: FILE_EXISTS, or IO_ERROR/PERMISSION_DENIED from the file
                system (the temporary file is gone then; after a failed directory
                fsync the file is in place but its result must not say so).
        """
        directory = str(file.final.parent)
        with trio.CancelScope(shield=True):
            if directory not in self._directories:
                await self._land_first(file, replace, mtime, directory)
                return
            try:
                await self._root.io.run("land", file.move_into_place, replace, mtime)
            except OSError as exc:
                raise await file.move_failed(exc) from exc
            await self._sync(directory)

    async def _land_first(
        self, file: AtomicFile, replace: bool, mtime: float | None, directory: str
    ) -> None:
        """No fsync of ``directory`` runs or is waited for: land ``file`` and fsync the
        directory in one call (one hop to a thread, not two); files renamed meanwhile
        wait for it to end and form the directory's next batch."""
        queue = self._directories[directory] = _Directory()
        batch = queue.running = _Batch()
        moved: OSError | None = None
        try:
            batch.plan = self._root.directories_to_sync({directory})
            moved, batch.failed = await self._root.io.run(
                "land", self._move_and_sync, file, replace, mtime, batch.plan
            )
            if moved is None and not batch.failed:
                self._root.linked(batch.plan)
        finally:
            self._end(directory, queue, batch)
        if moved is not None:
            raise await file.move_failed(moved) from moved
        _raise_failed(batch, directory)

    async def _sync(self, directory: str) -> None:
        """Return once a directory fsync that began after this call covered ``directory``."""
        queue = self._directories.setdefault(directory, _Directory())
        if queue.next is None:
            queue.next = _Batch()
        batch = queue.next
        while not batch.done.is_set():
            if queue.running is not None:
                await queue.running.done.wait()
                continue
            queue.next, queue.running = None, batch
            try:
                batch.plan = self._root.directories_to_sync({directory})
                batch.failed = await self._root.io.run("sync", self._run, batch.plan)
                if not batch.failed:
                    self._root.linked(batch.plan)
            finally:
                self._end(directory, queue, batch)
        _raise_failed(batch, directory)

    def _end(self, directory: str, queue: _Directory, batch: _Batch) -> None:
        """``batch`` of ``directory`` ran: release its waiters, forget an idle directory."""
        queue.running = None
        if queue.next is None:
            del self._directories[directory]
        batch.done.set()

    def _move_and_sync(
        self, file: AtomicFile, replace: bool, mtime: float | None, plan: dict[str, list[str]]
    ) -> tuple[OSError | None, dict[str, OSError]]:
        """:meth:`AtomicFile.move_into_place`, then :meth:`_run` (any thread)."""
        try:
            file.move_into_place(replace, mtime)
        except OSError as exc:
            return exc, {}
        return None, self._run(plan)

    def _run(self, plan: dict[str, list[str]]) -> dict[str, OSError]:
        """fsync every directory of ``plan`` once, in parallel; those that failed, by path."""
        failed: dict[str, OSError] = {}

        def sync(directory: str) -> None:
            try:
                _fsync_directory(directory)
            except OSError as exc:
                failed[directory] = exc

        directories = sorted({d for chain in plan.values() for d in chain})
        if len(directories) == 1:
            sync(directories[0])
            return failed
        if self._pool is None:
            self._pool = ThreadPoolExecutor(LOCAL_IO_THREADS, thread_name_prefix="localfs")
        for _ in self._pool.map(sync, directories):
            pass
        return failed


def _raise_failed(batch: _Batch, directory: str) -> None:
    """Raise the error of ``batch``'s fsync of ``directory`` or of its new parents, if any."""
    for each in batch.plan.get(directory, [directory]):
        if each in batch.failed:
            raise error_for_os_error(batch.failed[each], f"syncing directory {quoted(each)}")
    if directory not in batch.plan:  # the batch's leader failed before it synced anything
        raise PoolerError(ErrorCode.IO_ERROR, f"syncing directory {quoted(directory)} failed")


class LocalRoot:
    """A local connection's ``base_path``; every task path must stay inside it.

    Args:
        base_path: The directory (a volume, or a directory on one).
        durable: Whether a committed file is fsynced, with its directory, before
            :meth:`AtomicFile.commit` returns (``transfer.durability: fsync``).
        io: Runs this volume's calls; by default its own, measuring :class:`LocalIO`.
    """

    def __init__(self, base_path: Path, *, durable: bool = True, io: LocalIO | None = None) -> None:
        self.base = Path(os.path.realpath(base_path))
        self.durable = durable
        self.io = io or LocalIO()
        self._base = str(self.base)
        self._base_slash = self._base.rstrip("/") + "/"
        self._made_dirs: set[str] = set()
        self._linked_dirs: set[str] = set()
        self.group_commit = GroupCommit(self)

    def __repr__(self) -> str:
        return f"LocalRoot({self._base!r})"

    def resolve(self, path: str) -> Path:
        """The real location of a task path.

        An absolute path must lie inside ``base_path``; a relative one is taken
        from it. ``..`` components, NUL bytes, a trailing ``/`` (a directory:
        the file's name is not guessed) and symlinks leading out of
        ``base_path`` are refused. (String operations, not ``pathlib``: this
        runs for every file.)

        Raises:
            PoolerError: PATH_NOT_ALLOWED.
        """
        if not path or "\x00" in path:
            raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"bad local path {path!r}")
        if ".." in path.split("/"):
            raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"'..' in local path {path!r}")
        if path.endswith("/"):
            raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"{path!r} names a directory, not a file")
        joined = path if path.startswith("/") else f"{self._base_slash}{path}"
        candidate = os.path.normpath(joined)
        if candidate == self._base:
            raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"{path!r} names the base directory")
        if not self._inside(candidate):
            raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"{path!r} is outside {self._base}")
        if not self._inside(os.path.realpath(os.path.dirname(candidate))):
            raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"{path!r} leads out of {self._base}")
        return Path(candidate)

    def resolve_existing(self, path: str) -> Path:
        """Like :meth:`resolve`, for a file to read: a symlink must not lead outside either."""
        candidate = self.resolve(path)
        if not self._inside(os.path.realpath(candidate)):
            raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"{path!r} leads out of {self._base}")
        return candidate

    def _inside(self, path: str) -> bool:
        return path == self._base or path.startswith(self._base_slash)

    async def exists(self, path: Path) -> bool:
        """Whether anything (a dangling symlink too) has this name."""
        return await self.io.run("lookup", os.path.lexists, path)

    async def stat(self, path: Path) -> os.stat_result:
        """``os.stat`` of a file to read, its errors mapped to error codes.

        Raises:
            PoolerError: FILE_NOT_FOUND, PERMISSION_DENIED...; PATH_NOT_ALLOWED
                when ``path`` is a directory or anything but a regular file.
        """
        return await self.io.run("lookup", stat, path)

    async def read_chunks(self, path: Path, size: int) -> AsyncIterator[memoryview]:
        """The file's bytes in chunks of up to 256 KiB; each is valid until the next is asked for.

        Every call (open, fstat, each read, close) runs through :attr:`io`, so a
        slow volume's round trips (an NFS open, a read that misses the cache)
        never stall the event loop. One buffer, sized to the file (``size``, from
        a ``stat``) up to 256 KiB, is read into again and again, in whichever
        thread: ``os.read(fd, 256 KiB)`` would allocate (mmap) and free a 256 KiB
        buffer on every call, even for a 4 KiB file.

        The file is opened non-blocking and checked to be a regular file: opening
        a FIFO put where the file was would otherwise block until a writer came.
        The close is shielded from cancellation: the descriptor never leaks.

        Raises:
            PoolerError: As :meth:`stat`; IO_ERROR and others from reading.
        """
        try:
            fd = await self.io.run("open", _open_for_reading, path)
        except OSError as exc:
            raise error_for_os_error(exc, f"opening {quoted(path)}") from exc
        try:
            try:
                status = await self.io.run("lookup", os.fstat, fd)
            except OSError as exc:
                raise error_for_os_error(exc, f"reading {quoted(path)}") from exc
            _check_regular(status, path)
            view = memoryview(bytearray(min(max(size, 1), READ_CHUNK)))
            while True:
                try:
                    count = await self.io.run("read", os.readv, fd, [view])
                except OSError as exc:
                    raise error_for_os_error(exc, f"reading {quoted(path)}") from exc
                if not count:
                    return
                yield view[:count]
        finally:
            with trio.CancelScope(shield=True):
                await self.io.run("close", os.close, fd)

    async def make_parent(self, path: Path) -> None:
        """``mkdir -p`` of the file's directory below ``base_path`` (remembered, so it is
        done once); ``base_path`` itself is never created.

        Raises:
            PoolerError: TRANSIENT when ``base_path`` does not exist: most likely a
                volume not mounted (yet), whose mount point's parents would otherwise
                be made on the host's disk and the files land there; retried, as the
                volume may be mounted later. Else the code of the file system's error.
        """
        parent = str(path.parent)
        if parent in self._made_dirs:
            return
        try:
            made = await self.io.run("mkdir", _make_directories_below, self._base, parent)
        except OSError as exc:
            raise error_for_os_error(exc, f"creating {quoted(parent)}") from exc
        if not made:
            raise self._not_mounted()
        self._made_dirs.add(parent)

    def forget(self, directory: str) -> None:
        """``directory`` was removed (ENOENT in it): it is made, and synced, again when next
        used. Its parents up to ``base_path`` lose their durable names too (they may have
        been removed with it; syncing them again costs a few fsyncs, once)."""
        self._made_dirs.discard(directory)
        walk = directory
        while walk != self._base and self._inside(walk):
            self._linked_dirs.discard(walk)
            walk = os.path.dirname(walk)

    async def open_atomic(self, final: Path, suffix: str = ".part") -> AtomicFile:
        """A new :class:`AtomicFile` for ``final``, whose directory :meth:`make_parent` made.

        A directory made earlier and removed since (a clean-up job, a volume
        remounted: ENOENT) is made again once, then the file created again.

        Raises:
            PoolerError: from the file system (PERMISSION_DENIED, IO_ERROR...);
                TRANSIENT when ``base_path`` itself is gone (see :meth:`make_parent`).
        """
        temp = final.with_name(temp_name(final.name, suffix))
        try:
            fd = await self.io.run("create", _create_exclusive, temp)
        except FileNotFoundError:
            self.forget(str(final.parent))
            await self.make_parent(final)
            try:
                fd = await self.io.run("create", _create_exclusive, temp)
            except OSError as exc:
                raise error_for_os_error(exc, f"creating {quoted(temp)}") from exc
        except OSError as exc:
            raise error_for_os_error(exc, f"creating {quoted(temp)}") from exc
        return AtomicFile(self, final, temp, fd)

    async def moving_error(self, exc: OSError, file: AtomicFile) -> PoolerError:
        """The error for ``file``'s failed move into place. ENOENT: its directory was
        removed during the transfer (forgotten, so the next task makes it again), and when
        ``base_path`` itself is gone it is TRANSIENT, as in :meth:`make_parent`."""
        if exc.errno == errno.ENOENT:
            self.forget(str(file.final.parent))
            if not await self.io.run("lookup", os.path.isdir, self._base):
                return self._not_mounted()
        return error_for_os_error(exc, f"moving {quoted(file.temp)} to {quoted(file.final)}")

    def _not_mounted(self) -> PoolerError:
        message = f"the local base path {quoted(self._base)} does not exist (not mounted?)"
        return PoolerError(ErrorCode.TRANSIENT, message)

    def directories_to_sync(self, directories: set[str]) -> dict[str, list[str]]:
        """For each directory files land in, the directories to fsync so their names last.

        The directory itself, and the parent of each directory on its way up to
        ``base_path`` whose own name is not yet known durable: a directory's name
        is durable once its parent was fsynced after it was made, and a directory
        this process puts files in may have been made by one that died before
        syncing it. So each directory's chain is synced once per process
        (:meth:`linked` records it), then only the directory itself.
        """
        plan = {}
        for directory in directories:
            syncs = [directory]
            walk = directory
            while walk not in self._linked_dirs and walk != self._base and self._inside(walk):
                walk = os.path.dirname(walk)
                syncs.append(walk)
            plan[directory] = syncs
        return plan

    def linked(self, plan: dict[str, list[str]]) -> None:
        """Record the directories of a synced plan as durably named."""
        for directory, syncs in plan.items():
            walk = directory
            for _ in syncs[1:]:
                self._linked_dirs.add(walk)
                walk = os.path.dirname(walk)


def stat(path: Path) -> os.stat_result:
    """``os.stat`` of a file to read, its errors mapped to error codes (a blocking call:
    :meth:`LocalRoot.stat` runs it through the volume's I/O; ``copy --dry-run`` calls it
    directly).

    Raises:
        PoolerError: FILE_NOT_FOUND, PERMISSION_DENIED...; PATH_NOT_ALLOWED
            when ``path`` is a directory or anything but a regular file.
    """
    try:
        status = os.stat(path)
    except OSError as exc:
        raise error_for_os_error(exc, f"reading {quoted(path)}") from exc
    _check_regular(status, path)
    return status


def _open_for_reading(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)


def _make_directories_below(base: str, path: str) -> bool:
    """``mkdir -p path`` if the directory ``base`` (above ``path``) exists; whether it did."""
    if not os.path.isdir(base):
        return False
    os.makedirs(path, exist_ok=True)
    return True


def _create_exclusive(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)


def _write_all(fd: int, chunk: bytes | bytearray | memoryview) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view) :]


def temp_name(name: str, suffix: str, *, hidden: bool = True) -> str:
    """A unique name beside ``name`` for bytes still in transit (both sides use it):
    ``.name.<hex><suffix>``, or without the leading dot when not ``hidden``."""
    return f"{'.' if hidden else ''}{name}.{secrets.token_hex(4)}{suffix}"


class AtomicFile:
    """A file written under a hidden temporary name and moved into place only when complete.

    Made by :meth:`LocalRoot.open_atomic`. The temporary file sits in the
    destination's directory (so the final ``rename`` is atomic) and is removed
    whenever the write is not committed.
    """

    def __init__(self, root: LocalRoot, final: Path, temp: Path, fd: int) -> None:
        self.final = final
        self.temp = temp
        self.written = 0
        self._root = root
        self._fd = fd
        self._open = True

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append ``chunk`` (it must stay unchanged until this returns)."""
        try:
            await self._root.io.run("write", _write_all, self._fd, chunk)
        except OSError as exc:
            raise error_for_os_error(exc, f"writing {quoted(self.temp)}") from exc
        self.written += len(chunk)

    def _close(self) -> None:
        if self._open:
            self._open = False
            os.close(self._fd)

    async def commit(self, *, replace: bool, mtime: float | None = None) -> None:
        """Move into place; with ``replace=False`` an existing file is an error.

        With a durable root, returns only once the bytes, the name and the
        names of its directories would survive a power cut: ``fsync`` of the
        file before the rename (so the final name never holds a short file),
        then of the directory after it, group-committed (:class:`GroupCommit`).

        Raises:
            PoolerError: FILE_EXISTS, or IO_ERROR/PERMISSION_DENIED from the file system.
        """
        if self._root.durable:
            await self._root.group_commit.land(self, replace=replace, mtime=mtime)
            return
        try:
            await self._root.io.run("commit", self.move_into_place, replace, mtime)
        except OSError as exc:
            raise await self.move_failed(exc) from exc

    async def move_failed(self, exc: OSError) -> PoolerError:
        """The temporary file removed after a failed :meth:`move_into_place`; the error
        to raise (:meth:`LocalRoot.moving_error`)."""
        self.discard()
        return await self._root.moving_error(exc, self)

    def move_into_place(self, replace: bool, mtime: float | None) -> None:
        """The blocking steps of :meth:`commit` but the directory's fsync (any thread)."""
        if mtime is not None:
            os.utime(self._fd, (mtime, mtime))
        if self._root.durable:
            os.fsync(self._fd)
        self._close()
        if replace:
            os.replace(self.temp, self.final)
        else:
            os.link(self.temp, self.final)
            os.unlink(self.temp)

    def discard(self) -> None:
        """Close and delete the temporary file (idempotent, never raises)."""
        with contextlib.suppress(OSError):
            self._close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


def _check_regular(status: os.stat_result, path: Path) -> None:
    if stat_module.S_ISREG(status.st_mode):
        return
    if stat_module.S_ISDIR(status.st_mode):
        raise error_for_os_error(
            IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)), f"reading {quoted(path)}"
        )
    raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"reading {quoted(path)}: not a regular file")
