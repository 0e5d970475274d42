"""The worker's Kafka path alone: what a task costs besides its transfer.

Every task is a download whose local destination already exists, with
``if_exists: skip``, so the worker polls it, parses it, plans it and publishes a
``skipped`` result without opening an FTP session. The harness (this script)
starts a Tansu broker and ``ftp-pooler worker``, waits for ``/ready``, produces
the tasks to a 4-partition topic and reads every result back; it measures from
the first task produced to the last result read. ``ftp-pooler copy`` runs the
same tasks from a file, for comparison (its bare start-up, measured with an
empty file, taken off)::

    .venv/bin/python tests/bench/kafka_path.py [--tasks 20000] [--repeat 3] [--inflight 8]

(``make bench-kafka``; no root, no FTP server.) Printed per run: tasks per
second and CPU per task -- for the worker split into its main (Trio) thread and
its other threads (kafka-python's two IO threads and Trio's thread for
``poll``, from ``/proc/PID/task``), and its CPU while idle before the run. The
main thread is where the transfers run too, so the difference between the
worker's main thread and ``copy`` is what the Kafka path takes from them (see
"Where the time goes" in ``docs/architecture.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from servers.kafka import TansuBroker  # noqa: E402
from servers.netutil import free_port  # noqa: E402

FTP_POOLER = REPO / ".venv" / "bin" / "ftp-pooler"
HOST = "127.0.0.1"
PARTITIONS = 4
FETCH_MAX_WAIT_MS = 100  # as in run.py: Tansu holds a multi-partition fetch this long
IDLE_SECONDS = 2.0
TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of ``pid``."""
    seconds: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        seconds[int(tid)] = (int(fields[11]) + int(fields[12])) / TICKS
    return seconds


def cpu_delta(pid: int, before: dict[int, float], after: dict[int, float]) -> tuple[float, float]:
    """(main thread, all other threads) CPU seconds between two :func:`thread_cpu` readings."""
    main = after.get(pid, 0.0) - before.get(pid, 0.0)
    others = sum(after[t] - before.get(t, 0.0) for t in after if t != pid)
    return main, others


@dataclass
class Run:
    tasks: int
    wall: float
    main_cpu: float
    other_cpu: float
    idle_cpu_share: float

    @property
    def per_task_us(self) -> tuple[float, float, float]:
        main, other = self.main_cpu / self.tasks * 1e6, self.other_cpu / self.tasks * 1e6
        return main, other, main + other


def task_message(n: int) -> bytes:
    return json.dumps(
        {
            "task_id": f"t-{n:07d}",
            "operation": "download",
            "source": {"connection_id": "ftp", "path": f"src/f-{n:07d}.bin"},
            "destination": {"connection_id": "local", "path": "exists.bin"},
            "options": {"if_exists": "skip"},
        }
    ).encode()


def run_copy(work: Path, tasks: int, inflight: int) -> tuple[float, float]:
    """``ftp-pooler copy`` of the first ``tasks`` tasks: (wall, CPU) seconds, start-up included."""
    task_file = work / f"tasks-{tasks}.jsonl"
    task_file.write_bytes(b"".join(task_message(n) + b"\n" for n in range(tasks)))
    (work / "copy.yaml").write_text('{"logging": {"level": "WARNING"}}')
    argv = [
        str(FTP_POOLER), "copy", str(task_file), "--config", str(work / "copy.yaml"),
        "--connections", str(work / "connections.ini"), "--output", os.devnull,
        "--concurrency", str(inflight),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTP_POOLER")}
    started = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"copy exited {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_utime + usage.ru_stime


def wait_ready(worker: subprocess.Popen[bytes], port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited ({worker.returncode}) before it was ready")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/ready", timeout=1) as reply:
                if reply.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"the worker was not ready within {timeout:g} s")


def run_once(broker: TansuBroker, work: Path, tasks: int, inflight: int) -> Run:
    suffix = uuid.uuid4().hex[:8]
    topics = {name: f"{name}-{suffix}" for name in ("tasks", "results", "failures")}
    broker.create_topic(topics["tasks"], PARTITIONS)
    broker.create_topic(topics["results"], PARTITIONS)
    broker.create_topic(topics["failures"], 1)
    port = free_port()
    config = work / f"config-{suffix}.yaml"
    config.write_text(
        json.dumps(
            {
                "kafka": {
                    "bootstrap_servers": [broker.bootstrap_servers],
                    "consumer_group": f"bench-{suffix}",
                    "input_topic": topics["tasks"],
                    "result_topic": topics["results"],
                    "fail_topic": topics["failures"],
                    "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
                },
                "worker": {"max_inflight": inflight, "name": "kafka-path"},
                "api": {"host": HOST, "port": port},
                "logging": {"level": "WARNING"},
            }
        )  # JSON is YAML
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FTP_POOLER")},
        "FTP_POOLER_CONFIG": str(config),
        "FTP_POOLER_CONNECTIONS": str(work / "connections.ini"),
    }
    with open(work / f"worker-{suffix}.log", "wb") as log:
        worker = subprocess.Popen([str(FTP_POOLER), "worker"], env=env, stdout=log, stderr=log)
    try:
        wait_ready(worker, port)
        time.sleep(1.5)  # let the group settle
        before = thread_cpu(worker.pid)
        time.sleep(IDLE_SECONDS)
        idle = sum(cpu_delta(worker.pid, before, thread_cpu(worker.pid))) / IDLE_SECONDS

        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=20)
        consumer = KafkaConsumer(
            topics["results"], bootstrap_servers=broker.bootstrap_servers,
            auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=50,
        )  # fmt: skip
        consumer.poll(timeout_ms=500)  # joins its partitions before the clock
        messages = [task_message(n) for n in range(tasks)]
        before = thread_cpu(worker.pid)
        started = time.perf_counter()
        for n, message in enumerate(messages):
            producer.send(topics["tasks"], key=b"t-%07d" % n, value=message)
        producer.flush()
        seen = 0
        deadline = started + 300
        while seen < tasks:
            if time.perf_counter() > deadline or worker.poll() is not None:
                raise SystemExit(f"only {seen} of {tasks} results (see {log.name})")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if json.loads(record.value)["status"] != "skipped":
                        raise SystemExit(f"unexpected result: {record.value!r}")
                    seen += 1
        wall = time.perf_counter() - started
        main, others = cpu_delta(worker.pid, before, thread_cpu(worker.pid))
        producer.close()
        consumer.close()
        worker.send_signal(signal.SIGTERM)
        if worker.wait(30) != 0:
            raise SystemExit(f"the worker exited {worker.returncode} after SIGTERM")
        return Run(tasks, wall, main, others, idle)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=8, help="worker.max_inflight")
    args = parser.parse_args()

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="ftp-pooler-kafka-path-", dir=base) as tmp:
        work = Path(tmp)
        (work / "local").mkdir()
        (work / "local" / "exists.bin").write_bytes(b"")
        (work / "connections.ini").write_text(
            f"[ftp]\ntype = ftp\nhost = {HOST}\nport = {free_port()}\n"  # never contacted
            f"[local]\ntype = local\nbase_path = {work / 'local'}\n"
        )
        bare_wall, bare_cpu = run_copy(work, 0, args.inflight)
        copies = []
        for _ in range(args.repeat):
            wall, cpu = run_copy(work, args.tasks, args.inflight)
            copies.append((args.tasks / (wall - bare_wall), (cpu - bare_cpu) / args.tasks * 1e6))
        print(
            f"copy, the same {args.tasks} tasks from a file, --concurrency {args.inflight}, "
            f"start-up ({bare_wall:.2f} s, {bare_cpu:.2f} s CPU) taken off: "
            f"{statistics.median(c[0] for c in copies):.0f} tasks/s, "
            f"{statistics.median(c[1] for c in copies):.0f} us CPU per task (median of "
            f"{len(copies)})"
        )
        broker = TansuBroker(work / "kafka").start()
        try:
            print(
                f"worker, tasks through Kafka: worker.max_inflight {args.inflight}, Tansu, "
                f"{PARTITIONS} partitions"
            )
            print(f"{'run':>3} {'tasks/s':>8} {'main us/task':>13} {'other threads':>14} "
                  f"{'total us/task':>14} {'idle CPU':>9}")  # fmt: skip
            runs = []
            for n in range(1, args.repeat + 1):
                run = run_once(broker, work, args.tasks, args.inflight)
                runs.append(run)
                main_us, other_us, total_us = run.per_task_us
                print(f"{n:>3} {run.tasks / run.wall:>8.0f} {main_us:>13.0f} {other_us:>14.0f} "
                      f"{total_us:>14.0f} {run.idle_cpu_share:>8.1%}", flush=True)  # fmt: skip
            if len(runs) > 1:
                med = statistics.median
                print(
                    f"{'med':>3} {med(r.tasks / r.wall for r in runs):>8.0f} "
                    f"{med(r.per_task_us[0] for r in runs):>13.0f} "
                    f"{med(r.per_task_us[1] for r in runs):>14.0f} "
                    f"{med(r.per_task_us[2] for r in runs):>14.0f} "
                    f"{med(r.idle_cpu_share for r in runs):>8.1%}"
                )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
