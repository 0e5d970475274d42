"""``ftp-pooler copy`` and ``check-config`` as a user runs them: a subprocess, real servers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ftp_pooler.cli.batch import Line, LineSplitter, copy_tasks, count_task_lines
from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.contract import Result
from ftp_pooler.transfer.engine import Transfer, TransferEngine
from ftp_pooler.ftp.config import FTPConfig
from ftp_pooler.ftp.pool import SessionPool
from ftp_pooler.ftp.session import SessionFactory
from servers import FTPServer
from servers.dead import closed_port

MakeServer = Callable[..., FTPServer]


def write_config(tmp_path: Path, server: FTPServer, local_root: Path) -> dict[str, str]:
    """connections.ini + config.yaml for ``server`` and ``local_root`` (made here: a missing
    base_path is never created); returns the CLI's env."""
    local_root.mkdir(parents=True, exist_ok=True)
    password_file = tmp_path / "ftp-password"
    password_file.write_text(server.password + "\n")
    (tmp_path / "connections.ini").write_text(
        f"[remote]\ntype = ftp\nhost = {server.host}\nport = {server.port}\n"
        f"user = {server.user}\npass_file = {password_file}\n\n"
        f"[local]\ntype = local\nbase_path = {local_root}\n"
    )
    (tmp_path / "config.yaml").write_text(
        "pool:\n  max_sessions_per_pod: 16\n  max_sessions_per_connection: 8\n"
        "worker:\n  name: copy-test\nlogging:\n  level: WARNING\n"
    )
    env = dict(os.environ)
    env["FTP_POOLER_CONFIG"] = str(tmp_path / "config.yaml")
    env["FTP_POOLER_CONNECTIONS"] = str(tmp_path / "connections.ini")
    return env


def ftp_pooler(
    *args: str, env: dict[str, str], stdin: bytes | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ftp_pooler.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def results_by_id(output: bytes) -> dict[str, dict[str, Any]]:
    results = [json.loads(line) for line in output.splitlines()]
    by_id = {r.get("task_id", f"<none {i}>"): r for i, r in enumerate(results)}
    assert len(by_id) == len(results), "a task got two results"
    return by_id


def test_copy_downloads_and_uploads_1000_files_byte_identical(
    make_vsftpd: MakeServer, ftp_root: Path, tmp_path: Path
) -> None:
    digests = {}
    for index in range(1000):
        path = ftp_root / f"d{index % 20}" / f"f{index}.bin"
        path.parent.mkdir(exist_ok=True)
        payload = os.urandom(1024 + index * 7)
        path.write_bytes(payload)
        digests[f"d{index % 20}/f{index}.bin"] = hashlib.sha256(payload).hexdigest()
    server = make_vsftpd(passive_ports=200)
    local_root = tmp_path / "local"
    env = write_config(tmp_path, server, local_root)

    tasks = tmp_path / "download.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"task_id": f"dl-{name}", "src_id": "remote", "src_path": f"/{name}",
                        "dst_id": "local", "dst_path": f"in/{name}"}) + "\n"
            for name in digests
        )
    )
    done = ftp_pooler("copy", str(tasks), "--output", str(tmp_path / "dl.jsonl"), env=env)
    assert done.returncode == 0, done.stderr.decode()
    results = results_by_id((tmp_path / "dl.jsonl").read_bytes())
    assert len(results) == 1000
    assert {r["status"] for r in results.values()} == {"completed"}
    for name, digest in digests.items():
        assert hashlib.sha256((local_root / "in" / name).read_bytes()).hexdigest() == digest
    assert b"1000 tasks: 1000 completed" in done.stderr

    uploads = "".join(
        json.dumps({"task_id": f"ul-{name}",
                    "source": {"connection_id": "local", "path": f"in/{name}"},
                    "destination": {"connection_id": "remote", "path": f"/back/{name}"}}) + "\n"
        for name in digests
    )
    done = ftp_pooler("copy", "-", "--concurrency", "8", env=env, stdin=uploads.encode())
    assert done.returncode == 0, done.stderr.decode()
    results = results_by_id(done.stdout)
    assert {r["status"] for r in results.values()} == {"completed"}
    assert {r["operation"] for r in results.values()} == {"upload"}
    for name, digest in digests.items():
        assert hashlib.sha256((ftp_root / "back" / name).read_bytes()).hexdigest() == digest
    assert not [p for p in ftp_root.rglob("*.part")]


def test_bad_lines_get_failure_results_and_a_nonzero_exit(
    pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path
) -> None:
    (ftp_root / "ok.txt").write_bytes(b"fine")
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    lines = [
        json.dumps({"task_id": "good", "src_id": "remote", "src_path": "/ok.txt",
                    "dst_id": "local", "dst_path": "ok.txt"}),
        "this is not json",
        json.dumps({"task_id": "no-destination", "source": {"connection_id": "remote",
                                                           "path": "/ok.txt"}}),
        json.dumps({"task_id": "unknown-conn", "src_id": "mars", "src_path": "/ok.txt",
                    "dst_id": "local", "dst_path": "x.txt"}),
        "",
        json.dumps({"task_id": "escape", "src_id": "remote", "src_path": "/ok.txt",
                    "dst_id": "local", "dst_path": "../../etc/x"}),
    ]
    done = ftp_pooler("copy", "-", env=env, stdin="\n".join(lines).encode())
    assert done.returncode == 1
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 5
    by_id = {r.get("task_id"): r for r in results}
    assert by_id["good"]["status"] == "completed"
    assert by_id["no-destination"]["error_code"] == "INVALID_MESSAGE"
    assert "destination" in by_id["no-destination"]["error_message"]
    assert by_id["unknown-conn"]["error_code"] == "INVALID_CONFIG"
    assert by_id["escape"]["error_code"] == "PATH_NOT_ALLOWED"
    [not_json] = [r for r in results if "task_id" not in r]
    assert not_json["error_code"] == "INVALID_MESSAGE"
    assert not_json["input"]["payload_base64"]
    assert b"5 tasks: 1 completed, 0 skipped, 4 failed" in done.stderr
    assert (tmp_path / "local" / "ok.txt").read_bytes() == b"fine"


def test_check_config_shows_connections_without_secrets(
    pyftpd_server: FTPServer, tmp_path: Path
) -> None:
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    done = ftp_pooler("check-config", env=env)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["connections"]["remote"]["host"] == pyftpd_server.host
    assert report["connections"]["local"]["type"] == "local"
    assert report["settings"]["worker"]["name"] == "copy-test"
    assert pyftpd_server.password.encode() not in done.stdout + done.stderr


def test_bad_config_is_a_clear_error(tmp_path: Path, pyftpd_server: FTPServer) -> None:
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    (tmp_path / "connections.ini").write_text("[remote]\ntype = ftp\nport = 99999\n")
    done = ftp_pooler("check-config", env=env)
    assert done.returncode == 2
    assert b"INVALID_CONFIG" in done.stderr and b"remote" in done.stderr


def test_worker_without_kafka_exits_with_a_clear_error(
    pyftpd_server: FTPServer, tmp_path: Path
) -> None:
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env["FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"
    env["FTP_POOLER__KAFKA__SESSION_TIMEOUT_MS"] = "2000"
    env["FTP_POOLER__KAFKA__HEARTBEAT_INTERVAL_MS"] = "500"
    env["FTP_POOLER__KAFKA__REQUEST_TIMEOUT_MS"] = "2000"  # also the bootstrap wait
    done = ftp_pooler("worker", env=env)
    assert done.returncode == 3, done.stderr.decode()[-2000:]
    assert f"cannot use Kafka at 127.0.0.1:{port}".encode() in done.stderr
    assert b"Traceback" not in done.stderr


def test_a_message_that_used_to_kill_copy_gets_one_result_and_the_rest_complete(
    pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path
) -> None:
    """Issue 11: deep nesting (RecursionError) and an escaped lone surrogate (unencodable id)."""
    names = [f"f{index}.txt" for index in range(21)]
    for name in names:
        (ftp_root / name).write_bytes(name.encode() * 100)
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    hostile = [b"[" * 100_000, b'{"task_id": "\\ud800"}', b'{"task_id": "x\\udfff", "src_id": 1}']
    valid = [
        json.dumps({"task_id": name, "src_id": "remote", "src_path": f"/{name}",
                    "dst_id": "local", "dst_path": f"in/{name}"}).encode()
        for name in names
    ]  # fmt: skip
    done = ftp_pooler("copy", "-", "-j", "4", env=env, stdin=b"\n".join(hostile + valid) + b"\n")
    assert done.returncode == 1, done.stderr.decode()[-2000:]
    assert b"Traceback" not in done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 24
    invalid = [r for r in results if r.get("error_code") == "INVALID_MESSAGE"]
    assert sorted(r.get("task_id", "") for r in invalid) == ["", "\\ud800", "x\\udfff"]
    completed = {r["task_id"] for r in results if r["status"] == "completed"}
    assert completed == set(names)
    for name in names:
        assert (tmp_path / "local" / "in" / name).read_bytes() == name.encode() * 100


class _BrokenEngine(TransferEngine):
    """An engine with a bug: attempts of tasks whose id starts with "boom" raise
    (the others complete without touching the network)."""

    async def attempt(self, transfer: Transfer) -> Result | float:
        task = transfer.task
        if task.task_id.startswith("boom"):
            raise ExceptionGroup("nursery", [KeyError(task.task_id)])
        return Result.completed(task, worker="w", bytes_transferred=0, duration_ms=0, attempts=1)


def _broken_engine(local_root: Path) -> _BrokenEngine:
    remote = FTPConfig(host="127.0.0.1", port=closed_port())
    connections = Connections(
        [FTPConnection(id="remote", ftp=remote), LocalConnection(id="local", base_path=local_root)]
    )
    return _BrokenEngine(connections, SessionPool({"remote": SessionFactory(remote)}), worker="w")


async def test_copy_tasks_turns_an_engine_bug_into_one_result_per_task(tmp_path: Path) -> None:
    lines = [
        json.dumps({"task_id": f"{prefix}-{index}", "src_id": "remote", "src_path": "/a",
                    "dst_id": "local", "dst_path": "a"}).encode()
        for index in range(50)
        for prefix in ("boom", "fine")
    ]  # fmt: skip
    output = io.BytesIO()
    summary = await copy_tasks(
        io.BytesIO(b"\n".join(lines) + b"\n"),
        output,
        _broken_engine(tmp_path),
        concurrency=8,
        worker="w",
    )
    results = [json.loads(line) for line in output.getvalue().splitlines()]
    assert (summary.tasks, summary.completed, summary.failed) == (100, 50, 50)
    assert len({r["task_id"] for r in results}) == 100
    for result in results:
        if result["task_id"].startswith("boom"):
            assert result["error_code"] == "UNKNOWN_ERROR"
            assert result["error_message"] == f"ExceptionGroup: KeyError: '{result['task_id']}'"
        else:
            assert result["status"] == "completed"


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 1000])
def test_line_splitter_cuts_lines_at_the_limit_whatever_the_chunks(chunk: int) -> None:
    """M7, the pure part: lines over ``limit`` keep ``limit + 1`` bytes and their size;
    the rest are whole; a last line without ``\\n`` comes from end()."""
    data = b"short\n\n" + b"x" * 25 + b"\n" + b"y" * 11 + b"\nexact-ten!\ntail"
    splitter = LineSplitter(limit=10)
    lines = []
    for start in range(0, len(data), chunk):
        lines.extend(splitter.feed(data[start : start + chunk]))
    last = splitter.end()
    assert last is not None and splitter.end() is None
    lines.append(last)
    assert lines == [
        Line(b"short", 5),
        Line(b"", 0),
        Line(b"x" * 11, 25),
        Line(b"y" * 11, 11),
        Line(b"exact-ten!", 10),
        Line(b"tail", 4),
    ]


def test_count_task_lines_skips_blank_lines_and_reads_long_ones_in_pieces() -> None:
    data = b"a\n \r\n\n" + b"z" * 600_000 + b"\n" + b" " * 300_000 + b"\nlast"
    assert count_task_lines(io.BytesIO(data)) == 3
    assert count_task_lines(io.BytesIO(b"")) == 0
