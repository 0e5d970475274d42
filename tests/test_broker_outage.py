"""``ftp-pooler worker`` through broker outages: a frozen broker (SIGSTOP) past the producer's
delivery timeout, a broker that lost its state (killed, started fresh on the same address),
and SIGTERM while the broker is frozen.

Each test has its own Tansu broker (it is frozen or killed) and runs the worker as a real
process. The producer's timeouts are shortened through settings, so that an outage past the
delivery timeout takes seconds, not minutes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_worker import Topics, Worker, check_files, download_tasks, remote_files

from servers import FTPServer, ServerUnavailable, wait_until
from servers.kafka import KafkaBroker, TansuBroker

MakeServer = Callable[..., FTPServer]

FAST_KAFKA = {
    "kafka__request_timeout_ms": "1000",
    "kafka__delivery_timeout_ms": "2000",
    "kafka__result_ack_timeout_seconds": "3",
    "api__liveness_stall_seconds": "4",
}
"""A result undelivered for 2 s expires in kafka-python, one unacknowledged for 3 s gets a
new producer; /health fails after 4 s without an acknowledgement."""


@dataclass
class Outage:
    broker: TansuBroker
    topics: Topics
    local: Path
    start: Callable[..., Worker]

    @property
    def info(self) -> KafkaBroker:
        return self.broker.info()


@pytest.fixture
def outage(make_vsftpd: MakeServer, tmp_path: Path) -> Iterator[Outage]:
    """A broker of this test's own, its topics, and ``start(name, **settings)`` for workers."""
    broker = TansuBroker(tmp_path / "tansu")
    try:
        broker.start()
    except ServerUnavailable as exc:
        pytest.fail(str(exc)) if os.environ.get("CI") else pytest.skip(str(exc))
    workers: list[Worker] = []
    try:
        topics = Topics(broker.info(), partitions=2)
        server = make_vsftpd(passive_ports=400)
        local = tmp_path / "local"
        local.mkdir()
        password_file = tmp_path / "password"
        password_file.write_text(server.password)
        (tmp_path / "connections.ini").write_text(
            f"[ftp]\ntype = ftp\nhost = {server.host}\nport = {server.port}\n"
            f"user = {server.user}\npass_file = {password_file}\ntimeout = 5\n"
            f"connect_timeout = 5\ndata_stall_timeout = 5\n\n"
            f"[local]\ntype = local\nbase_path = {local}\n"
        )
        (tmp_path / "none.yaml").write_text("{}\n")
        env = {
            **topics.worker_env(tmp_path / "connections.ini", tmp_path / "none.yaml"),
            "FTP_POOLER__POOL__MAX_SESSIONS_PER_CONNECTION": "16",
            "FTP_POOLER__LOGGING__LEVEL": "INFO",
        }

        def start(name: str, **settings: str) -> Worker:
            overrides = {f"FTP_POOLER__{key.upper()}": value for key, value in settings.items()}
            worker = Worker(tmp_path, {**env, **overrides}, name)
            workers.append(worker)
            return worker

        yield Outage(broker, topics, local, start)
    finally:
        for worker in workers:
            worker.kill()
        broker.stop()


def _files_done(local: Path) -> int:
    return len(list((local / "in").rglob("*.bin"))) if (local / "in").exists() else 0


def _wait_committed(topics: Topics, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        committed = sum(offset or 0 for offset in topics.committed().values())
        if committed >= expected or time.monotonic() > deadline:
            return committed
        time.sleep(0.5)


def _log_lines(worker: Worker) -> int:
    return len(Path(worker.log.name).read_bytes().splitlines())


def test_a_broker_frozen_past_the_delivery_timeout_loses_no_result_and_needs_no_restart(
    outage: Outage, ftp_root: Path
) -> None:
    digests = remote_files(ftp_root, 300, size=100_000)
    worker = outage.start("w1", **FAST_KAFKA)
    worker.wait_ready()
    assert worker.get("/health")[0] == 200
    outage.topics.produce(download_tasks(sorted(digests)))
    assert wait_until(lambda: _files_done(outage.local) >= 30, timeout=30)
    outage.broker.freeze()
    frozen_at = time.monotonic()
    # Transfers go on, their results cannot be delivered: past 4 s without an
    # acknowledgement the worker says it is not alive, with the reason (which also
    # proves that results were waiting while the broker was frozen).
    status, report = 200, {}
    while time.monotonic() - frozen_at < 30 and status == 200:  # a condition: ~4 s unloaded
        status, report = worker.get("/health")
        time.sleep(0.2)
    assert status == 503, report
    assert report["components"]["results"]["status"] == "stalled"
    assert "none acknowledged by Kafka" in report["components"]["results"]["reason"]
    time.sleep(max(0.0, 6 - (time.monotonic() - frozen_at)))  # > delivery timeout (2 s)
    outage.broker.resume()

    results = outage.topics.read_results(set(digests), timeout=40)
    assert {r["status"] for r in results} == {"completed"}
    check_files(outage.local, digests)
    assert _wait_committed(outage.topics, 300) == 300
    assert wait_until(lambda: worker.get("/health")[0] == 200, timeout=10)
    assert worker.process.poll() is None  # recovered by itself
    log = Path(worker.log.name).read_text()
    assert "publish.recreating_producer" in log and "health.failing" in log
    assert worker.stop() == 0


def test_a_broker_that_lost_its_state_gets_new_results_and_a_small_log(
    outage: Outage, ftp_root: Path
) -> None:
    digests = remote_files(ftp_root, 200)
    names = sorted(digests)
    worker = outage.start("w1", **FAST_KAFKA)
    worker.wait_ready()
    outage.topics.produce(download_tasks(names[:100]))
    outage.topics.read_results(set(names[:100]), timeout=30)
    before = _log_lines(worker)

    outage.broker.restart_fresh()
    for topic, partitions in (
        (outage.topics.tasks, outage.topics.partitions),
        (outage.topics.results, 1),
        (outage.topics.failures, 1),
    ):
        outage.broker.create_topic(topic, partitions)
    restarted = time.monotonic()
    # The consumer keeps its positions on the recreated topic (as it would on Apache
    # Kafka): the first 100 tasks, produced again in the same order, take the offsets
    # they had, and the new ones follow.
    outage.topics.produce(download_tasks(names))
    results = outage.topics.read_results(set(names[100:]), timeout=40)
    took = time.monotonic() - restarted
    assert {r["status"] for r in results} == {"completed"}
    check_files(outage.local, digests)
    time.sleep(2)  # anything the worker would go on logging
    lines = _log_lines(worker) - before
    print(f"new results after {took:.1f} s; {lines} log lines since the restart")
    assert lines < 150
    assert worker.process.poll() is None
    assert worker.stop() == 0


def test_sigterm_while_the_broker_is_frozen_exits_within_the_drain_and_a_constant(
    outage: Outage, ftp_root: Path
) -> None:
    from ftp_pooler.service.worker import SHUTDOWN_SECONDS

    drain = 2.0
    digests = remote_files(ftp_root, 300, size=100_000)
    worker = outage.start("w1", worker__drain_seconds=str(drain))
    worker.wait_ready()
    outage.topics.produce(download_tasks(sorted(digests)))
    assert wait_until(lambda: _files_done(outage.local) >= 30, timeout=30)
    outage.broker.freeze()
    time.sleep(1.0)  # results pile up in the producer
    signalled = time.monotonic()
    worker.process.send_signal(15)
    try:
        status = worker.wait(timeout=drain + SHUTDOWN_SECONDS + 10)
    finally:
        took = time.monotonic() - signalled
        print(f"exited {took:.1f} s after SIGTERM (drain {drain} s)")
    assert status == 0
    assert took <= drain + SHUTDOWN_SECONDS + 2.0  # + process exit


async def test_a_consumer_whose_commits_fail_is_reported_and_its_close_is_bounded(
    outage: Outage,
) -> None:
    import trio
    from kafka import KafkaConsumer

    from ftp_pooler.service.api import Health
    from ftp_pooler.scheduling.backpressure import BufferBound
    from ftp_pooler.config import Settings
    from ftp_pooler.kafka.deliveries import DeliveryQueue
    from ftp_pooler.kafka.clients import consumer_config
    from ftp_pooler.metrics import Metrics
    from ftp_pooler.kafka.poller import ABANDON_GRACE_SECONDS, KafkaPoller

    outage.topics.produce([b"task"] * 5)
    settings = Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": [outage.broker.bootstrap_servers],
                "consumer_group": outage.topics.group,
                "input_topic": outage.topics.tasks,
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 500,
                "request_timeout_ms": 1000,
                "delivery_timeout_ms": 2000,
                "result_ack_timeout_seconds": 3,
            },
            "api": {"liveness_stall_seconds": 4},
        }
    )
    consumer = await trio.to_thread.run_sync(lambda: KafkaConsumer(**consumer_config(settings)))
    health, deliveries = Health(), DeliveryQueue()
    poller = KafkaPoller(
        consumer, deliveries, topic=outage.topics.tasks, bound=BufferBound(20, 10**9, 5),
        max_poll_records=10,
        commit_interval=3600, revoke_timeout=1.0, health=health, metrics=Metrics(),
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        nursery.start_soon(poller.run)
        taken = []
        with trio.fail_after(30):
            while len(taken) < 5:
                taken.append(await deliveries.get())
        for delivery in taken:
            assert poller.started(delivery)
        nursery.cancel_scope.cancel()  # the poll loop stops; the consumer stays the poller's

    poller.acknowledged(taken[:2])
    outage.broker.freeze()
    await poller.commit(timeout=1.0)  # kafka-python gives up after 1 s
    ok, report = health.alive(30, 0.0)
    assert not ok and "no commit succeeding" in report["components"]["commits"]["reason"]
    positions = poller.tracker.to_commit()
    poller.tracker.forget(set(positions))  # as a revocation does: nothing waits any more
    await poller.commit(timeout=1.0)
    assert health.alive(30, 0.0)[0]
    for delivery in taken[:2]:  # the same two, on partitions assigned again
        poller.tracker.received(delivery.partition, delivery.offset)
    poller.acknowledged(taken[:2])
    await poller.commit(timeout=1.0)
    assert not health.alive(30, 0.0)[0]
    outage.broker.resume()
    with trio.fail_after(20):
        while "commits" in health.alive(30)[1]["components"]:
            await poller.commit(timeout=1.0)
    assert health.alive(30, 0.0)[0]

    poller.acknowledged(taken[2:])
    outage.broker.freeze()
    started = trio.current_time()
    await poller.close(timeout=1.0)  # commit and close share the second, whatever happens
    took = trio.current_time() - started
    assert took <= 1.0 + 2 * ABANDON_GRACE_SECONDS + 0.5, took
