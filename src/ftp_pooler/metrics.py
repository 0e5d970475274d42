"""Prometheus metrics of one worker: tasks, bytes, retries, sessions, Kafka, the process.

:class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry`
(never the global one), so a process or a test may hold several. Session
gauges and counters are not pushed by the pool: a collector reads
``SessionPool.stats()`` at scrape time (:meth:`Metrics.watch_pool`), so the
pool knows nothing of Prometheus. Scrapes therefore read pool state and must
run on the Trio thread, as the API's ``/metrics`` handler does. Bytes and
retries come from the transfer engine as they happen: :class:`Metrics` is a
:class:`~ftp_pooler.transfer.engine.TransferObserver`.

The registry also holds prometheus-client's standard process (``process_*``,
Linux only), Python (``python_info``) and garbage collector
(``python_gc_*``) collectors, and ``ftp_pooler_build_info{version}``.

Labels carry only connection ids (sections of the connections file),
operations, statuses, error codes, topics and partitions: never hosts,
users, passwords, paths, task ids or error messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from ftp_pooler import package_version
from ftp_pooler.contract import Operation, Result
from ftp_pooler.errors import ErrorCode
from ftp_pooler.ftp.pool import ConnectionStats
from ftp_pooler.scheduling.breaker import BreakerState
from ftp_pooler.scheduling.scheduler import QueueStats

TRANSFER_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
"""Seconds, 5 ms to 5 min: a KB file on a warm session to a large file on a slow link."""

SESSION_STATES = ("open", "idle", "busy", "opening", "waiters")
"""The ``state`` label of ``ftp_pooler_sessions``, each a field of ConnectionStats."""

QUEUE_WAIT_BUCKETS = (
    0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
"""Seconds a task was ready but waited for its connection: none to a long outage."""


class Metrics:
    """Every metric of one worker, in a registry of its own.

    Attributes:
        registry: What :meth:`render` exposes.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(standard)
        Gauge(
            "ftp_pooler_build_info",
            "Always 1; the version label is the running ftp-pooler's.",
            ["version"],
            registry=r,
        ).labels(package_version()).set(1)
        self._tasks = Counter(
            "ftp_pooler_tasks_total",
            "Tasks finished, by result status and error code ('' unless failed);"
            " connection is the task's FTP connection id ('' when unknown).",
            ["operation", "status", "error_code", "connection"],
            registry=r,
        )
        self._bytes = Counter(
            "ftp_pooler_bytes_total",
            "Bytes moved over data connections as they move, failed attempts included,"
            " by FTP connection id.",
            ["operation", "connection"],
            registry=r,
        )
        self._retries = Counter(
            "ftp_pooler_retries_total",
            "Failed attempts that will be retried, by FTP connection id and error code.",
            ["operation", "connection", "error_code"],
            registry=r,
        )
        self._duration = Histogram(
            "ftp_pooler_transfer_duration_seconds",
            "Time from the start of a task to its result, retries included;"
            " connection is the task's FTP connection id ('' when unknown).",
            ["operation", "connection"],
            buckets=TRANSFER_BUCKETS,
            registry=r,
        )
        self._inflight = Gauge(
            "ftp_pooler_inflight_tasks", "Tasks taken from Kafka and not yet finished.", registry=r
        )
        self._commits = Counter(
            "ftp_pooler_kafka_commits_total", "Offset commits that succeeded.", registry=r
        )
        self._commit_failures = Counter(
            "ftp_pooler_kafka_commit_failures_total", "Offset commits that failed.", registry=r
        )
        self._rebalances = Counter(
            "ftp_pooler_kafka_rebalances_total", "Consumer group rebalances seen.", registry=r
        )
        self._lag = Gauge(
            "ftp_pooler_kafka_lag",
            "Messages behind: the partition's highwater minus the next offset to read.",
            ["topic", "partition"],
            registry=r,
        )
        self._invalid = Counter(
            "ftp_pooler_invalid_messages_total", "Messages that were not valid tasks.", registry=r
        )
        self._published = Counter(
            "ftp_pooler_results_published_total",
            "Results the broker acknowledged.",
            ["topic"],
            registry=r,
        )
        self._publish_failures = Counter(
            "ftp_pooler_publish_failures_total",
            "Results the producer failed to publish.",
            registry=r,
        )
        self._task_series: dict[tuple[str, str, str, str], _TaskSeries] = {}
        self._bytes_series: dict[tuple[Operation, str], Any] = {}
        self._queue_wait = Histogram(
            "ftp_pooler_queue_wait_seconds",
            "Time a task was ready to start but waited in its connection's queue"
            " (a retry's backoff not counted), observed when it starts.",
            ["connection"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self._queue_wait_series: dict[str, Any] = {}
        self._config_reloads = Counter(
            "ftp_pooler_config_reloads_total",
            "New versions of the connections file read while running: applied, or refused"
            " (it did not load; the version in use stays).",
            ["result"],
            registry=r,
        )
        for result in ("applied", "refused"):
            self._config_reloads.labels(result)
        self._config_refused = Gauge(
            "ftp_pooler_config_refused",
            "1 while the newest version of the connections file was refused (an older one"
            " is in use), else 0.",
            registry=r,
        )
        self._config_mtime = Gauge(
            "ftp_pooler_config_mtime_seconds",
            "Modification time (Unix seconds) of the connections file version in use.",
            registry=r,
        )

    def bytes_moved(self, operation: Operation, connection: str, count: int) -> None:
        """Count ``count`` bytes the moment they move (the engine's observer hook)."""
        key = (operation, connection)
        series = self._bytes_series.get(key)
        if series is None:
            series = self._bytes_series[key] = self._bytes.labels(operation.value, connection)
        series.inc(count)

    def retrying(self, operation: Operation, connection: str, error_code: ErrorCode) -> None:
        """Count a failed attempt that will be retried (the engine's observer hook)."""
        self._retries.labels(operation.value, connection, error_code.value).inc()

    def task_finished(self, result: Result, connection: str) -> None:
        """Count a task's result and its duration (its bytes were counted as they moved).

        Args:
            result: The task's result; an invalid message's has no operation
                and counts only in ``ftp_pooler_tasks_total``.
            connection: The task's FTP connection id, ``""`` when unknown.
        """
        operation = result.operation.value if result.operation else ""
        error_code = result.error_code.value if result.error_code else ""
        key = (operation, result.status.value, error_code, connection)
        series = self._task_series.get(key)
        if series is None:
            series = self._task_series[key] = _TaskSeries(
                self._tasks.labels(*key),
                self._duration.labels(operation, connection) if operation else None,
            )
        series.tasks.inc()
        if series.duration is not None:
            series.duration.observe(result.duration_ms / 1000)

    def set_inflight(self, n: int) -> None:
        self._inflight.set(n)

    def commit_succeeded(self) -> None:
        self._commits.inc()

    def commit_failed(self) -> None:
        self._commit_failures.inc()

    def rebalanced(self) -> None:
        self._rebalances.inc()

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self._lag.labels(topic, str(partition)).set(lag)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a revoked partition's lag series (no-op when it has none)."""
        self._lag.remove(topic, str(partition))

    def invalid_message(self) -> None:
        self._invalid.inc()

    def published(self, topic: str, results: int = 1) -> None:
        self._published.labels(topic).inc(results)

    def publish_failed(self) -> None:
        self._publish_failures.inc()

    def watch_pool(self, stats: Callable[[], Mapping[str, ConnectionStats]]) -> None:
        """Expose session metrics read from ``stats()`` (e.g. ``pool.stats``) at each scrape.

        Raises:
            ValueError: A pool is already watched.
        """
        self.registry.register(_PoolCollector(stats))

    # -- scheduling by connection (issue #13) ----------------------------------------

    def queue_waited(self, connection: str, seconds: float) -> None:
        """A task of ``connection`` starts after waiting ``seconds`` in its queue."""
        series = self._queue_wait_series.get(connection)
        if series is None:
            series = self._queue_wait_series[connection] = self._queue_wait.labels(connection)
        series.observe(seconds)

    def watch_scheduling(
        self,
        queues: Callable[[], Mapping[str, QueueStats]],
        pool: Callable[[], Mapping[str, ConnectionStats]],
    ) -> None:
        """Expose queued tasks per connection (``queues()``, e.g. the runners' ``stats``)
        and breaker states (``pool()``, e.g. ``pool.stats``), read at each scrape."""
        self.registry.register(_SchedulingCollector(queues, pool))

    # -- connections changed while running (issue #16, ftp_pooler.service.reload) ------------

    def config_reloaded(self, result: str) -> None:
        """A new version of the connections file was ``applied`` or ``refused``."""
        self._config_reloads.labels(result).inc()
        self._config_refused.set(result == "refused")

    def config_loaded(self, mtime: float | None) -> None:
        """The connections version in use has this file mtime (None: unknown, shown as 0)."""
        self._config_mtime.set(mtime or 0)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass(frozen=True, slots=True)
class _TaskSeries:
    """The series one kind of task result updates, looked up once: ``labels()`` is slow."""

    tasks: Any
    duration: Any | None


class _PoolCollector(Collector):
    """Session metrics of a :class:`~ftp_pooler.ftp.pool.SessionPool`, read at scrape time."""

    def __init__(self, stats: Callable[[], Mapping[str, ConnectionStats]]) -> None:
        self._stats = stats

    def describe(self) -> Iterable[Metric]:
        """The families without samples, so the registry refuses clashing names."""
        return _pool_families({})

    def collect(self) -> Iterable[Metric]:
        return _pool_families(self._stats())


def _pool_families(stats: Mapping[str, ConnectionStats]) -> list[Metric]:
    sessions = GaugeMetricFamily(
        "ftp_pooler_sessions",
        "FTP sessions by state (open = idle + busy; opening; waiters = borrowers waiting).",
        labels=["connection", "state"],
    )
    cap = GaugeMetricFamily(
        "ftp_pooler_session_cap",
        "Current session cap of the connection (lowered after 421s).",
        labels=["connection"],
    )
    wait = SummaryMetricFamily(
        "ftp_pooler_session_wait_seconds",
        "Time borrowers waited for a session.",
        labels=["connection"],
    )
    opened = CounterMetricFamily(
        "ftp_pooler_sessions_opened", "FTP sessions opened.", labels=["connection"]
    )
    closed = CounterMetricFamily(
        "ftp_pooler_sessions_closed", "FTP sessions closed.", labels=["connection"]
    )
    refused = CounterMetricFamily(
        "ftp_pooler_session_refusals",
        "Connects the server refused with 421 (too many sessions).",
        labels=["connection"],
    )
    for conn_id, s in stats.items():
        for state in SESSION_STATES:
            sessions.add_metric([conn_id, state], getattr(s, state))
        cap.add_metric([conn_id], s.cap)
        wait.add_metric([conn_id], count_value=s.wait_count, sum_value=s.wait_seconds_total)
        opened.add_metric([conn_id], s.opened_total)
        closed.add_metric([conn_id], s.closed_total)
        refused.add_metric([conn_id], s.refused_total)
    return [sessions, cap, wait, opened, closed, refused]


class _SchedulingCollector(Collector):
    """Per-connection queues and breakers, read at scrape time."""

    def __init__(
        self,
        queues: Callable[[], Mapping[str, QueueStats]],
        pool: Callable[[], Mapping[str, ConnectionStats]],
    ) -> None:
        self._queues = queues
        self._pool = pool

    def describe(self) -> Iterable[Metric]:
        return _scheduling_families({}, {})

    def collect(self) -> Iterable[Metric]:
        return _scheduling_families(self._queues(), self._pool())


def _scheduling_families(
    queues: Mapping[str, QueueStats], pool: Mapping[str, ConnectionStats]
) -> list[Metric]:
    queued = GaugeMetricFamily(
        "ftp_pooler_queued_tasks",
        "Tasks waiting for their connection: ready to start, or delayed by a retry's backoff.",
        labels=["connection", "state"],
    )
    breaker = GaugeMetricFamily(
        "ftp_pooler_breaker_state",
        "1 for the connection's circuit breaker state (closed, open, half_open), 0 for the others.",
        labels=["connection", "state"],
    )
    for conn_id in pool:
        q = queues.get(conn_id, QueueStats(0, 0, 0))
        queued.add_metric([conn_id, "ready"], q.ready)
        queued.add_metric([conn_id, "delayed"], q.delayed)
        for state in BreakerState:
            breaker.add_metric([conn_id, state.value], int(pool[conn_id].breaker is state))
    return [queued, breaker]
