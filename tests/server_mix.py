"""The mix of issue #13 for tests and benchmarks: a healthy server, a slow one, two dead ones.

* ``healthy``: a real FTP server on 127.0.0.1.
* ``slow``: the same server through the latency proxy on 127.0.0.2
  (``tests/servers/latency_proxy.py``), so every round trip costs the RTT.
* ``mute``: a socket that accepts and never speaks (``servers.dead.MuteServer``).
* ``closed``: a port nothing listens on.

Each FTP connection is capped at 4 sessions. Helpers here write the
connections file and config for ``ftp-pooler``, the files to fetch, and the
task lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from servers import FTPServer

SESSIONS = 4
CONNECT_TIMEOUT = 1.0


@dataclass(frozen=True)
class Mix:
    """Where each kind of server of the mix is reached."""

    server: FTPServer
    slow_host: str
    mute_port: int
    closed_port: int


def write_connections(path: Path, mix: Mix, local_root: Path) -> None:
    server = mix.server
    password_file = path.parent / "ftp-password"
    password_file.write_text(server.password + "\n")

    def section(name: str, host: str, port: int) -> str:
        return (
            f"[{name}]\ntype = ftp\nhost = {host}\nport = {port}\nuser = {server.user}\n"
            f"pass_file = {password_file}\nmax_sessions = {SESSIONS}\n"
            f"connect_timeout = {CONNECT_TIMEOUT}\ntimeout = 10\n\n"
        )

    path.write_text(
        section("healthy", server.host, server.port)
        + section("slow", mix.slow_host, server.port)
        + section("mute", "127.0.0.1", mix.mute_port)
        + section("closed", "127.0.0.1", mix.closed_port)
        + f"[local]\ntype = local\nbase_path = {local_root}\n"
    )


SETTINGS = {
    "pool": {
        "max_sessions_per_pod": 64,
        "max_sessions_per_connection": SESSIONS,
        "breaker_failures": 3,
        "breaker_open_seconds": 1.0,
        "breaker_max_open_seconds": 2.0,
    },
    "transfer": {"initial_backoff_seconds": 0.2, "max_backoff_seconds": 1.0},
    "logging": {"level": "WARNING"},
}


def put_files(root: Path, prefix: str, count: int, size: int = 4096) -> list[str]:
    """``count`` files of ``size`` random bytes under ``root/prefix``; their remote paths."""
    (root / prefix).mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        (root / prefix / f"f{index}.bin").write_bytes(os.urandom(size))
        names.append(f"/{prefix}/f{index}.bin")
    return names


def download(task_id: str, conn: str, remote: str, local: str) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "source": {"connection_id": conn, "path": remote},
        "destination": {"connection_id": "local", "path": local},
    }


def interleave(*groups: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Round robin over the groups, so no kind of task comes first."""
    longest = max(len(group) for group in groups)
    for index in range(longest):
        for group in groups:
            if index < len(group):
                yield group[index]


def task_lines(tasks: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(task).encode() + b"\n" for task in tasks)


def completed_at(result: dict[str, Any]) -> float:
    """A result's ``completed_at`` as Unix seconds."""
    return datetime.fromisoformat(result["completed_at"]).timestamp()
