"""``ftp-pooler worker``: the Trio nursery tree that turns Kafka tasks into results.

::

    root nursery
    ├── HTTP API (Hypercorn + Quart-Trio): /health /ready /metrics
    ├── ResultPublisher: results -> Kafka, acks -> OffsetTracker
    ├── signal watcher: SIGTERM/SIGINT -> drain; a second one exits at once
    ├── connections watcher: a new connections file -> engine and pool switch
    └── transfers nursery (drained with a deadline at shutdown)
        ├── Dispatcher: intake (queue -> parse -> a queue per FTP connection)
        │   and max_inflight runners (one attempt at a time, by connection)
        └── intake cancel scope (cancelled first at shutdown)
            └── KafkaPoller: consumer.poll in a thread -> DeliveryQueue

Shutdown order: stop polling, close the queue and stop the runners (tasks
not started are redelivered), let running attempts finish until
``worker.drain_seconds``, wait for their results to be acknowledged, commit,
close the consumer (leaving the group) and the producer, stop the API, close
the FTP sessions. Every step after the drain is bounded, whatever the broker
does (:data:`SHUTDOWN_SECONDS` in all). See docs/architecture.md for why.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import structlog
import trio
from kafka import KafkaConsumer, KafkaProducer

from ftp_pooler.service.api import Health, bind_api_socket, create_app, serve_api
from ftp_pooler.scheduling.backpressure import BufferBound
from ftp_pooler.config import Connections, Settings
from ftp_pooler.transfer.boundary import Boundary, Message
from ftp_pooler.contract import Result, Task
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.errors import ErrorCode
from ftp_pooler.ftp.pool import open_session_pool
from ftp_pooler.kafka.clients import consumer_config, producer_config
from ftp_pooler.metrics import Metrics
from ftp_pooler.kafka.poller import ABANDON_GRACE_SECONDS, KafkaPoller
from ftp_pooler.kafka.deliveries import Delivery, DeliveryQueue
from ftp_pooler.kafka.publisher import GATHER_SECONDS, ResultPublisher
from ftp_pooler.kafka.recovery import RecoveryPolicy
from ftp_pooler.service.reload import ConnectionsWatcher, warn_missing_base_paths
from ftp_pooler.scheduling.transfers import ScheduledTransfers

log = structlog.get_logger(__name__)

ACK_WAIT_SECONDS = 5.0
"""At shutdown, how long results of finished transfers may take to be acknowledged."""
CLOSE_SECONDS = 4.0
"""At shutdown, the bound of closing the Kafka clients (both at once): the consumer's final
commit and close share it, each given up on half a second past its share; the producer's
close takes at most half of it."""
SHUTDOWN_SECONDS = ACK_WAIT_SECONDS + CLOSE_SECONDS + 2 * ABANDON_GRACE_SECONDS + 1.0
"""The longest shutdown may take after the drain: acknowledgements, commit and closes,
one second for the API's open requests."""

INTAKE_BATCH = 64
"""Deliveries parsed and queued between checkpoints of the intake task."""


class Dispatcher:
    """Turns consumed messages into scheduled transfers and their results into publishes.

    An intake task takes deliveries from the queue, parses each (an invalid
    message is answered at once) and submits the task to
    :class:`~ftp_pooler.scheduling.transfers.ScheduledTransfers`, which runs
    ``max_inflight`` runners by connection: a slow or dead server's tasks
    wait in its own queue, not in a runner. At shutdown :meth:`stop` closes
    the queue and stops the runners: tasks not started (and retries waiting
    for their time) get no result and are redelivered after the commit;
    running attempts finish and publish first.
    """

    def __init__(
        self,
        engine: TransferEngine,
        poller: KafkaPoller,
        publisher: ResultPublisher,
        metrics: Metrics,
        deliveries: DeliveryQueue,
        *,
        worker: str,
        max_inflight: int,
        max_message_bytes: int,
    ) -> None:
        self._poller = poller
        self._publisher = publisher
        self._metrics = metrics
        self._engine = engine
        self._deliveries = deliveries
        self._boundary = Boundary(worker=worker, max_bytes=max_message_bytes)
        self.transfers: ScheduledTransfers[Delivery] = ScheduledTransfers(
            engine,
            runners=max_inflight,
            finished=self._finished,
            crashed=self._crashed,
            claim=poller.started,
            waited=metrics.queue_waited,
        )

    def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.transfers.run)
        nursery.start_soon(self._intake)

    def stop(self) -> None:
        """Take no more messages; start no more attempts (see the class docstring)."""
        self._deliveries.close()
        dropped = self.transfers.stop()
        if dropped:
            log.info("worker.unstarted_tasks_left", tasks=dropped)

    async def _intake(self) -> None:
        taken = 0
        while True:
            try:
                delivery = await self._deliveries.get()
            except trio.EndOfChannel:
                return
            self._take(delivery)
            taken += 1
            if taken % INTAKE_BATCH == 0:
                await trio.lowlevel.checkpoint()

    def _take(self, delivery: Delivery) -> None:
        message = _message(delivery)
        admitted = self._boundary.admit(message)
        if isinstance(admitted, Result):
            if not self._poller.started(delivery):
                return
            if admitted.error_code is ErrorCode.INVALID_MESSAGE and admitted.input is not None:
                self._metrics.invalid_message()
            self._send(admitted, delivery)
            return
        self.transfers.submit(admitted, delivery)

    def _finished(self, result: Result, delivery: Delivery, task: Task) -> None:
        """A task's one result (from the scheduled transfers)."""
        result = self._boundary.settle(result, _message(delivery), task)
        log.info(
            "task.finished",
            task_id=result.task_id,
            status=result.status.value,
            error_code=result.error_code.value if result.error_code else None,
            bytes=result.bytes_transferred,
            duration_ms=result.duration_ms,
        )
        self._send(result, delivery)

    def _crashed(self, exc: Exception, delivery: Delivery, task: Task) -> None:
        self._send(self._boundary.crashed(exc, _message(delivery), task.task_id), delivery)

    def _send(self, result: Result, delivery: Delivery) -> None:
        self._metrics.task_finished(result, self._engine.ftp_side(result))
        self._publisher.publish(result, delivery)


def _message(delivery: Delivery) -> Message:
    return Message(delivery.value, partition=delivery.partition.partition, offset=delivery.offset)


async def _watch_signals(intake: trio.CancelScope, health: Health) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if health.draining:
                log.warning("worker.second_signal_exit", signal=signum)
                os._exit(128 + signum)
            log.info("worker.draining", signal=signum)
            health.start_draining()
            intake.cancel()


async def run_worker(
    settings: Settings,
    connections: Connections,
    *,
    connections_path: Path | None = None,
    handle_signals: bool = True,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until SIGTERM/SIGINT, then drain and return.

    ``connections`` were loaded from ``connections_path``: when given (and
    ``worker.connections_reload_seconds`` is not 0), that file is watched and
    each new version applied while running (:mod:`ftp_pooler.service.reload`).

    ``task_status.started`` receives the API's port once the worker listens.
    Without ``handle_signals`` (tests), cancel the caller's scope to stop it.

    Raises:
        PoolerError: INVALID_CONFIG when the API's address cannot be bound
            (checked first, before Kafka is contacted).
    """
    with bind_api_socket(settings.api.host, settings.api.port) as api_socket:
        await _run_worker(
            settings, connections, connections_path, api_socket, handle_signals, task_status
        )


async def _run_worker(
    settings: Settings,
    connections: Connections,
    connections_path: Path | None,
    api_socket: socket.socket,
    handle_signals: bool,
    task_status: Any,
) -> None:
    kafka = settings.kafka
    metrics = Metrics()
    health = Health()
    consumer = await trio.to_thread.run_sync(lambda: KafkaConsumer(**consumer_config(settings)))

    def new_producer() -> KafkaProducer:
        return KafkaProducer(**producer_config(settings))

    producer = await trio.to_thread.run_sync(new_producer)
    health.set_producer_ready(True)

    deliveries = DeliveryQueue()
    poller = KafkaPoller(
        consumer,
        deliveries,
        topic=kafka.input_topic,
        bound=BufferBound(
            settings.worker.max_buffered_tasks,
            settings.worker.max_buffered_bytes,
            resume_slack=kafka.max_poll_records // 2,
        ),
        max_poll_records=kafka.max_poll_records,
        commit_interval=kafka.commit_interval_seconds,
        revoke_timeout=min(settings.worker.drain_seconds, kafka.session_timeout_ms / 2000),
        health=health,
        metrics=metrics,
    )

    def acknowledged(deliveries: list[Delivery]) -> None:
        poller.acknowledged(deliveries)
        health.progressed("results")
        health.set_producer_ready(True)

    def publish_failed() -> None:
        """The broker refused results: not ready until it takes some again."""
        metrics.publish_failed()
        health.set_producer_ready(False)

    def results_waiting(waiting: bool) -> None:
        if waiting:
            health.waiting("results", "results waiting, none acknowledged by Kafka")
        else:
            health.done_waiting("results")

    publisher = ResultPublisher(
        producer,
        new_producer=new_producer,
        policy=RecoveryPolicy.for_ack_timeout(kafka.result_ack_timeout_seconds),
        result_topic=kafka.result_topic,
        fail_topic=kafka.fail_topic,
        on_acked=acknowledged,
        on_published=metrics.published,
        on_failed=publish_failed,
        on_waiting=results_waiting,
        is_idle=lambda: poller.inflight <= publisher.pending,
        gather_seconds=min(GATHER_SECONDS, kafka.result_linger_ms / 1000),
    )
    intake = trio.CancelScope()
    async with open_session_pool(connections.session_factories(), settings.pool.limits()) as pool:
        metrics.watch_pool(pool.stats)
        engine = TransferEngine(
            connections,
            pool,
            retry=settings.transfer.retry_policy(),
            worker=settings.worker.name,
            temp_suffix=settings.transfer.temp_suffix,
            observer=metrics,
            durable=settings.transfer.durability == "fsync",
        )
        dispatcher = Dispatcher(
            engine,
            poller,
            publisher,
            metrics,
            deliveries,
            worker=settings.worker.name,
            max_inflight=settings.worker.max_inflight,
            max_message_bytes=kafka.max_message_bytes,
        )
        metrics.watch_scheduling(dispatcher.transfers.stats, pool.stats)
        api_stop = trio.Event()
        async with trio.open_nursery() as root:
            port = await root.start(
                lambda task_status: serve_api(
                    create_app(
                        health,
                        metrics,
                        liveness_waiting=settings.api.liveness_stall_seconds,
                    ),
                    api_socket,
                    shutdown=api_stop,
                    task_status=task_status,
                )
            )
            root.start_soon(publisher.run)
            if handle_signals:
                root.start_soon(_watch_signals, intake, health)
            reload_seconds = settings.worker.connections_reload_seconds
            if connections_path is not None and reload_seconds > 0:
                watcher = ConnectionsWatcher(
                    connections_path,
                    connections,
                    engine.reconfigure,
                    interval=reload_seconds,
                    loaded=metrics.config_loaded,
                    reloaded=metrics.config_reloaded,
                )
                root.start_soon(watcher.run)
            log.info(
                "worker.started", api_port=port, topic=kafka.input_topic, group=kafka.consumer_group
            )
            warn_missing_base_paths(connections)
            task_status.started(port)
            try:
                async with trio.open_nursery() as transfers:
                    dispatcher.start(transfers)
                    with intake:
                        await poller.run()
                    dispatcher.stop()
                    health.start_draining()
                    transfers.cancel_scope.deadline = (
                        trio.current_time() + settings.worker.drain_seconds
                    )
                with trio.move_on_after(ACK_WAIT_SECONDS):
                    await publisher.wait_idle()
                async with trio.open_nursery() as closing:
                    closing.start_soon(poller.close, CLOSE_SECONDS)
                    closing.start_soon(publisher.aclose, CLOSE_SECONDS / 2)
                log.info("worker.stopped", pending_results=publisher.pending)
            finally:
                api_stop.set()
                root.cancel_scope.cancel()
