"""KeyHashPartitioner puts a result where Kafka's default partitioner would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import DefaultPartitioner
from kafka.partitioner.default import murmur2 as kafka_python_murmur2
from servers.kafka import KafkaBroker, unique_name

from ftp_pooler.config import Settings
from ftp_pooler.kafka.clients import producer_config
from ftp_pooler.kafka.partitioner import KeyHashPartitioner, murmur2

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed 32-bit in Java)
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_the_java_clients_test_vectors() -> None:
    for data, signed in JAVA_VECTORS.items():
        assert murmur2(data) == signed & 0xFFFFFFFF, data


@given(st.binary(max_size=200))
def test_murmur2_matches_kafka_python_for_any_key(data: bytes) -> None:
    assert murmur2(data) == kafka_python_murmur2(data)


class StandInCluster:
    """The two ClusterMetadata lookups a partitioner makes."""

    def __init__(self, partitions: set[int], available: set[int]) -> None:
        self.partitions = partitions
        self.available = available

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self.partitions) if topic == "results" else None

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self.available) if topic == "results" else None

    def topics(self) -> set[str]:
        return {"results"}


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=1, max_value=64))
def test_keyed_records_go_where_the_default_partitioner_puts_them(key: bytes, count: int) -> None:
    cluster = StandInCluster(set(range(count)), set(range(count)))
    ours = KeyHashPartitioner().partition("results", key, key, None, b"v", cluster)
    theirs = DefaultPartitioner().partition("results", key, key, None, b"v", cluster)
    assert ours == theirs


def test_unkeyed_records_go_to_an_available_partition() -> None:
    cluster = StandInCluster({0, 1, 2, 3}, {2})
    assert KeyHashPartitioner().partition("results", None, None, None, b"v", cluster) == 2


def test_results_land_on_the_java_clients_partition_at_a_real_broker(
    kafka_broker: KafkaBroker,
) -> None:
    topic = unique_name("results")
    kafka_broker.create_topic(topic, partitions=4)
    settings = Settings.model_validate(
        {"kafka": {"bootstrap_servers": [kafka_broker.bootstrap_servers]}}
    )
    producer = KafkaProducer(**producer_config(settings))
    keys = [f"task-{n}".encode() for n in range(40)]
    for key in keys:
        producer.send(topic, key=key, value=b"{}")
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(**kafka_broker.consumer_config())
    partitions = [TopicPartition(topic, p) for p in range(4)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    where: dict[bytes, int] = {}
    try:
        for _ in range(20):
            for messages in consumer.poll(timeout_ms=500).values():
                where.update((m.key, m.partition) for m in messages)
            if len(where) == len(keys):
                break
    finally:
        consumer.close()
    assert where == {key: (murmur2(key) & 0x7FFFFFFF) % 4 for key in keys}
    assert len(set(where.values())) > 1
