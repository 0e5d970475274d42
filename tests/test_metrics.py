"""Metrics: counters and labels per result, bytes as they move, retries, the pool collector."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pyftpdlib.handlers import FTPHandler
from prometheus_client.parser import text_string_to_metric_families

from clients import ftp_config
from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.contract import InvalidTaskError, Operation, Result, Task, parse_task
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.ftp.pool import ConnectionStats, PoolLimits, open_session_pool
from ftp_pooler.metrics import SESSION_STATES, Metrics
from ftp_pooler.transfer.retry import RetryPolicy

WORKER = "pod-1"
SECRET = "hunter2"


def _task(task_id: str = "t-1") -> Task:
    return Task.model_validate(
        {
            "task_id": task_id,
            "operation": "download",
            "source": {"connection_id": "partner-a", "path": f"/out/{SECRET}.csv"},
            "destination": {"connection_id": "local", "path": "in/a.csv"},
        }
    )


def _value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


STATS = ConnectionStats(
    cap=4, open=3, idle=1, busy=2, opening=1, waiters=5,
    opened_total=10, closed_total=7, refused_total=2,
    wait_seconds_total=1.25, wait_count=6,
)  # fmt: skip


def test_completed_result_counts_task_and_duration_by_connection() -> None:
    m = Metrics()
    result = Result.completed(
        _task(), worker=WORKER, bytes_transferred=2048, duration_ms=30, attempts=1
    )
    m.task_finished(result, "partner-a")
    m.task_finished(result, "partner-a")

    labels = {
        "operation": "download",
        "status": "completed",
        "error_code": "",
        "connection": "partner-a",
    }
    assert _value(m, "ftp_pooler_tasks_total", **labels) == 2
    # Bytes are counted as they move (bytes_moved), not from results.
    assert _value(m, "ftp_pooler_bytes_total", operation="download", connection="partner-a") is None
    duration = "ftp_pooler_transfer_duration_seconds"
    where = {"operation": "download", "connection": "partner-a"}
    assert _value(m, f"{duration}_count", **where) == 2
    assert _value(m, f"{duration}_sum", **where) == pytest.approx(0.06)
    assert _value(m, f"{duration}_bucket", **where, le="0.025") == 0
    assert _value(m, f"{duration}_bucket", **where, le="0.05") == 2


def test_bytes_are_counted_as_they_move_and_retries_by_connection_and_code() -> None:
    m = Metrics()
    m.bytes_moved(Operation.DOWNLOAD, "partner-a", 1000)
    m.bytes_moved(Operation.DOWNLOAD, "partner-a", 24)
    m.bytes_moved(Operation.UPLOAD, "partner-b", 7)
    m.retrying(Operation.DOWNLOAD, "partner-a", ErrorCode.TRANSIENT)
    m.retrying(Operation.DOWNLOAD, "partner-a", ErrorCode.TRANSIENT)
    m.retrying(Operation.UPLOAD, "partner-b", ErrorCode.TIMEOUT)

    assert _value(m, "ftp_pooler_bytes_total", operation="download", connection="partner-a") == 1024
    assert _value(m, "ftp_pooler_bytes_total", operation="upload", connection="partner-b") == 7
    retries = "ftp_pooler_retries_total"
    assert (
        _value(m, retries, operation="download", connection="partner-a", error_code="TRANSIENT")
        == 2
    )
    assert _value(m, retries, operation="upload", connection="partner-b", error_code="TIMEOUT") == 1


def test_build_info_and_the_standard_collectors() -> None:
    from ftp_pooler import package_version

    m = Metrics()
    assert _value(m, "ftp_pooler_build_info", version=package_version()) == 1
    assert _value(m, "process_cpu_seconds_total") is not None
    assert _value(m, "process_resident_memory_bytes") is not None
    assert _value(m, "python_gc_collections_total", generation="0") is not None
    names = {family.name for family in m.registry.collect()}
    assert "python_info" in names


def test_failed_result_is_labelled_with_its_error_code() -> None:
    m = Metrics()
    error = PoolerError(ErrorCode.FILE_NOT_FOUND, f"550 /out/{SECRET}.csv: no such file")
    result = Result.failed(_task(), error, worker=WORKER, duration_ms=5, attempts=1)
    m.task_finished(result, "partner-a")

    labels = {
        "operation": "download",
        "status": "failed",
        "error_code": "FILE_NOT_FOUND",
        "connection": "partner-a",
    }
    assert _value(m, "ftp_pooler_tasks_total", **labels) == 1
    assert _value(m, "ftp_pooler_bytes_total", operation="download", connection="partner-a") is None


def test_skipped_result_has_no_error_code() -> None:
    m = Metrics()
    result = Result.skipped(
        _task(), worker=WORKER, duration_ms=2, attempts=1, operation=Operation.UPLOAD
    )
    m.task_finished(result, "partner-b")

    labels = {
        "operation": "upload",
        "status": "skipped",
        "error_code": "",
        "connection": "partner-b",
    }
    assert _value(m, "ftp_pooler_tasks_total", **labels) == 1
    assert (
        _value(
            m,
            "ftp_pooler_transfer_duration_seconds_count",
            operation="upload",
            connection="partner-b",
        )
        == 1
    )


def test_invalid_message_counts_only_as_a_failed_task() -> None:
    m = Metrics()
    raw = b"not json"
    with pytest.raises(InvalidTaskError) as caught:
        parse_task(raw)
    m.task_finished(Result.invalid(caught.value, raw, worker=WORKER), "")
    m.invalid_message()

    labels = {
        "operation": "",
        "status": "failed",
        "error_code": "INVALID_MESSAGE",
        "connection": "",
    }
    assert _value(m, "ftp_pooler_tasks_total", **labels) == 1
    assert _value(m, "ftp_pooler_invalid_messages_total") == 1
    assert _value(m, "ftp_pooler_bytes_total", operation="", connection="") is None
    assert (
        _value(m, "ftp_pooler_transfer_duration_seconds_count", operation="", connection="") is None
    )


def test_kafka_and_publish_counters() -> None:
    m = Metrics()
    m.commit_succeeded()
    m.commit_succeeded()
    m.commit_failed()
    m.rebalanced()
    m.published("results", 2)
    m.publish_failed()
    m.set_inflight(7)

    assert _value(m, "ftp_pooler_kafka_commits_total") == 2
    assert _value(m, "ftp_pooler_kafka_commit_failures_total") == 1
    assert _value(m, "ftp_pooler_kafka_rebalances_total") == 1
    assert _value(m, "ftp_pooler_results_published_total", topic="results") == 2
    assert _value(m, "ftp_pooler_publish_failures_total") == 1
    assert _value(m, "ftp_pooler_inflight_tasks") == 7


def test_lag_is_set_per_partition_and_forgotten_on_revoke() -> None:
    m = Metrics()
    m.set_lag("tasks", 0, 12)
    m.set_lag("tasks", 1, 3)
    m.set_lag("tasks", 0, 4)
    assert _value(m, "ftp_pooler_kafka_lag", topic="tasks", partition="0") == 4

    m.forget_partition("tasks", 0)
    m.forget_partition("tasks", 9)  # never seen: no error
    assert _value(m, "ftp_pooler_kafka_lag", topic="tasks", partition="0") is None
    assert _value(m, "ftp_pooler_kafka_lag", topic="tasks", partition="1") == 3


def test_pool_collector_reads_stats_at_each_scrape() -> None:
    m = Metrics()
    current = {"partner-a": STATS, "partner-b": replace(STATS, cap=1, waiters=0)}
    m.watch_pool(lambda: current)

    for state in SESSION_STATES:
        expected = getattr(current["partner-a"], state)
        assert _value(m, "ftp_pooler_sessions", connection="partner-a", state=state) == expected
    assert _value(m, "ftp_pooler_session_cap", connection="partner-a") == 4
    assert _value(m, "ftp_pooler_session_cap", connection="partner-b") == 1
    assert _value(m, "ftp_pooler_session_wait_seconds_sum", connection="partner-a") == 1.25
    assert _value(m, "ftp_pooler_session_wait_seconds_count", connection="partner-a") == 6
    assert _value(m, "ftp_pooler_sessions_opened_total", connection="partner-a") == 10
    assert _value(m, "ftp_pooler_sessions_closed_total", connection="partner-a") == 7
    assert _value(m, "ftp_pooler_session_refusals_total", connection="partner-a") == 2

    current = {"partner-a": replace(STATS, refused_total=3)}
    assert _value(m, "ftp_pooler_session_refusals_total", connection="partner-a") == 3
    assert _value(m, "ftp_pooler_session_cap", connection="partner-b") is None


def test_watching_a_second_pool_is_refused() -> None:
    m = Metrics()
    m.watch_pool(dict)
    with pytest.raises(ValueError):
        m.watch_pool(dict)


def test_registries_are_independent() -> None:
    first, second = Metrics(), Metrics()
    first.commit_succeeded()
    assert _value(first, "ftp_pooler_kafka_commits_total") == 1
    assert _value(second, "ftp_pooler_kafka_commits_total") == 0


def test_render_parses_and_carries_no_secrets() -> None:
    m = Metrics()
    m.watch_pool(lambda: {"partner-a": STATS})
    task = _task(task_id=f"task-{SECRET}")
    m.task_finished(
        Result.completed(task, worker=WORKER, bytes_transferred=1, duration_ms=1, attempts=1),
        "partner-a",
    )
    error = PoolerError(ErrorCode.AUTH_FAILED, f"530 login incorrect for bob password {SECRET}")
    m.task_finished(
        Result.failed(task, error, worker=WORKER, duration_ms=1, attempts=1), "partner-a"
    )
    m.set_lag("tasks", 3, 1)

    body, content_type = m.render()
    assert content_type.startswith("text/plain; version=")
    text = body.decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "ftp_pooler_tasks",
        "ftp_pooler_bytes",
        "ftp_pooler_transfer_duration_seconds",
        "ftp_pooler_inflight_tasks",
        "ftp_pooler_sessions",
        "ftp_pooler_session_cap",
        "ftp_pooler_session_wait_seconds",
        "ftp_pooler_sessions_opened",
        "ftp_pooler_sessions_closed",
        "ftp_pooler_session_refusals",
        "ftp_pooler_kafka_commits",
        "ftp_pooler_kafka_commit_failures",
        "ftp_pooler_kafka_rebalances",
        "ftp_pooler_kafka_lag",
        "ftp_pooler_invalid_messages",
        "ftp_pooler_results_published",
        "ftp_pooler_publish_failures",
        "ftp_pooler_retries",
        "ftp_pooler_build_info",
        "process_cpu_seconds",
        "python_info",
    } <= names
    for word in (SECRET, "bob", "password", WORKER, "/out/"):
        assert word not in text.lower()


@asynccontextmanager
async def _engine(server: Any, local: Path, observer: Any) -> AsyncIterator[TransferEngine]:
    """An engine between ``server`` (connection ``partner-a``) and ``local``, telling
    ``observer``, with short backoffs."""
    conns = Connections(
        [
            FTPConnection(id="partner-a", ftp=ftp_config(server)),
            LocalConnection(id="local", base_path=local),
        ]
    )
    async with open_session_pool(conns.session_factories(), PoolLimits()) as pool:
        yield TransferEngine(
            conns,
            pool,
            retry=RetryPolicy(initial_backoff=0.01, max_backoff=0.05),
            worker=WORKER,
            observer=observer,
        )


class _RecordingMetrics(Metrics):
    """Metrics that note the bytes counter's value each time the engine reports bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, float | None]] = []

    def bytes_moved(self, operation: Operation, connection: str, count: int) -> None:
        super().bytes_moved(operation, connection, count)
        labels = {"operation": operation.value, "connection": connection}
        self.seen.append((operation.value, _value(self, "ftp_pooler_bytes_total", **labels)))


async def test_engine_reports_bytes_as_they_move_and_retries(
    make_pyftpd: Any, ftp_root: Path, tmp_path: Path
) -> None:
    failures = {"left": 1}

    class FlakyHandler(FTPHandler):  # type: ignore[misc]
        def ftp_RETR(self, file: str) -> None:
            if failures["left"]:
                failures["left"] -= 1
                self.respond("451 Local error in processing, try again.")
                return
            super().ftp_RETR(file)

    size = 3_000_000
    (ftp_root / "big.bin").write_bytes(os.urandom(size))
    server = make_pyftpd(handler_class=FlakyHandler)
    local = tmp_path / "local"
    local.mkdir()
    metrics = _RecordingMetrics()
    async with _engine(server, local, metrics) as engine:
        down = await engine.run(_task_between("partner-a", "/big.bin", "local", "big.bin"))
        up = await engine.run(_task_between("local", "big.bin", "partner-a", "/back.bin"))
    assert (down.status, down.attempts, up.status) == ("completed", 2, "completed")
    for operation in ("download", "upload"):
        values = [value for op, value in metrics.seen if op == operation]
        # Many steps, each before the task's result existed, ending at the file's size.
        assert len(values) > 3, values
        assert values == sorted(values) and values[0] is not None and values[0] < size
        assert values[-1] == size
    assert (
        _value(
            metrics,
            "ftp_pooler_retries_total",
            operation="download",
            connection="partner-a",
            error_code="TRANSIENT",
        )
        == 1
    )


def _task_between(src: str, src_path: str, dst: str, dst_path: str) -> Task:
    return Task.model_validate(
        {
            "task_id": f"{src}-{dst}",
            "source": {"connection_id": src, "path": src_path},
            "destination": {"connection_id": dst, "path": dst_path},
        }
    )


class _Bytes:
    """A TransferObserver that adds up the bytes reported per operation."""

    def __init__(self) -> None:
        self.moved: dict[str, int] = {}

    def bytes_moved(self, operation: Operation, connection: str, count: int) -> None:
        self.moved[operation.value] = self.moved.get(operation.value, 0) + count

    def retrying(self, operation: Operation, connection: str, error_code: ErrorCode) -> None:
        pass


async def test_upload_bytes_count_only_once_the_server_accepted_the_stor(
    make_scripted_ftp: Any, tmp_path: Path
) -> None:
    """Pipelined, an upload's bytes go out before the STOR's 1xx: a server refusing the STOR
    (here every name, hidden and visible) took none of them, so none are counted; the
    upload the server then takes counts exactly its size."""
    from scripted_server import Rule

    size = 100_000  # one chunk, all in the socket buffers before the refusal comes
    local = tmp_path / "local"
    local.mkdir()
    (local / "up.bin").write_bytes(os.urandom(size))
    # the refusal comes after the data began to flow, as over a long round trip
    refusal = Rule(r"STOR /data/refused/.*", "553 Prohibited file name.", delay=0.3)
    server = make_scripted_ftp(rules=[refusal])
    observer = _Bytes()
    async with _engine(server, local, observer) as engine:
        warm = await engine.run(_task_between("local", "up.bin", "partner-a", "/data/warm.bin"))
        observer.moved.clear()
        refused = _task_between("local", "up.bin", "partner-a", "/data/refused/up.bin")
        failed = await engine.run(refused)
        assert (warm.status, failed.error_code) == ("completed", "PERMISSION_DENIED")
        assert observer.moved == {}
        done = await engine.run(_task_between("local", "up.bin", "partner-a", "/data/up.bin"))
    assert done.status == "completed"
    assert observer.moved == {"upload": size}
