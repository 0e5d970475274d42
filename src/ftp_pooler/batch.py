"""Batch mode: tasks from a JSON-lines file, results to a JSON-lines file, no Kafka.

``ftp-pooler copy`` is a thin wrapper around :func:`copy_tasks`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import trio

from ftp_pooler.boundary import result_for_message
from ftp_pooler.contract import Result
from ftp_pooler.engine import TransferEngine

READ_HINT_BYTES = 256 * 1024
"""Task lines read per hop to a worker thread (reading a pipe could block the loop)."""


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


async def _read_lines(source: BinaryIO, send: trio.MemorySendChannel[tuple[int, bytes]]) -> None:
    """Non-blank lines with their line numbers (from 1). A read waiting on a pipe is
    abandoned when cancelled (a stopped copy must not wait for its producer)."""
    number = 0
    async with send:
        while lines := await trio.to_thread.run_sync(
            source.readlines, READ_HINT_BYTES, abandon_on_cancel=True
        ):
            for raw in lines:
                number += 1
                if raw.strip():
                    await send.send((number, raw.removesuffix(b"\n")))


async def copy_tasks(
    source: BinaryIO,
    results: BinaryIO,
    engine: TransferEngine,
    *,
    concurrency: int,
    worker: str,
    on_result: Callable[[CopySummary], None] | None = None,
) -> CopySummary:
    """Run every task line of ``source`` through ``engine``, ``concurrency`` at a time.

    Each task line (any bytes but blank; the message is the line without its
    ``\\n``) yields exactly one result line in ``results``, in the order the
    tasks finish. A line that is not a valid task yields a failure result with
    ``INVALID_MESSAGE`` whose message starts with its line number; one whose
    handling raised, ``UNKNOWN_ERROR`` (see :func:`~ftp_pooler.boundary.result_for_message`).
    """
    summary = CopySummary()
    send, receive = trio.open_memory_channel[tuple[int, bytes]](concurrency * 4)

    def publish(result: Result) -> None:
        results.write(result.to_json() + b"\n")
        summary.add(result)
        if on_result is not None:
            on_result(summary)

    async def run_tasks(receive: trio.MemoryReceiveChannel[tuple[int, bytes]]) -> None:
        async with receive:
            async for number, raw in receive:
                publish(await result_for_message(raw, engine.run, worker=worker, line=number))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_lines, source, send)
        for _ in range(concurrency):
            nursery.start_soon(run_tasks, receive.clone())
        await receive.aclose()
    results.flush()
    return summary
