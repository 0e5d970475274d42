"""What becomes of a task's source once the destination holds the file (``on_success``).

Partner outboxes are emptied after pickup: with ``"on_success": "delete"`` the
source file is deleted, with ``{"move_to": "/archive/"}`` it is moved into that
directory, once the destination holds the whole file under its final name
(never before: on a download the local file and its directory are fsynced
first, whatever ``transfer.durability`` says). Downloads act on the FTP server
(``DELE``; ``RNFR``/``RNTO``), uploads on the local connection (``unlink``;
``rename`` inside ``base_path``).

Delivery is at least once, so a task can come again after its source was
already deleted or moved (a crash between the action and the offset commit).
Such a repeat is recognised, never failed as FILE_NOT_FOUND:

- the source is missing, and
- the destination holds a file under its final name, which only a finished,
  size-checked transfer ever puts there (both directions rename a temporary
  file into place), and
- for ``move_to``: the archived file is present with the destination's size.

A recognised repeat completes with ``bytes_transferred`` 0 and
``source_action: "already_done"``; nothing is transferred again. The checks
run only when a transfer finds its source missing (or its destination
present with ``if_exists`` skip or fail), so a task that just works costs no
extra round trip. See ``docs/contract.md`` ("What happens to the source").

The engine calls one of three functions, by how the transfer ended:
:func:`after_transfer` (the file was just put in place), :func:`after_skip`
(``if_exists`` skip found the destination), :func:`after_failure` (a failure
:func:`may_be_repeat` names). The decisions are pure functions
(:func:`archive_path`, :func:`is_repeat`, :func:`same_file`); the I/O is two
small adapters, :class:`RemoteFile` and
:class:`LocalFile`, behind one :class:`Side` protocol, so the same steps serve
both directions.
"""

from __future__ import annotations

import errno
import os
import posixpath
from pathlib import Path
from typing import Protocol

import structlog

from ftp_pooler.contract import MoveTo, OnSuccess, SourceAction, SourceActionDone, SourceReport
from ftp_pooler.errors import ErrorCode, FTPError, PoolerError
from ftp_pooler.ftp.session import FTPSession
from ftp_pooler.transfer.localfs import LocalRoot, error_for_os_error, quoted

log = structlog.get_logger(__name__)


class Side(Protocol):
    """One end of a transfer (a file on the FTP server, or a local one), as the action sees it."""

    async def size(self) -> int | None:
        """The file's size in bytes; ``None`` when nothing has its name.

        Raises:
            PoolerError: When the answer is neither a size nor "no such file".
        """

    async def archived_size(self) -> int | None:
        """The size of the file in ``move_to`` (as :meth:`size`); ``None`` without ``move_to``."""

    async def delete(self) -> None:
        """Delete the file (FILE_NOT_FOUND if it is gone)."""

    async def move(self) -> None:
        """Move the file into ``move_to``, making the directory and replacing a file there."""

    async def make_durable(self) -> None:
        """Return once the file and its name would survive a power cut (as far as we can tell)."""


def archive_path(directory: str, source_path: str) -> str:
    """Where ``move_to`` puts a source: the directory, then the source's file name.

    ``archive_path("/archive/", "out/2026/a.csv")`` is ``"/archive/a.csv"``;
    ``archive_path("done", "a.csv")`` is ``"done/a.csv"``; ``"/"`` gives ``"/a.csv"``.
    The result is a path on the source's connection, resolved like any path
    there (``base_path`` in front, confined for a local one).
    """
    name = posixpath.basename(source_path.rstrip("/"))
    head = directory.rstrip("/")
    if not head:
        return f"/{name}" if directory.startswith("/") else name
    return f"{head}/{name}"


def is_repeat(
    action: OnSuccess, source_size: int | None, destination_size: int | None, archived: int | None
) -> bool:
    """Whether a task whose source is missing was already done by an earlier delivery.

    Args:
        action: The task's ``on_success`` (not keep).
        source_size: The source's size; ``None``: missing.
        destination_size: The destination's size under its final name; ``None``: missing.
        archived: The size of the file in ``move_to``; ``None``: missing (or no move_to).

    The destination's final name only ever holds a finished transfer (a
    size-checked rename into place), so source missing and destination present
    means the source action ran after it. With ``move_to`` the archived copy
    must be there too, with the destination's size.
    """
    if source_size is not None or destination_size is None:
        return False
    if isinstance(action, MoveTo):
        return archived == destination_size
    return True


def same_file(source_size: int | None, destination_size: int | None) -> bool:
    """Whether a destination found existing (``if_exists`` skip) may stand for the source.

    Sizes only, as ``verify_size`` compares them: a destination of another size
    is another file, and the source is then kept.
    """
    return source_size is not None and source_size == destination_size


async def after_transfer(action: OnSuccess, source: Side, destination: Side) -> SourceReport:
    """Act on the source of a transfer that just put the file in place.

    The destination is made durable first. A failure of the action does not
    fail the task (its file is delivered): it is reported as ``failed`` with
    its error, and the source stays. A source that vanished meanwhile (another
    delivery of the same task acted on it) is ``already_done`` if it passes
    :func:`is_repeat`.
    """
    try:
        await destination.make_durable()
        return await _act(action, source)
    except PoolerError as exc:
        error: PoolerError | None = exc
        if exc.code is ErrorCode.FILE_NOT_FOUND:
            error = await _not_found(action, source, destination, exc)
        if error is None:
            return SourceReport(SourceActionDone.ALREADY_DONE)
        return action_failed(error)


async def _not_found(
    action: OnSuccess, source: Side, destination: Side, error: PoolerError
) -> PoolerError | None:
    """What a FILE_NOT_FOUND from the action means: ``None`` for a repeat, else the error to report.

    A bare 550 to DELE or RNFR reads as "not found", but vsftpd answers every
    failed delete so (``550 Delete operation failed.``, a directory it may
    not write to included): a source that is still there makes it PERMANENT.
    """
    try:
        if await source.size() is not None:
            return PoolerError(ErrorCode.PERMANENT, f"{error.message} (the source is still there)")
        if await recognise_repeat(action, source, destination):
            return None
    except PoolerError:
        pass
    return error


async def after_skip(action: OnSuccess, source: Side, destination: Side) -> SourceReport:
    """Act on the source of a task skipped because its destination existed.

    A source that is missing is a repeat (:func:`recognise_repeat`); one of the
    destination's size is acted on like after a transfer (so a task repeated
    with ``if_exists`` skip after a crash between the landing and the action
    still empties the outbox); one of another size is kept, reported
    ``failed`` with FILE_EXISTS.
    """
    try:
        source_size = await source.size()
        if source_size is None:
            if await recognise_repeat(action, source, destination):
                return SourceReport(SourceActionDone.ALREADY_DONE)
            raise PoolerError(ErrorCode.FILE_NOT_FOUND, "the source is gone")
        destination_size = await destination.size()
        if not same_file(source_size, destination_size):
            raise PoolerError(
                ErrorCode.FILE_EXISTS,
                f"the source ({source_size} bytes) is kept: the destination skipped has"
                f" {destination_size} bytes",
            )
    except PoolerError as exc:
        return action_failed(exc)
    return await after_transfer(action, source, destination)


REPEAT_CODES = frozenset({ErrorCode.FILE_NOT_FOUND, ErrorCode.FILE_EXISTS})
"""Failures a repeated task meets: its source missing, or (``if_exists`` fail) its
destination present."""


def may_be_repeat(error: PoolerError) -> bool:
    """Whether a failed transfer may have been a task already done (:func:`after_failure`)."""
    return error.code in REPEAT_CODES


async def after_failure(action: OnSuccess, source: Side, destination: Side) -> SourceReport | None:
    """After a transfer failed as :func:`may_be_repeat` says: ``already_done``, or ``None``.

    ``None`` means not a repeat: the caller reports its failure as it was.

    Raises:
        PoolerError: A retryable failure of the checks themselves (a lost
            connection): the attempt is retried and checks again. A
            non-retryable one (a server without ``SIZE``) gives ``None``.
    """
    try:
        if await recognise_repeat(action, source, destination):
            return SourceReport(SourceActionDone.ALREADY_DONE)
    except PoolerError as exc:
        if exc.retryable:
            raise
    return None


async def recognise_repeat(action: OnSuccess, source: Side, destination: Side) -> bool:
    """Whether the task was already done: :func:`is_repeat` on the sizes read now.

    Raises:
        PoolerError: A size could not be read (neither a size nor "no such file").
    """
    source_size = await source.size()
    if source_size is not None:
        return False
    destination_size = await destination.size()
    archived = await source.archived_size() if destination_size is not None else None
    return is_repeat(action, source_size, destination_size, archived)


async def _act(action: OnSuccess, source: Side) -> SourceReport:
    if isinstance(action, MoveTo):
        await source.move()
        return SourceReport(SourceActionDone.MOVED)
    assert action is SourceAction.DELETE, action
    await source.delete()
    return SourceReport(SourceActionDone.DELETED)


def action_failed(error: PoolerError) -> SourceReport:
    """The report of an action that could not be carried out (logged; the task still
    completes: its file is delivered)."""
    log.warning("transfer.source_action_failed", error_code=error.code.value, error=error.message)
    return SourceReport(SourceActionDone.FAILED, error)


class RemoteFile:
    """A file on the FTP server, through a borrowed session.

    Args:
        session: The session (in step; the caller holds it for the calls).
        path: The full remote path (``base_path`` applied).
        archive: Where ``move_to`` puts it (full remote path), if the task says so.
    """

    def __init__(self, session: FTPSession, path: str, archive: str | None = None) -> None:
        self._session = session
        self._path = path
        self._archive = archive

    async def size(self) -> int | None:
        return await _remote_size(self._session, self._path)

    async def archived_size(self) -> int | None:
        if self._archive is None:
            return None
        return await _remote_size(self._session, self._archive)

    async def delete(self) -> None:
        await self._session.delete(self._path)

    async def move(self) -> None:
        """RNFR/RNTO into ``move_to``; when refused, make the directory, then replace the file.

        A refusal is read in steps because servers word them differently: if
        the source is gone it is FILE_NOT_FOUND (and nothing else is touched:
        the archived copy may be the source, moved by an earlier delivery);
        otherwise ``mkdir -p`` the directory and rename again, replacing a
        file in the way only on a server that refuses to rename over it
        (:meth:`FTPSession.rename_over`: moved aside, never deleted first).

        Raises:
            FTPError: FILE_NOT_FOUND (the source is gone) or the last refusal.
        """
        assert self._archive is not None
        session = self._session
        try:
            await session.rename(self._path, self._archive)
            return
        except FTPError as exc:
            if exc.reply is None or session.broken:
                raise
            if await self.size() is None:
                gone = f"{exc.message} (the source is gone)"
                raise FTPError(ErrorCode.FILE_NOT_FOUND, gone) from exc
        await session.makedirs(posixpath.dirname(self._archive) or "/")
        await session.rename_over(self._path, self._archive)

    async def make_durable(self) -> None:
        """Nothing to do: the server's reply to RNTO is all a client can know."""


async def _remote_size(session: FTPSession, path: str) -> int | None:
    try:
        return await session.size(path)
    except FTPError as exc:
        if exc.code is ErrorCode.FILE_NOT_FOUND:
            return None
        raise


class LocalFile:
    """A file of a local connection.

    Args:
        root: The connection's :class:`LocalRoot` (its calls run through its I/O).
        path: The resolved, confined path.
        archive: Where ``move_to`` puts it (resolved and confined the same way).
    """

    def __init__(self, root: LocalRoot, path: Path, archive: Path | None = None) -> None:
        self._root = root
        self._path = path
        self._archive = archive

    async def size(self) -> int | None:
        return await self._size(self._path)

    async def archived_size(self) -> int | None:
        return None if self._archive is None else await self._size(self._archive)

    async def _size(self, path: Path) -> int | None:
        try:
            status = await self._root.io.run("lookup", os.stat, path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise error_for_os_error(exc, f"reading {quoted(path)}") from exc
        return status.st_size

    async def delete(self) -> None:
        try:
            await self._root.io.run("unlink", os.unlink, self._path)
        except OSError as exc:
            raise error_for_os_error(exc, f"deleting {quoted(self._path)}") from exc

    async def move(self) -> None:
        """``rename(2)`` into ``move_to``, replacing a file there; the directory made if missing.

        Raises:
            PoolerError: FILE_NOT_FOUND when the source is gone; IO_ERROR when
                ``move_to`` is on another volume (``EXDEV``: a rename cannot
                cross volumes, and a copy is not a move); others by errno.
        """
        assert self._archive is not None
        archive = self._archive
        try:
            try:
                await self._root.io.run("rename", os.replace, self._path, archive)
                return
            except FileNotFoundError:
                if await self.size() is None:
                    raise
            await self._root.io.run("mkdir", _make_directories, archive.parent)
            await self._root.io.run("rename", os.replace, self._path, archive)
        except OSError as exc:
            what = f"moving {quoted(self._path)} to {quoted(archive)}"
            raise error_for_os_error(exc, what) from exc

    async def make_durable(self) -> None:
        """fsync the file and its directory, unless the landing already did (a durable root)."""
        if self._root.durable:
            return
        try:
            await self._root.io.run("sync", _fsync_file_and_directory, self._path)
        except OSError as exc:
            raise error_for_os_error(exc, f"syncing {quoted(self._path)}") from exc


def _make_directories(path: Path) -> None:
    os.makedirs(path, exist_ok=True)


def _fsync_file_and_directory(path: Path) -> None:
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | os.O_DIRECTORY)):
        fd = os.open(target, flags | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # a file system that cannot sync this (fsync(2))
                raise
        finally:
            os.close(fd)
