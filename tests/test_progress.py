"""Pure steps behind the CLI: progress snapshots and their text, log levels, dry-run task checks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ftp_pooler.cli.batch import CopySummary, Line
from ftp_pooler.cli.checks import check_task_lines
from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.contract import Operation
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.errors import ErrorCode
from ftp_pooler.ftp.config import FTPConfig
from ftp_pooler.ftp.pool import SessionPool
from ftp_pooler.logs import shifted_level
from ftp_pooler.cli.progress import (
    RATE_WINDOW_SECONDS,
    CopyProgress,
    StatsLines,
    format_bytes,
    format_duration,
)


def test_bytes_and_durations_read_like_rclone() -> None:
    assert [format_bytes(n) for n in (0, 999, 1000, 1_500_000, 2.5e9, 7e15)] == [
        "0 B", "999 B", "1.0 kB", "1.5 MB", "2.5 GB", "7000.0 TB",
    ]  # fmt: skip
    assert [format_duration(s) for s in (None, 0, 59.6, 61, 3600 * 25 + 5)] == [
        "-", "0:00:00", "0:01:00", "0:01:01", "25:00:05",
    ]  # fmt: skip


def test_snapshot_counts_bytes_as_they_move_and_tasks_as_they_finish() -> None:
    progress = CopyProgress(total=10, started=100.0)
    progress.bytes_moved(Operation.DOWNLOAD, "a", 4000)
    progress.retrying(Operation.DOWNLOAD, "a", ErrorCode.TRANSIENT)
    progress.in_flight = 3
    first = progress.snapshot(now=102.0)
    assert (first.done, first.bytes, first.in_flight, first.retries) == (0, 4000, 3, 1)
    assert first.bytes_rate == 2000.0 and first.files_rate == 0.0 and first.eta is None

    summary = CopySummary(tasks=4, completed=3, failed=1)
    progress.task_finished(summary)
    progress.bytes_moved(Operation.UPLOAD, "a", 6000)
    second = progress.snapshot(now=104.0)
    # Rates since the start, still inside the window: 10000 B and 4 tasks in 4 s.
    assert (second.bytes_rate, second.files_rate) == (2500.0, 1.0)
    assert second.eta == 6.0  # 6 tasks left at 1 a second
    assert second.line() == (
        "4/10 tasks (1 failed), 3 in flight, 10.0 kB, 2.5 kB/s, 1.0 files/s,"
        " ETA 0:00:06, elapsed 0:00:04"
    )
    for second_ in range(105, 120):
        progress.snapshot(now=float(second_))
    progress.task_finished(CopySummary(tasks=6, completed=5, failed=1))
    later = progress.snapshot(now=120.0)
    # Only the last 10 s count now: 2 tasks and no bytes since t=110.
    assert (later.bytes_rate, later.files_rate) == (0.0, 0.2)


def test_rates_forget_what_is_older_than_the_window() -> None:
    progress = CopyProgress(started=0.0)
    progress.bytes_moved(Operation.DOWNLOAD, "a", 1_000_000)
    progress.snapshot(now=1.0)  # a burst at the start
    for second in range(2, 40):
        progress.snapshot(now=float(second))
    quiet = progress.snapshot(now=40.0)
    assert quiet.bytes_rate == 0.0
    assert quiet.total is None and quiet.eta is None
    assert quiet.line().startswith("0/? tasks, 0 in flight, 1.0 MB, 0 B/s")
    assert RATE_WINDOW_SECONDS < 39


def test_eta_is_zero_when_everything_is_done() -> None:
    progress = CopyProgress(total=2, started=0.0)
    progress.task_finished(CopySummary(tasks=2, completed=2))
    progress.snapshot(now=1.0)
    assert progress.snapshot(now=30.0).eta == 0.0


def test_stats_lines_are_plain_lines() -> None:
    stream = io.StringIO()
    StatsLines(stream).show(CopyProgress(total=3, started=0.0).snapshot(now=1.0))
    assert stream.getvalue().startswith("ftp-pooler: 0/3 tasks, 0 in flight")
    assert stream.getvalue().count("\n") == 1 and "\x1b" not in stream.getvalue()


@pytest.mark.parametrize(
    ("level", "shift", "expected"),
    [("WARNING", 1, "INFO"), ("WARNING", 2, "DEBUG"), ("info", 5, "DEBUG"),
     ("INFO", -1, "WARNING"), ("ERROR", -3, "CRITICAL"), ("INFO", 0, "INFO")],
)  # fmt: skip
def test_verbosity_shifts_the_level_within_bounds(level: str, shift: int, expected: str) -> None:
    assert shifted_level(level, shift) == expected


def test_dry_run_task_checks_name_line_numbers(tmp_path: Path) -> None:
    connections = Connections(
        [
            FTPConnection(id="ftp", ftp=FTPConfig(host="127.0.0.1")),
            FTPConnection(id="ftp2", ftp=FTPConfig(host="127.0.0.1")),
            LocalConnection(id="local", base_path=tmp_path),
        ]
    )

    def task(src: str, dst: str) -> bytes:
        return json.dumps(
            {"task_id": "t", "src_id": src, "src_path": "/a", "dst_id": dst, "dst_path": "a"}
        ).encode()

    lines = [task("ftp", "local"), b"\n", b"{not json", task("mars", "local"),
             task("ftp", "ftp2"), task("local", "ftp2"), task("ftp", "local")]  # fmt: skip
    factories = connections.session_factories()
    engine = TransferEngine(connections, SessionPool(factories), worker="w")
    raw = [line.removesuffix(b"\n") for line in lines]
    check = check_task_lines([Line(line, len(line)) for line in raw], engine.prepare)
    assert check.tasks == 6
    assert [p.split(":")[0] for p in check.problems] == ["line 3", "line 4", "line 5", "line 6"]
    assert "INVALID_MESSAGE" in check.problems[0] and "'mars'" in check.problems[1]
    assert "one side must be local" in check.problems[2]
    # Planned as the run plans it: the upload's local "/a" lies outside base_path.
    assert check.problems[3] == f"line 6: PATH_NOT_ALLOWED: '/a' is outside {tmp_path}"
    assert check.ftp_connections == ["ftp"]


def test_dry_run_task_checks_find_a_missing_upload_source_and_base_path(tmp_path: Path) -> None:
    """tester2: '0 would fail' for an upload whose local source does not exist; a
    download to a base_path that does not exist fails too (it is never created)."""
    (tmp_path / "here.bin").write_bytes(b"x")
    (tmp_path / "a-dir").mkdir()
    connections = Connections(
        [
            FTPConnection(id="ftp", ftp=FTPConfig(host="127.0.0.1")),
            LocalConnection(id="local", base_path=tmp_path),
            LocalConnection(id="vol", base_path=tmp_path / "not-mounted"),
        ]
    )

    def task(src: str, src_path: str, dst: str, dst_path: str) -> bytes:
        return json.dumps({"task_id": "t", "src_id": src, "src_path": src_path,
                           "dst_id": dst, "dst_path": dst_path}).encode()  # fmt: skip

    lines = [task("local", "here.bin", "ftp", "/a"), task("local", "gone.bin", "ftp", "/b"),
             task("local", "a-dir", "ftp", "/c"), task("ftp", "/d", "local", "d.bin"),
             task("ftp", "/e", "vol", "e.bin")]  # fmt: skip
    engine = TransferEngine(connections, SessionPool(connections.session_factories()), worker="w")
    check = check_task_lines([Line(line, len(line)) for line in lines], engine.prepare)
    assert check.problems == [
        f"line 2: FILE_NOT_FOUND: reading {str(tmp_path / 'gone.bin')!r}: No such file or"
        " directory",
        f"line 3: PATH_NOT_ALLOWED: reading {str(tmp_path / 'a-dir')!r}: Is a directory",
        f"line 5: TRANSIENT: the local base path {str(tmp_path / 'not-mounted')!r} does not exist"
        " (not mounted?)",
    ]
    assert check.ftp_connections == ["ftp"]
