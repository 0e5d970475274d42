"""Progress of ``ftp-pooler copy``: counted as tasks finish and bytes move, shown while it runs.

:class:`CopyProgress` holds the counts. The engine reports bytes to it as
they move (it is a :class:`~ftp_pooler.transfer.engine.TransferObserver`), the copy
loop reports each finished task, and the CLI sets the total once it has
counted the task file's lines. :meth:`CopyProgress.snapshot` turns the counts
into what is shown (rates over a sliding window, an ETA) as a pure step.

Two displays read snapshots, driven by :func:`show_progress` on the Trio
thread (no display thread of its own):

- :class:`LiveDisplay`, on a terminal: a live line drawn by rich (a bar,
  done/total, bytes, rate, transfers in flight, ETA); log lines printed
  meanwhile appear above it.
- :class:`StatsLines`, anywhere else: a plain line every few seconds, for a
  log file or a CI job.

rich rather than our own drawing: it already handles the terminal's width,
redraws without flicker, hides the cursor and restores it, and prints other
output above the live line, all of which a hand-rolled ``\\r`` line got wrong
(it froze during a large file and garbled log lines).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import trio

from ftp_pooler.contract import Operation
from ftp_pooler.errors import ErrorCode

if TYPE_CHECKING:
    from ftp_pooler.cli.batch import CopySummary

RATE_WINDOW_SECONDS = 10.0
"""Rates and the ETA are measured over this much of the recent past."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a display shows, at one moment. Rates are per second; ``eta`` is in seconds."""

    done: int
    total: int | None
    completed: int
    skipped: int
    failed: int
    bytes: int
    in_flight: int
    retries: int
    elapsed: float
    bytes_rate: float
    files_rate: float
    eta: float | None

    def line(self) -> str:
        """One plain line, e.g. ``12/40 tasks (1 failed), 4 in flight, 3.2 MB, 1.1 MB/s, ...``."""
        total = "?" if self.total is None else str(self.total)
        parts = [f"{self.done}/{total} tasks"]
        if self.failed:
            parts[0] += f" ({self.failed} failed)"
        parts += [
            f"{self.in_flight} in flight",
            f"{format_bytes(self.bytes)}",
            f"{format_bytes(self.bytes_rate)}/s",
            f"{self.files_rate:.1f} files/s",
            f"ETA {format_duration(self.eta)}",
            f"elapsed {format_duration(self.elapsed)}",
        ]
        return ", ".join(parts)


def format_bytes(count: float) -> str:
    """Decimal units, as rclone and ``ls -h --si`` print them: ``999 B``, ``1.5 MB``."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    """``h:mm:ss``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@dataclass
class CopyProgress:
    """The counts of a running copy.

    Attributes:
        total: Task lines in the input, once known (``None`` for stdin).
        in_flight: Attempts running now (counted by the CLI's engine).
    """

    total: int | None = None
    in_flight: int = 0
    bytes: int = 0
    retries: int = 0
    done: int = 0
    completed: int = 0
    skipped: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    _samples: deque[tuple[float, int, int]] = field(default_factory=deque)

    def bytes_moved(self, operation: Operation, connection: str, count: int) -> None:
        """The engine's observer hook: ``count`` bytes moved."""
        self.bytes += count

    def retrying(self, operation: Operation, connection: str, error_code: ErrorCode) -> None:
        """The engine's observer hook: an attempt will be retried."""
        self.retries += 1

    def task_finished(self, summary: CopySummary) -> None:
        """The copy loop's hook: a result was written; ``summary`` has the counts so far."""
        self.done = summary.tasks
        self.completed = summary.completed
        self.skipped = summary.skipped
        self.failed = summary.failed

    def snapshot(self, now: float | None = None) -> Snapshot:
        """The counts at ``now`` (monotonic seconds), with rates over the last
        RATE_WINDOW_SECONDS. Each call is also a sample for later rates."""
        now = time.monotonic() if now is None else now
        samples = self._samples
        if not samples:
            samples.append((self.started, 0, 0))
        samples.append((now, self.bytes, self.done))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_SECONDS:
            samples.popleft()
        first_time, first_bytes, first_done = samples[0]
        span = now - first_time
        bytes_rate = (self.bytes - first_bytes) / span if span > 0 else 0.0
        files_rate = (self.done - first_done) / span if span > 0 else 0.0
        eta = None
        if self.total is not None and files_rate > 0:
            eta = max(self.total - self.done, 0) / files_rate
        elif self.total is not None and self.done >= self.total:
            eta = 0.0
        return Snapshot(
            done=self.done,
            total=self.total,
            completed=self.completed,
            skipped=self.skipped,
            failed=self.failed,
            bytes=self.bytes,
            in_flight=self.in_flight,
            retries=self.retries,
            elapsed=now - self.started,
            bytes_rate=bytes_rate,
            files_rate=files_rate,
            eta=eta,
        )


class StatsLines:
    """A plain stats line per :meth:`show`, for a stream that is not a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def start(self) -> None:
        """Nothing to set up."""

    def show(self, snapshot: Snapshot) -> None:
        stream = self._stream or sys.stderr
        stream.write(f"ftp-pooler: {snapshot.line()}\n")
        stream.flush()

    def stop(self) -> None:
        """Nothing to tear down; the CLI prints the summary."""


class LiveDisplay:
    """A live line on a terminal (rich), redrawn at each :meth:`show`.

    Between :meth:`start` and :meth:`stop`, whatever is written to
    ``sys.stderr`` (log lines) is printed above the live line. The line is
    removed at :meth:`stop`, before the summary is printed.
    """

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self._progress = Progress(
            TextColumn("{task.fields[counts]}"),
            BarColumn(bar_width=24),
            TaskProgressColumn(),
            TextColumn("{task.fields[rest]}"),
            console=Console(file=sys.stderr),
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=True,
        )
        self._task = self._progress.add_task("copy", total=None, counts="", rest="")

    def start(self) -> None:
        self._progress.start()

    def show(self, snapshot: Snapshot) -> None:
        total = "?" if snapshot.total is None else str(snapshot.total)
        counts = f"{snapshot.done}/{total} tasks"
        if snapshot.failed:
            counts += f" ({snapshot.failed} failed)"
        rest = (
            f"{format_bytes(snapshot.bytes)}, {format_bytes(snapshot.bytes_rate)}/s, "
            f"{snapshot.in_flight} in flight, ETA {format_duration(snapshot.eta)}"
        )
        fields: dict[str, Any] = {"counts": counts, "rest": rest}
        self._progress.update(self._task, completed=snapshot.done, total=snapshot.total, **fields)
        self._progress.refresh()

    def stop(self) -> None:
        self._progress.stop()


async def show_progress(
    progress: CopyProgress, display: LiveDisplay | StatsLines, interval: float
) -> None:
    """Show a snapshot every ``interval`` seconds until cancelled (the display stays started)."""
    while True:
        await trio.sleep(interval)
        display.show(progress.snapshot())
