"""The transfer engine: one task in, one result out, whatever happens.

A task is planned first (which side is local, where exactly its path lies),
then attempted until it succeeds, fails for good, or runs out of retries.
One attempt is the unit the scheduler runs (:meth:`TransferEngine.attempt`):
between attempts a task holds neither a runner nor a session, and the engine
still builds exactly one result per task.
Both directions are atomic: bytes go to a hidden temporary name next to the
destination and are renamed into place only after the size checks out, so a
partial file is never visible under its final name. On FTP servers the
temporary name is a per-connection setting (``upload_temp``: hidden, visible
for servers refusing dot-files, or none: the final name, not atomic).
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Protocol, TypeVar

import structlog
import trio

from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.contract import (
    ConflictPolicy,
    MoveTo,
    Operation,
    Result,
    SourceAction,
    SourceActionDone,
    SourceReport,
    Task,
    unexpected_error,
)
from ftp_pooler.errors import ErrorCode, FTPError, PoolerError
from ftp_pooler.ftp.directories import RemoteDirectories
from ftp_pooler.ftp.pool import PinnedConnection, SessionPool
from ftp_pooler.ftp.protocol import MAX_PATH_BYTES, encodable, is_safe_argument, path_fits
from ftp_pooler.ftp.config import UploadTemp
from ftp_pooler.ftp.session import FTPSession, ServerQuirks, Sink
from ftp_pooler.logs import current_task_id
from ftp_pooler.transfer.localfs import LocalRoot, temp_name
from ftp_pooler.transfer.retry import RetryPolicy
from ftp_pooler.transfer.source_action import LocalFile, RemoteFile, Side, action_failed
from ftp_pooler.transfer.source_action import after_failure, after_skip
from ftp_pooler.transfer.source_action import after_transfer, archive_path, may_be_repeat

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

MAX_STALE_SESSIONS = 3
"""Pooled sessions found closed by the server that one task may replace without
spending an attempt (each is discarded, so a fresh one follows soon)."""


class TransferObserver(Protocol):
    """What the engine reports while it works (metrics, a progress display).

    Called on the Trio thread, synchronously: implementations must be quick
    and must not raise.
    """

    def bytes_moved(self, operation: Operation, connection: str, count: int) -> None:
        """``count`` more bytes of a transfer with FTP connection ``connection`` moved.

        Called per chunk (up to 256 KiB) as the data connection carries it,
        failed attempts included; an upload's bytes only once the server
        accepted its STOR (:class:`_AcceptedUpload`).
        """

    def retrying(self, operation: Operation, connection: str, error_code: ErrorCode) -> None:
        """An attempt failed with retryable ``error_code``; the task will be tried again."""


@dataclass(frozen=True)
class _Plan:
    """Where a task's bytes come from and go to, resolved and checked."""

    operation: Operation
    remote_id: str
    remote: PinnedConnection
    """The remote connection as configured when planned: every session of the attempt."""
    remote_path: str
    local_root: LocalRoot
    local_path: Path
    archive: str | None = None
    """Where ``move_to`` puts the source: a full remote path (download) or a local one."""


@dataclass(eq=False, slots=True)
class Transfer:
    """One task between its attempts: made by :meth:`TransferEngine.prepare`.

    Attributes:
        task: The task.
        policy: Its retry policy (the engine's, with the task's ``retry_count``).
        started: When it was prepared (``time.monotonic()``); its result's
            ``duration_ms`` counts from here, waits and backoff included.
        attempts: Attempts made so far.
    """

    task: Task
    plan: _Plan
    policy: RetryPolicy
    started: float
    attempts: int = 0
    stale_sessions: int = 0
    """Pooled sessions found closed by the server and replaced (not attempts)."""
    previous: ErrorCode | None = None
    """The error code of the last failed attempt."""
    version: int = 0
    """The connections version its plan was made on (:meth:`TransferEngine.reconfigure`)."""

    @property
    def connection(self) -> str:
        """The FTP connection id whose session every attempt needs."""
        return self.plan.remote_id


@dataclass(frozen=True, slots=True)
class _UploadSource:
    """An upload's local file, as the STOR steps pass it on.

    Attributes:
        remote_id: The FTP connection's id (metrics, remote directories made).
        root: The local volume it is read through.
        path: The file (resolved inside ``root``).
        size: Its size in bytes when the upload was planned.
        check: The rename with a size check follows the STOR
            (:meth:`FTPSession.store`'s ``check``).
    """

    remote_id: str
    root: LocalRoot
    path: Path
    size: int
    check: bool


@dataclass(frozen=True)
class _Outcome:
    bytes_transferred: int
    skipped: bool = False
    source: SourceReport | None = None


class TransferEngine:
    """Runs tasks against a :class:`SessionPool` and the local connections' directories.

    Args:
        connections: Every configured connection, FTP and local.
        pool: Sessions to the FTP connections.
        retry: Backoff policy; each task's ``retry_count`` sets how many retries.
        worker: Name put into every result (host or pod name).
        temp_suffix: Ends the hidden names files have while in transit.
        observer: Told of bytes as they move and of retries, if given.
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
        observer: TransferObserver | None = None,
        durable: bool = True,
    ) -> None:
        self._connections = connections
        self._ftp_ids = _ftp_ids(connections)
        self._observer = observer
        self._temp_suffix = temp_suffix
        self._pool = pool
        self._retry = retry
        self._worker = worker
        self._local_roots = {
            conn.id: LocalRoot(conn.base_path, durable=durable)
            for conn in connections.values()
            if isinstance(conn, LocalConnection)
        }
        self._remote_dirs: dict[str, RemoteDirectories] = {}
        self._durable = durable
        self._version = 0

    @property
    def pool(self) -> SessionPool:
        """The session pool the engine borrows from."""
        return self._pool

    def prepare(self, task: Task) -> Transfer | Result:
        """Plan a task: the :class:`Transfer` to attempt, or its result if it cannot start.

        Returns:
            A failed :class:`Result` when the task cannot be planned (unknown or
            unsuitable connections, a path refused, an operation that contradicts
            the connections); otherwise a Transfer for :meth:`attempt`. Never raises.
        """
        started = time.monotonic()
        try:
            plan = self._plan(task)
        except PoolerError as exc:
            return self._failed(task, exc, task.operation, 0, started)
        except Exception as exc:
            log.exception("transfer.unexpected_error", task_id=task.task_id)
            return self._failed(task, unexpected_error(exc), task.operation, 0, started)
        policy = self._retry.with_retries(task.options.retry_count)
        return Transfer(task, plan, policy, started, version=self._version)

    async def attempt(self, transfer: Transfer) -> Result | float:
        """Make one attempt of ``transfer``; never raises (but for cancellation).

        Returns:
            The task's one :class:`Result` when it is over (done, skipped, failed
            for good, or out of retries); otherwise the seconds to wait before
            the next attempt (a retryable failure with retries left). Log lines
            from every layer below (pool, session, local files) carry the task's
            id meanwhile.
        """
        task = transfer.task
        if transfer.version != self._version and (failed := self._replan(transfer)) is not None:
            return failed
        token = current_task_id.set(task.task_id)
        try:
            transfer.attempts += 1
            try:
                outcome = await self._attempt_once(transfer)
            except PoolerError as exc:
                return self._attempt_failed(transfer, exc)
            except Exception as exc:
                log.exception("transfer.unexpected_error", task_id=task.task_id)
                return self.give_up(transfer, unexpected_error(exc))
        finally:
            current_task_id.reset(token)
        duration_ms = _ms_since(transfer.started)
        if outcome.skipped:
            return Result.skipped(
                task,
                operation=transfer.plan.operation,
                attempts=transfer.attempts,
                duration_ms=duration_ms,
                worker=self._worker,
                source=outcome.source,
            )
        return Result.completed(
            task,
            operation=transfer.plan.operation,
            bytes_transferred=outcome.bytes_transferred,
            attempts=transfer.attempts,
            duration_ms=duration_ms,
            worker=self._worker,
            source=outcome.source,
        )

    async def _attempt_once(self, transfer: Transfer) -> _Outcome:
        """One attempt. A pooled session the server had closed (nothing moved) is
        replaced without spending the attempt, up to :data:`MAX_STALE_SESSIONS` times."""
        while True:
            try:
                return await self._attempt(transfer.plan, transfer.task)
            except FTPError as exc:
                if not exc.stale_session or transfer.stale_sessions >= MAX_STALE_SESSIONS:
                    raise
                transfer.stale_sessions += 1
                log.info("transfer.stale_session", task_id=transfer.task.task_id, error=exc.message)

    def _attempt_failed(self, transfer: Transfer, exc: PoolerError) -> Result | float:
        """After a failed attempt: the task's result, or the backoff before the next one."""
        if exc.code is ErrorCode.PROTOCOL_ERROR and transfer.previous is exc.code:
            # The same protocol failure on a fresh session: it will not change.
            return self.give_up(transfer, PoolerError(exc.code, exc.message, retryable=False))
        transfer.previous = exc.code
        if not transfer.policy.should_retry(transfer.attempts, exc.retryable):
            return self.give_up(transfer, exc)
        log.info(
            "transfer.retry",
            task_id=transfer.task.task_id,
            attempt=transfer.attempts,
            error_code=exc.code.value,
            error=exc.message,
        )
        if self._observer is not None:
            self._observer.retrying(transfer.plan.operation, transfer.connection, exc.code)
        return transfer.policy.backoff(transfer.attempts)

    def give_up(self, transfer: Transfer, error: PoolerError) -> Result:
        """The failed result of a transfer that is tried no more (``error`` says why)."""
        return self._failed(
            transfer.task, error, transfer.plan.operation, transfer.attempts, transfer.started
        )

    def patience(self, transfer: Transfer) -> float:
        """Seconds a transfer may wait in total for its server while it is marked down.

        As long as all its attempts could have taken against a server that never
        answers (each a connect timeout, plus the backoffs between them), so the
        circuit breaker never makes a task give up sooner than it would have
        without it. See :meth:`RetryPolicy.patience`.
        """
        remote = self._connections[transfer.connection]
        assert isinstance(remote, FTPConnection)
        return transfer.policy.patience(remote.ftp.timeouts.connect)

    async def run(self, task: Task) -> Result:
        """Carry out one task on its own: attempts, and the backoff between them, in line.

        For a task run alone (tests, a single transfer); many tasks go through
        :mod:`ftp_pooler.scheduling` instead, where the backoff holds nothing.
        Never raises (but for cancellation).
        """
        transfer = self.prepare(task)
        while isinstance(transfer, Transfer):
            outcome = await self.attempt(transfer)
            if isinstance(outcome, Result):
                return outcome
            await trio.sleep(outcome)
        return transfer

    def _failed(
        self,
        task: Task,
        error: PoolerError,
        operation: Operation | None,
        attempts: int,
        started: float,
    ) -> Result:
        return Result.failed(
            task,
            error,
            operation=operation,
            attempts=attempts,
            duration_ms=_ms_since(started),
            worker=self._worker,
        )

    # -- connections changed while running (ftp_pooler.service.reload) -----------------------

    @property
    def connections(self) -> Connections:
        """The connections tasks are planned on now."""
        return self._connections

    def ftp_side(self, result: Result) -> str:
        """The id of the FTP connection a result's task used, for metrics labels; ``""``
        for a result without one (an invalid message) or naming no FTP connection of
        any version this engine has run (so a label never takes an id from a message).

        A task's FTP side is its source for a download, its destination for an
        upload; its connection may have been removed by a reload meanwhile.
        """
        endpoints = (result.source, result.destination)
        if result.operation is Operation.UPLOAD:
            endpoints = (result.destination, result.source)
        for endpoint in endpoints:
            if endpoint is not None and endpoint.connection_id in self._ftp_ids:
                return endpoint.connection_id
        return ""

    async def reconfigure(self, connections: Connections) -> None:
        """Switch to a new version of the connections, then close the idle sessions it retires.

        The engine's connections, its local roots and the pool's factories
        switch in one synchronous step, so no attempt sees half of it. An
        attempt under way keeps its plan, whose pinned connection
        (:meth:`SessionPool.pin`) lends it sessions with the settings it was
        planned on, new ones included; the pool closes them when returned.
        Every attempt that starts afterwards is planned again on the new
        version (:meth:`_replan`): a task of a removed connection then fails
        with INVALID_CONFIG ``unknown connection id``. A local connection
        whose ``base_path`` is unchanged keeps its :class:`LocalRoot`.
        Closing the idle sessions is shielded from cancellation.

        Raises:
            Exception: From building a session factory (a CA file that is
                not PEM: :class:`ssl.SSLError`); nothing has changed then.
        """
        old = self._connections
        local_roots = {
            conn.id: self._local_roots[conn.id]
            if old.get(conn.id) == conn
            else LocalRoot(conn.base_path, durable=self._durable)
            for conn in connections.values()
            if isinstance(conn, LocalConnection)
        }
        configs = {c.id: c.ftp for c in connections.values() if isinstance(c, FTPConnection)}
        closing = self._pool.reconfigure(configs)  # first: it may raise, changing nothing
        self._local_roots = local_roots
        for conn_id in list(self._remote_dirs):
            if old.get(conn_id) != connections.get(conn_id):
                del self._remote_dirs[conn_id]
        self._connections = connections
        self._ftp_ids |= _ftp_ids(connections)
        self._version += 1
        await self._pool.close_sessions(closing)

    def _replan(self, transfer: Transfer) -> Result | None:
        """Plan a transfer again on the current connections; its failed result if it cannot."""
        try:
            transfer.plan = self._plan(transfer.task)
        except PoolerError as exc:
            return self.give_up(transfer, exc)
        transfer.version = self._version
        return None

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
        remote_path = _remote_path(remote, remote_path)
        pinned = self._pool.pin(remote.id)
        plan = _Plan(operation, remote.id, pinned, remote_path, root, resolve(local_path))
        return self._plan_archive(plan, task, remote)

    def _plan_archive(self, plan: _Plan, task: Task, remote: FTPConnection) -> _Plan:
        """The plan with where ``move_to`` puts the source, checked like the task's own paths.

        Raises:
            PoolerError: PATH_NOT_ALLOWED for a refused path, or a ``move_to``
                that is the source's own directory (the file would never leave it).
        """
        on_success = task.options.on_success
        if not isinstance(on_success, MoveTo):
            return plan
        target = archive_path(on_success.move_to, task.source.path)
        if plan.operation is Operation.DOWNLOAD:
            archive = _remote_path(remote, target)
            same = posixpath.normpath(archive) == posixpath.normpath(plan.remote_path)
        else:
            archive = str(plan.local_root.resolve(target))
            same = archive == str(plan.local_path)
        if same:
            raise PoolerError(
                ErrorCode.PATH_NOT_ALLOWED,
                f"move_to {on_success.move_to!r} is the source's own directory",
            )
        return dataclasses.replace(plan, archive=archive)

    def _connection(self, conn_id: str) -> FTPConnection | LocalConnection:
        try:
            return self._connections[conn_id]
        except KeyError:
            raise PoolerError(
                ErrorCode.INVALID_CONFIG, f"unknown connection id {conn_id!r}"
            ) from None

    # -- attempts ----------------------------------------------------------------------

    async def _attempt(self, plan: _Plan, task: Task) -> _Outcome:
        """The transfer, and with ``on_success`` what a skip or a failure means for the source."""
        if task.options.on_success is SourceAction.KEEP:
            return await self._transfer(plan, task)
        try:
            outcome = await self._transfer(plan, task)
        except PoolerError as exc:
            if not may_be_repeat(exc):
                raise
            async with self._pool.session(plan.remote) as session:
                report = await after_failure(task.options.on_success, *self._sides(plan, session))
            if report is None:
                raise
            return _Outcome(0, source=report)
        if not outcome.skipped:
            return outcome
        async with self._pool.session(plan.remote) as session:
            report = await after_skip(task.options.on_success, *self._sides(plan, session))
        return _Outcome(0, skipped=report.done is not SourceActionDone.ALREADY_DONE, source=report)

    async def _transfer(self, plan: _Plan, task: Task) -> _Outcome:
        if plan.operation is Operation.DOWNLOAD:
            return await self._download(plan, task)
        return await self._upload(plan, task)

    def _sides(self, plan: _Plan, session: FTPSession) -> tuple[Side, Side]:
        """The task's (source, destination) for the source action, through ``session``."""
        if plan.operation is Operation.DOWNLOAD:
            remote = RemoteFile(session, plan.remote_path, plan.archive)
            return remote, LocalFile(plan.local_root, plan.local_path)
        archive = None if plan.archive is None else Path(plan.archive)
        return LocalFile(plan.local_root, plan.local_path, archive), RemoteFile(
            session, plan.remote_path
        )

    async def _after_transfer(
        self, plan: _Plan, task: Task, session: FTPSession
    ) -> SourceReport | None:
        """Act on the source of a transfer just landed (``on_success``), on its session."""
        if task.options.on_success is SourceAction.KEEP:
            return None
        return await after_transfer(task.options.on_success, *self._sides(plan, session))

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
        # The temporary file is made before the session is taken and landed after it is
        # given back: a session (what a server caps) is held only while the network is
        # used, not through the local volume's round trips (create, fsync, rename: tens
        # of milliseconds a file on NFS).
        file = await plan.local_root.open_atomic(plan.local_path, self._temp_suffix)
        try:
            async with self._pool.session(plan.remote) as session:
                sink: Sink = file.write
                if self._observer is not None:
                    sink = _counted_sink(sink, self._observer, plan.remote_id)
                download = await session.retrieve(plan.remote_path, sink)
                received = download.received
                if options.verify_size:
                    expected = download.announced_size
                    if expected != received and "SIZE" in session.features:
                        # No size in the 150, or one we may have misread from its text:
                        # SIZE is the server's own word on the file.
                        size = await _after_transfer(session.size(plan.remote_path), "SIZE")
                        expected = expected if size is None else size
                    if expected is not None and received != expected:
                        raise PoolerError(
                            ErrorCode.SIZE_MISMATCH,
                            f"received {received} bytes, the server said {expected}",
                        )
                mtime = None
                if options.preserve_mtime:
                    moment = await _after_transfer(session.mdtm(plan.remote_path), "MDTM")
                    mtime = moment.timestamp() if moment is not None else None
            try:
                await file.commit(replace=conflict is ConflictPolicy.OVERWRITE, mtime=mtime)
            except PoolerError as exc:
                if exc.code is ErrorCode.FILE_EXISTS and conflict is ConflictPolicy.SKIP:
                    return _Outcome(0, skipped=True)
                raise
        except BaseException:
            file.discard()
            raise
        if options.on_success is SourceAction.KEEP:
            return _Outcome(received)
        # The source is acted on only now that the file is durable (docs/contract.md);
        # without a session for it, as when the action fails, the file is delivered.
        try:
            async with self._pool.session(plan.remote) as session:
                source = await self._after_transfer(plan, task, session)
        except PoolerError as exc:
            source = action_failed(exc)
        return _Outcome(received, source=source)

    async def _upload(self, plan: _Plan, task: Task) -> _Outcome:
        options = task.options
        conflict = options.conflict
        local = await plan.local_root.stat(plan.local_path)
        orphan = False
        try:
            async with self._pool.session(plan.remote) as session:
                if conflict is not ConflictPolicy.OVERWRITE and await _remote_exists(
                    session, plan.remote_path
                ):
                    if conflict is ConflictPolicy.SKIP:
                        return _Outcome(0, skipped=True)
                    raise PoolerError(
                        ErrorCode.FILE_EXISTS, f"{plan.remote_path} exists on the server"
                    )
                if options.preserve_mtime and not session.can_set_mtime:
                    # docs/contract.md: such a task fails PERMANENT; known before any byte.
                    raise PoolerError(
                        ErrorCode.PERMANENT,
                        "preserve_mtime: the server cannot set modification times"
                        " (no MFMT or MDTM in FEAT); nothing was uploaded",
                    )
                form = _temp_form(session.config.upload_temp, session.quirks)
                temp = _upload_name(plan.remote_path, form, self._temp_suffix)
                # SIZE and RNFR may go out before the 226 when the rename with a size
                # check follows the STOR directly (FTPSession.store)
                check = options.verify_size and not options.preserve_mtime
                check = check and form is not UploadTemp.NONE
                upload = _UploadSource(
                    plan.remote_id, plan.local_root, plan.local_path, local.st_size, check
                )
                try:
                    try:
                        sent = await self._store_named(session, temp, upload)
                    except FTPError as exc:
                        if form is not UploadTemp.HIDDEN or not _refuses_name(exc, session):
                            raise
                        # A server refusing dot-files: the visible form, once.
                        log.warning("transfer.hidden_temp_refused", path=temp, error=exc.message)
                        temp = _upload_name(plan.remote_path, UploadTemp.VISIBLE, self._temp_suffix)
                        sent = await self._store_named(session, temp, upload)
                        session.quirks.hidden_temp = False
                    if sent != local.st_size:
                        raise PoolerError(
                            ErrorCode.SIZE_MISMATCH,
                            f"sent {sent} bytes, the file had {local.st_size}",
                        )
                    size_check = _SizeCheck(sent) if options.verify_size else None
                    if size_check is not None and options.preserve_mtime:
                        if "SIZE" in session.features:  # before MFMT, so not with the RNFR
                            size_check(await _after_transfer(session.size(temp), "SIZE"))
                        size_check = None
                    try:
                        if options.preserve_mtime:
                            moment = datetime.fromtimestamp(local.st_mtime, UTC)
                            await _set_mtime(session, temp, moment)
                        if temp != plan.remote_path:
                            replace = conflict is ConflictPolicy.OVERWRITE
                            rename = session.rename_over if replace else session.rename
                            await rename(temp, plan.remote_path, size_check=size_check)
                        elif size_check is not None and "SIZE" in session.features:
                            # upload_temp = none: no rename to check the size with
                            size_check(await _after_transfer(session.size(temp), "SIZE"))
                    except FTPError as exc:
                        if exc.code is not ErrorCode.FILE_NOT_FOUND:
                            raise
                        # Never FILE_NOT_FOUND for the file just stored: the server
                        # took it away (an upload drop box that moves files at once).
                        raise PoolerError(
                            ErrorCode.PERMANENT,
                            f"{exc.message} (the file just uploaded is gone from {temp})",
                        ) from exc
                except BaseException as exc:
                    stale = isinstance(exc, FTPError) and exc.stale_session  # nothing was stored
                    # The final name itself (upload_temp = none) is ours only once STOR began.
                    ours = temp != plan.remote_path or session.transfer_began
                    orphan = ours and not stale and not await _discard_remote(session, temp)
                    raise
                source = await self._after_transfer(plan, task, session)
        finally:
            if orphan:
                replaced = plan.remote_path if conflict is ConflictPolicy.OVERWRITE else None
                await self._discard_with_new_session(plan.remote, temp, replaced)
        return _Outcome(sent, source=source)

    async def _discard_with_new_session(
        self, remote: PinnedConnection, temp: str, replaced: str | None
    ) -> None:
        """Delete an upload's temporary file after its session broke (bounded, best effort).

        ``replaced``: the destination, when the upload could replace it
        (``rename_over``): the old file that session may have left aside is
        first moved back (:meth:`FTPSession.restore_aside`), so a lost session
        never leaves the destination without a file.
        """
        timeouts = remote.config.timeouts
        replies = 1 if replaced is None else 3  # DELE; RNFR and RNTO first
        bound = timeouts.connect + replies * timeouts.reply
        with trio.CancelScope(shield=True), trio.move_on_after(bound):
            try:
                async with self._pool.session(remote) as session:
                    if replaced is not None and temp != replaced:
                        await session.restore_aside(temp, replaced)
                    await _discard_remote(session, temp)
            except PoolerError:
                log.warning("transfer.temp_file_left", connection=remote.conn_id, path=temp)

    async def _store(self, session: FTPSession, temp: str, source: _UploadSource) -> int:
        """STOR into a directory made with ``mkdir -p`` once per directory and connection.

        A directory remembered as made may have been removed on the server
        since: if STOR is refused, the directory is made again and STOR
        tried once more before the refusal counts.
        """
        directory = posixpath.dirname(temp)
        if directory in ("", "/"):
            return await self._send(session, temp, source)
        known = self._remote_dirs.setdefault(source.remote_id, RemoteDirectories())
        if not known.known(directory):
            await known.ensure(directory, session.makedirs)
            return await self._send(session, temp, source)
        try:
            return await self._send(session, temp, source)
        except FTPError as exc:
            if exc.reply is None or session.broken:
                raise
        known.forget(directory)
        return await self._store(session, temp, source)

    async def _send(self, session: FTPSession, temp: str, source: _UploadSource) -> int:
        """One STOR of the source, read through its volume's I/O, its bytes counted to the
        observer (:class:`_AcceptedUpload`)."""
        chunks = source.root.read_chunks(source.path, source.size)
        if self._observer is None:
            return await session.store(temp, chunks, check=source.check)
        counter = _AcceptedUpload(self._observer, source.remote_id, session)
        sent = await session.store(temp, counter.count(chunks), check=source.check)
        counter.flush()
        return sent

    async def _store_named(self, session: FTPSession, temp: str, source: _UploadSource) -> int:
        """:meth:`_store`; a refusal names the path refused (``550 Permission denied.``
        does not, and the path is a temporary name the task never mentioned)."""
        try:
            return await self._store(session, temp, source)
        except FTPError as exc:
            if exc.reply is not None and temp not in exc.message:
                exc.set_message(f"{exc.message} (path: {temp})")
            raise


def _counted_sink(write: Sink, observer: TransferObserver, remote_id: str) -> Sink:
    async def sink(chunk: memoryview | bytes | bytearray) -> None:
        await write(chunk)
        observer.bytes_moved(Operation.DOWNLOAD, remote_id, len(chunk))

    return sink


class _AcceptedUpload:
    """Counts an upload's bytes to the observer once the server accepted the STOR.

    Pipelined on plain TCP, a STOR's bytes go out before its 1xx
    (``FTPSession._transfer``); a server that then refuses the STOR (``553
    Prohibited file name``, ``550 Permission denied``) took none of them. So
    bytes sent are held back until the session saw the 1xx
    (``FTPSession.transfer_began``), or until :meth:`flush` after the final
    2xx; held bytes of a STOR refused before its 1xx are never counted. Bytes
    of a transfer the server accepted and that failed later (``426``) count:
    they moved.
    """

    def __init__(self, observer: TransferObserver, remote_id: str, session: FTPSession) -> None:
        self._observer = observer
        self._remote_id = remote_id
        self._session = session
        self._held = 0

    async def count(self, chunks: AsyncIterator[memoryview]) -> AsyncIterator[memoryview]:
        """``chunks``, each counted once the session asks for the next one (it was sent)."""
        async for chunk in chunks:
            count = len(chunk)
            yield chunk
            self._held += count
            if self._session.transfer_began:
                self.flush()

    def flush(self) -> None:
        """Count the bytes held back (the transfer was accepted)."""
        if self._held:
            self._observer.bytes_moved(Operation.UPLOAD, self._remote_id, self._held)
            self._held = 0


_SEPARATORS = re.compile(r"[/\\]")
"""What separates a remote path's segments: ``/``, and ``\\`` too, which Windows
servers (IIS FTP and others) accept as a separator."""


def _remote_path(connection: FTPConnection, path: str) -> str:
    """``path`` under the connection's ``base_path``, checked before anything is sent.

    Raises:
        PoolerError: PATH_NOT_ALLOWED for a ``..`` segment (between ``/`` or ``\\``:
            it could leave base_path), a path naming a directory (ending in ``/``,
            ``\\`` or ``/.``: the file's name is not guessed, as for a local
            path), CR, LF or NUL, characters the connection's
            ``charset`` cannot encode (sent any other way, the server would store
            or look for another name), or a path too long to send.
    """
    segments = _SEPARATORS.split(path)
    if ".." in segments:
        raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"'..' in remote path {path!r}")
    if segments[-1] in ("", "."):
        raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, f"{path!r} names a directory, not a file")
    if not is_safe_argument(path):
        raise PoolerError(ErrorCode.PATH_NOT_ALLOWED, "remote path holds CR, LF or NUL")
    full = path
    if connection.base_path:
        full = f"{connection.base_path.rstrip('/')}/{path.lstrip('/')}"
    charset = connection.ftp.wire_charset
    if not encodable(full, charset):
        raise PoolerError(
            ErrorCode.PATH_NOT_ALLOWED,
            f"remote path {path!r} has characters the connection's charset"
            f" {connection.ftp.charset} cannot encode",
        )
    if not path_fits(full, charset):
        raise PoolerError(
            ErrorCode.PATH_NOT_ALLOWED,
            f"remote path longer than {MAX_PATH_BYTES} bytes (servers refuse longer command lines)",
        )
    return full


def _ftp_ids(connections: Connections) -> set[str]:
    return {c.id for c in connections.values() if isinstance(c, FTPConnection)}


async def _after_transfer(query: Awaitable[_T], verb: str) -> _T | None:
    """A metadata query (SIZE, MDTM) about a file just transferred; ``None`` if it failed.

    The transfer's own final reply already said the bytes arrived; a refusal
    here (``550 ...: Operation not permitted`` to MDTM, seen on vsftpd-based
    appliances) or a session lost afterwards must neither fail the task as
    FILE_NOT_FOUND for a file just read nor cause a second transfer. The task
    completes without that datum, with a warning (docs/ftp-client.md).
    """
    try:
        return await query
    except FTPError as exc:
        log.warning("transfer.metadata_unavailable", command=verb, error=exc.message)
        return None


async def _set_mtime(session: FTPSession, path: str, moment: datetime) -> None:
    """Give an upload's stored file its source's time; a refusal is a warning, not a failure.

    The file has landed (STOR's final 2xx): as a refused MDTM after a download
    (:func:`_after_transfer`), a refused MFMT (``550 Permission denied``, ``500``,
    vsftpd with ``mdtm_write=NO`` taking the time for part of the name) leaves the
    upload without its time, with ``transfer.metadata_unavailable`` logged, and the
    rename goes on: it, not this refusal, tells whether the file is really gone.
    An error that left the session out of step (421, a timeout) is raised.
    """
    try:
        await session.set_mtime(path, moment)
    except FTPError as exc:
        if exc.reply is None or session.broken:
            raise
        verb = "MFMT" if "MFMT" in session.features else "MDTM"
        log.warning("transfer.metadata_unavailable", command=verb, error=exc.message)


async def _remote_exists(session: FTPSession, path: str) -> bool:
    """Whether SIZE finds ``path``: a 2xx (even one whose size we cannot read) says yes."""
    try:
        await session.size(path)
    except FTPError as exc:
        if exc.code is ErrorCode.FILE_NOT_FOUND:
            return False
        if exc.reply is not None and exc.reply.is_success:
            return True
        raise
    return True


@dataclass(frozen=True)
class _SizeCheck:
    """Raises SIZE_MISMATCH when the server's size of an upload is not the bytes sent."""

    sent: int

    def __call__(self, stored: int | None) -> None:
        if stored is not None and stored != self.sent:
            raise PoolerError(
                ErrorCode.SIZE_MISMATCH, f"sent {self.sent} bytes, the server stored {stored}"
            )


async def _discard_remote(session: FTPSession, temp: str) -> bool:
    """Delete an upload's temp file if the session is still in step; whether that was possible.

    A refusal counts as done (``550``: gone already, or not ours to delete) but for
    ``501``/``503``, "bad sequence of commands": the DELE never ran (proftpd says
    ``501`` to anything but RNTO after an RNFR), so a new session tries again.
    """
    if session.broken or session.closed:
        return False
    with trio.CancelScope(shield=True), trio.move_on_after(session.config.timeouts.reply):
        try:
            await session.delete(temp)
        except FTPError as exc:
            return exc.reply is not None and exc.reply.code not in (501, 503)
    return not session.broken


def _temp_form(configured: UploadTemp, quirks: ServerQuirks) -> UploadTemp:
    """The temporary name to upload under: the configured one, but the visible
    form for a server known to refuse hidden names (:attr:`ServerQuirks.hidden_temp`)."""
    if configured is UploadTemp.HIDDEN and not quirks.hidden_temp:
        return UploadTemp.VISIBLE
    return configured


def _upload_name(final: str, form: UploadTemp, suffix: str) -> str:
    """Where an upload to ``final`` is stored first (``final`` itself for ``none``)."""
    if form is UploadTemp.NONE:
        return final
    target = PurePosixPath(final)
    return str(target.with_name(temp_name(target.name, suffix, hidden=form is UploadTemp.HIDDEN)))


def _refuses_name(exc: FTPError, session: FTPSession) -> bool:
    """Whether STOR was refused for lack of rights (a 55x: ``553 Prohibited file name``
    from pure-ftpd ``-x``, ``550 Permission denied.`` from vsftpd ``deny_file``),
    with nothing stored and the session still in step."""
    reply = exc.reply
    return (
        exc.code is ErrorCode.PERMISSION_DENIED
        and reply is not None
        and reply.code // 10 == 55
        and not session.broken
        and not session.transfer_began
    )


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
