"""Batch mode: tasks from a JSON-lines file, results to a JSON-lines file, no Kafka.

``ftp-pooler copy`` is a thin wrapper around :func:`copy_tasks`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import trio

from ftp_pooler.boundary import Boundary, Message
from ftp_pooler.contract import Result, Task
from ftp_pooler.engine import TransferEngine
from ftp_pooler.scheduling.transfers import ScheduledTransfers

READ_HINT_BYTES = 256 * 1024
"""Task lines read per hop to a worker thread (reading a pipe could block the loop)."""

SUBMIT_BATCH = 64
"""Task lines parsed and queued between checkpoints (parsing a whole read at once
kept the runners from starting, and the server idle, for tens of milliseconds)."""

MAX_BUFFERED_TASKS = 10_000
"""Tasks read ahead and waiting for their connection, at most (``worker.max_buffered_tasks``)."""


@dataclass
class CopySummary:
    """Counts of what a batch did."""

    tasks: int = 0
    completed: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def add(self, result: Result) -> None:
        self.tasks += 1
        self.bytes += result.bytes_transferred
        if result.status == "completed":
            self.completed += 1
        elif result.status == "skipped":
            self.skipped += 1
        else:
            self.failed += 1

    def line(self) -> str:
        seconds = max(self.elapsed, 1e-9)
        return (
            f"{self.tasks} tasks: {self.completed} completed, {self.skipped} skipped, "
            f"{self.failed} failed; {self.bytes / 1e6:.1f} MB in {seconds:.1f} s "
            f"({self.tasks / seconds:.0f} files/s, {self.bytes / 1e6 / seconds:.1f} MB/s)"
        )


async def copy_tasks(
    source: BinaryIO,
    results: BinaryIO,
    engine: TransferEngine,
    *,
    concurrency: int,
    worker: str,
    on_result: Callable[[CopySummary], None] | None = None,
    max_buffered: int = MAX_BUFFERED_TASKS,
) -> CopySummary:
    """Run every task line of ``source`` through ``engine``, ``concurrency`` attempts at a time.

    Tasks are scheduled by connection (:mod:`ftp_pooler.scheduling`): a slow or
    dead server's tasks wait in its own queue while the others run. Lines are
    read ahead while fewer than ``max_buffered`` tasks wait (a read waiting on
    a pipe is abandoned when cancelled: a stopped copy must not wait for its
    producer). Each task line (any bytes but blank; the message is the line
    without its ``\n``) yields exactly one result line in ``results``, in the
    order the tasks finish. A line that is not a valid task yields a failure
    result with ``INVALID_MESSAGE`` whose message starts with its line number;
    one whose handling raised, ``UNKNOWN_ERROR`` (see
    :class:`~ftp_pooler.boundary.Boundary`).
    """
    summary = CopySummary()

    def publish(result: Result) -> None:
        results.write(result.to_json() + b"\n")
        summary.add(result)
        if on_result is not None:
            on_result(summary)

    boundary = Boundary(worker=worker)

    def finished(result: Result, message: Message, task: Task) -> None:
        publish(boundary.settle(result, message, task))

    def crashed(exc: Exception, message: Message, task: Task) -> None:
        publish(boundary.crashed(exc, message, task.task_id))

    transfers: ScheduledTransfers[Message] = ScheduledTransfers(
        engine, runners=concurrency, finished=finished, crashed=crashed
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transfers.run)
        number = 0
        try:
            while lines := await trio.to_thread.run_sync(
                source.readlines, READ_HINT_BYTES, abandon_on_cancel=True
            ):
                for raw in lines:
                    number += 1
                    if number % SUBMIT_BATCH == 0:
                        await trio.lowlevel.checkpoint()  # let the runners start meanwhile
                    if not raw.strip():
                        continue
                    message = Message(raw.removesuffix(b"\n"), line=number)
                    admitted = boundary.admit(message)
                    if isinstance(admitted, Result):
                        publish(admitted)
                    else:
                        transfers.submit(admitted, message)
                await transfers.wait_room(max_buffered)
        finally:
            transfers.close()
    results.flush()
    return summary
