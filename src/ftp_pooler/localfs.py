"""The local side of a transfer: paths confined to a base directory, atomic writes.

File I/O here is plain blocking ``os`` calls run on the event loop: on a local
disk or tmpfs each costs microseconds, far less than a hop to a worker thread
(see ``docs/architecture.md``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat as stat_module
from collections.abc import AsyncIterator
from pathlib import Path

from ftp_pooler.errors import ErrorCode, PoolerError

READ_CHUNK = 256 * 1024


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


class LocalRoot:
    """A local connection's ``base_path``; every task path must stay inside it."""

    def __init__(self, base_path: Path) -> None:
        self.base = Path(os.path.realpath(base_path))
        self._base = str(self.base)
        self._base_slash = self._base.rstrip("/") + "/"
        self._made_dirs: set[str] = set()

    def __repr__(self) -> str:
        return f"LocalRoot({self._base!r})"

    def resolve(self, path: str) -> Path:
        """The real location of a task path.

        An absolute path must lie inside ``base_path``; a relative one is taken
        from it. ``..`` components, NUL bytes and symlinks leading out of
        ``base_path`` are refused. (String operations, not ``pathlib``: this
        runs for every file.)

        Raises:
            PoolerError: PATH_NOT_ALLOWED.
        """
        if not path or "\x00" in path:
            raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"bad local path {path!r}")
        if ".." in path.split("/"):
            raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"'..' in local path {path!r}")
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

    def make_parent(self, path: Path) -> None:
        """``mkdir -p`` of the file's directory (remembered, so it is done once)."""
        parent = str(path.parent)
        if parent in self._made_dirs:
            return
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise error_for_os_error(exc, f"creating {quoted(parent)}") from exc
        self._made_dirs.add(parent)


def temp_name(name: str, suffix: str) -> str:
    """A hidden, unique name beside ``name`` for bytes still in transit (both sides use it)."""
    return f".{name}.{secrets.token_hex(4)}{suffix}"


class AtomicFile:
    """A file written under a hidden temporary name and moved into place only when complete.

    The temporary file sits in the destination's directory (so the final
    ``rename`` is atomic) and is removed whenever the write is not committed.
    """

    def __init__(self, final: Path, suffix: str = ".part") -> None:
        self.final = final
        self.temp = final.with_name(temp_name(final.name, suffix))
        self.written = 0
        try:
            self._fd = os.open(
                self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
            )
        except OSError as exc:
            raise error_for_os_error(exc, f"creating {quoted(self.temp)}") from exc
        self._open = True

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise error_for_os_error(exc, f"writing {quoted(self.temp)}") from exc
        self.written += len(chunk)

    def _close(self) -> None:
        if self._open:
            self._open = False
            os.close(self._fd)

    def commit(self, *, replace: bool, mtime: float | None = None) -> None:
        """Close and move into place; with ``replace=False`` an existing file is an error.

        Raises:
            PoolerError: FILE_EXISTS, or IO_ERROR/PERMISSION_DENIED from the file system.
        """
        try:
            self._close()
            if mtime is not None:
                os.utime(self.temp, (mtime, mtime))
            if replace:
                os.replace(self.temp, self.final)
            else:
                os.link(self.temp, self.final)
                os.unlink(self.temp)
        except OSError as exc:
            self.discard()
            raise error_for_os_error(
                exc, f"moving {quoted(self.temp)} to {quoted(self.final)}"
            ) from exc

    def discard(self) -> None:
        """Close and delete the temporary file (idempotent, never raises)."""
        with contextlib.suppress(OSError):
            self._close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


def stat(path: Path) -> os.stat_result:
    """``os.stat`` of a file to read, its errors mapped to error codes.

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


def _check_regular(status: os.stat_result, path: Path) -> None:
    if stat_module.S_ISREG(status.st_mode):
        return
    if stat_module.S_ISDIR(status.st_mode):
        raise error_for_os_error(
            IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)), f"reading {quoted(path)}"
        )
    raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"reading {quoted(path)}: not a regular file")


async def read_chunks(path: Path, size: int) -> AsyncIterator[memoryview]:
    """The file's bytes in chunks of up to 256 KiB; each is valid until the next is asked for.

    One buffer, sized to the file (``size``, from a ``stat``) up to 256 KiB, is
    read into again and again: ``os.read(fd, 256 KiB)`` would allocate (mmap)
    and free a 256 KiB buffer on every call, even for a 4 KiB file.

    The file is opened non-blocking and checked to be a regular file: opening
    a FIFO put where the file was would otherwise block the event loop until a
    writer came.

    Raises:
        PoolerError: As :func:`stat`; IO_ERROR and others from reading.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise error_for_os_error(exc, f"opening {quoted(path)}") from exc
    try:
        try:
            status = os.fstat(fd)
        except OSError as exc:
            raise error_for_os_error(exc, f"reading {quoted(path)}") from exc
        _check_regular(status, path)
        view = memoryview(bytearray(min(max(size, 1), READ_CHUNK)))
        while True:
            try:
                count = os.readv(fd, [view])
            except OSError as exc:
                raise error_for_os_error(exc, f"reading {quoted(path)}") from exc
            if not count:
                return
            yield view[:count]
    finally:
        os.close(fd)
