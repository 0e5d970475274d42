"""Publishes results to Kafka, reports which deliveries are safely stored, and replaces a
producer that stopped delivering.

Results go to kafka-python's ``KafkaProducer`` (idempotent, ``acks=all``),
which batches them on its own sender thread. Nothing waits on a send: the
producer's futures report back by callback, on the sender thread, into a
queue that the Trio side drains in bulk -- so the cost per result is an
append, not a thread hop and a wake-up. ``send`` itself runs on the Trio
thread only while the producer holds metadata for both topics, when it cannot
block; otherwise (start-up, a topic gone missing) it runs in a worker thread.

The producer lingers up to ``kafka.result_linger_ms`` to fill its batches,
which pays while tasks keep finishing; once the worker has nothing left to
run, the publisher flushes at once, so a last result (or a lone one) does not
wait out the linger.

The publisher itself gathers results for a moment (:data:`GATHER_SECONDS`, at
most the linger) and sends them in one tight loop: ``send`` calls made one by
one, between the transfers' own work, cost the Trio thread about 30 % more
each (measured; see ``docs/architecture.md``). A worker with nothing left to
run sends at once.

A result the broker did not take is sent again (after a pause) until it is,
or until shutdown; its offset stays uncommitted meanwhile, so nothing is lost.

Recovery. kafka-python 3.0.12's idempotent producer can stop delivering for
good: after a batch expired (``delivery_timeout_ms``) while the broker was
frozen, its futures are never completed; against a broker that lost its state
it enters a fatal state and fails every send at once. So a result may wait on
one producer at most ``ack_timeout`` seconds; past that, or as soon as the
producer is in its fatal state, the publisher closes it (bounded, in a thread)
and makes a new one, then sends every unacknowledged result again (consumers
key on ``task_id``: a duplicate is harmless, a loss is not). Replacements
back off (:class:`~ftp_pooler.kafka.recovery.RecoveryPolicy`). The decisions
are :class:`~ftp_pooler.kafka.recovery.Recovery`, a pure value; the state
changes (healthy -> stalled -> recreating -> healthy) are logged once each,
refusals at most once per :data:`REPORT_SECONDS`.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio
from kafka.errors import KafkaError

from ftp_pooler.contract import Result, ResultStatus
from ftp_pooler.kafka.deliveries import Delivery
from ftp_pooler.kafka.clients import FATAL_SEND_ERRORS, close_producer, producer_failure
from ftp_pooler.kafka.recovery import PublishState, Recovery, RecoveryPolicy

log = structlog.get_logger(__name__)

MAX_BATCH = 500
GATHER_SECONDS = 0.01
"""Longest a result waits for others before the publisher sends it (bounded by the linger)."""
FLUSH_WAIT_SECONDS = 5.0
"""Longest an idle flush waits for its acknowledgements (they are counted either way)."""
WATCH_SECONDS = 0.5
"""How often the publisher checks its producer (fatal state, results waiting too long)."""
REPORT_SECONDS = 30.0
"""Refused results are logged at most once per this many seconds (with a count)."""
CLOSE_SECONDS = 2.0
"""Longest a replaced producer's close may take before its thread is abandoned."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    result: Result
    delivery: Delivery
    seq: int = 0
    """Tells this result from every other one of the publisher, for its bookkeeping."""

    @property
    def key(self) -> bytes:
        """The task id, or where the message came from when it had none."""
        if self.result.task_id:
            return self.result.task_id.encode()
        partition = self.delivery.partition
        return f"{partition.topic}:{partition.partition}:{self.delivery.offset}".encode()


@dataclass(slots=True)
class _Unacked:
    """A result not yet acknowledged, and where it stands."""

    item: Outgoing
    sent: bool = False
    """With the producer (True) or queued to be sent (False)."""
    generation: int = -1
    """The producer it was last sent on (-1: none yet)."""
    first_sent: float = math.inf
    """When it was first sent on that producer."""


@dataclass(slots=True)
class _Refusals:
    """Refusals since they were last logged."""

    count: int = 0
    error: str = ""
    reported_at: float = field(default=-math.inf)


class ResultPublisher:
    """Sends results to ``result_topic`` (completed, skipped) or ``fail_topic`` (failed).

    Args:
        producer: A kafka-python ``KafkaProducer``.
        new_producer: Makes another one (blocking: called in a thread; when it raises,
            e.g. while the broker is unreachable, it is called again after a backoff).
        policy: When to replace the producer.
        on_acked: Called, on the Trio thread, with the deliveries whose results
            the broker acknowledged.
        on_published: Called with a topic and how many of its results were acknowledged.
        on_failed: Called when the broker refused results (they are retried).
        on_waiting: Called with True when results start waiting for their
            acknowledgement (none did), and with False when none waits any more.
        is_idle: Whether the worker has no task left to run or queued: then
            what the producer holds is sent without lingering.
        gather_seconds: How long a result waits for more before they are sent
            together (not at all when the worker is idle).
        retry_seconds: Pause before results the broker refused are sent again.
    """

    def __init__(
        self,
        producer: Any,
        *,
        new_producer: Callable[[], Any],
        policy: RecoveryPolicy,
        result_topic: str,
        fail_topic: str,
        on_acked: Callable[[list[Delivery]], None],
        on_published: Callable[[str, int], None] = lambda topic, results: None,
        on_failed: Callable[[], None] = lambda: None,
        on_waiting: Callable[[bool], None] = lambda waiting: None,
        is_idle: Callable[[], bool] = lambda: False,
        gather_seconds: float = 0.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self._producer: Any | None = producer
        self._new_producer = new_producer
        self._policy = policy
        self._generation = 0
        self._have_producer = trio.Event()
        self._have_producer.set()
        self._replacing = False
        self._closed = False
        self._recovery = Recovery()
        self._failure: str | None = None
        self._refusals = _Refusals()
        self._result_topic = result_topic
        self._fail_topic = fail_topic
        self._on_acked = on_acked
        self._on_published = on_published
        self._on_failed = on_failed
        self._on_waiting = on_waiting
        self._is_idle = is_idle
        self._flushing = False
        self._gather_seconds = gather_seconds
        self._retry_seconds = retry_seconds
        self._send, self._receive = trio.open_memory_channel[Outgoing](float("inf"))
        self._seq = itertools.count()
        self._unacked: dict[int, _Unacked] = {}
        self._idle = trio.Event()
        self._idle.set()
        # Filled by the producer's sender thread, drained on the Trio thread.
        self._outcomes: collections.deque[tuple[Outgoing, int, BaseException | None]] = (
            collections.deque()
        )
        self._wake_pending = False
        self._outcomes_ready = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def pending(self) -> int:
        """Results handed to :meth:`publish` and not yet acknowledged."""
        return len(self._unacked)

    @property
    def state(self) -> PublishState:
        return self._recovery.state

    def publish(self, result: Result, delivery: Delivery) -> None:
        """Queue a result (never blocks: the in-flight limit upstream bounds the queue)."""
        item = Outgoing(result, delivery, next(self._seq))
        self._unacked[item.seq] = _Unacked(item)
        if self._idle.is_set():
            self._idle = trio.Event()
            self._on_waiting(True)
        self._send.send_nowait(item)

    async def wait_idle(self) -> None:
        """Until every queued result is acknowledged."""
        await self._idle.wait()

    async def aclose(self, timeout: float = CLOSE_SECONDS) -> None:
        """Close the producer without delivering what it holds (what was not acknowledged
        by now is not committed either); gives up on it after about ``timeout`` seconds."""
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is not None:
            await _close_bounded(producer, timeout)

    def _topic(self, result: Result) -> str:
        return self._fail_topic if result.status is ResultStatus.FAILED else self._result_topic

    async def run(self) -> None:
        """Publish until cancelled."""
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._handle_outcomes, nursery)
            nursery.start_soon(self._watch, nursery)
            async for first in self._receive:
                if self._gather_seconds and not self._is_idle():
                    await trio.sleep(self._gather_seconds)
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                while self._producer is None:
                    await self._have_producer.wait()
                producer, generation = self._producer, self._generation
                batch = self._mark_sent(batch, generation)
                if not batch:
                    continue
                if self._metadata_cached(producer):
                    self._send_batch(producer, generation, batch)
                else:
                    await trio.to_thread.run_sync(
                        self._send_batch, producer, generation, batch, abandon_on_cancel=True
                    )
                if not self._flushing and self._is_idle():
                    self._flushing = True
                    nursery.start_soon(self._flush, producer)

    def _mark_sent(self, batch: list[Outgoing], generation: int) -> list[Outgoing]:
        """The items of ``batch`` still to send (not acknowledged meanwhile, not sent twice),
        recorded as sent on producer ``generation``."""
        now = trio.current_time()
        to_send = []
        for item in batch:
            entry = self._unacked.get(item.seq)
            if entry is None or entry.sent:
                continue
            entry.sent = True
            if entry.generation != generation:
                entry.generation = generation
                entry.first_sent = now
            to_send.append(item)
        return to_send

    async def _flush(self, producer: Any) -> None:
        """Send what the producer holds now (``flush`` blocks: in a thread, given up on
        cancellation; ``close`` ends it at shutdown)."""
        try:
            await trio.to_thread.run_sync(
                producer.flush, FLUSH_WAIT_SECONDS, abandon_on_cancel=True
            )
        except KafkaError as exc:  # the results' own callbacks report the outcome
            log.debug("publish.flush_incomplete", error=str(exc))
        finally:
            self._flushing = False

    def _metadata_cached(self, producer: Any) -> bool:
        """Whether ``send`` will find both topics' partitions without waiting for the broker."""
        metadata = producer._metadata
        return (
            metadata.partitions_for_topic(self._result_topic) is not None
            and metadata.partitions_for_topic(self._fail_topic) is not None
        )

    def _send_batch(self, producer: Any, generation: int, batch: list[Outgoing]) -> None:
        for item in batch:
            try:
                future = producer.send(
                    self._topic(item.result), key=item.key, value=item.result.to_json()
                )
            except KafkaError as exc:
                self._outcome(item, generation, exc)
                continue
            future.add_callback(self._acked, item, generation)
            future.add_errback(self._refused, item, generation)

    # -- on the producer's sender thread (or the sending thread, for a future already done) --

    def _acked(self, item: Outgoing, generation: int, _metadata: object) -> None:
        self._outcome(item, generation, None)

    def _refused(self, item: Outgoing, generation: int, error: BaseException) -> None:
        self._outcome(item, generation, error)

    def _outcome(self, item: Outgoing, generation: int, error: BaseException | None) -> None:
        self._outcomes.append((item, generation, error))
        if not self._wake_pending:
            self._wake_pending = True
            assert self._token is not None
            # An abandoned producer reporting after shutdown has nobody to tell.
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._outcomes_ready.set)

    # -- back on the Trio thread --------------------------------------------------------------

    async def _handle_outcomes(self, nursery: trio.Nursery) -> None:
        while True:
            await self._outcomes_ready.wait()
            self._outcomes_ready = trio.Event()
            self._wake_pending = False  # before draining: a later outcome wakes us again
            acked: list[Outgoing] = []
            refused: list[Outgoing] = []
            while self._outcomes:
                item, generation, error = self._outcomes.popleft()
                if error is None:
                    if self._unacked.pop(item.seq, None) is not None:
                        acked.append(item)
                    continue
                entry = self._unacked.get(item.seq)
                if entry is None or not entry.sent or entry.generation != generation:
                    continue  # acknowledged already, or sent again since on another producer
                refused.append(item)
                self._refusals.count += 1
                self._refusals.error = _describe(error)
                if isinstance(error, FATAL_SEND_ERRORS) and generation == self._generation:
                    self._failure = self._refusals.error
            if acked:
                self._recovery = self._recovery.acknowledged(trio.current_time())
                self._acknowledge(acked)
            if refused:
                self._on_failed()
                self._report_refusals()
                nursery.start_soon(self._send_again_later, refused, self._generation)
                self._assess(nursery)

    def _report_refusals(self) -> None:
        now = trio.current_time()
        if now - self._refusals.reported_at < REPORT_SECONDS:
            return
        log.warning(
            "publish.refused",
            results=self._refusals.count,
            error=self._refusals.error,
            retry_in=self._retry_seconds,
        )
        self._refusals = _Refusals(reported_at=now)

    async def _send_again_later(self, items: list[Outgoing], generation: int) -> None:
        await trio.sleep(self._retry_seconds)
        for item in items:
            entry = self._unacked.get(item.seq)
            if entry is not None and entry.sent and entry.generation == generation:
                entry.sent = False
                self._send.send_nowait(item)

    def _acknowledge(self, items: list[Outgoing]) -> None:
        failed = sum(1 for item in items if item.result.status is ResultStatus.FAILED)
        if failed:
            self._on_published(self._fail_topic, failed)
        if failed < len(items):
            self._on_published(self._result_topic, len(items) - failed)
        self._on_acked([item.delivery for item in items])
        if not self._unacked:
            self._idle.set()
            self._on_waiting(False)

    # -- recovery ---------------------------------------------------------------------------

    async def _watch(self, nursery: trio.Nursery) -> None:
        while True:
            await trio.sleep(WATCH_SECONDS)
            self._assess(nursery)

    def _oldest_wait(self, now: float) -> float | None:
        oldest = min(
            (e.first_sent for e in self._unacked.values() if e.generation == self._generation),
            default=None,
        )
        return None if oldest is None else now - oldest

    def _assess(self, nursery: trio.Nursery) -> None:
        """One step of :class:`Recovery`: log a change of state, start a replacement."""
        if self._replacing or self._closed:
            return
        now = trio.current_time()
        if self._failure is None and self._producer is not None:
            self._failure = producer_failure(self._producer)
        before = self._recovery
        self._recovery, replace_now = before.step(
            now, oldest_wait=self._oldest_wait(now), failure=self._failure, policy=self._policy
        )
        after = self._recovery
        if replace_now:
            log.warning(
                "publish.recreating_producer",
                reason=after.reason,
                attempt=after.attempts,
                unacknowledged=len(self._unacked),
            )
            self._replacing = True
            nursery.start_soon(self._replace_producer, nursery)
        elif after.state is not before.state:
            if after.state is PublishState.HEALTHY:
                log.info("publish.healthy", was=before.state.value)
            else:
                log.warning(
                    "publish.stalled", reason=after.reason, unacknowledged=len(self._unacked)
                )

    async def _replace_producer(self, nursery: trio.Nursery) -> None:
        """Close the producer (in the background), make another, send again every result it
        held. A producer that cannot be made now is tried again at the next due step."""
        try:
            old, self._producer = self._producer, None
            if self._have_producer.is_set():
                self._have_producer = trio.Event()
            self._generation += 1
            self._failure = None
            if old is not None:
                nursery.start_soon(_close_bounded, old, CLOSE_SECONDS)
            now = trio.current_time()
            for entry in self._unacked.values():
                if entry.generation < 0:
                    continue  # never sent: still queued
                entry.generation = self._generation  # waits on the next producer from now
                entry.first_sent = now
                if entry.sent:
                    entry.sent = False
                    self._send.send_nowait(entry.item)
            try:
                producer = await trio.to_thread.run_sync(self._new_producer, abandon_on_cancel=True)
            except Exception as exc:  # whatever the reason: try again later, never die
                self._failure = f"cannot create a producer: {_describe(exc)}"
                return
            self._producer = producer
            self._have_producer.set()
        finally:
            self._replacing = False


async def _close_bounded(producer: Any, timeout: float) -> None:
    """:func:`~ftp_pooler.kafka.clients.close_producer` in a thread, abandoned if it overruns."""
    with trio.move_on_after(timeout + 1.0):
        try:
            await trio.to_thread.run_sync(close_producer, producer, timeout, abandon_on_cancel=True)
        except KafkaError as exc:
            log.debug("publish.close_incomplete", error=str(exc))


def _describe(error: BaseException) -> str:
    """``"Type: message"`` (kafka-python's errors already name their type)."""
    text = str(error)
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name
