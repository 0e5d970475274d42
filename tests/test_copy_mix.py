"""Issue #13 in ``ftp-pooler copy``: a slow server and two dead ones do not slow a healthy one.

Real parts: pure-ftpd (healthy), the same server behind the latency proxy
(slow, RTT 100 ms), a socket that accepts and never speaks, and a closed
port; ``ftp-pooler copy`` runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from server_mix import (
    SETTINGS,
    Mix,
    completed_at,
    download,
    interleave,
    put_files,
    task_lines,
    write_connections,
)
from servers import FTPServer
from servers.dead import MuteServer, closed_port
from servers.latency_proxy import LatencyProxy

RTT = 0.1
HEALTHY = 300
SLOW = 40
DEAD = 30


def run_copy(
    tmp_path: Path, name: str, lines: bytes, env: dict[str, str]
) -> tuple[float, dict[str, dict[str, Any]]]:
    """Run ``ftp-pooler copy --concurrency 32``; its start (Unix time) and results by task id."""
    tasks = tmp_path / f"{name}.jsonl"
    tasks.write_bytes(lines)
    output = tmp_path / f"{name}-results.jsonl"
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "ftp_pooler.cli", "copy", str(tasks), "--output", str(output),
         "--concurrency", "32"],
        env=env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr.decode()
    results: dict[str, dict[str, Any]] = {}
    for line in output.read_bytes().splitlines():
        result = json.loads(line)
        assert result["task_id"] not in results, "a task got two results"
        results[result["task_id"]] = result
    return started, results


def test_healthy_tasks_finish_as_if_alone_beside_a_slow_and_two_dead_servers(
    make_pureftpd: Callable[..., FTPServer], ftp_root: Path, tmp_path: Path
) -> None:
    healthy_files = put_files(ftp_root, "h", HEALTHY)
    slow_files = put_files(ftp_root, "s", SLOW)
    server = make_pureftpd(passive_ports=64)
    assert server.passive_ports is not None
    low, high = server.passive_ports
    local = tmp_path / "local"
    local.mkdir()
    env = dict(os.environ)
    env["FTP_POOLER_CONFIG"] = str(tmp_path / "config.yaml")
    env["FTP_POOLER_CONNECTIONS"] = str(tmp_path / "connections.ini")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(SETTINGS))

    with (
        LatencyProxy([server.port, *range(low, high + 1)], RTT) as proxy,
        MuteServer() as mute,
    ):
        mix = Mix(server, proxy.host, mute.port, closed_port())
        write_connections(tmp_path / "connections.ini", mix, local)

        def healthy(run: str) -> list[dict[str, Any]]:
            return [
                download(f"h-{run}-{i}", "healthy", path, f"{run}/h/{i}")
                for i, path in enumerate(healthy_files)
            ]

        started, alone = run_copy(tmp_path, "alone", task_lines(healthy("alone")), env)
        alone_seconds = max(completed_at(r) for r in alone.values()) - started
        assert len(alone) == HEALTHY
        assert all(r["status"] == "completed" for r in alone.values())

        slow = [download(f"s-{i}", "slow", p, f"mix/s/{i}") for i, p in enumerate(slow_files)]
        muted = [download(f"m-{i}", "mute", "/x", f"mix/m/{i}") for i in range(DEAD)]
        refused = [download(f"c-{i}", "closed", "/x", f"mix/c/{i}") for i in range(DEAD)]
        tasks = list(interleave(healthy("mix"), slow, muted, refused))
        started, mixed = run_copy(tmp_path, "mix", task_lines(tasks), env)

    assert sorted(mixed) == sorted(task["task_id"] for task in tasks)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for task_id, result in mixed.items():
        by_kind.setdefault(task_id[0], []).append(result)
    assert all(r["status"] == "completed" for r in by_kind["h"] + by_kind["s"])
    for result in by_kind["m"] + by_kind["c"]:
        assert result["status"] == "failed"
        assert result["error_code"] in ("CONNECTION_ERROR", "TIMEOUT"), result
        assert result["retryable"] is True
    healthy_seconds = max(completed_at(r) for r in by_kind["h"]) - started
    assert healthy_seconds <= 2 * alone_seconds + 1.0, (healthy_seconds, alone_seconds)
    # the mute server saw a handful of connects (breaker), not one per attempt of every task
    assert mute.accepted < DEAD
