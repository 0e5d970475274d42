"""``ftp-pooler worker`` end to end: a Tansu broker, vsftpd, and the worker as a real process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from servers import FTPServer
from servers.kafka import KafkaBroker
from servers.netutil import free_port, listening_ports

MakeServer = Callable[..., FTPServer]


class Topics:
    """Unique topic and group names for one test, created on the broker."""

    def __init__(self, broker: KafkaBroker, partitions: int) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.broker = broker
        self.tasks = broker.create_topic(f"tasks-{suffix}", partitions)
        self.results = broker.create_topic(f"results-{suffix}", 1)
        self.failures = broker.create_topic(f"failures-{suffix}", 1)
        self.group = f"workers-{suffix}"
        self.partitions = partitions

    def worker_env(self, connections: Path, config: Path) -> dict[str, str]:
        """The environment of a worker on these topics (short group timeouts, quick commits)."""
        return {
            **os.environ,
            "FTP_POOLER_CONNECTIONS": str(connections),
            "FTP_POOLER_CONFIG": str(config),
            "FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
            "FTP_POOLER__KAFKA__INPUT_TOPIC": self.tasks,
            "FTP_POOLER__KAFKA__RESULT_TOPIC": self.results,
            "FTP_POOLER__KAFKA__FAIL_TOPIC": self.failures,
            "FTP_POOLER__KAFKA__CONSUMER_GROUP": self.group,
            "FTP_POOLER__KAFKA__SESSION_TIMEOUT_MS": "2000",
            "FTP_POOLER__KAFKA__HEARTBEAT_INTERVAL_MS": "500",
            "FTP_POOLER__KAFKA__COMMIT_INTERVAL_SECONDS": "0.5",
        }

    def produce(self, values: list[bytes], compression: str | None = None) -> None:
        producer = KafkaProducer(
            bootstrap_servers=self.broker.bootstrap_servers,
            max_request_size=4 * 1024 * 1024,
            compression_type=compression,
        )
        for index, value in enumerate(values):
            producer.send(self.tasks, key=str(index).encode(), value=value)
        producer.flush()
        producer.close()

    def read_results(self, expected_ids: set[str], timeout: float = 120.0) -> list[dict[str, Any]]:
        """Every result on both topics until each expected task id has one (or the timeout)."""
        consumer = KafkaConsumer(**self.broker.consumer_config())
        partitions = [TopicPartition(self.results, 0), TopicPartition(self.failures, 0)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        results: list[dict[str, Any]] = []
        missing = set(expected_ids)
        deadline = time.monotonic() + timeout
        try:
            while missing and time.monotonic() < deadline:
                for messages in consumer.poll(timeout_ms=500).values():
                    for message in messages:
                        result = json.loads(message.value)
                        results.append(result)
                        missing.discard(result.get("task_id"))
        finally:
            consumer.close()
        assert not missing, f"{len(missing)} tasks without a result, e.g. {sorted(missing)[:5]}"
        return results

    def committed(self) -> dict[int, int | None]:
        consumer = KafkaConsumer(**self.broker.consumer_config(self.group))
        try:
            return {
                p: consumer.committed(TopicPartition(self.tasks, p))
                for p in range(self.partitions)
            }
        finally:
            consumer.close()


class Worker:
    """``ftp-pooler worker`` as a child process.

    Its API listens on 127.0.0.1 port 0: the kernel picks a free port at the
    worker's bind and :attr:`port` reads it back from ``/proc``. (A port chosen
    here beforehand can be taken by another process before the worker binds it:
    the worker then exits with status 2 at start-up.)
    """

    def __init__(self, workdir: Path, env: dict[str, str], name: str) -> None:
        env = {
            **env,
            "FTP_POOLER__API__HOST": "127.0.0.1",
            "FTP_POOLER__API__PORT": "0",
            "FTP_POOLER__WORKER__NAME": name,
        }
        self._port: int | None = None
        self.log = (workdir / f"{name}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ftp_pooler.cli", "worker"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    @property
    def port(self) -> int:
        """The API's port; raises ``LookupError`` while the worker does not listen yet."""
        if self._port is None:
            ports = listening_ports(self.process.pid)
            if not ports:
                raise LookupError("the worker does not listen yet")
            (self._port,) = ports
        return self._port

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "worker exited while starting"
            try:
                if self.get("/ready")[0] == 200:
                    return
            except (OSError, LookupError):
                pass
            time.sleep(0.1)
        raise AssertionError("worker never became ready")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as reply:
            return reply.read().decode()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@pytest.fixture
def setup(
    kafka_broker: KafkaBroker, make_vsftpd: MakeServer, ftp_root: Path, tmp_path: Path
) -> Iterator[Callable[..., tuple[Topics, FTPServer, Callable[[str], Worker], dict[str, str]]]]:
    """``setup(partitions=1, drain=25, server=None, **overrides)``
    -> (topics, server, start_worker, env)."""
    workers: list[Worker] = []

    def make(
        partitions: int = 1, drain: float = 25.0, server: FTPServer | None = None, **config: str
    ) -> tuple[Topics, FTPServer, Callable[[str], Worker], dict[str, str]]:
        topics = Topics(kafka_broker, partitions)
        server = server or make_vsftpd(passive_ports=400)
        local = tmp_path / "local"
        local.mkdir(exist_ok=True)
        password_file = tmp_path / "password"
        password_file.write_text(server.password)
        (tmp_path / "connections.ini").write_text(
            f"[ftp]\ntype = ftp\nhost = {server.host}\nport = {server.port}\n"
            f"user = {server.user}\npass_file = {password_file}\ntimeout = 5\n"
            f"connect_timeout = 5\ndata_stall_timeout = 5\n\n"
            f"[local]\ntype = local\nbase_path = {local}\n"
        )
        env = {
            **topics.worker_env(tmp_path / "connections.ini", tmp_path / "none.yaml"),
            "FTP_POOLER__WORKER__DRAIN_SECONDS": str(drain),
            "FTP_POOLER__POOL__MAX_SESSIONS_PER_CONNECTION": "16",
            "FTP_POOLER__TRANSFER__INITIAL_BACKOFF_SECONDS": "0.2",
            "FTP_POOLER__TRANSFER__MAX_BACKOFF_SECONDS": "1",
            "FTP_POOLER__LOGGING__LEVEL": "WARNING",
            **{f"FTP_POOLER__{key.upper()}": value for key, value in config.items()},
        }
        (tmp_path / "none.yaml").write_text("{}\n")

        def start(name: str) -> Worker:
            worker = Worker(tmp_path, env, name)
            workers.append(worker)
            return worker

        return topics, server, start, env

    yield make
    for worker in workers:
        worker.kill()


def remote_files(root: Path, count: int, size: int = 4096) -> dict[str, str]:
    """``count`` files under ``root/src``; returns name -> sha256."""
    digests = {}
    for index in range(count):
        path = root / "src" / f"d{index % 10}" / f"f{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = os.urandom(size + index % 1000)
        path.write_bytes(payload)
        digests[f"d{index % 10}/f{index}.bin"] = hashlib.sha256(payload).hexdigest()
    return digests


def download_tasks(names: list[str], prefix: str = "") -> list[bytes]:
    return [
        json.dumps({"task_id": f"{prefix}{name}", "src_id": "ftp", "src_path": f"/src/{name}",
                    "dst_id": "local", "dst_path": f"in/{name}"}).encode()
        for name in names
    ]


def check_files(local: Path, digests: dict[str, str], *, crashed: bool = False) -> None:
    """Every file complete under its final name; no temporary file left unless a worker crashed."""
    for name, digest in digests.items():
        assert hashlib.sha256((local / "in" / name).read_bytes()).hexdigest() == digest, name
    if not crashed:
        assert not list(local.rglob("*.part")), "a temporary file was left behind"


def test_2000_tasks_give_2000_results_and_identical_files(
    setup: Any, ftp_root: Path, tmp_path: Path
) -> None:
    digests = remote_files(ftp_root, 2000)
    topics, _, start, _ = setup(partitions=4)
    worker = start("w1")
    worker.wait_ready()
    topics.produce(download_tasks(sorted(digests)))
    results = topics.read_results(set(digests))
    assert len(results) == 2000
    assert {r["status"] for r in results} == {"completed"}
    assert {r["worker"] for r in results} == {"w1"}
    check_files(tmp_path / "local", digests)
    assert "ftp_pooler_tasks_total" in worker.metrics()
    assert worker.stop() == 0
    assert sum(offset or 0 for offset in topics.committed().values()) == 2000


def test_malformed_messages_get_failure_results_and_are_committed(
    setup: Any, ftp_root: Path, tmp_path: Path
) -> None:
    digests = remote_files(ftp_root, 40)
    topics, _, start, _ = setup(partitions=1)
    good = download_tasks(sorted(digests))
    bad = [
        b"not json at all",
        b'{"task_id": "no-source", "destination": {"connection_id": "local", "path": "x"}}',
        b"[1, 2, 3]",
        b'{"task_id": "huge", "pad": "' + b"x" * 1_200_000 + b'"}',
        b'{"task_id": "unknown-conn", "src_id": "nope", "src_path": "/a", "dst_id": "local",'
        b' "dst_path": "a"}',
        b'{"task_id": "escape", "src_id": "ftp", "src_path": "/src/d0/f0.bin", "dst_id": "local",'
        b' "dst_path": "../../../tmp/escape"}',
    ]
    padded = bad + [b""] * len(good)
    mixed = [value for pair in zip(good, padded, strict=False) for value in pair if value]
    worker = start("w1")
    worker.wait_ready()
    topics.produce(mixed)
    results = topics.read_results(set(digests) | {"no-source", "huge", "unknown-conn", "escape"})
    by_id = {r.get("task_id"): r for r in results}
    assert by_id["no-source"]["error_code"] == "INVALID_MESSAGE"
    assert by_id["huge"]["error_code"] == "INVALID_MESSAGE"
    assert by_id["unknown-conn"]["error_code"] == "INVALID_CONFIG"
    assert by_id["escape"]["error_code"] == "PATH_NOT_ALLOWED"
    anonymous = [r for r in results if "task_id" not in r]
    assert len(anonymous) == 2
    assert all(r["error_code"] == "INVALID_MESSAGE" and "offset" in r["input"] for r in anonymous)
    assert len(results) == len(mixed)
    check_files(tmp_path / "local", digests)
    deadline = time.monotonic() + 30  # a condition: commits every 0.5 s, later under load
    while topics.committed()[0] != len(mixed) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert topics.committed()[0] == len(mixed)
    assert worker.stop() == 0


def test_kill_9_mid_run_loses_nothing(setup: Any, ftp_root: Path, tmp_path: Path) -> None:
    digests = remote_files(ftp_root, 600, size=200_000)
    topics, _, start, _ = setup(partitions=2)
    first = start("w1")
    first.wait_ready()
    topics.produce(download_tasks(sorted(digests)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((tmp_path / "local").rglob("*.bin"))) < 100:
        time.sleep(0.05)
    first.kill()
    assert len(list((tmp_path / "local").rglob("*.bin"))) < 600, "finished before the kill"
    second = start("w2")
    second.wait_ready()
    results = topics.read_results(set(digests))
    assert {r["status"] for r in results} == {"completed"}
    assert len(results) >= 600
    check_files(tmp_path / "local", digests, crashed=True)
    assert second.stop() == 0


def test_two_workers_share_partitions_and_sigterm_hands_over(
    setup: Any, ftp_root: Path, tmp_path: Path
) -> None:
    digests = remote_files(ftp_root, 800, size=100_000)
    topics, _, start, _ = setup(partitions=4)
    first, second = start("w1"), start("w2")
    first.wait_ready()
    second.wait_ready()
    topics.produce(download_tasks(sorted(digests)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((tmp_path / "local").rglob("*.bin"))) < 200:
        time.sleep(0.05)
    assert first.stop() == 0
    results = topics.read_results(set(digests))
    assert {r["status"] for r in results} == {"completed"}
    assert {r["worker"] for r in results} == {"w1", "w2"}
    check_files(tmp_path / "local", digests)
    assert second.stop() == 0


def test_sigterm_drains_in_flight_transfers_and_reports_not_ready(
    setup: Any, ftp_root: Path, tmp_path: Path
) -> None:
    digests = remote_files(ftp_root, 200, size=500_000)
    topics, _, start, _ = setup(partitions=1, drain=20.0)
    worker = start("w1")
    worker.wait_ready()
    topics.produce(download_tasks(sorted(digests)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((tmp_path / "local").rglob("*.bin"))) < 20:
        time.sleep(0.02)
    worker.process.send_signal(signal.SIGTERM)
    ready_after_signal = None
    for _ in range(50):
        try:
            ready_after_signal = worker.get("/ready")[0]
            break
        except OSError:
            time.sleep(0.02)
    started = time.monotonic()
    assert worker.wait(timeout=30) == 0
    assert time.monotonic() - started < 25
    assert ready_after_signal in (503, None)
    done = {name for name in digests if (tmp_path / "local" / "in" / name).exists()}
    committed = topics.committed()[0] or 0
    assert committed <= len(done)
    assert committed > 0
    check_files(tmp_path / "local", {name: digests[name] for name in done})


def test_ftp_server_restart_mid_run_is_survived(
    setup: Any, make_vsftpd: MakeServer, ftp_root: Path, tmp_path: Path
) -> None:
    digests = remote_files(ftp_root, 300, size=50_000)
    server = make_vsftpd(passive_ports=400)
    topics, _, start, _ = setup(partitions=1, server=server)
    worker = start("w1")
    worker.wait_ready()
    topics.produce(download_tasks(sorted(digests)[:150]))
    topics.read_results(set(sorted(digests)[:150]))
    server.impl.stop()
    topics.produce(download_tasks(sorted(digests)[150:]))
    time.sleep(1.5)
    make_vsftpd(port=server.port, passive_ports=400)
    results = topics.read_results(set(digests))
    latest = {r["task_id"]: r for r in results}
    assert all(r["status"] in ("completed", "failed") for r in latest.values())
    completed = [name for name, r in latest.items() if r["status"] == "completed"]
    assert len(completed) >= 150
    failed = [r for r in latest.values() if r["status"] == "failed"]
    assert all(r["retryable"] and r["attempts"] == 4 for r in failed)
    check_files(tmp_path / "local", {name: digests[name] for name in completed})
    assert worker.process.poll() is None
    assert worker.stop() == 0


def test_submit_waits_for_and_prints_results(setup: Any, ftp_root: Path, tmp_path: Path) -> None:
    digests = remote_files(ftp_root, 20)
    _, _, start, env = setup(partitions=2)
    worker = start("w1")
    worker.wait_ready()
    tasks = b"\n".join(download_tasks(sorted(digests))) + b"\n"
    done = subprocess.run(
        [sys.executable, "-m", "ftp_pooler.cli", "submit", "-", "--results", "--timeout", "60"],
        env=env, input=tasks, capture_output=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["task_id"] for r in printed) == sorted(digests)
    assert b"submitted 20 tasks; 20 results, 0 failed" in done.stderr
    check_files(tmp_path / "local", digests)
    assert worker.stop() == 0


def test_submit_results_says_which_lines_it_cannot_wait_for(
    setup: Any, ftp_root: Path, tmp_path: Path
) -> None:
    """tester2: submit --results silently ignored lines without a task id (their
    results cannot be told apart) and repeated ids (one result awaited), and said
    all was well. Now its summary counts them, and lines without an id are not success."""
    digests = remote_files(ftp_root, 3)
    _, _, start, env = setup(partitions=1)
    worker = start("w1")
    worker.wait_ready()
    good = download_tasks(sorted(digests))
    tasks = b"\n".join([*good, good[0], b"not json", b'{"no": "task id"}']) + b"\n"
    done = subprocess.run(
        [sys.executable, "-m", "ftp_pooler.cli", "submit", "-", "--results", "--timeout", "60"],
        env=env, input=tasks, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr.decode()
    (summary,) = done.stderr.decode().splitlines()
    assert summary.startswith("submitted 6 tasks; 3 results, "), summary
    assert summary.endswith(
        "; 2 lines without a task id: not waited for"
        "; 1 lines repeat an earlier task id: one result each id"
    ), summary
    assert sorted(json.loads(line)["task_id"] for line in done.stdout.splitlines()) == sorted(
        digests
    )
    assert worker.stop() == 0


def test_submit_counts_and_reports_tasks_the_producer_refuses(setup: Any) -> None:
    _, _, _, env = setup(partitions=1)
    small = b'{"task_id": "small"}'
    huge = b'{"task_id": "huge", "padding": "' + b"x" * (2 * 1024 * 1024 + 1) + b'"}'
    done = subprocess.run(
        [sys.executable, "-m", "ftp_pooler.cli", "submit", "-"],
        env=env, input=small + b"\n" + huge + b"\n", capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr.decode()
    assert b"submitted 1 tasks; 1 refused (MessageSizeTooLargeError" in done.stderr


def test_a_taken_api_port_is_a_one_line_error_before_kafka(tmp_path: Path) -> None:
    connections = tmp_path / "connections.ini"
    connections.write_text(f"[local]\ntype = local\nbase_path = {tmp_path}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "FTP_POOLER_CONNECTIONS": str(connections),
            "FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nobody there
            "FTP_POOLER__API__HOST": "127.0.0.1",
            "FTP_POOLER__API__PORT": str(port),
        }
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "ftp_pooler.cli", "worker"],
            env=env, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        "ftp-pooler: INVALID_CONFIG: api: cannot listen on "
        f"127.0.0.1:{port}: Address already in use"
    ]
    assert time.monotonic() - started < 10  # did not wait for the (absent) broker


def test_the_worker_fixture_takes_no_port_another_process_can_hold(
    kafka_broker: KafkaBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port a free-port helper hands out is taken by someone else (on the wildcard
    address, as another process could between the choice and the worker's bind) before
    the worker starts: the worker still listens, on a port the kernel gave it at its own
    bind, and answers there. (A worker told a port chosen beforehand exited with 2.)"""
    connections = tmp_path / "connections.ini"
    connections.write_text(f"[local]\ntype = local\nbase_path = {tmp_path}\n")
    (tmp_path / "none.yaml").write_text("{}\n")
    topics = Topics(kafka_broker, 1)
    env = {
        **os.environ,
        "FTP_POOLER_CONNECTIONS": str(connections),
        "FTP_POOLER_CONFIG": str(tmp_path / "none.yaml"),
        "FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "FTP_POOLER__KAFKA__INPUT_TOPIC": topics.tasks,
        "FTP_POOLER__KAFKA__RESULT_TOPIC": topics.results,
        "FTP_POOLER__KAFKA__FAIL_TOPIC": topics.failures,
        "FTP_POOLER__KAFKA__CONSUMER_GROUP": topics.group,
        "FTP_POOLER__KAFKA__SESSION_TIMEOUT_MS": "2000",
        "FTP_POOLER__KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "FTP_POOLER__LOGGING__LEVEL": "WARNING",
    }
    with socket.socket() as other:  # what a test that picked a free port would pick
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("0.0.0.0", free_port()))
        other.listen()
        taken = other.getsockname()[1]
        monkeypatch.setattr(sys.modules[__name__], "free_port", lambda host="": taken)
        worker = Worker(tmp_path, env, "w1")
        try:
            worker.wait_ready()
            assert worker.port != taken
            assert worker.port in listening_ports(worker.process.pid)
            assert worker.stop() == 0
        finally:
            worker.kill()


def _padded(tasks: list[bytes]) -> list[bytes]:
    """Tasks with 2 KB of padding (an ignored key): a batch of them is worth compressing,
    so the producer does compress it (Tansu keeps a batch as it was produced)."""
    return [task[:-1] + b', "pad": "' + b"p" * 2000 + b'"}' for task in tasks]


def test_tasks_compressed_with_lz4_zstd_or_snappy_are_read(
    setup: Any, ftp_root: Path, tmp_path: Path
) -> None:
    """kafka-python decodes lz4, zstd and snappy only with their libraries (extras of
    kafka-python, in the locks): without them a poll raised UnsupportedCodecError and
    the worker exited 3, again at each restart."""
    digests = remote_files(ftp_root, 9)
    names = sorted(digests)
    topics, _, start, _ = setup(partitions=1)
    worker = start("w1")
    worker.wait_ready()
    for index, codec in enumerate(["lz4", "zstd", "snappy"]):
        topics.produce(_padded(download_tasks(names[3 * index : 3 * index + 3])), codec)
    results = topics.read_results(set(digests))
    assert {r["status"] for r in results} == {"completed"}
    check_files(tmp_path / "local", digests)
    assert worker.stop() == 0


def test_a_record_the_worker_cannot_decode_is_logged_and_degraded_not_a_crash_loop(
    setup: Any, ftp_root: Path, tmp_path: Path
) -> None:
    """A poll that raises (here: lz4 without its library) must not end the worker: a
    restart would meet the same record again. One kafka.poll_failed line, /health 200
    with the poller degraded and the reason, /ready 503; SIGTERM still drains to 0."""
    digests = remote_files(ftp_root, 3)
    topics, _, _, env = setup(partitions=1)
    no_lz4 = tmp_path / "no-lz4"
    no_lz4.mkdir()
    (no_lz4 / "sitecustomize.py").write_text(
        "import sys\nsys.modules['lz4'] = sys.modules['lz4.frame'] = None  # as if not installed\n"
    )
    topics.produce(_padded(download_tasks(sorted(digests))), "lz4")
    worker = Worker(tmp_path, {**env, "PYTHONPATH": str(no_lz4)}, "w-no-lz4")
    try:
        log = tmp_path / "w-no-lz4.log"
        deadline = time.monotonic() + 60
        while b"kafka.poll_failed" not in log.read_bytes():
            assert worker.process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        deadline = time.monotonic() + 30  # the API may start listening after the first poll
        while True:
            try:
                status, health = worker.get("/health")
                break
            except (OSError, LookupError):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert status == 200
        poller = health["components"]["poller"]
        assert poller["status"] == "degraded"
        assert "UnsupportedCodecError" in poller["reason"] and "lz4" in poller["reason"]
        status, ready = worker.get("/ready")
        assert status == 503 and "UnsupportedCodecError" in ready["troubles"]["poller"]
        time.sleep(2)  # the poll fails again and again: logged once, the worker stays
        failures = [
            line
            for line in log.read_text().splitlines()
            if "kafka.poll_failed" in line and "UnsupportedCodecError" in line
        ]
        assert len(failures) == 1, failures
        assert worker.process.poll() is None
        assert worker.stop() == 0
    finally:
        worker.kill()


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd", "snappy"])
def test_a_corrupt_compressed_batch_is_a_poll_failure_not_a_crash(
    setup: Any, ftp_root: Path, tmp_path: Path, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The producer (in this process) writes a batch flagged ``codec`` whose payload is
    not a frame of it (its CRC is right): operations.md promises one kafka.poll_failed
    line and a degraded poller for "a corrupt record", never a crash."""
    import kafka.record.default_records as records

    monkeypatch.setattr(records, f"{codec}_encode", lambda data: b"\x00not-a-frame" * 8)
    digests = remote_files(ftp_root, 3)
    topics, _, start, _ = setup(partitions=1)
    topics.produce(_padded(download_tasks(sorted(digests))), codec)
    worker = start("w1")
    try:
        log = tmp_path / "w1.log"
        deadline = time.monotonic() + 30
        while b"kafka.poll_failed" not in log.read_bytes():
            assert worker.process.poll() is None, log.read_text()[-1000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        deadline = time.monotonic() + 30  # the API may start listening after the first poll
        while True:
            try:
                status, ready = worker.get("/ready")
                break
            except (OSError, LookupError):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert status == 503 and "poller" in ready["troubles"], ready
        assert worker.process.poll() is None
        assert worker.stop() == 0
    finally:
        worker.kill()
