"""Problems found by tester2 (a new user breaking ftp-pooler), each as a failing test.

Every test here is ``xfail(strict=True)``: it fails on today's code, and the
suite stays green. When a fix lands, the test passes, strict xfail turns that
into a failure, and the marker must be removed: the test then guards the fix.

The tests drive the command line as a person does (a real subprocess) against
the scripted FTP server (tests/scripted_server.py) or real servers.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scripted_server import Rule, ScriptedFTPServer

MakeScripted = Callable[..., ScriptedFTPServer]

FAST_RETRIES = (
    "transfer:\n  initial_backoff_seconds: 0.05\n  max_backoff_seconds: 0.1\n"
    "  durability: none\nlogging:\n  level: WARNING\n"
)


def _env(tmp_path: Path, connections: str, config: str = FAST_RETRIES) -> dict[str, str]:
    (tmp_path / "connections.ini").write_text(connections)
    (tmp_path / "config.yaml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTP_POOLER")}
    env["FTP_POOLER_CONFIG"] = str(tmp_path / "config.yaml")
    env["FTP_POOLER_CONNECTIONS"] = str(tmp_path / "connections.ini")
    return env


def _scripted_ini(server: ScriptedFTPServer, local: Path, extra: str = "") -> str:
    return (
        f"[srv]\ntype = ftp\nhost = {server.host}\nport = {server.port}\n"
        f"user = {server.user}\npass = {server.password}\n"
        f"timeout = 5\nconnect_timeout = 5\ndata_stall_timeout = 5\n{extra}\n"
        f"[local]\ntype = local\nbase_path = {local}\n"
    )


def _run(
    *args: str,
    env: dict[str, str],
    stdin: bytes | None = None,
    timeout: float = 60,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ftp_pooler.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
        preexec_fn=preexec_fn,
    )


def _tasks(*tasks: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(task).encode() + b"\n" for task in tasks)


def _results(output: bytes) -> dict[str, dict[str, Any]]:
    return {r["task_id"]: r for r in map(json.loads, output.splitlines())}


@pytest.fixture
def local(tmp_path: Path) -> Path:
    root = tmp_path / "local"
    root.mkdir()
    return root


# ---------------------------------------------------------------------------
# MEDIUM: --concurrency has no upper bound
# ---------------------------------------------------------------------------
def _limit_memory() -> None:
    # 600 MB of address space: enough for the CLI, far below what 10 million runners take
    # (about 4 KB each), so the test ends in seconds instead of exhausting the machine.
    resource.setrlimit(resource.RLIMIT_AS, (600_000_000, 600_000_000))


@pytest.mark.xfail(
    strict=True,
    reason="tester2: copy --concurrency N starts N runner tasks whatever N is: "
    "-j 10000000 dies of MemoryError with a traceback (exit 1); -j 99999999999 grew to "
    "24 GB and was OOM-killed, ignoring SIGTERM meanwhile. Expected: a usage error "
    "(exit 2, one line) above a sane bound, or runners capped (e.g. at the session caps)",
)
def test_copy_huge_concurrency_is_a_usage_error_or_harmless(tmp_path: Path) -> None:
    env = _env(tmp_path, f"[local]\ntype = local\nbase_path = {tmp_path}\n")
    proc = _run(
        "copy", "-", "--stats", "0", "-j", "10000000",
        env=env, stdin=b"{}\n", timeout=120, preexec_fn=_limit_memory,
    )  # fmt: skip
    assert b"Traceback" not in proc.stderr
    assert b"MemoryError" not in proc.stderr
    assert proc.returncode in (1, 2), proc.stderr[-500:]


# ---------------------------------------------------------------------------
# MEDIUM: a bootstrap server with a bad port is a traceback, not INVALID_CONFIG
# ---------------------------------------------------------------------------
@pytest.mark.xfail(
    strict=True,
    reason="tester2: kafka.bootstrap_servers is not checked as host:port: "
    "'127.0.0.1:abc' passes check-config and makes worker and submit die with a "
    "ValueError traceback (exit 1); 'h:99999' passes too and ends as 'Kafka unreachable'",
)
@pytest.mark.parametrize("command", ["check-config", "submit"])
def test_bootstrap_server_with_a_bad_port_is_invalid_config(tmp_path: Path, command: str) -> None:
    env = _env(tmp_path, f"[local]\ntype = local\nbase_path = {tmp_path}\n")
    env["FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS"] = "127.0.0.1:abc"
    args = [command] if command == "check-config" else [command, "-", "--kafka-timeout", "2"]
    proc = _run(*args, env=env, stdin=b"", timeout=60)
    assert b"Traceback" not in proc.stderr
    assert proc.returncode == 2
    assert b"bootstrap_servers" in proc.stderr


# ---------------------------------------------------------------------------
# LOW-MEDIUM: results file on a full disk ends in a half-written JSON line
# ---------------------------------------------------------------------------
@pytest.fixture
def tiny_volume(tmp_path: Path) -> Any:
    """An 8 KiB tmpfs (as in test_local_errors): a results file fills it quickly."""
    from test_local_errors import _mount, _unmount

    target = tmp_path / "tiny"
    _mount(target, "size=8k,mode=0755")
    try:
        yield target
    finally:
        _unmount(target)


@pytest.mark.xfail(
    strict=True,
    reason="tester2: -o on a volume that fills up: exit 4 as documented, but the file "
    "ends in a truncated JSON line (a consumer's json.loads fails on it), and the "
    "summary counts as completed tasks whose result line was never written",
)
def test_results_file_on_full_disk_holds_only_whole_lines(
    make_scripted_ftp: MakeScripted, tmp_path: Path, local: Path, tiny_volume: Path
) -> None:
    count = 200
    server = make_scripted_ftp(files={f"/data/f{i}.bin": b"x" * 100 for i in range(count)})
    env = _env(tmp_path, _scripted_ini(server, local))
    tasks = _tasks(
        *(
            {
                "task_id": f"t{i}-" + "x" * 200,
                "src_id": "srv",
                "src_path": f"/data/f{i}.bin",
                "dst_id": "local",
                "dst_path": f"out/f{i}.bin",
            }
            for i in range(count)
        )
    )
    out = tiny_volume / "r.jsonl"
    proc = _run("copy", "-", "--stats", "0", "-o", str(out), env=env, stdin=tasks)
    assert proc.returncode == 4
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the file ends in a partial line"
    written = [json.loads(line) for line in lines[:-1]]
    summary = proc.stderr.decode().strip().splitlines()[-1]
    assert summary.startswith(f"{count} tasks: {len(written)} completed"), summary


# ---------------------------------------------------------------------------
# MEDIUM-HIGH: an empty connections.ini is refused at start-up but applied on reload
# ---------------------------------------------------------------------------
@pytest.mark.xfail(
    strict=True,
    reason="tester2: the worker's reload applies a connections file with no connection "
    "(empty, or only comments: a truncated write, a wrong Secret key) and removes every "
    "connection: every task then fails INVALID_CONFIG 'unknown connection id' (not "
    "retryable) until the file is fixed. Start-up refuses the same file ('no connection "
    "defined', exit 2) and operations.md says the reload uses the same loader and "
    "refuses a broken version. Seen end to end: ftp_pooler_config_refused stayed 0.",
)
async def test_reload_refuses_a_connections_file_without_any_connection(tmp_path: Path) -> None:
    from ftp_pooler.config import Connections, load_connections
    from ftp_pooler.service.reload import ConnectionsWatcher

    path = tmp_path / "connections.ini"
    path.write_text("[a]\ntype = local\nbase_path = /a\n")
    applied: list[Connections] = []
    results: list[str] = []

    async def apply(connections: Connections) -> None:
        applied.append(connections)

    watcher = ConnectionsWatcher(
        path, load_connections(path), apply, interval=1, reloaded=results.append
    )
    path.write_text("# emptied by a writer that truncates first\n")
    for _ in range(3):
        await watcher.check()
    assert applied == []
    assert results == ["refused"]


# ---------------------------------------------------------------------------
# LOW: connections.ini quirks a hand-edited file runs into
# ---------------------------------------------------------------------------
@pytest.mark.xfail(
    strict=True,
    reason="tester2: a connections.ini saved with a UTF-8 BOM (Windows editors) is "
    "refused with a misleading 'line 1: a key before the first [section]', though "
    "its first line is a section; config.yaml and task lines with a BOM are accepted",
)
def test_connections_ini_with_a_utf8_bom_is_read(tmp_path: Path) -> None:
    env = _env(tmp_path, f"\ufeff[local]\ntype = local\nbase_path = {tmp_path}\n")
    proc = _run("check-config", env=env)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.xfail(
    strict=True,
    reason="tester2: an indented line after a key is an INI continuation: an "
    "indented '  pass = S3cret' under 'user = transfer' makes the user "
    "'transfer\\npass = S3cret' and no password: check-config accepts it (exit 0) and "
    "prints the password in the clear as part of the user, and "
    "every task of the connection then fails PATH_NOT_ALLOWED 'USER: refusing to send "
    "an argument with CR, LF...' at run time; a value with a line break should be "
    "refused when the file is loaded (INVALID_CONFIG naming section and key)",
)
def test_a_connection_value_with_a_line_break_is_invalid_config(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        "[partner]\ntype = ftp\nhost = 127.0.0.1\nuser = transfer\n  pass = oops\n"
        f"[local]\ntype = local\nbase_path = {tmp_path}\n",
    )
    proc = _run("check-config", env=env)
    assert b"oops" not in proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert b"[partner] user" in proc.stderr


# ---------------------------------------------------------------------------
# LOW-MEDIUM: Ctrl-C is ignored while the worker waits for Kafka at start-up
# ---------------------------------------------------------------------------
@pytest.mark.xfail(
    strict=True,
    reason="tester2: SIGINT (Ctrl-C) while the worker waits for its first broker is "
    "ignored until kafka.request_timeout_ms runs out (28 s with the default), then the "
    "worker exits 3 'Kafka unreachable'; SIGTERM at the same moment exits at once (143). "
    "README: 130 for SIGINT",
)
def test_worker_stops_on_sigint_while_waiting_for_kafka(tmp_path: Path) -> None:
    import signal

    from servers.dead import closed_port

    env = _env(
        tmp_path,
        f"[local]\ntype = local\nbase_path = {tmp_path}\n",
        f"kafka:\n  bootstrap_servers: 127.0.0.1:{closed_port()}\n"
        "api:\n  host: 127.0.0.1\n  port: 0\n",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftp_pooler.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(2)  # past start-up, into the bootstrap wait
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=6)
        except subprocess.TimeoutExpired:
            pytest.fail("still running 6 s after SIGINT")
        assert proc.returncode == 130
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------
# LOW: server text reaches the terminal raw
# ---------------------------------------------------------------------------
@pytest.mark.xfail(
    strict=True,
    reason="tester2: check-connection prints a refusal's server text as it came: "
    "escape sequences from the server (ESC ] 0;title BEL, ESC [2J) reach the user's "
    "terminal (retitle, clear the screen, fake output), as in curl/wget's CVEs; "
    "result JSON and log lines escape them, this line does not",
)
def test_check_connection_escapes_control_characters_from_the_server(
    make_scripted_ftp: MakeScripted, tmp_path: Path, local: Path
) -> None:
    server = make_scripted_ftp(
        files={"/data/a.bin": b"abc"},
        rules=[Rule(r"(MLSD|LIST|NLST).*", "550 \x1b]0;pwned\x07\x1b[2J\x1b[31mno")],
    )
    env = _env(tmp_path, _scripted_ini(server, local))
    proc = _run("check-connection", "srv", "--log-format", "console", env=env)
    assert proc.returncode == 1
    assert b"\x1b" not in proc.stderr + proc.stdout
    assert b"\x07" not in proc.stderr + proc.stdout


# ---------------------------------------------------------------------------
# MEDIUM-LOW: -o naming the tasks file destroys it and reports success
# ---------------------------------------------------------------------------
@pytest.mark.xfail(
    strict=True,
    reason="tester2: 'copy tasks.jsonl -o tasks.jsonl' truncates the tasks file before "
    "reading it: the task list is lost, the run says '0 tasks' and exits 0. cat and "
    "sort refuse or handle input = output; expected: exit 2, one line, file untouched",
)
def test_output_file_that_is_the_tasks_file_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path, f"[local]\ntype = local\nbase_path = {tmp_path}\n")
    tasks = tmp_path / "tasks.jsonl"
    content = b'{"task_id": "a"}\n{"task_id": "b"}\n'
    tasks.write_bytes(content)
    proc = _run("copy", str(tasks), "-o", str(tasks), "--stats", "0", env=env)
    assert tasks.read_bytes() == content
    assert proc.returncode == 2


# ---------------------------------------------------------------------------
# MEDIUM-LOW: a missing local base_path is created (an unmounted volume is written under)
# ---------------------------------------------------------------------------
@pytest.mark.xfail(
    strict=True,
    reason="tester2: a download to a local connection whose base_path does not exist "
    "creates base_path and its parents and completes. configuration.md: 'missing "
    "directories below base_path are created'. With an NFS/volume not mounted the files "
    "land on the host's disk under the mount point, reported completed, and vanish from "
    "view once the volume is mounted; the task should fail instead",
)
def test_download_does_not_create_a_missing_base_path(
    make_scripted_ftp: MakeScripted, tmp_path: Path
) -> None:
    server = make_scripted_ftp(files={"/data/a.bin": b"abc"})
    mount_point = tmp_path / "mnt" / "nfs" / "data"
    env = _env(tmp_path, _scripted_ini(server, mount_point))
    task = {
        "task_id": "d",
        "src_id": "srv",
        "src_path": "/data/a.bin",
        "dst_id": "local",
        "dst_path": "incoming/a.bin",
    }
    proc = _run("copy", "-", "--stats", "0", env=env, stdin=_tasks(task))
    assert _results(proc.stdout)["d"]["status"] == "failed"
    assert not (tmp_path / "mnt").exists()
