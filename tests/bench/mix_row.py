"""The mix row of ``make bench`` (issue #13): a healthy server's files/s in a mix over alone.

``ftp-pooler copy --concurrency 32`` downloads N small files from a healthy
pure-ftpd (4 sessions), alone, then interleaved with N/4 files from a slow
server (a second pure-ftpd on the same files behind the latency proxy, RTT
200 ms, 4 sessions), and tasks for two dead servers (a socket that accepts
and never speaks, and a closed port). The row is the healthy server's
files/s in the mix (first task to its last result) over its files/s alone;
the issue's goal is that the healthy tasks finish within 2x their time alone
plus 1 s. "Alone" is the faster of two runs, one before and one after the
mix. Every task must have exactly one result: healthy and slow ones
completed, dead ones failed and retryable.

With ``--worker`` the same runs go through ``ftp-pooler worker`` (max_inflight
32) and a Tansu broker: a run then lasts from its first task produced to its
last result read back.

Run by ``tests/bench/run.py`` after its matrix (``--no-mix`` skips it; the
worker row comes too when the worker is among the tools), or alone as root:
``.venv/bin/python tests/bench/mix_row.py [--quick] [--worker]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
_TESTS = str(REPO / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from server_mix import (  # noqa: E402 -- tests/ is on the path only now
    Mix,
    completed_at,
    download,
    interleave,
    put_files,
    task_lines,
    write_connections,
)
from servers.dead import MuteServer, closed_port  # noqa: E402
from servers.latency_proxy import LatencyProxy  # noqa: E402
from servers.kafka import TansuBroker  # noqa: E402
from servers.pureftpd import PureFTPd  # noqa: E402

FTP_POOLER = REPO / ".venv" / "bin" / "ftp-pooler"
RTT = 0.2
CONCURRENCY = 32


@dataclass(frozen=True)
class MixSizes:
    healthy: int
    slow: int
    dead: int


FULL = MixSizes(healthy=400, slow=100, dead=50)
QUICK = MixSizes(healthy=200, slow=20, dead=20)


class _Copy:
    """Each run is one ``ftp-pooler copy --concurrency 32``."""

    tool = "copy"

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self._work = work
        self._env = env

    def run(self, name: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        return _copy(self._work, name, task_lines(tasks), self._env)

    def close(self) -> None:
        pass


class _Worker:
    """One ``ftp-pooler worker`` for every run, fed through Kafka (2 partitions); a run
    goes from its first task produced to its last result read back."""

    tool = "worker"

    def __init__(self, work: Path, env: dict[str, str], broker: Any) -> None:
        from test_worker import Topics, Worker  # tests/: the worker tests' helpers
        from test_worker_mix import Results

        broker = broker.info()  # a started TansuBroker -> what the test helpers take
        self._topics = topics = Topics(broker, 2)
        env = {
            **env,
            "FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "FTP_POOLER__KAFKA__INPUT_TOPIC": topics.tasks,
            "FTP_POOLER__KAFKA__RESULT_TOPIC": topics.results,
            "FTP_POOLER__KAFKA__FAIL_TOPIC": topics.failures,
            "FTP_POOLER__KAFKA__CONSUMER_GROUP": topics.group,
            "FTP_POOLER__KAFKA__SESSION_TIMEOUT_MS": "2000",
            "FTP_POOLER__KAFKA__HEARTBEAT_INTERVAL_MS": "500",
            "FTP_POOLER__KAFKA__FETCH_MAX_WAIT_MS": "100",
            "FTP_POOLER__WORKER__MAX_INFLIGHT": str(CONCURRENCY),
        }
        self._worker = Worker(work, env, "bench-mix")
        self._results = Results(topics)
        self._worker.wait_ready()
        time.sleep(1.5)  # as run.py: /ready comes a little before the first fetch

    def run(self, name: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        from test_worker_mix import produce

        started = time.time()
        produce(self._topics, tasks)
        ids = {task["task_id"] for task in tasks}
        self._results.wait_for(ids, timeout=600)
        return {
            "started": started,
            "wall_s": time.time() - started,
            "results": {i: self._results.by_id[i] for i in ids},
            "duplicates": sum(i in ids for i in self._results.duplicates),
            "stderr_tail": "",
        }

    def close(self) -> None:
        try:
            self._worker.stop()
        finally:
            self._worker.kill()
            self._results.close()


def _copy(work: Path, name: str, lines: bytes, env: dict[str, str]) -> dict[str, Any]:
    tasks = work / f"{name}.jsonl"
    tasks.write_bytes(lines)
    output = work / f"{name}-results.jsonl"
    started = time.time()
    done = subprocess.run(
        [str(FTP_POOLER), "copy", str(tasks), "--output", str(output),
         "--concurrency", str(CONCURRENCY)],
        env=env, capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    wall = time.time() - started
    results: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for line in output.read_bytes().splitlines() if output.exists() else []:
        result = json.loads(line)
        duplicates += result["task_id"] in results
        results[result["task_id"]] = result
    return {
        "started": started,
        "wall_s": wall,
        "exit_code": done.returncode,
        "results": results,
        "duplicates": duplicates,
        "stderr_tail": done.stderr.decode(errors="replace")[-2000:],
    }


def run_mix(work: Path, sizes: MixSizes, broker: Any = None) -> dict[str, Any]:
    """Serve, run alone and in the mix, check, and return the row (``ok`` False with
    ``problems`` when a check failed). With a Kafka ``broker`` (a started
    ``TansuBroker``) through the worker, else through ``copy``."""
    root = work / "mix-srv"
    root.mkdir(parents=True)
    healthy_files = put_files(root, "h", sizes.healthy)
    slow_files = put_files(root, "s", sizes.slow)
    local = work / "mix-dst"
    local.mkdir()
    healthy_server = PureFTPd(root, work / "mix-healthy", max_clients=32, passive_ports=128)
    slow_server = PureFTPd(root, work / "mix-slow", max_clients=32, passive_ports=64)
    problems: list[str] = []
    row: dict[str, Any] = {
        "tool": "worker" if broker is not None else "copy",
        "rtt_s": RTT,
        "concurrency": CONCURRENCY,
        "sizes": sizes.__dict__,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTP_POOLER")}
    env["FTP_POOLER_CONNECTIONS"] = str(work / "mix-connections.ini")
    env["FTP_POOLER_CONFIG"] = str(work / "mix-config.yaml")
    (work / "mix-config.yaml").write_text(
        "pool:\n  max_sessions_per_pod: 64\n  max_sessions_per_connection: 4\n"
        "worker:\n  name: bench-mix\nlogging:\n  level: WARNING\n"
    )
    try:
        healthy_server.start()
        slow_server.start()
        info = slow_server.info()
        assert info.passive_ports is not None
        low, high = info.passive_ports
        with (
            LatencyProxy([info.port, *range(low, high + 1)], RTT) as proxy,
            MuteServer() as mute,
        ):
            mix = Mix(healthy_server.info(), proxy.host, mute.port, closed_port())
            write_connections(work / "mix-connections.ini", mix, local)
            # the slow server is another process on the same files: point "slow" at it
            text = (work / "mix-connections.ini").read_text()
            text = text.replace(
                f"host = {proxy.host}\nport = {mix.server.port}",
                f"host = {proxy.host}\nport = {info.port}",
            )
            (work / "mix-connections.ini").write_text(text)

            def healthy(run: str) -> list[dict[str, Any]]:
                return [
                    download(f"h-{run}-{i}", "healthy", path, f"{run}/h/{i}")
                    for i, path in enumerate(healthy_files)
                ]

            runner = _Worker(work, env, broker) if broker is not None else _Copy(work, env)
            try:
                first = runner.run("mix-alone", healthy("alone"))
                slow = [
                    download(f"s-{i}", "slow", p, f"mix/s/{i}") for i, p in enumerate(slow_files)
                ]
                dead = [download(f"m-{i}", "mute", "/x", f"mix/m/{i}") for i in range(sizes.dead)]
                dead += [
                    download(f"c-{i}", "closed", "/x", f"mix/c/{i}") for i in range(sizes.dead)
                ]
                tasks = list(interleave(healthy("mix"), slow, dead))
                mixed = runner.run("mix-mix", tasks)
                row["mute_connects"] = mute.accepted
                # alone once more: the faster of the two, so a cold first run (caches,
                # the server's first sessions) does not flatter the mix
                again = runner.run("mix-alone-again", healthy("again"))
            finally:
                runner.close()
    finally:
        slow_server.stop()
        healthy_server.stop()

    def healthy_seconds(run: dict[str, Any], prefix: str) -> float | None:
        times = [completed_at(r) for t, r in run["results"].items() if t.startswith(prefix)]
        return max(times) - run["started"] if times else None

    runs = [(first, "h-alone-"), (again, "h-again-")]
    alone, prefix = min(runs, key=lambda run: healthy_seconds(*run) or float("inf"))
    alone_s = healthy_seconds(alone, prefix)
    mix_s = healthy_seconds(mixed, "h-mix-")
    expected = {t["task_id"] for t in tasks}
    if set(mixed["results"]) != expected or mixed["duplicates"]:
        problems.append(
            f"mix: {len(expected - set(mixed['results']))} tasks without a result, "
            f"{mixed['duplicates']} duplicates"
        )
    if len(alone["results"]) != sizes.healthy or alone["duplicates"]:
        problems.append("alone: not exactly one result per task")
    for task_id, result in mixed["results"].items():
        want_ok = task_id[0] in "hs"
        if want_ok != (result["status"] == "completed") or (
            not want_ok and result.get("retryable") is not True
        ):
            problems.append(f"{task_id}: {result['status']} {result.get('error_code')}")
            break
    row.update(
        healthy_alone_s=alone_s,
        healthy_mix_s=mix_s,
        alone_files_per_s=sizes.healthy / alone_s if alone_s else None,
        mix_files_per_s=sizes.healthy / mix_s if mix_s else None,
        ratio=alone_s / mix_s if alone_s and mix_s else None,
        goal_s=2 * alone_s + 1 if alone_s else None,
        mix_wall_s=mixed["wall_s"],
        ok=not problems,
        problems=problems,
    )
    if problems:
        row["stderr_tail"] = mixed["stderr_tail"]
    return row


def mix_line(row: dict[str, Any]) -> str:
    """The row as ``make bench`` prints it."""
    if not row["ok"]:
        return "mix: FAILED: " + "; ".join(row["problems"])
    tool = "copy --concurrency" if row["tool"] == "copy" else "worker, max_inflight"
    return (
        f"mix ({tool} {row['concurrency']}; healthy {row['sizes']['healthy']} x 4 KiB,"
        f" slow {row['sizes']['slow']} at RTT {row['rtt_s'] * 1000:.0f} ms,"
        f" {2 * row['sizes']['dead']} to dead servers; 4 sessions each):\n"
        f"  healthy alone {row['alone_files_per_s']:.0f} files/s ({row['healthy_alone_s']:.2f} s),"
        f" in the mix {row['mix_files_per_s']:.0f} files/s ({row['healthy_mix_s']:.2f} s,"
        f" goal <= {row['goal_s']:.2f} s): ratio {row['ratio']:.2f};"
        f" whole mix {row['mix_wall_s']:.1f} s, {row['mute_connects']} connects to the mute server"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true", help="through the worker and Kafka")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("mix_row.py needs root (pure-ftpd chroots its sessions)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ftp-pooler-mix-", dir="/dev/shm"))
    work.chmod(0o755)
    broker = None
    try:
        if args.worker:
            broker = TansuBroker(work / "kafka")
            broker.start()
        row = run_mix(work, QUICK if args.quick else FULL, broker)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(mix_line(row))
    return 0 if row["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
