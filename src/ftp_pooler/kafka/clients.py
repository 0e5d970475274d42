"""kafka-python clients: their settings from our :class:`~ftp_pooler.config.Settings`, and
what we need to know of the producer's state that kafka-python keeps to itself.

Only :func:`close_producer` does I/O (it stops the producer's sender thread).
"""

from __future__ import annotations

import contextlib
from typing import Any

from kafka.errors import IllegalStateError, KafkaTimeoutError, ProducerFencedError

from ftp_pooler.config import KafkaSettings, Settings
from ftp_pooler.kafka.oauth import TokenFile
from ftp_pooler.kafka.partitioner import KeyHashPartitioner

FETCH_OVERHEAD_BYTES = 64 * 1024
"""Room above ``max_message_bytes`` for record-batch headers, so an oversized task still
arrives (and gets its INVALID_MESSAGE result) instead of stalling the partition."""

RESULT_BATCH_BYTES = 256 * 1024
"""Producer batch size per partition: room for hundreds of results per linger period."""

# kafka-python's own metrics (``metrics_enabled``) are off in both clients: nothing reads
# them (ours are Prometheus's, see metrics.py) and their sensors cost the client threads CPU
# on every request, in the interpreter the transfers run in.


def _security(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python's security keywords. TLS files go by name: kafka-python loads them on each
    new connection, so renewed certificates (Strimzi, cert-manager) are used without a restart."""
    config: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.sasl_mechanism == "OAUTHBEARER":
        assert kafka.sasl_oauth_token_file is not None
        config["sasl_mechanism"] = kafka.sasl_mechanism
        config["sasl_oauth_token_provider"] = TokenFile(kafka.sasl_oauth_token_file)
    elif kafka.sasl_mechanism:
        config["sasl_mechanism"] = kafka.sasl_mechanism
        config["sasl_plain_username"] = kafka.sasl_username
        assert kafka.sasl_password is not None
        config["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        config["ssl_check_hostname"] = kafka.ssl_check_hostname
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if (path := getattr(kafka, key)) is not None:
                config[key] = str(path)
        if kafka.ssl_password is not None:
            config["ssl_password"] = kafka.ssl_password.get_secret_value()
    return config


def consumer_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``KafkaConsumer``: manual commits, earliest offsets for a new group."""
    kafka = settings.kafka
    fetch = max(kafka.max_message_bytes + FETCH_OVERHEAD_BYTES, 1024 * 1024)
    return {
        "bootstrap_servers": list(kafka.bootstrap_servers),
        "group_id": kafka.consumer_group,
        "group_instance_id": settings.group_instance_id,
        "client_id": f"ftp-pooler-{settings.worker.name}",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": kafka.max_poll_records,
        "request_timeout_ms": kafka.request_timeout_ms,
        "bootstrap_timeout_ms": kafka.request_timeout_ms,
        "fetch_max_wait_ms": kafka.fetch_max_wait_ms,
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        "max_partition_fetch_bytes": fetch,
        "fetch_max_bytes": max(fetch, 50 * 1024 * 1024),
        "metrics_enabled": False,
        **_security(kafka),
    }


def producer_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``KafkaProducer``: idempotent, acks from all in-sync replicas."""
    kafka = settings.kafka
    return {
        "bootstrap_servers": list(kafka.bootstrap_servers),
        "client_id": f"ftp-pooler-{settings.worker.name}",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": kafka.result_linger_ms,
        "request_timeout_ms": kafka.request_timeout_ms,
        "bootstrap_timeout_ms": kafka.request_timeout_ms,
        "delivery_timeout_ms": kafka.delivery_timeout_ms,
        "max_block_ms": kafka.request_timeout_ms,
        "batch_size": RESULT_BATCH_BYTES,
        "max_request_size": max(kafka.max_message_bytes * 2, 1024 * 1024),
        "partitioner": KeyHashPartitioner(),
        "metrics_enabled": False,
        **_security(kafka),
    }


FATAL_SEND_ERRORS: tuple[type[BaseException], ...] = (ProducerFencedError, IllegalStateError)
"""Errors a result's future can fail with that no later send on the same producer can
overcome: another producer took over its id, or it is closed. (kafka-python recovers from
``OutOfOrderSequenceNumber``, ``UnknownProducerId`` and ``InvalidProducerEpoch`` by itself
where the broker allows an epoch bump, KIP-360; where it does not, the producer enters its
fatal state, which :func:`producer_failure` reports.)"""


def producer_failure(producer: Any) -> str | None:
    """Why ``producer`` can deliver nothing more, or None while it may.

    kafka-python's idempotent producer enters a fatal state it never leaves when the
    broker no longer knows its producer id (a broker that lost its state answers
    ``InitProducerId`` with an error): every later send fails at once. The state is
    kept by the producer's private transaction manager; there is no public accessor
    (kafka-python 3.0.12). A producer without one (not idempotent, or a stand-in)
    never reports a failure.
    """
    manager = getattr(producer, "_transaction_manager", None)
    if manager is None or not manager.has_fatal_error():
        return None
    return str(manager.last_error or "fatal producer state")


def close_producer(producer: Any, timeout: float) -> None:
    """Close ``producer`` without delivering what it still holds, in about ``timeout`` s.

    For a producer whose unacknowledged results are sent again elsewhere (or not
    needed: at shutdown their offsets stay uncommitted). ``KafkaProducer.close``
    flushes first and gives up with ``KafkaTimeoutError`` once any batch takes
    longer than the timeout, before it stops its sender thread: so stop the sender
    first (``force_close`` fails every batch it holds), then close. Blocks: call
    it in a thread.
    """
    try:
        producer.close(timeout=0)
        return
    except KafkaTimeoutError:
        pass  # batches still in flight: abandon them
    sender = producer._sender
    sender.force_close()
    sender.join(timeout)
    # If the sender did not stop in time, this raises again: the daemon thread ends by itself.
    with contextlib.suppress(KafkaTimeoutError):
        producer.close(timeout=0)
