"""Power cuts: every "completed" download must survive, with all its bytes.

Downloads run through ``ftp-pooler copy`` and through ``ftp-pooler worker`` (a
real Tansu broker) onto ``tests/servers/slowfs.py``, a FUSE volume that keeps
only what was fsynced. At a random moment (a seeded number of published
results, plus a seeded pause) the tool is SIGKILLed and the volume loses
power; after the remount, every result that said ``completed`` is checked
against the files: present, full size, same bytes. The same run with
``transfer.durability: none`` must lose some, or the test could not catch a
missing fsync.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import unavailable
from kafka import KafkaConsumer, TopicPartition
from test_worker import MakeServer, Topics, Worker

from servers import FTPServer, ServerUnavailable
from servers.kafka import KafkaBroker
from servers.slowfs import SlowFS

FILES = 80
DELAY = 0.002  # seconds per metadata operation on the volume
SEEDS = (1, 2, 3)
RUN_TIMEOUT = 30.0


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[SlowFS]:
    fs = SlowFS(tmp_path / "volume", tmp_path / "volume-state", delay=DELAY)
    try:
        fs.start()
    except ServerUnavailable as exc:
        unavailable(str(exc))
    try:
        yield fs
    finally:
        fs.stop()


def base_directory(volume: SlowFS, name: str) -> Path:
    """A local connection's ``base_path`` on the volume, made durable (as a deployment's
    volume root is: the tool syncs what it makes below ``base_path``, not above)."""
    path = volume.mount / name
    path.mkdir()
    fd = os.open(volume.mount, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def source_files(root: Path, seed: int) -> dict[str, bytes]:
    """``FILES`` files of 1-300 KiB under the FTP root's ``src/``: path -> bytes."""
    rng = random.Random(seed)
    files = {}
    for index in range(FILES):
        rel = f"d{index % 4}/e{index % 3}/f{index}.bin"
        payload = rng.randbytes(rng.randint(1024, 300 * 1024))
        path = root / "src" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        files[rel] = payload
    return files


def task_lines(files: dict[str, bytes], seed: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "task_id": f"{seed}-{rel}",
                "source": {"connection_id": "ftp", "path": f"/src/{rel}"},
                "destination": {"connection_id": "local", "path": f"out/{rel}"},
            }
        ).encode()
        for rel in files
    ]


def write_connections(tmp_path: Path, server: FTPServer, local: Path) -> Path:
    path = tmp_path / "connections.ini"
    path.write_text(
        f"[ftp]\ntype = ftp\nhost = {server.host}\nport = {server.port}\n"
        f"user = {server.user}\npass = {server.password}\n\n"
        f"[local]\ntype = local\nbase_path = {local}\n"
    )
    return path


def lost_after_crash(
    results: list[dict[str, Any]], files: dict[str, bytes], seed: int, local: Path
) -> list[str]:
    """Completed results whose file is missing, short or wrong after the remount."""
    lost = []
    for result in results:
        if result.get("status") != "completed":
            continue
        rel = result["task_id"].removeprefix(f"{seed}-")
        path = local / "out" / rel
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            lost.append(f"{rel}: missing")
            continue
        if data != files[rel]:
            lost.append(f"{rel}: {len(data)} of {len(files[rel])} bytes, or other bytes")
    return lost


def completed(results: list[dict[str, Any]]) -> int:
    return sum(result.get("status") == "completed" for result in results)


# -- ftp-pooler copy ---------------------------------------------------------------------


def copy_then_crash(
    seed: int, durability: str, server: FTPServer, volume: SlowFS, tmp_path: Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run ``copy`` onto the volume, cut the power mid-run; (results, lost completed files)."""
    rng = random.Random(seed)
    run = tmp_path / f"{durability}-{seed}"
    run.mkdir()
    files = source_files(Path(server.root), seed)
    local = base_directory(volume, f"{durability}-{seed}")
    (run / "tasks.jsonl").write_bytes(b"".join(line + b"\n" for line in task_lines(files, seed)))
    (run / "config.yaml").write_text(
        f"transfer:\n  durability: {durability}\nlogging:\n  level: WARNING\n"
    )
    connections = write_connections(run, server, local)
    results_path = run / "results.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTP_POOLER")}
    # Line-buffered results: each result is on disk (published) as soon as it is written.
    env["PYTHONUNBUFFERED"] = "1"
    copy = subprocess.Popen(
        [sys.executable, "-m", "ftp_pooler.cli", "copy", str(run / "tasks.jsonl"),
         "--connections", str(connections), "--config", str(run / "config.yaml"),
         "--output", "-", "--concurrency", "8"],
        stdout=results_path.open("wb"), stderr=(run / "stderr").open("wb"), env=env,
    )  # fmt: skip
    crash_after = rng.randint(5, FILES - 20)
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while results_path.read_bytes().count(b"\n") < crash_after:
            assert copy.poll() is None, (run / "stderr").read_text()
            assert time.monotonic() < deadline, "copy made no progress"
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.03))
    finally:
        copy.kill()  # the power cut: the tool and the volume at once
        volume.crash()
        copy.wait()
    results = [
        json.loads(line)
        for line in results_path.read_bytes().splitlines()
        if line.endswith(b"}")  # a line cut short by the kill was never published
    ]
    return results, lost_after_crash(results, files, seed, local)


@pytest.mark.parametrize("seed", SEEDS)
def test_copy_completed_downloads_survive_a_power_cut(
    seed: int, pureftpd_server: FTPServer, volume: SlowFS, tmp_path: Path
) -> None:
    results, lost = copy_then_crash(seed, "fsync", pureftpd_server, volume, tmp_path)
    assert completed(results) >= 5
    assert lost == []


def test_copy_without_fsync_loses_completed_downloads(
    pureftpd_server: FTPServer, volume: SlowFS, tmp_path: Path
) -> None:
    """The check above catches a missing fsync: without one, completed files are lost."""
    lost_per_seed = []
    for seed in SEEDS[:2]:
        results, lost = copy_then_crash(seed, "none", pureftpd_server, volume, tmp_path)
        assert completed(results) >= 5
        lost_per_seed.append(len(lost))
    assert sum(lost_per_seed) > 0


# -- ftp-pooler worker -------------------------------------------------------------------


def read_published(topics: Topics, quiet: float = 1.0) -> list[dict[str, Any]]:
    """Every result on the result and failure topics (until none arrives for ``quiet`` s)."""
    consumer = KafkaConsumer(**topics.broker.consumer_config())
    partitions = [TopicPartition(topics.results, 0), TopicPartition(topics.failures, 0)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    results: list[dict[str, Any]] = []
    try:
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            for messages in consumer.poll(timeout_ms=200).values():
                results.extend(json.loads(message.value) for message in messages)
                last = time.monotonic()
    finally:
        consumer.close()
    return results


def count_published(topics: Topics) -> Callable[[], int]:
    consumer = KafkaConsumer(**topics.broker.consumer_config())
    partition = TopicPartition(topics.results, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    seen = 0

    def count() -> int:
        nonlocal seen
        for messages in consumer.poll(timeout_ms=50).values():
            seen += len(messages)
        return seen

    count.close = consumer.close  # type: ignore[attr-defined]
    return count


def worker_then_crash(
    seed: int,
    durability: str,
    broker: KafkaBroker,
    server: FTPServer,
    volume: SlowFS,
    tmp_path: Path,
) -> tuple[list[dict[str, Any]], list[str]]:
    rng = random.Random(seed)
    run = tmp_path / f"worker-{durability}-{seed}"
    run.mkdir()
    files = source_files(Path(server.root), seed)
    local = base_directory(volume, f"worker-{durability}-{seed}")
    topics = Topics(broker, 2)
    connections = write_connections(run, server, local)
    (run / "none.yaml").write_text("{}\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FTP_POOLER")},
        "FTP_POOLER_CONNECTIONS": str(connections),
        "FTP_POOLER_CONFIG": str(run / "none.yaml"),
        "FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "FTP_POOLER__KAFKA__INPUT_TOPIC": topics.tasks,
        "FTP_POOLER__KAFKA__RESULT_TOPIC": topics.results,
        "FTP_POOLER__KAFKA__FAIL_TOPIC": topics.failures,
        "FTP_POOLER__KAFKA__CONSUMER_GROUP": topics.group,
        "FTP_POOLER__KAFKA__SESSION_TIMEOUT_MS": "2000",
        "FTP_POOLER__KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "FTP_POOLER__KAFKA__RESULT_LINGER_MS": "5",
        "FTP_POOLER__WORKER__MAX_INFLIGHT": "8",
        "FTP_POOLER__TRANSFER__DURABILITY": durability,
        "FTP_POOLER__LOGGING__LEVEL": "WARNING",
    }
    worker = Worker(run, env, f"w-{durability}-{seed}")
    count = count_published(topics)
    try:
        worker.wait_ready()
        topics.produce(task_lines(files, seed))
        crash_after = rng.randint(5, FILES - 20)
        deadline = time.monotonic() + RUN_TIMEOUT
        while count() < crash_after:
            assert worker.process.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(rng.uniform(0, 0.03))
    finally:
        worker.kill()
        volume.crash()
        count.close()  # type: ignore[attr-defined]
    results = read_published(topics)
    return results, lost_after_crash(results, files, seed, local)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_worker_completed_downloads_survive_a_power_cut(
    seed: int,
    kafka_broker: KafkaBroker,
    make_pureftpd: MakeServer,
    volume: SlowFS,
    tmp_path: Path,
) -> None:
    server = make_pureftpd()
    results, lost = worker_then_crash(seed, "fsync", kafka_broker, server, volume, tmp_path)
    assert completed(results) >= 5
    assert lost == []


def test_worker_without_fsync_loses_completed_downloads(
    kafka_broker: KafkaBroker, make_pureftpd: MakeServer, volume: SlowFS, tmp_path: Path
) -> None:
    server = make_pureftpd()
    results, lost = worker_then_crash(SEEDS[0], "none", kafka_broker, server, volume, tmp_path)
    assert completed(results) >= 5
    assert lost != []
