"""Tasks through the transfer engine, scheduled by connection: what ``copy`` and the worker share.

A task submitted here is planned at once (:meth:`TransferEngine.prepare`; a
task that cannot be planned gets its result at once) and queued for its FTP
connection. Runners (:class:`~ftp_pooler.scheduling.runners.Runners`) make
one attempt at a time; a retry goes back to its connection's queue with a
not-before time. While the connection's server is marked down the task
waits, at most its retry budget (:meth:`TransferEngine.patience`), then fails
with ``CONNECTION_ERROR`` (retryable). Every task's one result goes to the
``finished`` callback with the caller's token; what raises unexpectedly goes to
``crashed`` instead, so a bug ends one task, never the process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog
import trio

from ftp_pooler.contract import Result, Task
from ftp_pooler.transfer.engine import Transfer, TransferEngine
from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.scheduling.runners import Runners
from ftp_pooler.scheduling.scheduler import QueueStats

T = TypeVar("T")

log = structlog.get_logger(__name__)


@dataclass(eq=False, slots=True)
class _Job(Generic[T]):
    transfer: Transfer
    token: T
    patience: float
    claimed: bool = False


class ScheduledTransfers(Generic[T]):
    """Runs submitted tasks on ``runners`` runners, by connection; one result each.

    Args:
        engine: Plans and attempts the tasks; its pool says what each
            connection can take (:meth:`SessionPool.allowance`).
        runners: Attempts running at once, at most (``copy --concurrency``,
            ``worker.max_inflight``); the pod's session cap bounds them too.
        finished: Receives each task's one result, the token it was submitted
            with, and the task.
        crashed: Receives, instead, what planning or an attempt raised that
            nothing expected (a bug), with the token and the task; it makes the
            task's one result (:meth:`Boundary.crashed
            <ftp_pooler.transfer.boundary.Boundary.crashed>`).
        claim: Asked once before a task's first attempt (or its expiry); False
            drops the task without a result (the worker: its partition was
            revoked, the task is redelivered to the new owner).
        waited: Told at each start how long the task was ready but queued.
    """

    def __init__(
        self,
        engine: TransferEngine,
        *,
        runners: int,
        finished: Callable[[Result, T, Task], None],
        crashed: Callable[[Exception, T, Task], None],
        claim: Callable[[T], bool] = lambda token: True,
        waited: Callable[[str, float], None] = lambda connection, seconds: None,
    ) -> None:
        pool = engine.pool
        self._engine = engine
        self._count = runners
        self._finished = finished
        self._crashed = crashed
        self._claim = claim
        self._runners: Runners[_Job[T]] = Runners(
            pool.allowance,
            total_limit=pool.limits.max_sessions_per_pod,
            attempt=self._attempt,
            expired=self._expired,
            dropped=self._dropped,
            waited=waited,
        )

    def __len__(self) -> int:
        """Tasks queued (not running)."""
        return len(self._runners)

    def stats(self) -> dict[str, QueueStats]:
        """Per connection id: tasks ready, delayed by a backoff, and running."""
        return self._runners.stats()

    def submit(self, task: Task, token: T) -> None:
        """Plan ``task`` and queue it (or hand over its result at once if it cannot start).

        Raises:
            trio.ClosedResourceError: After :meth:`close` or :meth:`stop`.
        """
        try:
            transfer = self._engine.prepare(task)
            patience = 0.0 if isinstance(transfer, Result) else self._engine.patience(transfer)
        except Exception as exc:
            self._crashed(exc, token, task)
            return
        if isinstance(transfer, Result):
            self._finished(transfer, token, task)
            return
        self._runners.push(
            transfer.connection,
            _Job(transfer, token, patience),
            expires_at=trio.current_time() + patience,
        )

    async def wait_room(self, limit: int) -> None:
        """Wait until fewer than ``limit`` tasks are queued (a reader's memory bound)."""
        await self._runners.wait_room(limit)

    async def run(self) -> None:
        """Run until :meth:`close` and every task is finished, or :meth:`stop`."""
        await self._runners.run(self._count)

    def close(self) -> None:
        """No more tasks: :meth:`run` returns when the ones submitted are finished."""
        self._runners.close()

    def stop(self) -> int:
        """Start no more attempts; tasks not running now get no result. Returns how many.

        Running attempts finish and their tasks' results are handed over; a
        retry one of them asks for is dropped instead.
        """
        return len(self._runners.stop())

    async def _attempt(self, job: _Job[T]) -> float | None:
        if not job.claimed:
            if not self._claim(job.token):
                return None
            job.claimed = True
        try:
            outcome = await self._engine.attempt(job.transfer)
        except Exception as exc:
            self._crashed(exc, job.token, job.transfer.task)
            return None
        if isinstance(outcome, Result):
            self._finished(outcome, job.token, job.transfer.task)
            return None
        return trio.current_time() + outcome

    def _expired(self, job: _Job[T]) -> None:
        if not job.claimed and not self._claim(job.token):
            return
        transfer = job.transfer
        error = PoolerError(
            ErrorCode.CONNECTION_ERROR,
            f"the server of connection {transfer.connection!r} is marked down; gave up after"
            f" waiting {job.patience:.0f} s for it (the task's retry budget)",
        )
        log.warning(
            "transfer.gave_up",
            task_id=transfer.task.task_id,
            connection=transfer.connection,
            attempts=transfer.attempts,
        )
        self._finished(self._engine.give_up(transfer, error), job.token, transfer.task)

    def _dropped(self, job: _Job[T]) -> None:
        log.info(
            "transfer.dropped", task_id=job.transfer.task.task_id, attempts=job.transfer.attempts
        )
