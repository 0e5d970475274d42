"""KafkaPoller against a real broker: backpressure pauses, keeps polling, and resumes."""

from __future__ import annotations

import trio
from kafka import KafkaConsumer, KafkaProducer
from servers.kafka import KafkaBroker, unique_name

from ftp_pooler.service.api import Health
from ftp_pooler.scheduling.backpressure import BufferBound
from ftp_pooler.config import Settings
from ftp_pooler.kafka.deliveries import Delivery, DeliveryQueue
from ftp_pooler.kafka.clients import consumer_config
from ftp_pooler.metrics import Metrics
from ftp_pooler.kafka.poller import PAUSED_POLL_SECONDS, KafkaPoller

MESSAGES = 100
MAX_INFLIGHT = 2
MAX_POLL_RECORDS = 10


class BeatLog(Health):
    """:class:`Health` that also counts the poller's heartbeats (one per poll)."""

    polls = 0

    def heartbeat(self, name: str) -> None:
        super().heartbeat(name)
        if name == "poller":
            self.polls += 1


async def polls_go_on(health: BeatLog, count: int) -> None:
    """Wait until the poller has polled ``count`` more times (paused: one per
    ``PAUSED_POLL_SECONDS``). A condition, not a sleep: on a loaded machine a paused
    poll in its thread may be late, and a fixed age bound on the last heartbeat fails."""
    until = health.polls + count
    with trio.fail_after(30):
        while health.polls < until:
            await trio.sleep(0.05)


async def test_backpressure_pauses_at_the_limit_and_resumes_as_results_are_acknowledged(
    kafka_broker: KafkaBroker,
) -> None:
    topic = kafka_broker.create_topic(unique_name("tasks"), 1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    for n in range(MESSAGES):
        producer.send(topic, value=b"%d" % n)
    producer.flush()
    producer.close()

    settings = Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": [kafka_broker.bootstrap_servers],
                "consumer_group": unique_name("workers"),
                "input_topic": topic,
                "max_poll_records": MAX_POLL_RECORDS,
                "fetch_max_wait_ms": 100,
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 500,
            }
        }
    )
    consumer = KafkaConsumer(**consumer_config(settings))
    health = BeatLog()
    deliveries = DeliveryQueue()
    poller = KafkaPoller(
        consumer, deliveries, topic=topic,
        bound=BufferBound(MAX_INFLIGHT + MAX_POLL_RECORDS, 10**9, MAX_POLL_RECORDS // 2),
        max_poll_records=MAX_POLL_RECORDS, commit_interval=1.0, revoke_timeout=1.0,
        health=health, metrics=Metrics(),
    )  # fmt: skip
    taken: list[Delivery] = []

    async def take_without_finishing() -> None:
        while True:
            taken.append(await deliveries.get())

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)
            nursery.start_soon(take_without_finishing)
            with trio.fail_after(30):
                while not poller.paused:
                    await trio.sleep(0.05)

            # Paused at max_inflight + one poll's worth, at most one more poll over it.
            held = len(taken)
            assert MAX_INFLIGHT + MAX_POLL_RECORDS <= held < MAX_INFLIGHT + 2 * MAX_POLL_RECORDS
            await polls_go_on(health, 2)  # still polling while paused...
            assert poller.paused and len(taken) == held == poller.inflight  # ...taking nothing
            assert health.alive(10 * PAUSED_POLL_SECONDS)[0]

            acknowledged = 0
            with trio.fail_after(30):
                while acknowledged < MESSAGES:
                    poller.acknowledged(taken[acknowledged:])
                    acknowledged = len(taken)
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    finally:
        await poller.close()  # in a thread: closing runs our rebalance listener, which enters Trio

    assert [d.offset for d in taken] == list(range(MESSAGES))
    assert [d.value for d in taken] == [b"%d" % n for n in range(MESSAGES)]
    assert poller.inflight == 0 and not poller.paused


async def test_the_byte_bound_pauses_too_and_acknowledgements_free_the_bytes(
    kafka_broker: KafkaBroker,
) -> None:
    topic = kafka_broker.create_topic(unique_name("tasks"), 1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    for n in range(40):
        producer.send(topic, value=b"%04d" % n + b"x" * 996)  # 1,000 bytes each
    producer.flush()
    producer.close()
    settings = Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": [kafka_broker.bootstrap_servers],
                "consumer_group": unique_name("workers"),
                "input_topic": topic,
                "max_poll_records": 5,
                "fetch_max_wait_ms": 100,
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 500,
            }
        }
    )
    consumer = KafkaConsumer(**consumer_config(settings))
    deliveries = DeliveryQueue()
    health = BeatLog()
    poller = KafkaPoller(
        consumer, deliveries, topic=topic, bound=BufferBound(10_000, 12_000, 2),
        max_poll_records=5, commit_interval=1.0, revoke_timeout=1.0,
        health=health, metrics=Metrics(),
    )  # fmt: skip
    taken: list[Delivery] = []

    async def take() -> None:
        while True:
            taken.append(await deliveries.get())

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)
            nursery.start_soon(take)
            with trio.fail_after(30):
                while not poller.paused:
                    await trio.sleep(0.05)
            await polls_go_on(health, 1)
            held = len(taken)
            assert 12 <= held < 12 + 5 and poller.buffered_bytes == 1000 * held
            poller.acknowledged(taken[: held - 10])  # 10,000 bytes left: not a quarter free
            await polls_go_on(health, 2)  # a paused poll after the acknowledgement
            assert poller.paused and len(taken) == held
            poller.acknowledged(taken[held - 10 : held])
            with trio.fail_after(30):
                while len(taken) < 40:
                    poller.acknowledged(taken[held:])
                    held = len(taken)
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    finally:
        await poller.close()
    assert [d.offset for d in taken] == list(range(40))
