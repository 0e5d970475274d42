"""Publishes results to Kafka and reports which deliveries are safely stored.

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
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import trio
from kafka.errors import KafkaError

from ftp_pooler.contract import Result, ResultStatus
from ftp_pooler.deliveries import Delivery

log = structlog.get_logger(__name__)

MAX_BATCH = 500
GATHER_SECONDS = 0.01
"""Longest a result waits for others before the publisher sends it (bounded by the linger)."""
FLUSH_WAIT_SECONDS = 5.0
"""Longest an idle flush waits for its acknowledgements (they are counted either way)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    result: Result
    delivery: Delivery

    @property
    def key(self) -> bytes:
        """The task id, or where the message came from when it had none."""
        if self.result.task_id:
            return self.result.task_id.encode()
        partition = self.delivery.partition
        return f"{partition.topic}:{partition.partition}:{self.delivery.offset}".encode()


class ResultPublisher:
    """Sends results to ``result_topic`` (completed, skipped) or ``fail_topic`` (failed).

    Args:
        producer: A kafka-python ``KafkaProducer``.
        on_acked: Called, on the Trio thread, with the deliveries whose results
            the broker acknowledged.
        on_published: Called with a topic and how many of its results were acknowledged.
        on_failed: Called when the broker refused results (they are retried).
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
        result_topic: str,
        fail_topic: str,
        on_acked: Callable[[list[Delivery]], None],
        on_published: Callable[[str, int], None] = lambda topic, results: None,
        on_failed: Callable[[], None] = lambda: None,
        is_idle: Callable[[], bool] = lambda: False,
        gather_seconds: float = 0.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self._producer = producer
        self._result_topic = result_topic
        self._fail_topic = fail_topic
        self._on_acked = on_acked
        self._on_published = on_published
        self._on_failed = on_failed
        self._is_idle = is_idle
        self._flushing = False
        self._gather_seconds = gather_seconds
        self._retry_seconds = retry_seconds
        self._send, self._receive = trio.open_memory_channel[Outgoing](float("inf"))
        self._pending = 0
        self._idle = trio.Event()
        self._idle.set()
        # Filled by the producer's sender thread, drained on the Trio thread.
        self._outcomes: collections.deque[tuple[Outgoing, BaseException | None]] = (
            collections.deque()
        )
        self._wake_pending = False
        self._outcomes_ready = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def pending(self) -> int:
        """Results handed to :meth:`publish` and not yet acknowledged."""
        return self._pending

    def publish(self, result: Result, delivery: Delivery) -> None:
        """Queue a result (never blocks: the in-flight limit upstream bounds the queue)."""
        self._pending += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        self._send.send_nowait(Outgoing(result, delivery))

    async def wait_idle(self) -> None:
        """Until every queued result is acknowledged."""
        await self._idle.wait()

    def _topic(self, result: Result) -> str:
        return self._fail_topic if result.status is ResultStatus.FAILED else self._result_topic

    async def run(self) -> None:
        """Publish until cancelled."""
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._handle_outcomes, nursery)
            async for first in self._receive:
                if self._gather_seconds and not self._is_idle():
                    await trio.sleep(self._gather_seconds)
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                if self._metadata_cached():
                    self._send_batch(batch)
                else:
                    await trio.to_thread.run_sync(self._send_batch, batch)
                if not self._flushing and self._is_idle():
                    self._flushing = True
                    nursery.start_soon(self._flush)

    async def _flush(self) -> None:
        """Send what the producer holds now (``flush`` blocks: in a thread, given up on
        cancellation; ``close`` ends it at shutdown)."""
        try:
            await trio.to_thread.run_sync(
                self._producer.flush, FLUSH_WAIT_SECONDS, abandon_on_cancel=True
            )
        except KafkaError as exc:  # the results' own callbacks report the outcome
            log.debug("publish.flush_incomplete", error=str(exc))
        finally:
            self._flushing = False

    def _metadata_cached(self) -> bool:
        """Whether ``send`` will find both topics' partitions without waiting for the broker."""
        metadata = self._producer._metadata
        return (
            metadata.partitions_for_topic(self._result_topic) is not None
            and metadata.partitions_for_topic(self._fail_topic) is not None
        )

    def _send_batch(self, batch: list[Outgoing]) -> None:
        for item in batch:
            try:
                future = self._producer.send(
                    self._topic(item.result), key=item.key, value=item.result.to_json()
                )
            except KafkaError as exc:
                self._outcome(item, exc)
                continue
            future.add_callback(self._acked, item)
            future.add_errback(self._refused, item)

    # -- on the producer's sender thread (or the sending thread, for a future already done) --

    def _acked(self, item: Outgoing, _metadata: object) -> None:
        self._outcome(item, None)

    def _refused(self, item: Outgoing, error: BaseException) -> None:
        self._outcome(item, error)

    def _outcome(self, item: Outgoing, error: BaseException | None) -> None:
        self._outcomes.append((item, error))
        if not self._wake_pending:
            self._wake_pending = True
            assert self._token is not None
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
                item, error = self._outcomes.popleft()
                if error is None:
                    acked.append(item)
                else:
                    log.warning("publish.not_acknowledged", error=str(error))
                    refused.append(item)
            if acked:
                self._acknowledge(acked)
            if refused:
                self._on_failed()
                log.warning("publish.retry", results=len(refused), retry_in=self._retry_seconds)
                nursery.start_soon(self._send_again_later, refused)

    async def _send_again_later(self, items: list[Outgoing]) -> None:
        await trio.sleep(self._retry_seconds)
        for item in items:
            self._send.send_nowait(item)

    def _acknowledge(self, items: list[Outgoing]) -> None:
        failed = sum(1 for item in items if item.result.status is ResultStatus.FAILED)
        if failed:
            self._on_published(self._fail_topic, failed)
        if failed < len(items):
            self._on_published(self._result_topic, len(items) - failed)
        self._pending -= len(items)
        self._on_acked([item.delivery for item in items])
        if self._pending == 0:
            self._idle.set()
