"""ResultPublisher's bookkeeping: acks arrive on the producer's thread, refusals are retried.

The producer here is a stand-in whose futures the test resolves (from a
thread, as kafka-python's sender thread does); the worker tests run the
publisher against the real broker.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import trio
import trio.testing
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from ftp_pooler.contract import InvalidTaskError, Result, parse_task
from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.deliveries import Delivery
from ftp_pooler.publisher import ResultPublisher

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

    def publisher(
        self,
        producer: StandInProducer,
        is_idle: Callable[[], bool] = lambda: False,
        gather_seconds: float = 0.0,
    ) -> ResultPublisher:
        return ResultPublisher(
            producer,
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
