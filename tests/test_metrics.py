"""Metrics: counters and labels per result, the pool collector, the text exposition."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ftp_pooler.contract import InvalidTaskError, Operation, Result, Task, parse_task
from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.ftp.pool import ConnectionStats
from ftp_pooler.metrics import SESSION_STATES, Metrics

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


def test_completed_result_counts_task_bytes_and_duration() -> None:
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
    assert _value(m, "ftp_pooler_bytes_total", operation="download", connection="partner-a") == 4096
    duration = "ftp_pooler_transfer_duration_seconds"
    assert _value(m, f"{duration}_count", operation="download") == 2
    assert _value(m, f"{duration}_sum", operation="download") == pytest.approx(0.06)
    assert _value(m, f"{duration}_bucket", operation="download", le="0.025") == 0
    assert _value(m, f"{duration}_bucket", operation="download", le="0.05") == 2


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
    assert _value(m, "ftp_pooler_bytes_total", operation="download", connection="partner-a") == 0


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
    assert _value(m, "ftp_pooler_transfer_duration_seconds_count", operation="upload") == 1


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
    assert _value(m, "ftp_pooler_transfer_duration_seconds_count", operation="") is None


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
    } <= names
    for word in (SECRET, "bob", "password", WORKER, "/out/"):
        assert word not in text.lower()
