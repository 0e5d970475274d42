"""The command line as a person runs it: real subprocesses, real FTP servers, signals, a pty."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler

from servers import FTPServer
from test_copy import ftp_pooler, write_config

MakeServer = Callable[..., FTPServer]
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


class _SlowDTP(ThrottledDTPHandler):  # type: ignore[misc]
    read_limit = 100_000
    write_limit = 100_000


class SlowHandler(FTPHandler):  # type: ignore[misc]
    """Moves 100 kB at once, then pauses about 2 s after each further 100 kB
    (pyftpdlib's throttle): a 300 kB file takes about 2 s."""

    dtp_mixin = _SlowDTP
    use_sendfile = False


def _downloads(count: int, prefix: str = "f") -> str:
    return "".join(
        json.dumps(
            {
                "task_id": f"t{i}",
                "src_id": "remote",
                "src_path": f"/{prefix}{i}.bin",
                "dst_id": "local",
                "dst_path": f"{prefix}{i}.bin",
            }
        )
        + "\n"
        for i in range(count)
    )


def _start(*args: str, env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ftp_pooler.cli", *args],
        env=env,
        stdout=kwargs.pop("stdout", subprocess.PIPE),
        stderr=kwargs.pop("stderr", subprocess.PIPE),
        **kwargs,
    )


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _parts(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")] if root.exists() else []


@pytest.fixture
def slow_setup(
    make_pyftpd: MakeServer, ftp_root: Path, tmp_path: Path
) -> tuple[dict[str, str], Path, Path]:
    """A slow pyftpdlib server with six 300 kB files (2 s each); the CLI's env."""
    for i in range(6):
        (ftp_root / f"f{i}.bin").write_bytes(os.urandom(300_000))
    server = make_pyftpd(handler_class=SlowHandler)
    local = tmp_path / "local"
    env = write_config(tmp_path, server, local)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(_downloads(6))
    return env, tasks, local


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_drains_running_transfers_then_exits_128_plus_signal(
    slow_setup: tuple[dict[str, str], Path, Path], tmp_path: Path, signum: int
) -> None:
    env, tasks, local = slow_setup
    out = tmp_path / "results.jsonl"
    proc = _start("copy", str(tasks), "-o", str(out), "-j", "2", "--stats", "0", env=env)
    _wait_for(lambda: len(_parts(local)) == 2)  # two transfers are moving bytes
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr.decode()
    assert b"Traceback" not in stderr
    results = [json.loads(line) for line in out.read_bytes().splitlines()]
    # The two running transfers finished; nothing new started.
    assert [r["status"] for r in results] == ["completed", "completed"], results
    landed = sorted(p.name for p in local.iterdir())
    assert landed == sorted(f"{r['task_id'].replace('t', 'f')}.bin" for r in results)
    assert not _parts(local)
    # The summary counts the tasks that never started (M6).
    assert b"6 tasks: 2 completed, 0 skipped, 0 failed, 0 cancelled, 4 not started" in stderr


def test_drain_deadline_cancels_transfers_and_removes_their_temp_files(
    make_pyftpd: MakeServer, ftp_root: Path, tmp_path: Path
) -> None:
    for i in range(2):
        (ftp_root / f"big{i}.bin").write_bytes(os.urandom(4_000_000))  # a minute each
    env = write_config(tmp_path, make_pyftpd(handler_class=SlowHandler), tmp_path / "local")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(_downloads(2, prefix="big"))
    proc = _start("copy", str(tasks), "--drain-seconds", "0.5", "--stats", "0", env=env)
    _wait_for(lambda: len(_parts(tmp_path / "local")) == 2)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert proc.returncode == 143, stderr.decode()
    assert b"Traceback" not in stderr
    assert stdout == b""  # cancelled transfers have no result
    assert not _parts(tmp_path / "local")
    assert b"2 tasks: 0 completed, 0 skipped, 0 failed, 2 cancelled, 0 not started" in stderr


def test_a_second_signal_stops_at_once(
    make_pyftpd: MakeServer, ftp_root: Path, tmp_path: Path
) -> None:
    (ftp_root / "big0.bin").write_bytes(os.urandom(4_000_000))
    env = write_config(tmp_path, make_pyftpd(handler_class=SlowHandler), tmp_path / "local")
    err = tmp_path / "stderr"
    with err.open("wb") as stderr_file:
        proc = _start(
            "copy", "-", "--stats", "0", env=env, stdin=subprocess.PIPE, stderr=stderr_file
        )
    assert proc.stdin is not None
    proc.stdin.write(_downloads(1, prefix="big").encode())
    proc.stdin.close()
    _wait_for(lambda: len(_parts(tmp_path / "local")) == 1)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _wait_for(lambda: b"taking no more tasks" in err.read_bytes())
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    stderr = err.read_bytes()
    assert time.monotonic() - started < 10
    assert proc.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr
    assert b"again: stopping now" in stderr
    assert not _parts(tmp_path / "local")


def test_usage_errors_are_one_line_and_exit_2(pyftpd_server: FTPServer, tmp_path: Path) -> None:
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(_downloads(1))
    cases = {
        "missing tasks file": (["copy", str(tmp_path / "nope.jsonl")], "nope.jsonl"),
        "unwritable output": (["copy", str(tasks), "-o", str(tmp_path)], "output file"),
        "negative concurrency": (["copy", str(tasks), "-j", "-3"], "-3"),
        "submit missing file": (["submit", str(tmp_path / "nope.jsonl")], "nope.jsonl"),
        "unknown command": (["frobnicate"], "frobnicate"),
    }
    for name, (args, mention) in cases.items():
        done = ftp_pooler(*args, env=env)
        lines = done.stderr.decode().splitlines()
        assert done.returncode == 2, (name, done.stderr)
        assert len(lines) == 1 and mention in lines[0], (name, lines)
        assert done.stdout == b"", name

    (tmp_path / "config.yaml").write_text("pool:\n  max_sessions_per_pod: lots\n")
    done = ftp_pooler("copy", str(tasks), env=env)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2
    assert len(lines) == 1 and "max_sessions_per_pod" in lines[0], lines


def test_submit_with_kafka_down_is_one_line_and_exit_3(
    pyftpd_server: FTPServer, tmp_path: Path
) -> None:
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket is closed
    env["FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(_downloads(1))
    done = ftp_pooler("submit", str(tasks), "--kafka-timeout", "1", env=env)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 3, done.stderr
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], lines


def test_version(pyftpd_server: FTPServer, tmp_path: Path) -> None:
    from ftp_pooler import package_version

    done = ftp_pooler("--version", env=dict(os.environ))
    assert done.returncode == 0
    assert done.stdout.decode().strip() == f"ftp-pooler {package_version()}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", package_version())


def test_invalid_lines_name_their_line_number(
    pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path
) -> None:
    (ftp_root / "f0.bin").write_bytes(b"ok")
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    lines = [_downloads(1).strip(), "", "not json", '{"task_id": "x"}']
    done = ftp_pooler("copy", "-", env=env, stdin="\n".join(lines).encode())
    assert done.returncode == 1
    messages = sorted(
        json.loads(line).get("error_message", "") for line in done.stdout.splitlines()
    )
    assert messages[0] == ""
    assert messages[1].startswith("line 3: message is not JSON")
    assert messages[2].startswith("line 4: ")


def test_dry_run_checks_tasks_and_logins_and_moves_nothing(
    pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path
) -> None:
    (ftp_root / "f0.bin").write_bytes(b"ok")
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(_downloads(1) + "not json\n")
    done = ftp_pooler("copy", str(tasks), "--dry-run", env=env)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "line 2: INVALID_MESSAGE" in err
    assert "connection remote: logged in" in err
    assert not (tmp_path / "local").exists() or not list((tmp_path / "local").iterdir())
    assert done.stdout == b""

    tasks.write_text(_downloads(1))
    done = ftp_pooler("copy", str(tasks), "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "local" / "f0.bin").exists()

    (tmp_path / "ftp-password").write_text("wrong\n")
    done = ftp_pooler("copy", str(tasks), "--dry-run", env=env)
    assert done.returncode == 1
    assert "connection remote: cannot log in: AUTH_FAILED" in done.stderr.decode()
    assert b"wrong" not in done.stderr


def test_check_connection_logs_in_and_lists(
    pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path
) -> None:
    (ftp_root / "hello.txt").write_bytes(b"hi")
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    done = ftp_pooler("check-connection", "remote", env=env)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    assert "logged in to" in out and "features:" in out and "hello.txt" in out
    assert pyftpd_server.password not in out

    done = ftp_pooler("check-connection", "mars", env=env)
    assert done.returncode == 2 and b"mars" in done.stderr

    (tmp_path / "ftp-password").write_text("wrong\n")
    done = ftp_pooler("check-connection", "remote", env=env)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and b"AUTH_FAILED" in done.stderr


def test_log_format_and_verbosity(make_pyftpd: MakeServer, ftp_root: Path, tmp_path: Path) -> None:
    failures = {"left": 0}

    class FlakyHandler(FTPHandler):  # type: ignore[misc]
        def ftp_RETR(self, file: str) -> None:
            if failures["left"]:
                failures["left"] -= 1
                self.respond("451 Local error in processing, try again.")
                return
            super().ftp_RETR(file)

    (ftp_root / "f0.bin").write_bytes(b"ok")
    env = write_config(tmp_path, make_pyftpd(handler_class=FlakyHandler), tmp_path / "local")
    (tmp_path / "config.yaml").write_text(
        "logging:\n  level: WARNING\ntransfer:\n  initial_backoff_seconds: 0.01\n"
    )

    def run(*flags: str) -> str:
        failures["left"] = 1
        done = ftp_pooler(
            "copy", "-", "--stats", "0", "-o", str(tmp_path / "r.jsonl"), *flags,
            env=env, stdin=_downloads(1).encode(),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stderr.decode()

    assert "transfer.retry" not in run()
    verbose = [line for line in run("-v").splitlines() if "transfer.retry" in line]
    assert len(verbose) == 1 and json.loads(verbose[0])["level"] == "info"  # JSON off a TTY
    console = [line for line in run("-v", "--log-format", "console").splitlines()]
    retry = [line for line in console if "transfer.retry" in line]
    assert len(retry) == 1 and not retry[0].startswith("{")


def test_stats_lines_when_stderr_is_not_a_terminal(
    slow_setup: tuple[dict[str, str], Path, Path], tmp_path: Path
) -> None:
    env, tasks, local = slow_setup
    done = ftp_pooler("copy", str(tasks), "-o", str(tmp_path / "r.jsonl"), "-j", "3",
                      "--stats", "0.2", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = [line for line in done.stderr.decode().splitlines() if " tasks, " in line]
    assert len(stats) >= 3, stats
    assert all(re.match(r"ftp-pooler: \d/6 tasks", line) for line in stats), stats
    assert any(line.startswith("ftp-pooler: 0/6 tasks") and "0 B," not in line for line in stats)


def _open_pty(columns: int = 160) -> tuple[int, int]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    return master, slave


def _read_all(master: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> bytes:
    output = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    return bytes(output)


def test_live_progress_on_a_terminal(
    slow_setup: tuple[dict[str, str], Path, Path], tmp_path: Path
) -> None:
    env, tasks, local = slow_setup
    env = {**env, "TERM": "xterm-256color", "COLUMNS": "160"}
    master, slave = _open_pty()
    proc = _start(
        "copy", str(tasks), "-o", str(tmp_path / "r.jsonl"), "-j", "2",
        env=env, stderr=slave, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(slave)
    try:
        output = _read_all(master, proc)
    finally:
        os.close(master)
    assert proc.wait(timeout=30) == 0
    text = ANSI.sub(b"", output).decode(errors="replace")
    frame = r"(\d)/6 tasks.*?([\d.]+) (B|kB|MB), ([\d.]+) (B|kB|MB)/s, (\d) in flight"
    frames = re.findall(frame, text)
    assert frames, text[-2000:]
    # Bytes grow while no task has finished yet: updated as bytes move.
    assert any(done == "0" and float(size) > 0 for done, size, *_ in frames), frames
    assert any(flight == "2" for *_, flight in frames), frames
    assert "ETA" in text
    assert "6 tasks: 6 completed" in text


def _as_pid_1(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Run the CLI as PID 1 of a new PID namespace (as in a container without an init)."""
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.decode().strip()}")
    return subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            sys.executable,
            "-m",
            "ftp_pooler.cli",
            *args,
        ],
        env=env,
        stdout=kwargs.pop("stdout", subprocess.PIPE),
        stderr=kwargs.pop("stderr", subprocess.PIPE),
        **kwargs,
    )


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def _pid_1_of(unshare: subprocess.Popen[bytes]) -> int:
    """The outer pid of the namespace's PID 1 (unshare's only child)."""
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
    _wait_for(lambda: children.read_text().strip() != "")
    return int(children.read_text().split()[0])


def test_copy_as_pid_1_drains_on_sigterm(
    slow_setup: tuple[dict[str, str], Path, Path], tmp_path: Path
) -> None:
    env, tasks, local = slow_setup
    out = tmp_path / "results.jsonl"
    proc = _as_pid_1(["copy", str(tasks), "-o", str(out), "-j", "2", "--stats", "0"], env)
    _wait_for(lambda: len(_parts(local)) == 2)
    os.kill(_pid_1_of(proc), signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr.decode()
    assert b"Traceback" not in stderr and b"6 tasks: 2 completed" in stderr
    assert len(out.read_bytes().splitlines()) == 2 and not _parts(local)


def test_sigterm_as_pid_1_before_any_drain_exits_at_once(
    pyftpd_server: FTPServer, tmp_path: Path
) -> None:
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env["FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(_downloads(1))
    # submit waits up to 60 s for a broker: SIGTERM must not wait for that.
    proc = _as_pid_1(["submit", str(tasks), "--kafka-timeout", "60"], env)
    pid = _pid_1_of(proc)
    _wait_for(lambda: _catches(pid, signal.SIGTERM))  # main() installed its handler
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert time.monotonic() - started < 5
