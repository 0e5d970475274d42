"""Publishes results to Kafka and reports which deliveries are safely stored.

Results are sent in batches: one hop to a worker thread sends a batch with
kafka-python's ``KafkaProducer`` (idempotent, ``acks=all``) and waits for the
broker's acknowledgements, so the cost of the hop is shared by many results.
A result the broker did not take is sent again (with backoff) until it is, or
until shutdown; its offset stays uncommitted meanwhile, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import trio
from kafka.errors import KafkaError

from ftp_pooler.contract import Result, ResultStatus

log = structlog.get_logger(__name__)

MAX_BATCH = 500
ACK_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One consumed message: where it came from, and its raw value."""

    partition: Any
    """kafka-python ``TopicPartition``."""
    offset: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    result: Result
    delivery: Delivery


class ResultPublisher:
    """Sends results to ``result_topic`` (completed, skipped) or ``fail_topic`` (failed).

    Args:
        producer: A kafka-python ``KafkaProducer``.
        on_acked: Called, on the Trio thread, with the deliveries whose results
            the broker acknowledged.
    """

    def __init__(
        self,
        producer: Any,
        *,
        result_topic: str,
        fail_topic: str,
        on_acked: Callable[[list[Delivery]], None],
        on_published: Callable[[str], None] = lambda topic: None,
        on_failed: Callable[[], None] = lambda: None,
        retry_seconds: float = 1.0,
    ) -> None:
        self._producer = producer
        self._result_topic = result_topic
        self._fail_topic = fail_topic
        self._on_acked = on_acked
        self._on_published = on_published
        self._on_failed = on_failed
        self._retry_seconds = retry_seconds
        self._send, self._receive = trio.open_memory_channel[Outgoing](float("inf"))
        self._pending = 0
        self._idle = trio.Event()
        self._idle.set()

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
        """Publish batches until cancelled."""
        async for first in self._receive:
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._publish_until_acked(batch)

    async def _publish_until_acked(self, batch: list[Outgoing]) -> None:
        while batch:
            failed = await trio.to_thread.run_sync(self._send_and_wait, batch)
            failed_ids = {id(item) for item in failed}
            acked = [item for item in batch if id(item) not in failed_ids]
            if acked:
                self._acknowledge(acked)
            if failed:
                self._on_failed()
                log.warning("publish.retry", results=len(failed), retry_in=self._retry_seconds)
                await trio.sleep(self._retry_seconds)
            batch = failed

    def _acknowledge(self, items: list[Outgoing]) -> None:
        for item in items:
            self._on_published(self._topic(item.result))
        self._pending -= len(items)
        self._on_acked([item.delivery for item in items])
        if self._pending == 0:
            self._idle.set()

    def _send_and_wait(self, batch: list[Outgoing]) -> list[Outgoing]:
        """In a worker thread: send a batch and wait for the broker; returns what failed."""
        futures = []
        failed: list[Outgoing] = []
        for item in batch:
            delivery = item.delivery
            key = item.result.task_id or (
                f"{delivery.partition.topic}:{delivery.partition.partition}:{delivery.offset}"
            )
            try:
                future = self._producer.send(
                    self._topic(item.result), key=key.encode(), value=item.result.to_json()
                )
            except KafkaError as exc:
                log.warning("publish.send_failed", error=str(exc))
                failed.append(item)
                continue
            futures.append((item, future))
        for item, future in futures:
            try:
                future.get(timeout=ACK_TIMEOUT_SECONDS)
            except KafkaError as exc:
                log.warning("publish.not_acknowledged", error=str(exc))
                failed.append(item)
        return failed
