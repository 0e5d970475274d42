"""ResultPublisher's bookkeeping: acks arrive on the producer's thread, refusals are retried,
a producer that stops delivering is replaced; and its recovery decisions alone.

The producer here is a stand-in whose futures the test resolves (from a
thread, as kafka-python's sender thread does); the worker tests and
tests/test_broker_outage.py run the publisher against the real broker.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import trio
import trio.testing
from kafka import TopicPartition
from kafka.errors import (
    IllegalStateError,
    KafkaConnectionError,
    KafkaTimeoutError,
    ProducerFencedError,
)
from kafka.future import Future
from structlog.testing import capture_logs

from ftp_pooler.contract import InvalidTaskError, Result, parse_task
from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.kafka.deliveries import Delivery
from ftp_pooler.kafka.publisher import ResultPublisher
from ftp_pooler.kafka.recovery import PublishState, Recovery, RecoveryPolicy

PARTITION = TopicPartition("tasks", 0)


class _Metadata:
    def __init__(self, known: bool) -> None:
        self.known = known

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0} if self.known else None


class StandInProducer:
    """Records sends; each returns a kafka-python Future the test resolves."""

    def __init__(self, *, metadata_known: bool = True) -> None:
        self._metadata = _Metadata(metadata_known)
        self.sent: list[tuple[str, bytes, Future]] = []
        self.threads: set[str] = set()
        self.changed = trio.Event()
        self.flushes = 0
        self.flushes_done = 0
        self.release_flush = threading.Event()
        self.closed = False

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

    def flush(self, timeout: float | None = None) -> None:
        """Counts the call, then blocks (in its worker thread) until the test releases it."""
        self.flushes += 1
        self.release_flush.wait(timeout)
        self.flushes_done += 1

    def send(self, topic: str, *, key: bytes, value: bytes) -> Future:
        future = Future()
        self.sent.append((topic, key, future))
        self.threads.add(threading.current_thread().name)
        return future

    def keys(self) -> list[bytes]:
        """The keys sent, in order."""
        return [key for _topic, key, _future in self.sent]

    async def wait_sent(self, count: int) -> None:
        with trio.fail_after(5):
            while len(self.sent) < count:
                await trio.sleep(0.005)


def _task(task_id: str) -> Any:
    return parse_task(
        b'{"task_id": "%s", "source": {"connection_id": "ftp", "path": "/a"},'
        b' "destination": {"connection_id": "local", "path": "a"}}' % task_id.encode()
    )


def _completed(task_id: str) -> Result:
    return Result.completed(
        _task(task_id), worker="w", bytes_transferred=1, duration_ms=1, attempts=1
    )


def _failed(task_id: str) -> Result:
    error = PoolerError(ErrorCode.FILE_NOT_FOUND, "no such file")
    return Result.failed(_task(task_id), error, worker="w", duration_ms=1, attempts=1)


class Recorder:
    def __init__(self) -> None:
        self.acked: list[Delivery] = []
        self.published: Counter[str] = Counter()
        self.failures = 0
        self.producers: list[StandInProducer] = []
        """Every producer the publisher made (not the first, given to it)."""
        self.refuse_to_make = 0
        """How many of the next producers cannot be made (KafkaConnectionError)."""
        self.waiting: list[bool] = []

    def new_producer(self) -> StandInProducer:
        if self.refuse_to_make:
            self.refuse_to_make -= 1
            raise KafkaConnectionError("no broker")
        producer = StandInProducer()
        self.producers.append(producer)
        return producer

    def publisher(
        self,
        producer: StandInProducer,
        is_idle: Callable[[], bool] = lambda: False,
        gather_seconds: float = 0.0,
        ack_timeout: float = 3600.0,
    ) -> ResultPublisher:
        return ResultPublisher(
            producer,
            new_producer=self.new_producer,
            policy=RecoveryPolicy.for_ack_timeout(ack_timeout),
            on_waiting=self.waiting.append,
            result_topic="results",
            fail_topic="failures",
            on_acked=self.acked.extend,
            on_published=lambda topic, n: self.published.update({topic: n}),
            on_failed=self.count_failure,
            is_idle=is_idle,
            gather_seconds=gather_seconds,
            retry_seconds=0.01,
        )

    def count_failure(self) -> None:
        self.failures += 1


async def test_acks_from_the_producer_thread_reach_the_trio_side() -> None:
    producer, seen = StandInProducer(), Recorder()
    publisher = seen.publisher(producer)
    deliveries = [Delivery(PARTITION, offset, b"") for offset in range(3)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        publisher.publish(_completed("t-0"), deliveries[0])
        publisher.publish(_failed("t-1"), deliveries[1])
        publisher.publish(_completed("t-2"), deliveries[2])
        await producer.wait_sent(3)
        assert [(topic, key) for topic, key, _ in producer.sent] == [
            ("results", b"t-0"), ("failures", b"t-1"), ("results", b"t-2"),
        ]  # fmt: skip
        assert publisher.pending == 3 and seen.acked == []

        def sender_thread() -> None:
            for _topic, _key, future in producer.sent:
                future.success(None)

        await trio.to_thread.run_sync(sender_thread)
        with trio.fail_after(5):
            await publisher.wait_idle()
        nursery.cancel_scope.cancel()
    assert sorted(d.offset for d in seen.acked) == [0, 1, 2]
    assert seen.published == {"results": 2, "failures": 1}
    assert publisher.pending == 0 and seen.failures == 0


async def test_a_refused_result_is_sent_again_and_acknowledged_once() -> None:
    producer, seen = StandInProducer(), Recorder()
    publisher = seen.publisher(producer)
    delivery = Delivery(PARTITION, 7, b"")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        publisher.publish(_completed("t-7"), delivery)
        await producer.wait_sent(1)
        producer.sent[0][2].failure(KafkaTimeoutError("no ack"))
        await producer.wait_sent(2)
        assert seen.failures == 1 and seen.acked == [] and publisher.pending == 1
        assert producer.sent[1][:2] == ("results", b"t-7")
        producer.sent[1][2].success(None)
        with trio.fail_after(5):
            await publisher.wait_idle()
        nursery.cancel_scope.cancel()
    assert seen.acked == [delivery] and len(producer.sent) == 2


async def test_sends_leave_the_trio_thread_until_topic_metadata_is_cached() -> None:
    producer, seen = StandInProducer(metadata_known=False), Recorder()
    publisher = seen.publisher(producer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        publisher.publish(_completed("t-1"), Delivery(PARTITION, 1, b""))
        await producer.wait_sent(1)
        producer._metadata.known = True
        publisher.publish(_completed("t-2"), Delivery(PARTITION, 2, b""))
        await producer.wait_sent(2)
        nursery.cancel_scope.cancel()
    assert threading.main_thread().name in producer.threads and len(producer.threads) == 2


async def test_results_are_gathered_for_a_moment_unless_the_worker_is_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    producer, seen = StandInProducer(), Recorder()
    producer.release_flush.set()
    idle = False
    publisher = seen.publisher(producer, is_idle=lambda: idle, gather_seconds=0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        publisher.publish(_completed("t-1"), Delivery(PARTITION, 1, b""))
        await trio.sleep(0.006)
        assert producer.keys() == []  # waiting for more
        publisher.publish(_completed("t-2"), Delivery(PARTITION, 2, b""))
        await trio.sleep(0.006)
        assert producer.keys() == [b"t-1", b"t-2"]  # sent together, 10 ms after the first

        idle = True
        publisher.publish(_completed("t-3"), Delivery(PARTITION, 3, b""))
        await trio.sleep(0.001)
        assert producer.keys() == [b"t-1", b"t-2", b"t-3"]  # nothing else to wait for
        nursery.cancel_scope.cancel()


async def test_a_message_without_task_id_is_keyed_by_where_it_came_from() -> None:
    producer, seen = StandInProducer(), Recorder()
    publisher = seen.publisher(producer)
    raw = b"not json"
    invalid = Result.invalid(InvalidTaskError("message is not JSON"), raw, worker="w")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        publisher.publish(invalid, Delivery(PARTITION, 42, raw))
        await producer.wait_sent(1)
        nursery.cancel_scope.cancel()
    assert producer.sent[0][:2] == ("failures", b"tasks:0:42")


async def test_an_idle_worker_flushes_instead_of_waiting_out_the_linger() -> None:
    producer, seen = StandInProducer(), Recorder()
    idle = False
    publisher = seen.publisher(producer, is_idle=lambda: idle)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        publisher.publish(_completed("t-1"), Delivery(PARTITION, 1, b""))
        await producer.wait_sent(1)
        assert producer.flushes == 0  # tasks still running: the producer lingers

        idle = True
        publisher.publish(_completed("t-2"), Delivery(PARTITION, 2, b""))
        await producer.wait_sent(2)
        with trio.fail_after(5):
            while producer.flushes == 0:
                await trio.sleep(0.005)
        publisher.publish(_completed("t-3"), Delivery(PARTITION, 3, b""))
        await producer.wait_sent(3)
        assert producer.flushes == 1  # one flush at a time

        producer.release_flush.set()
        with trio.fail_after(5):
            while producer.flushes_done == 0:
                await trio.sleep(0.005)
        await trio.testing.wait_all_tasks_blocked()
        publisher.publish(_completed("t-4"), Delivery(PARTITION, 4, b""))
        with trio.fail_after(5):
            while producer.flushes < 2:
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    assert producer.keys() == [b"t-1", b"t-2", b"t-3", b"t-4"]


# --- Recovery: the decisions alone ----------------------------------------------------------

POLICY = RecoveryPolicy(ack_timeout=100.0, stall_after=5.0, initial_backoff=1.0, max_backoff=8.0)


def _step(
    recovery: Recovery, now: float, wait: float | None = None, failure: str | None = None
) -> tuple[Recovery, bool]:
    return recovery.step(now, oldest_wait=wait, failure=failure, policy=POLICY)


def test_waiting_results_stall_then_replace_the_producer_then_an_ack_heals() -> None:
    recovery, replace_now = _step(Recovery(), 10.0, wait=4.9)
    assert (recovery.state, replace_now) == (PublishState.HEALTHY, False)
    recovery, replace_now = _step(recovery, 11.0, wait=5.0)
    assert (recovery.state, replace_now) == (PublishState.STALLED, False)
    assert recovery.reason == "a result unacknowledged for 5.0 s"
    stalled = recovery
    assert _step(recovery, 50.0, wait=44.0) == (stalled, False)  # no new state, no new reason
    recovery, replace_now = _step(recovery, 106.0, wait=100.0)
    assert (recovery.state, replace_now, recovery.attempts) == (PublishState.RECREATING, True, 1)
    # Every result is sent again on the new producer: young waits, but no ack yet.
    assert _step(recovery, 106.5, wait=0.5) == (recovery, False)
    recovery = recovery.acknowledged(107.0)
    recovery, replace_now = _step(recovery, 107.5, wait=0.2)
    assert (recovery.state, recovery.reason, recovery.attempts) == (PublishState.HEALTHY, "", 0)


def test_a_failed_producer_is_replaced_at_once_and_again_with_backoff_until_an_ack() -> None:
    recovery, replace_now = _step(Recovery(), 10.0, wait=0.1, failure="fenced")
    assert (recovery.state, replace_now, recovery.reason) == (
        PublishState.RECREATING, True, "producer failed: fenced",
    )  # fmt: skip
    replaced = [10.0]
    now = 10.0
    while now < 60.0:
        now += 0.25
        recovery, replace_now = _step(recovery, now, wait=0.1, failure="fenced")
        assert recovery.state is PublishState.RECREATING
        if replace_now:
            replaced.append(now)
    gaps = [b - a for a, b in itertools.pairwise(replaced)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    recovery = recovery.acknowledged(now)
    recovery, replace_now = _step(recovery, now + 0.25, wait=0.1, failure="fenced")
    assert replace_now and recovery.attempts == 1  # the backoff starts over


def test_a_replaced_producer_with_nothing_to_send_is_healthy() -> None:
    recovery, _ = _step(Recovery(), 10.0, failure="gone")
    assert _step(recovery, 10.5) == (
        Recovery(PublishState.HEALTHY, "", attempts=1, replaced_at=10.0), False
    )


def test_backoff_doubles_up_to_its_bound() -> None:
    assert [POLICY.backoff(n) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0]


# --- Recovery: the publisher with stand-in producers -----------------------------------------


async def _wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def test_a_producer_that_never_answers_is_replaced_and_every_result_sent_again() -> None:
    first, seen = StandInProducer(), Recorder()
    publisher = seen.publisher(first, ack_timeout=0.6)
    deliveries = [Delivery(PARTITION, offset, b"") for offset in range(3)]
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher.run)
            for offset, delivery in enumerate(deliveries):
                publisher.publish(_completed(f"t-{offset}"), delivery)
            await first.wait_sent(3)
            first.sent[0][2].success(None)  # one answer, then silence (a frozen broker)
            await _wait_for(lambda: seen.producers and len(seen.producers[0].sent) == 2)
            second = seen.producers[0]
            await _wait_for(lambda: first.closed)  # in a thread of its own
            assert publisher.state is PublishState.RECREATING
            assert second.keys() == [b"t-1", b"t-2"]
            first.sent[1][2].success(None)  # the old producer answers late after all
            for _topic, _key, future in second.sent:
                future.success(None)
            await _wait_for(lambda: publisher.pending == 0)
            await _wait_for(lambda: publisher.state is PublishState.HEALTHY)
            nursery.cancel_scope.cancel()
    assert sorted(d.offset for d in seen.acked) == [0, 1, 2]  # each once
    assert len(seen.producers) == 1 and seen.waiting == [True, False]
    events = [entry["event"] for entry in logs if entry["event"].startswith("publish.")]
    # "stalled" first, unless a late watch (a loaded machine) saw the wait past both bounds
    assert events in (
        ["publish.stalled", "publish.recreating_producer", "publish.healthy"],
        ["publish.recreating_producer", "publish.healthy"],
    )


async def test_a_fenced_producer_is_replaced_at_once_and_its_refusals_logged_once() -> None:
    first, seen = StandInProducer(), Recorder()
    publisher = seen.publisher(first)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher.run)
            for offset in range(200):
                publisher.publish(_completed(f"t-{offset}"), Delivery(PARTITION, offset, b""))
            await first.wait_sent(200)

            def fail_all() -> None:
                for _topic, _key, future in first.sent:
                    future.failure(ProducerFencedError())

            await trio.to_thread.run_sync(fail_all)
            await _wait_for(lambda: seen.producers and len(seen.producers[0].sent) == 200)
            assert len(first.sent) == 200  # not retried on the fenced producer
            for _topic, _key, future in seen.producers[0].sent:
                future.success(None)
            await _wait_for(lambda: publisher.state is PublishState.HEALTHY)
            nursery.cancel_scope.cancel()
    assert len(seen.acked) == 200 and publisher.pending == 0
    events = [entry["event"] for entry in logs if entry["event"].startswith("publish.")]
    assert events == ["publish.refused", "publish.recreating_producer", "publish.healthy"]
    # counted from the first batch of refusals drained (all 200, unless the Trio side woke
    # while the sender thread was still failing them); the later ones are not logged
    assert 1 <= logs[0]["results"] <= 200 and "ProducerFencedError" in logs[0]["error"]


async def test_a_producer_that_cannot_be_made_is_tried_again_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Failed:
        def has_fatal_error(self) -> bool:
            return True

        last_error = "InitProducerId: UnknownError"

    first, seen = StandInProducer(), Recorder()
    first._transaction_manager = Failed()  # type: ignore[attr-defined]
    seen.refuse_to_make = 3
    publisher = seen.publisher(first)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        publisher.publish(_completed("t-1"), Delivery(PARTITION, 1, b""))
        start = trio.current_time()
        await _wait_for(lambda: seen.producers, timeout=60)
        # attempts at 0.5 s (first watch), then 1, 2 and 4 s apart: the fourth one works.
        # (The clock jumps while the factory runs in its thread: only a lower bound holds.)
        assert trio.current_time() - start >= 7.0
        assert seen.refuse_to_make == 0
        await seen.producers[0].wait_sent(1)
        seen.producers[0].sent[0][2].success(None)
        await publisher.wait_idle()
        nursery.cancel_scope.cancel()
    assert [d.offset for d in seen.acked] == [1]


async def test_a_closed_publisher_does_not_replace_its_producer() -> None:
    first, seen = StandInProducer(), Recorder()
    publisher = seen.publisher(first)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        publisher.publish(_completed("t-1"), Delivery(PARTITION, 1, b""))
        await first.wait_sent(1)
        await publisher.aclose()
        assert first.closed
        first.sent[0][2].failure(IllegalStateError("Producer is closed forcefully."))
        await trio.sleep(1.5)  # three watch periods
        nursery.cancel_scope.cancel()
    assert seen.producers == [] and publisher.pending == 1
