"""The transfer engine: one task in, one result out, whatever happens.

A task is planned first (which side is local, where exactly its path lies),
then attempted until it succeeds, fails for good, or runs out of retries.
Both directions are atomic: bytes go to a hidden temporary name next to the
destination and are renamed into place only after the size checks out, so a
partial file is never visible under its final name.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import structlog
import trio

from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.contract import ConflictPolicy, Operation, Result, Task
from ftp_pooler.errors import ErrorCode, FTPError, PoolerError
from ftp_pooler.ftp.pool import SessionPool
from ftp_pooler.ftp.protocol import is_safe_argument
from ftp_pooler.ftp.session import FTPSession
from ftp_pooler.logs import current_task_id
from ftp_pooler.localfs import LocalRoot, read_chunks, stat, temp_name
from ftp_pooler.retry import RetryPolicy

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Plan:
    """Where a task's bytes come from and go to, resolved and checked."""

    operation: Operation
    remote_id: str
    remote_path: str
    local_root: LocalRoot
    local_path: Path


@dataclass(frozen=True)
class _Outcome:
    bytes_transferred: int
    skipped: bool = False


class TransferEngine:
    """Runs tasks against a :class:`SessionPool` and the local connections' directories.

    Args:
        connections: Every configured connection, FTP and local.
        pool: Sessions to the FTP connections.
        retry: Backoff policy; each task's ``retry_count`` sets how many retries.
        worker: Name put into every result (host or pod name).
        temp_suffix: Ends the hidden names files have while in transit.
        durable: Count a download done only once its bytes and name are fsynced
            (``transfer.durability: fsync``).
    """

    def __init__(
        self,
        connections: Connections,
        pool: SessionPool,
        *,
        retry: RetryPolicy = RetryPolicy(),
        worker: str,
        temp_suffix: str = ".part",
        durable: bool = True,
    ) -> None:
        self._connections = connections
        self._temp_suffix = temp_suffix
        self._pool = pool
        self._retry = retry
        self._worker = worker
        self._local_roots = {
            conn.id: LocalRoot(conn.base_path, durable=durable)
            for conn in connections.values()
            if isinstance(conn, LocalConnection)
        }
        self._remote_dirs: dict[str, set[str]] = {}

    async def run(self, task: Task) -> Result:
        """Carry out one task; never raises (but for cancellation).

        Log lines from every layer below (pool, session, local files) carry
        the task's id meanwhile.
        """
        token = current_task_id.set(task.task_id)
        try:
            return await self._run(task)
        finally:
            current_task_id.reset(token)

    async def _run(self, task: Task) -> Result:
        started = time.monotonic()
        attempts = 0
        operation = task.operation
        try:
            plan = self._plan(task)
            operation = plan.operation
            policy = self._retry.with_retries(task.options.retry_count)
            while True:
                attempts += 1
                try:
                    outcome = await self._attempt(plan, task)
                    break
                except PoolerError as exc:
                    if not policy.should_retry(attempts, exc.retryable):
                        raise
                    log.info(
                        "transfer.retry",
                        task_id=task.task_id,
                        attempt=attempts,
                        error_code=exc.code.value,
                        error=exc.message,
                    )
                    await trio.sleep(policy.backoff(attempts))
        except PoolerError as exc:
            error = exc
        except Exception as exc:
            log.exception("transfer.unexpected_error", task_id=task.task_id)
            error = PoolerError(ErrorCode.UNKNOWN_ERROR, f"{type(exc).__name__}: {exc}")
        else:
            if outcome.skipped:
                return Result.skipped(
                    task,
                    operation=operation,
                    attempts=attempts,
                    duration_ms=_ms_since(started),
                    worker=self._worker,
                )
            return Result.completed(
                task,
                operation=operation,
                bytes_transferred=outcome.bytes_transferred,
                attempts=attempts,
                duration_ms=_ms_since(started),
                worker=self._worker,
            )
        return Result.failed(
            task,
            error,
            operation=operation,
            attempts=attempts,
            duration_ms=_ms_since(started),
            worker=self._worker,
        )

    # -- planning --------------------------------------------------------------------

    def _plan(self, task: Task) -> _Plan:
        source = self._connection(task.source.connection_id)
        destination = self._connection(task.destination.connection_id)
        if isinstance(source, FTPConnection) and isinstance(destination, LocalConnection):
            operation, remote, local = Operation.DOWNLOAD, source, destination
            remote_path, local_path = task.source.path, task.destination.path
        elif isinstance(source, LocalConnection) and isinstance(destination, FTPConnection):
            operation, remote, local = Operation.UPLOAD, destination, source
            remote_path, local_path = task.destination.path, task.source.path
        else:
            kinds = f"{type(source).__name__} -> {type(destination).__name__}"
            raise PoolerError(
                ErrorCode.INVALID_CONFIG, f"one side must be local and the other FTP, not {kinds}"
            )
        if task.operation is not None and task.operation is not operation:
            raise PoolerError(
                ErrorCode.INVALID_MESSAGE,
                f"operation {task.operation.value} contradicts the connections ({operation.value})",
            )
        root = self._local_roots[local.id]
        resolve = root.resolve_existing if operation is Operation.UPLOAD else root.resolve
        return _Plan(
            operation, remote.id, _remote_path(remote, remote_path), root, resolve(local_path)
        )

    def _connection(self, conn_id: str) -> FTPConnection | LocalConnection:
        try:
            return self._connections[conn_id]
        except KeyError:
            raise PoolerError(
                ErrorCode.INVALID_CONFIG, f"unknown connection id {conn_id!r}"
            ) from None

    # -- attempts ----------------------------------------------------------------------

    async def _attempt(self, plan: _Plan, task: Task) -> _Outcome:
        if plan.operation is Operation.DOWNLOAD:
            return await self._download(plan, task)
        return await self._upload(plan, task)

    async def _download(self, plan: _Plan, task: Task) -> _Outcome:
        options = task.options
        conflict = options.conflict
        if conflict is not ConflictPolicy.OVERWRITE and await plan.local_root.exists(
            plan.local_path
        ):
            if conflict is ConflictPolicy.SKIP:
                return _Outcome(0, skipped=True)
            raise PoolerError(ErrorCode.FILE_EXISTS, f"{plan.local_path} exists")
        await plan.local_root.make_parent(plan.local_path)
        async with self._pool.session(plan.remote_id) as session:
            file = await plan.local_root.open_atomic(plan.local_path, self._temp_suffix)
            try:
                download = await session.retrieve(plan.remote_path, file.write)
                received = download.received
                if options.verify_size:
                    expected = download.announced_size
                    if expected is None and "SIZE" in session.features:
                        expected = await session.size(plan.remote_path)
                    if expected is not None and received != expected:
                        raise PoolerError(
                            ErrorCode.SIZE_MISMATCH,
                            f"received {received} bytes, the server said {expected}",
                        )
                mtime = None
                if options.preserve_mtime:
                    mtime = (await session.mdtm(plan.remote_path)).timestamp()
                try:
                    await file.commit(replace=conflict is ConflictPolicy.OVERWRITE, mtime=mtime)
                except PoolerError as exc:
                    if exc.code is ErrorCode.FILE_EXISTS and conflict is ConflictPolicy.SKIP:
                        return _Outcome(0, skipped=True)
                    raise
            except BaseException:
                file.discard()
                raise
        return _Outcome(received)

    async def _upload(self, plan: _Plan, task: Task) -> _Outcome:
        options = task.options
        conflict = options.conflict
        local = stat(plan.local_path)
        target = PurePosixPath(plan.remote_path)
        temp = str(target.with_name(temp_name(target.name, self._temp_suffix)))
        orphan = False
        try:
            async with self._pool.session(plan.remote_id) as session:
                if conflict is not ConflictPolicy.OVERWRITE and await _remote_exists(
                    session, plan.remote_path
                ):
                    if conflict is ConflictPolicy.SKIP:
                        return _Outcome(0, skipped=True)
                    raise PoolerError(
                        ErrorCode.FILE_EXISTS, f"{plan.remote_path} exists on the server"
                    )
                try:
                    sent = await self._store(
                        session, plan.remote_id, temp, plan.local_path, local.st_size
                    )
                    if sent != local.st_size:
                        raise PoolerError(
                            ErrorCode.SIZE_MISMATCH,
                            f"sent {sent} bytes, the file had {local.st_size}",
                        )
                    if options.verify_size and "SIZE" in session.features:
                        stored = await session.size(temp)
                        if stored != sent:
                            raise PoolerError(
                                ErrorCode.SIZE_MISMATCH,
                                f"sent {sent} bytes, the server stored {stored}",
                            )
                    if options.preserve_mtime:
                        await session.set_mtime(temp, datetime.fromtimestamp(local.st_mtime, UTC))
                    await _rename_into_place(
                        session,
                        temp,
                        plan.remote_path,
                        replace=conflict is ConflictPolicy.OVERWRITE,
                    )
                except BaseException:
                    orphan = not await _discard_remote(session, temp)
                    raise
        finally:
            if orphan:
                await self._discard_with_new_session(plan.remote_id, temp)
        return _Outcome(sent)

    async def _discard_with_new_session(self, remote_id: str, temp: str) -> None:
        """Delete an upload's temporary file after its session broke (bounded, best effort)."""
        remote = self._connections[remote_id]
        assert isinstance(remote, FTPConnection)
        timeouts = remote.ftp.timeouts
        with trio.CancelScope(shield=True), trio.move_on_after(timeouts.connect + timeouts.reply):
            try:
                async with self._pool.session(remote_id) as session:
                    await _discard_remote(session, temp)
            except PoolerError:
                log.warning("transfer.temp_file_left", connection=remote_id, path=temp)

    async def _store(
        self, session: FTPSession, remote_id: str, temp: str, local: Path, size: int
    ) -> int:
        """STOR into a directory made with ``mkdir -p`` once per directory and connection.

        A directory remembered as made may have been removed on the server
        since: if STOR is refused, the directory is made again and STOR
        tried once more before the refusal counts.
        """
        directory = posixpath.dirname(temp)
        if directory in ("", "/"):
            return await session.store(temp, read_chunks(local, size))
        known = self._remote_dirs.setdefault(remote_id, set())
        if directory not in known:
            await session.makedirs(directory)
            known.add(directory)
            return await session.store(temp, read_chunks(local, size))
        try:
            return await session.store(temp, read_chunks(local, size))
        except FTPError as exc:
            if exc.reply is None:
                raise
        known.discard(directory)
        return await self._store(session, remote_id, temp, local, size)


def _remote_path(connection: FTPConnection, path: str) -> str:
    if ".." in path.split("/"):
        raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"'..' in remote path {path!r}")
    if not is_safe_argument(path):
        raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, "remote path holds CR, LF or NUL")
    if not connection.base_path:
        return path
    return f"{connection.base_path.rstrip('/')}/{path.lstrip('/')}"


async def _remote_exists(session: FTPSession, path: str) -> bool:
    try:
        await session.size(path)
    except FTPError as exc:
        if exc.code is ErrorCode.FILE_NOT_FOUND:
            return False
        raise
    return True


async def _rename_into_place(session: FTPSession, temp: str, final: str, *, replace: bool) -> None:
    """RNFR/RNTO; when replacing and the server will not rename over a file, delete it first."""
    try:
        await session.rename(temp, final)
        return
    except FTPError as exc:
        if not replace or exc.reply is None or session.broken:
            raise
    try:
        await session.delete(final)
    except FTPError as exc:
        if exc.code is not ErrorCode.FILE_NOT_FOUND:
            raise
    await session.rename(temp, final)


async def _discard_remote(session: FTPSession, temp: str) -> bool:
    """Delete an upload's temp file if the session is still in step; whether that was possible."""
    if session.broken or session.closed:
        return False
    with trio.CancelScope(shield=True), trio.move_on_after(session.config.timeouts.reply):
        try:
            await session.delete(temp)
        except FTPError as exc:
            return exc.reply is not None
    return not session.broken


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
