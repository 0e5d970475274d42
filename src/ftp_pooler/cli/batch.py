"""Batch mode: tasks from a JSON-lines file, results to a JSON-lines file, no Kafka.

``ftp-pooler copy`` is a thin wrapper around :class:`BatchCopy`: it adds the
signals, the progress display and the exit status.
"""

from __future__ import annotations

import io
import os
import stat
import time
from collections.abc import Callable, Iterator
from functools import partial
from dataclasses import dataclass, field
from typing import BinaryIO

import trio

from ftp_pooler.transfer.boundary import Boundary, Message
from ftp_pooler.contract import MAX_MESSAGE_BYTES, Result, Task
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.scheduling.transfers import ScheduledTransfers

READ_BYTES = 256 * 1024
"""Bytes asked for per read of the tasks file (one hop to a worker thread: reading a
pipe could block the loop). A read returns what is there: a pipe's lines start as
they arrive."""

SUBMIT_BATCH = 64
"""Task lines parsed and queued between checkpoints (parsing a whole read at once
kept the runners from starting, and the server idle, for tens of milliseconds)."""

MAX_BUFFERED_TASKS = 10_000
"""Tasks read ahead and waiting for their connection, at most (``worker.max_buffered_tasks``)."""


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a tasks file, without its ``\\n``.

    Attributes:
        head: The line, or its first ``limit + 1`` bytes when it is longer.
        size: Bytes in the whole line.
    """

    head: bytes
    size: int


class LineSplitter:
    """Cuts bytes into lines, keeping at most ``limit + 1`` bytes of each (pure, no I/O).

    A line longer than ``limit`` is refused whole by its reader, which needs only
    its start (for the result's ``input`` and ``task_id``) and its size; keeping
    just ``limit + 1`` bytes of it bounds the memory a huge file given by mistake
    costs to one chunk plus the limit, whatever its size.

    Args:
        limit: Bytes a line may have (``MAX_MESSAGE_BYTES``).
    """

    def __init__(self, limit: int = MAX_MESSAGE_BYTES) -> None:
        self._keep = limit + 1
        self._head = bytearray()
        self._size = 0

    def feed(self, data: bytes) -> list[Line]:
        """The lines that ``data`` completes, in order (a partial last line is kept)."""
        lines: list[Line] = []
        keep = self._keep
        start = 0
        end = data.find(b"\n")
        while end >= 0:
            if not self._size and end - start <= keep:
                lines.append(Line(data[start:end], end - start))  # the common case: no copy
            else:
                self._add(data, start, end)
                lines.append(Line(bytes(self._head), self._size))
                self._head.clear()
                self._size = 0
            start = end + 1
            end = data.find(b"\n", start)
        if start < len(data):
            self._add(data, start, len(data))
        return lines

    def end(self) -> Line | None:
        """The last line if it had no ``\\n`` (at the end of the input), else None."""
        if not self._size:
            return None
        line = Line(bytes(self._head), self._size)
        self._head.clear()
        self._size = 0
        return line

    def _add(self, data: bytes, start: int, stop: int) -> None:
        room = self._keep - len(self._head)
        if room > 0:
            self._head += data[start : min(stop, start + room)]
        self._size += stop - start


class ChunkReader:
    """Reads what ``source`` has now (up to :data:`READ_BYTES`) into one reusable buffer.

    :meth:`fill` blocks (run it in a thread); :meth:`chunk` copies what it read
    out, on the caller's thread. The thread allocates nothing: each thread's
    allocations would land in its own malloc arena, and a big input read by a
    changing set of threads kept tens of megabytes in them. ``os.readv`` on
    the file descriptor when there is one: a thread abandoned while waiting on
    a pipe (a stopped copy) then holds no lock of the file object, which the
    interpreter takes at exit (holding it aborted the process with "could not
    acquire lock ... at interpreter shutdown"); else ``readinto1``.
    """

    def __init__(self, source: BinaryIO) -> None:
        self._buffer = bytearray(READ_BYTES)
        self._view = memoryview(self._buffer)
        self._fill: Callable[[], int]
        try:
            fd = source.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            self._fill = partial(source.readinto1, self._buffer)  # type: ignore[attr-defined]
        else:
            self._fill = partial(os.readv, fd, [self._buffer])

    def fill(self) -> int:
        """Read into the buffer; the bytes read (0 at the end of the input)."""
        return self._fill()

    def chunk(self, count: int) -> bytes:
        """The ``count`` bytes :meth:`fill` read, copied out."""
        return bytes(self._view[:count])


def read_lines(source: BinaryIO, limit: int = MAX_MESSAGE_BYTES) -> Iterator[Line]:
    """Every line of ``source`` (blank ones too), read in chunks (see :class:`LineSplitter`)."""
    splitter = LineSplitter(limit)
    chunks = ChunkReader(source)
    while count := chunks.fill():
        yield from splitter.feed(chunks.chunk(count))
    last = splitter.end()
    if last is not None:
        yield last


def count_task_lines(source: BinaryIO) -> int:
    """Non-blank lines of ``source`` (as :class:`BatchCopy` counts task lines), read in
    pieces of at most 256 KiB: a huge line costs no more memory than that."""
    count = 0
    blank = True
    while piece := source.readline(READ_BYTES):
        if blank and piece.strip():
            blank = False
        if piece.endswith(b"\n"):
            count += not blank
            blank = True
    return count + (not blank)


def write_whole_line(stream: BinaryIO, line: bytes) -> None:
    """Write ``line`` (ending in ``\\n``) to ``stream`` and flush it: all of it, or none.

    Given an unbuffered stream (``open(..., buffering=0)``, ``sys.stdout.buffer.raw``),
    each ``write`` is one system call that says how many bytes it took, and a write
    that fails part-way (a full disk: ``write(2)`` takes what fits, the next call
    fails with ENOSPC) is undone: a regular file is cut back to where the line
    began, so that it only ever holds whole lines for a reader's ``json.loads``.
    A buffered stream takes the line whole and fails in ``flush``; what reached
    the file is then unknown, and nothing is cut.

    Raises:
        OSError: The line could not be written (the file holds none of it).
    """
    view = memoryview(line)
    written = 0
    try:
        while written < len(line):
            written += stream.write(view[written:])
        stream.flush()
    except OSError:
        if written and not hasattr(stream, "raw"):  # unbuffered: ``written`` reached the file
            _cut_back(stream, written)
        raise


def _cut_back(stream: BinaryIO, count: int) -> None:
    """Remove the last ``count`` bytes written to ``stream``, when it is a regular file."""
    try:
        fd = stream.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        end = os.lseek(fd, 0, os.SEEK_CUR) - count
        os.ftruncate(fd, end)
        os.lseek(fd, end, os.SEEK_SET)
    except (OSError, ValueError, io.UnsupportedOperation):
        return


@dataclass
class CopySummary:
    """Counts of what a batch did.

    Attributes:
        tasks: Tasks finished (every result, whatever its status).
        completed: Results written with status completed; ``skipped`` and ``failed`` likewise.
        unrecorded: Tasks finished after the results could no longer be written:
            their result is in no line (counted in ``tasks``, not by status).
        cancelled: Tasks stopped by a signal (or a results write error) after an
            attempt had started: running at the drain deadline, or waiting for
            a retry. They get no result line.
        not_started: Task lines that never had an attempt and got no result,
            None when unknown (stdin not read to its end).
        stopped: Whether the copy was stopped before its end.
    """

    tasks: int = 0
    completed: int = 0
    skipped: int = 0
    failed: int = 0
    unrecorded: int = 0
    bytes: int = 0
    cancelled: int = 0
    not_started: int | None = 0
    stopped: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def add(self, result: Result, *, recorded: bool = True) -> None:
        """Count a finished task; ``recorded``: whether its result line was written."""
        self.tasks += 1
        self.bytes += result.bytes_transferred
        if not recorded:
            self.unrecorded += 1
        elif result.status == "completed":
            self.completed += 1
        elif result.status == "skipped":
            self.skipped += 1
        else:
            self.failed += 1

    def line(self) -> str:
        """``8 tasks: 8 completed, 0 skipped, 0 failed; 1.0 MB in 2.0 s (...)``; when
        stopped, ``... 0 failed, 2 cancelled, 4 not started; ...``; when results could
        not be written, ``... 0 failed, 3 finished without a result line, ...``."""
        seconds = max(self.elapsed, 1e-9)
        counts = f"{self.completed} completed, {self.skipped} skipped, {self.failed} failed"
        if self.unrecorded:
            counts += f", {self.unrecorded} finished without a result line"
        if not self.stopped:
            head = f"{self.tasks} tasks: {counts}"
        elif self.not_started is None:
            head = (
                f"{self.tasks + self.cancelled}+ tasks: {counts}, {self.cancelled} cancelled,"
                " unknown not started (stdin not read to its end)"
            )
        else:
            total = self.tasks + self.cancelled + self.not_started
            head = (
                f"{total} tasks: {counts}, {self.cancelled} cancelled,"
                f" {self.not_started} not started"
            )
        return (
            f"{head}; {self.bytes / 1e6:.1f} MB in {seconds:.1f} s "
            f"({self.tasks / seconds:.0f} files/s, {self.bytes / 1e6 / seconds:.1f} MB/s)"
        )


class BatchCopy:
    """Run every task line of ``source`` through ``engine``, ``concurrency`` attempts at a time.

    Tasks are scheduled by connection (:mod:`ftp_pooler.scheduling`): a slow or
    dead server's tasks wait in its own queue while the others run. Lines are
    read as they arrive (a pipe's first task starts before its producer
    writes the second) and ahead while fewer than ``max_buffered`` tasks wait
    (a read waiting on a pipe is abandoned when cancelled: a stopped copy must
    not wait for its producer). Each task line (any bytes but blank; the
    message is the line without its ``\\n``) yields exactly one result line in
    ``results``, written and flushed as the task ends (whole, or not at all on an
    unbuffered file: :func:`write_whole_line`), in the order the tasks finish,
    unless the copy is stopped first (:meth:`stop`). A line that is not a valid
    task yields a failure result with ``INVALID_MESSAGE`` whose message
    starts with its line number (of a line over the 1 MiB limit only the
    first 1 MiB + 1 byte is kept in memory); one whose handling raised,
    ``UNKNOWN_ERROR`` (see :class:`~ftp_pooler.transfer.boundary.Boundary`).

    Args:
        on_result: Told the summary after each result.
        on_write_error: Told once when a result cannot be written (a full disk,
            a closed pipe); the copy has then stopped (:meth:`stop`), and later
            results are counted but not written.
        total_lines: Counts the non-blank lines of the whole input (a regular
            file), so that a stopped copy can say how many never started;
            without it that number is known only if the input was read to its end.
    """

    def __init__(
        self,
        source: BinaryIO,
        results: BinaryIO,
        engine: TransferEngine,
        *,
        concurrency: int,
        worker: str,
        on_result: Callable[[CopySummary], None] | None = None,
        on_write_error: Callable[[OSError], None] | None = None,
        max_buffered: int = MAX_BUFFERED_TASKS,
        total_lines: Callable[[], int] | None = None,
    ) -> None:
        self.summary = CopySummary()
        self.write_error: OSError | None = None
        self._source = source
        self._results = results
        self._on_result = on_result
        self._on_write_error = on_write_error
        self._max_buffered = max_buffered
        self._total_lines = total_lines
        self._boundary = Boundary(worker=worker)
        self._transfers: ScheduledTransfers[Message] = ScheduledTransfers(
            engine,
            runners=concurrency,
            finished=self._finished,
            crashed=self._crashed,
            claim=self._claim,
        )
        self._reading = trio.CancelScope()
        self._stopping = False
        self._at_eof = False
        self._lines = 0
        """Task (non-blank) lines read."""
        self._pending: set[int] = set()
        """Line numbers of tasks queued or running, without a result yet."""
        self._started: set[int] = set()
        """Those of them whose first attempt has started."""

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Read no more lines and start no more attempts; running attempts go on.

        :meth:`run` returns once they are over (cancel it to cut them short).
        Queued tasks get no result (counted as not started), and neither does a
        task whose attempt asks for a retry from now on (counted as cancelled).
        """
        if self._stopping:
            return
        self._stopping = True
        self.summary.stopped = True
        self._reading.cancel()
        self._transfers.stop()

    async def run(self) -> CopySummary:
        """Copy until the input ends and every task has its result, or :meth:`stop`."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._transfers.run)
                try:
                    with self._reading:
                        await self._read()
                finally:
                    self._transfers.close()
        finally:
            self._count_unfinished()
        return self.summary

    async def _read(self) -> None:
        splitter = LineSplitter(self._boundary.max_bytes)
        chunks = ChunkReader(self._source)
        number = 0
        while count := await trio.to_thread.run_sync(chunks.fill, abandon_on_cancel=True):
            for line in splitter.feed(chunks.chunk(count)):
                number += 1
                if number % SUBMIT_BATCH == 0:
                    await trio.lowlevel.checkpoint()  # let the runners start meanwhile
                self._submit(line, number)
            await self._transfers.wait_room(self._max_buffered)
        last = splitter.end()
        if last is not None:
            self._submit(last, number + 1)
        self._at_eof = True

    def _submit(self, line: Line, number: int) -> None:
        if line.size == len(line.head) and not line.head.strip():
            return
        self._lines += 1
        if self._stopping:  # the rest of a read after a stop from a results write error
            return
        size = line.size if line.size > len(line.head) else None
        message = Message(line.head, line=number, size=size)
        admitted = self._boundary.admit(message)
        if isinstance(admitted, Result):
            self._publish(admitted)
        else:
            self._pending.add(number)
            self._transfers.submit(admitted, message)

    def _claim(self, message: Message) -> bool:
        assert message.line is not None
        self._started.add(message.line)
        return True

    def _finished(self, result: Result, message: Message, task: Task) -> None:
        self._done(message)
        self._publish(self._boundary.settle(result, message, task))

    def _crashed(self, exc: Exception, message: Message, task: Task) -> None:
        self._done(message)
        self._publish(self._boundary.crashed(exc, message, task.task_id))

    def _done(self, message: Message) -> None:
        assert message.line is not None
        self._pending.discard(message.line)
        self._started.discard(message.line)

    def _publish(self, result: Result) -> None:
        recorded = False
        if self.write_error is None:
            try:
                # flushed: a crash, even SIGKILL, leaves the finished tasks' record
                write_whole_line(self._results, result.to_json() + b"\n")
                recorded = True
            except OSError as exc:
                self.write_error = exc
                self.stop()
                if self._on_write_error is not None:
                    self._on_write_error(exc)
        self.summary.add(result, recorded=recorded)
        if self._on_result is not None:
            self._on_result(self.summary)

    def _count_unfinished(self) -> None:
        """After a stop: how many tasks were cut short, and how many never started."""
        if not self._stopping:
            return
        summary = self.summary
        summary.cancelled = len(self._started)
        if self._total_lines is not None:
            lines = self._total_lines()
        elif self._at_eof:
            lines = self._lines
        else:
            summary.not_started = None
            return
        summary.not_started = max(lines - summary.tasks - summary.cancelled, 0)


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
    """Run every task line of ``source`` through ``engine`` to its end (see :class:`BatchCopy`).

    Raises:
        OSError: A result could not be written.
    """
    copy = BatchCopy(
        source,
        results,
        engine,
        concurrency=concurrency,
        worker=worker,
        on_result=on_result,
        max_buffered=max_buffered,
    )
    summary = await copy.run()
    if copy.write_error is not None:
        raise copy.write_error
    return summary
