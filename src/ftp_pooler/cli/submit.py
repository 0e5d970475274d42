"""``ftp-pooler submit``: tasks from a JSON-lines file to the input topic; results if asked.

For operators and tests. Lines are sent as they are (the worker validates
them), keyed by their task id when one can be read. With ``--results`` the
result and failure topics are read from the beginning, with no consumer
group, and the first result of each submitted task id completed after the
submission began is printed as it arrives (so a replayed task does not
report its old result; the worker's and this machine's clocks must agree
to within the time results take). Simple and correct on any broker, but
meant for modest topics.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from ftp_pooler.config import Settings
from ftp_pooler.kafka.clients import consumer_config, producer_config


@dataclass
class SubmitReport:
    submitted: int = 0
    """Tasks the broker acknowledged."""
    refused: int = 0
    """Tasks the producer or the broker refused (too large, broker unreachable...)."""
    first_refusal: str | None = None
    awaited: set[str] = field(default_factory=set)
    without_id: int = 0
    """Lines sent whose task id could not be read (not JSON, no ``task_id``): their results
    cannot be told apart, so they are not waited for (the worker fails them, unless it
    finds the id where this reader did not)."""
    repeated: int = 0
    """Lines whose task id an earlier line had: one result is waited for per id."""
    results: int = 0
    failed: int = 0
    waited: bool = False

    @property
    def complete(self) -> bool:
        """Every task was taken; when waiting, every awaited one has a result, none failed,
        and every line had a task id to wait for."""
        if self.refused:
            return False
        return not self.waited or (not self.awaited and self.failed == 0 and not self.without_id)

    def refuse(self, error: BaseException) -> None:
        self.refused += 1
        if self.first_refusal is None:
            self.first_refusal = f"{type(error).__name__}: {error}"

    def line(self) -> str:
        text = f"submitted {self.submitted} tasks"
        if self.refused:
            text += f"; {self.refused} refused ({self.first_refusal})"
        if self.waited:
            text += f"; {self.results} results, {self.failed} failed"
            if self.awaited:
                text += f", {len(self.awaited)} still without a result"
            if self.without_id:
                text += f"; {self.without_id} lines without a task id: not waited for"
            if self.repeated:
                text += f"; {self.repeated} lines repeat an earlier task id: one result each id"
        return text


def _task_id(line: bytes) -> str | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    task_id = value.get("task_id") if isinstance(value, dict) else None
    return task_id if isinstance(task_id, str) and task_id else None


def _results_reader(settings: Settings, connect_timeout: float) -> KafkaConsumer:
    config = consumer_config(settings)
    config["bootstrap_timeout_ms"] = int(connect_timeout * 1000)
    for key in ("group_id", "group_instance_id"):
        config.pop(key)
    consumer = KafkaConsumer(**config)
    kafka = settings.kafka
    partitions = [
        TopicPartition(topic, partition)
        for topic in (kafka.result_topic, kafka.fail_topic)
        for partition in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    return consumer


def submit_tasks(
    settings: Settings,
    source: BinaryIO,
    output: BinaryIO,
    *,
    wait_for_results: bool = False,
    timeout: float = 600.0,
    connect_timeout: float = 30.0,
) -> SubmitReport:
    """Produce every non-blank line of ``source``; with ``wait_for_results``, print results.

    Args:
        timeout: Seconds to wait for the results.
        connect_timeout: Seconds to wait for the first broker to answer.

    Raises:
        KafkaError: No broker answered within ``connect_timeout``
            (``KafkaTimeoutError``), or the client could not be set up.
    """
    report = SubmitReport(waited=wait_for_results)
    started = datetime.now(UTC)
    producer = KafkaProducer(
        **{**producer_config(settings), "bootstrap_timeout_ms": int(connect_timeout * 1000)}
    )

    def taken(_metadata: object) -> None:  # on the producer's sender thread
        report.submitted += 1

    def refused(task_id: str | None, error: BaseException) -> None:
        report.refuse(error)
        if task_id:
            report.awaited.discard(task_id)

    seen: set[str] = set()
    try:
        for line in source:
            line = line.strip()
            if not line:
                continue
            task_id = _task_id(line)
            if not task_id:
                report.without_id += 1
            elif task_id in seen:
                report.repeated += 1
            else:
                seen.add(task_id)
                report.awaited.add(task_id)
            try:
                future = producer.send(
                    settings.kafka.input_topic,
                    key=task_id.encode() if task_id else None,
                    value=line,
                )
            except KafkaError as exc:
                refused(task_id, exc)
                continue
            future.add_callback(taken)
            future.add_errback(refused, task_id)
        producer.flush()
    finally:
        producer.close()
    if wait_for_results:
        _await_results(settings, output, report, timeout, connect_timeout, since=started)
    return report


def _completed_at(result: dict[str, object]) -> datetime | None:
    value = result.get("completed_at")
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _await_results(
    settings: Settings,
    output: BinaryIO,
    report: SubmitReport,
    timeout: float,
    connect_timeout: float,
    *,
    since: datetime,
) -> None:
    consumer = _results_reader(settings, connect_timeout)
    deadline = time.monotonic() + timeout
    try:
        while report.awaited and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=500).values():
                for message in messages:
                    try:
                        result = json.loads(message.value)
                    except ValueError:
                        continue
                    task_id = result.get("task_id") if isinstance(result, dict) else None
                    if task_id not in report.awaited:
                        continue
                    completed_at = _completed_at(result)
                    if completed_at is None or completed_at < since:
                        continue
                    report.awaited.discard(task_id)
                    report.results += 1
                    report.failed += result.get("status") == "failed"
                    output.write(message.value + b"\n")
                    output.flush()
    finally:
        consumer.close()
