"""The Kafka poller: the one owner of the ``KafkaConsumer``.

Every consumer call (poll, commit, pause, resume, close) is made by this
object, one at a time, the blocking ones in a worker thread via
``trio.to_thread``; nothing else touches the consumer, which is not
thread-safe (the rebalance listener runs while a poll is in progress and
only queues an asynchronous commit). Records go into a
:class:`~ftp_pooler.kafka.deliveries.DeliveryQueue` for the dispatcher. Offsets are
committed from the :class:`~ftp_pooler.kafka.offsets.OffsetTracker`: periodically,
when partitions are revoked, and at shutdown, never past an offset whose
result is not yet acknowledged.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import structlog
import trio
from kafka import ConsumerRebalanceListener, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from trio_util import AsyncValue

from ftp_pooler.service.api import Health
from ftp_pooler.scheduling.backpressure import BufferBound
from ftp_pooler.metrics import Metrics
from ftp_pooler.kafka.offsets import OffsetTracker
from ftp_pooler.kafka.deliveries import Delivery, DeliveryQueue

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

POLL_TIMEOUT_MS = 500
PAUSED_POLL_SECONDS = 1.0
"""While paused, how often the consumer is polled anyway (``poll`` returns nothing then,
but serves the group: rebalances, ``max.poll.interval.ms``). Resuming does not wait for
it: acknowledgements wake the poller as soon as there is room."""
COMMIT_TIMEOUT_SECONDS = 10.0
"""Longest a periodic commit may take (it is retried at the next interval): well within
the 30 s a poller heartbeat may be late before ``/health`` fails."""
POLL_ERROR_PAUSE_SECONDS = 1.0
"""After a poll that raised, how long before the next one (a poll error repeats at once)."""
POLL_ERROR_LOG_SECONDS = 60.0
"""A poll error that repeats is logged again at most this often (with its count)."""
ABANDON_GRACE_SECONDS = 0.5
"""Beyond its own timeout, how long a consumer call in a thread is waited for before the
thread is abandoned."""


class KafkaPoller:
    """Polls, applies backpressure, tracks offsets and commits them.

    Args:
        consumer: A kafka-python ``KafkaConsumer`` with ``enable_auto_commit=False``.
        deliveries: Where consumed records go (the dispatcher reads it).
        bound: Consumed tasks (and their bytes) not yet acknowledged; when it is
            reached the assigned partitions are paused (see
            :mod:`ftp_pooler.scheduling.backpressure`).
        revoke_timeout: How long a revocation waits for the partitions' running
            tasks to finish and their results to be acknowledged.
    """

    def __init__(
        self,
        consumer: Any,
        deliveries: DeliveryQueue,
        *,
        topic: str,
        bound: BufferBound,
        max_poll_records: int,
        commit_interval: float,
        revoke_timeout: float,
        health: Health,
        metrics: Metrics,
    ) -> None:
        self._consumer = consumer
        self._deliveries = deliveries
        self._topic = topic
        self._bound = bound
        self._max_poll_records = max_poll_records
        self._commit_interval = commit_interval
        self._revoke_timeout = revoke_timeout
        self._health = health
        self._metrics = metrics
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.assigned: set[TopicPartition] = set()
        self._running: Counter[TopicPartition] = Counter()
        self._bytes: Counter[TopicPartition] = Counter()
        """Bytes of the message values received and not yet acknowledged, per partition."""
        self._finished = AsyncValue(0)
        self._paused = False
        self._next_offset: dict[TopicPartition, int] = {}
        self._resume_from: dict[TopicPartition, int] = {}
        self._next_poll = 0.0
        """trio.current_time() before which no poll starts (a pause after a poll error)."""
        self._poll_error: tuple[str, float, int] | None = None
        """The poll error now repeating: its text, when it was last logged, repeats since."""
        self._consumer_free = threading.Event()
        """Clear while a consumer call runs in a thread (perhaps abandoned)."""
        self._consumer_free.set()

    # -- called by the dispatcher and the publisher, on the Trio thread ---------------

    def started(self, delivery: Delivery) -> bool:
        """Claim a delivery for a task; False if its partition was revoked meanwhile."""
        if delivery.partition not in self.assigned:
            return False
        self._running[delivery.partition] += 1
        return True

    def acknowledged(self, deliveries: Iterable[Delivery]) -> None:
        """Results of these deliveries are stored by the broker: their offsets are done."""
        for delivery in deliveries:
            self.tracker.done(delivery.partition, delivery.offset)
            if self._running[delivery.partition] > 0:
                self._running[delivery.partition] -= 1
            if self._bytes[delivery.partition] > 0:
                held = self._bytes[delivery.partition] - len(delivery.value)
                self._bytes[delivery.partition] = max(0, held)
        self._finished.value += 1

    @property
    def inflight(self) -> int:
        """Tasks received and not yet acknowledged (queued, running or being published)."""
        return self.tracker.in_flight()

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the message values of those tasks."""
        return sum(self._bytes.values())

    @property
    def paused(self) -> bool:
        """Whether the assigned partitions are paused (backpressure)."""
        return self._paused

    # -- the poll loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe, then poll until cancelled (a poll or commit in progress is abandoned
        then, see :meth:`close`)."""
        token = trio.lowlevel.current_trio_token()
        listener = _RebalanceListener(self, token)
        await self._call(lambda: self._consumer.subscribe([self._topic], listener=listener))
        next_commit = trio.current_time() + self._commit_interval
        while True:
            await self._apply_backpressure()
            if self._paused:
                await self._wait_for_room()
                await self._apply_backpressure()
            try:
                records = await self._call(
                    functools.partial(
                        self._consumer.poll,
                        timeout_ms=0 if self._paused else POLL_TIMEOUT_MS,
                        max_records=self._max_poll_records,
                    )
                )
            except Exception as exc:  # any poll error (Trio's Cancelled is not an Exception)
                records = {}
                self._poll_failed(exc)
            else:
                self._poll_succeeded()
            self._health.heartbeat("poller")
            for partition, messages in records.items():
                if partition not in self.assigned or not messages:
                    continue
                deliveries = []
                size = 0
                for message in messages:
                    self.tracker.received(partition, message.offset)
                    value = message.value or b""
                    size += len(value)
                    deliveries.append(Delivery(partition, message.offset, value))
                self._bytes[partition] += size
                self._next_offset[partition] = messages[-1].offset + 1
                self._deliveries.put(deliveries)
            self._report_lag()
            if trio.current_time() >= next_commit:
                await self.commit()
                next_commit = trio.current_time() + self._commit_interval
            await trio.sleep_until(self._next_poll)

    def _poll_failed(self, exc: Exception) -> None:
        """A poll raised (e.g. ``UnsupportedCodecError``: a record batch compressed with a
        codec whose library is missing, ``CorruptRecordError``, or the codec's own error
        for a payload that does not decode: ``RuntimeError`` from lz4, ``ZstdError``,
        snappy's ``UncompressError``, ``BadGzipFile``; kafka-python does not wrap them):
        the worker goes on. Only :class:`Exception`: Trio's ``Cancelled``,
        ``KeyboardInterrupt`` and ``SystemExit`` still end the loop.

        Raising would end the worker, and a restart would meet the same record again:
        a crash loop. Instead: one ``kafka.poll_failed`` error line (again at most every
        :data:`POLL_ERROR_LOG_SECONDS` while it repeats, with the count), the poller
        ``degraded`` in ``/health`` and not ready in ``/ready`` until a poll succeeds,
        and a pause of :data:`POLL_ERROR_PAUSE_SECONDS` before the next poll (the
        caller's, after its commit: finished tasks are still committed).
        """
        error = f"{type(exc).__name__}: {exc}"
        now = trio.current_time()
        last = self._poll_error
        if last is None or last[0] != error or now - last[1] >= POLL_ERROR_LOG_SECONDS:
            repeats = 0 if last is None or last[0] != error else last[2]
            log.error("kafka.poll_failed", error=error, repeated=repeats)
            self._poll_error = (error, now, 1)
        else:
            self._poll_error = (error, last[1], last[2] + 1)
        self._health.troubled("poller", f"poll failing: {error}")
        self._next_poll = now + POLL_ERROR_PAUSE_SECONDS

    def _poll_succeeded(self) -> None:
        if self._poll_error is not None:
            log.info("kafka.poll_recovered")
            self._poll_error = None
            self._health.troubled("poller", None)

    async def _apply_backpressure(self) -> None:
        """Pause when the buffer bound is reached; resume when it has room again.

        Resuming only when the buffer is nearly empty would let the dispatcher
        run dry while the next poll fetches.
        """
        inflight = self.inflight
        self._metrics.set_inflight(inflight)
        if not self._paused and self._bound.full(inflight, self.buffered_bytes):
            await self._call(lambda: self._consumer.pause(*self.assigned))
            self._paused = True
            log.info("kafka.paused", tasks=inflight, bytes=self.buffered_bytes)
        elif self._paused and self._bound.has_room(inflight, self.buffered_bytes):
            await self._call(lambda: self._consumer.resume(*self._consumer.paused()))
            self._paused = False
            log.info("kafka.resumed", tasks=inflight, bytes=self.buffered_bytes)

    async def _wait_for_room(self) -> None:
        """Paused: until acknowledgements make room in the bound, or
        :data:`PAUSED_POLL_SECONDS` pass. (Polling every 50 ms instead kept kafka-python's
        threads busy, taking the GIL from the transfers.)"""
        with trio.move_on_after(PAUSED_POLL_SECONDS):
            while not self._bound.has_room(self.inflight, self.buffered_bytes):
                await self._finished.wait_transition()

    def _report_lag(self) -> None:
        """Lag per partition from the consumer's cached high-water marks (no I/O)."""
        for partition, next_offset in self._next_offset.items():
            highwater = self._consumer.highwater(partition)
            if highwater is not None:
                self._metrics.set_lag(partition.topic, partition.partition, highwater - next_offset)

    async def _call(self, call: Callable[[], _T]) -> _T:
        """``call()`` (a consumer method) in a worker thread, abandoned on cancellation.

        Cancelling the poll loop at shutdown must not wait for a poll or a commit the
        broker does not answer. The consumer is not thread-safe: a call abandoned
        that way is waited for before the next one starts (by :meth:`close` for a
        bounded time only).
        """
        if not self._consumer_free.is_set():
            await trio.to_thread.run_sync(self._consumer_free.wait, abandon_on_cancel=True)

        def tracked() -> _T:
            try:
                return call()
            finally:
                self._consumer_free.set()

        self._consumer_free.clear()
        return await trio.to_thread.run_sync(tracked, abandon_on_cancel=True)

    async def commit(self, timeout: float = COMMIT_TIMEOUT_SECONDS) -> bool:
        """Commit every partition's done prefix (a failure is logged and retried next time).

        kafka-python gives up on the commit after ``timeout`` seconds; its thread is
        abandoned :data:`ABANDON_GRACE_SECONDS` later if it has not. From a failure to the
        next success, the commits wait in :class:`~ftp_pooler.service.api.Health` (``"commits"``):
        failing for too long fails liveness.

        Returns:
            Whether the commit ended (succeeded or failed) in time.
        """
        positions = self.tracker.to_commit()
        if not positions:  # e.g. the partitions whose commits failed were revoked
            self._health.done_waiting("commits")
            return True
        offsets = {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()}
        commit = functools.partial(self._consumer.commit, offsets, timeout_ms=int(timeout * 1000))
        with trio.move_on_after(timeout + ABANDON_GRACE_SECONDS) as scope:
            try:
                await self._call(commit)
            except KafkaError as exc:
                self._commit_failed(str(exc))
                return True
        if scope.cancelled_caught:
            self._commit_failed(f"no answer within {timeout:g} s")
            return False
        self.tracker.committed(positions)
        self._metrics.commit_succeeded()
        self._health.done_waiting("commits")
        return True

    def _commit_failed(self, error: str) -> None:
        self._metrics.commit_failed()
        self._health.waiting("commits", "finished offsets waiting, no commit succeeding")
        log.warning("kafka.commit_failed", error=error)

    async def close(self, timeout: float = COMMIT_TIMEOUT_SECONDS) -> None:
        """Commit what is done and leave the group (the consumer is closed for good), in at
        most ``timeout`` seconds (plus twice :data:`ABANDON_GRACE_SECONDS`), whatever the
        broker does.

        A consumer call the poll loop abandoned is waited for first; what does not end
        in time is given up on: then the final commit, or the group's leaving, does not
        happen (the broker drops this member after its session timeout, and the tasks
        not committed are delivered again).
        """
        deadline = trio.current_time() + timeout

        def left() -> float:
            return max(0.0, deadline - trio.current_time())

        free = await trio.to_thread.run_sync(
            self._consumer_free.wait, left(), abandon_on_cancel=True
        )
        if not free:
            log.warning("kafka.close_abandoned", reason="a poll or commit did not end")
            return
        if not await self.commit(left()):
            return
        close = functools.partial(
            self._consumer.close, autocommit=False, timeout_ms=int(left() * 1000)
        )
        with trio.move_on_after(left() + ABANDON_GRACE_SECONDS) as scope:
            await self._call(close)
        if scope.cancelled_caught:
            log.warning("kafka.close_abandoned", reason="the consumer's close did not end")

    # -- rebalances (entered from kafka-python's IO thread) ------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> dict[TopicPartition, Any]:
        """Stop taking work from ``revoked``, wait (bounded) for its tasks, return its commits."""
        self.assigned -= revoked
        self._metrics.rebalanced()
        with trio.move_on_after(self._revoke_timeout) as scope:
            while sum(self._running[tp] for tp in revoked):
                await self._finished.wait_transition()
        if scope.cancelled_caught:
            log.warning("kafka.revoke_timeout", partitions=sorted(str(tp) for tp in revoked))
        positions = {tp: pos for tp, pos in self.tracker.to_commit().items() if tp in revoked}
        self._resume_from = {
            tp: position
            for tp in revoked
            if (position := self.tracker.resume_position(tp)) is not None
        }
        self.tracker.forget(revoked)
        for tp in revoked:
            self._running.pop(tp, None)
            self._bytes.pop(tp, None)
            self._next_offset.pop(tp, None)
            self._metrics.forget_partition(tp.topic, tp.partition)
        return {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()}

    def on_assigned(self, assigned: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Take the new assignment; returns where to seek partitions that came straight back.

        kafka-python keeps its fetch position for a partition that is revoked
        and reassigned in one rebalance, but the records it had fetched past
        our unfinished work were dropped on revocation: consumption must
        resume at the first offset not yet done, or those tasks are skipped.
        """
        self.assigned |= assigned
        self._health.set_joined(True)
        seeks = {tp: self._resume_from[tp] for tp in assigned if tp in self._resume_from}
        self._resume_from = {}
        log.info("kafka.assigned", partitions=sorted(str(tp) for tp in assigned))
        return seeks


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on kafka-python's IO thread; hands each event to the Trio side and waits (bounded)."""

    def __init__(self, poller: KafkaPoller, token: trio.lowlevel.TrioToken) -> None:
        self._poller = poller
        self._token = token

    def on_partitions_revoked(self, revoked: Any) -> None:
        offsets = trio.from_thread.run(
            self._poller.on_revoked, set(revoked), trio_token=self._token
        )
        if offsets:
            self._poller._consumer.commit_async(offsets)

    def on_partitions_assigned(self, assigned: Any) -> None:
        seeks = trio.from_thread.run_sync(
            self._poller.on_assigned, set(assigned), trio_token=self._token
        )
        for partition, offset in seeks.items():
            self._poller._consumer.seek(partition, offset)
