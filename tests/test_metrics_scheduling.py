"""Metrics of scheduling by connection: queued tasks, breaker states, queue waits."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ftp_pooler.ftp.pool import ConnectionStats
from ftp_pooler.metrics import Metrics
from ftp_pooler.scheduling.breaker import BreakerState
from ftp_pooler.scheduling.scheduler import QueueStats


def _stats(breaker: BreakerState) -> ConnectionStats:
    return ConnectionStats(4, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0, breaker=breaker)


def test_queued_tasks_and_breaker_state_per_connection_at_scrape_time() -> None:
    m = Metrics()
    queues = {"slow": QueueStats(ready=7, delayed=2, running=4)}
    pool = {"slow": _stats(BreakerState.CLOSED), "dead": _stats(BreakerState.OPEN)}
    m.watch_scheduling(lambda: queues, lambda: pool)

    def value(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, labels)

    assert value("ftp_pooler_queued_tasks", connection="slow", state="ready") == 7
    assert value("ftp_pooler_queued_tasks", connection="slow", state="delayed") == 2
    assert value("ftp_pooler_queued_tasks", connection="dead", state="ready") == 0
    assert value("ftp_pooler_breaker_state", connection="dead", state="open") == 1
    assert value("ftp_pooler_breaker_state", connection="dead", state="closed") == 0
    assert value("ftp_pooler_breaker_state", connection="slow", state="closed") == 1
    pool["dead"] = _stats(BreakerState.HALF_OPEN)
    assert value("ftp_pooler_breaker_state", connection="dead", state="half_open") == 1


def test_queue_wait_is_a_histogram_per_connection() -> None:
    m = Metrics()
    m.queue_waited("slow", 0.2)
    m.queue_waited("slow", 3.0)
    m.queue_waited("fast", 0.0)
    name = "ftp_pooler_queue_wait_seconds"
    assert m.registry.get_sample_value(f"{name}_count", {"connection": "slow"}) == 2
    assert m.registry.get_sample_value(f"{name}_bucket", {"connection": "slow", "le": "0.5"}) == 1
    assert m.registry.get_sample_value(f"{name}_sum", {"connection": "fast"}) == 0
    families = {f.name for f in text_string_to_metric_families(m.render()[0].decode())}
    assert {"ftp_pooler_queue_wait_seconds"} <= families
