"""The command line as a person runs it: real subprocesses, real FTP servers, signals, a pty."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler

from scripted_server import Rule
from servers import FTPServer
from servers.dead import closed_port
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
    assert [r["status"] for r in results] == ["completed", "completed"], (results, stderr)
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


# -- results as tasks end, lines as they arrive, line size, unwritable results (M9, M7, M8) --


def test_a_result_is_on_disk_as_its_task_ends_and_a_piped_line_starts_at_once(
    pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path
) -> None:
    """M9: the producer keeps stdin open after one line; that task runs and its result
    is in the -o file (flushed) while the copy goes on, and survives a SIGKILL."""
    (ftp_root / "f0.bin").write_bytes(b"zero")
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    out = tmp_path / "results.jsonl"
    proc = _start(
        "copy", "-", "-o", str(out), "--stats", "0", env=env,
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdin is not None
    try:
        proc.stdin.write(_downloads(1).encode())
        proc.stdin.flush()
        _wait_for(lambda: out.exists() and out.read_bytes().endswith(b"\n"), timeout=20)
        assert proc.poll() is None  # still reading stdin
        proc.kill()
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.stdin.close()
    (result,) = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert (result["task_id"], result["status"]) == ("t0", "completed")


def test_results_on_stdout_come_as_tasks_end(
    pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path
) -> None:
    """M9: the same with results on a pipe (stdout) rather than a file."""
    (ftp_root / "f0.bin").write_bytes(b"zero")
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    proc = _start("copy", "-", "--stats", "0", env=env, stdin=subprocess.PIPE,
                  stderr=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(_downloads(1).encode())
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "no result while stdin stays open"
        assert b'"task_id":"t0"' in proc.stdout.readline()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def _wait4_maxrss_kib(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """Wait for ``proc`` and return its own peak RSS (KiB), not other children's."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return int(usage.ru_maxrss)
        assert time.monotonic() < deadline, "copy did not end"
        time.sleep(0.05)


def test_a_huge_line_costs_no_more_than_the_size_limit_in_memory(
    pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path
) -> None:
    """M7: a 100 MB line (a big file given by mistake) is refused with its true size,
    without being held in memory (it used to cost about 4x its size), and the next
    line runs."""
    (ftp_root / "f0.bin").write_bytes(b"zero")
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    tasks = tmp_path / "tasks.jsonl"
    with tasks.open("wb") as f:
        f.write(b'{"task_id": "big", "pad": "')
        for _ in range(100):
            f.write(b"x" * 1_000_000)
        f.write(b'"}\n' + _downloads(1).encode())
    size = tasks.stat().st_size - len(_downloads(1).encode()) - 1
    out = tmp_path / "results.jsonl"
    proc = _start("copy", str(tasks), "-o", str(out), "--stats", "0", env=env,
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    maxrss_kib = _wait4_maxrss_kib(proc)
    assert proc.returncode == 1
    results = {r.get("task_id"): r for r in map(json.loads, out.read_bytes().splitlines())}
    assert results["t0"]["status"] == "completed"
    big = results["big"]
    assert big["error_code"] == "INVALID_MESSAGE"
    assert big["error_message"] == f"line 1: message is {size} bytes, over the limit of 1048576"
    assert big["input"]["size"] == size and big["input"]["truncated"] is True
    # About 76 MB here (the interpreter, its imports, an FTP session); it was 440 MB.
    assert maxrss_kib < 160_000, maxrss_kib


def test_results_that_cannot_be_written_stop_the_copy_in_one_line_exit_4(
    slow_setup: tuple[dict[str, str], Path, Path],
) -> None:
    """M8: -o /dev/full: one line, the copy stops as on SIGTERM (running transfers
    finish, no new one starts), exit 4, no traceback."""
    env, tasks, local = slow_setup
    started = time.monotonic()
    done = ftp_pooler("copy", str(tasks), "-o", "/dev/full", "-j", "2", "--stats", "0", env=env)
    stderr = done.stderr.decode()
    assert done.returncode == 4, stderr
    assert "Traceback" not in stderr and "Exception" not in stderr
    lines = stderr.splitlines()
    assert lines[0] == "ftp-pooler: cannot write results to /dev/full: No space left on device"
    assert re.match(
        r"6 tasks: 0 completed, 0 skipped, 0 failed, 2 finished without a result line,"
        r" 0 cancelled, 4 not started;",
        lines[-1],
    ), lines
    assert len(list(local.iterdir())) == 2 and not _parts(local)
    assert time.monotonic() - started < 5.5  # six tasks, two at a time, take 6 s


@pytest.fixture
def tiny_volume(tmp_path: Path) -> Iterator[Path]:
    """An 8 KiB tmpfs (as in test_local_errors): a results file fills it quickly."""
    from test_local_errors import _mount, _unmount

    target = tmp_path / "tiny"
    _mount(target, "size=8k,mode=0755")
    try:
        yield target
    finally:
        _unmount(target)


@pytest.mark.parametrize("how", ["-o", "stdout"])
def test_results_file_on_full_disk_holds_only_whole_lines(
    make_scripted_ftp: Callable[..., Any], tmp_path: Path, tiny_volume: Path, how: str
) -> None:
    """tester2: a results file on a volume that fills up ended in a truncated JSON line
    (a consumer's json.loads fails on it), and the summary counted as completed tasks
    whose line was never written. Now the line that fails part-way is cut off again,
    and the summary counts by status only what was written."""
    count = 200
    local = tmp_path / "local"
    local.mkdir()
    server = make_scripted_ftp(files={f"/data/f{i}.bin": b"x" * 100 for i in range(count)})
    (tmp_path / "c.ini").write_text(
        f"[srv]\ntype = ftp\nhost = {server.host}\nport = {server.port}\n"
        f"user = {server.user}\npass = {server.password}\n"
        f"[local]\ntype = local\nbase_path = {local}\n"
    )
    (tmp_path / "c.yaml").write_text("transfer:\n  durability: none\nlogging:\n  level: WARNING\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTP_POOLER")}
    env.update(FTP_POOLER_CONNECTIONS=str(tmp_path / "c.ini"),
               FTP_POOLER_CONFIG=str(tmp_path / "c.yaml"))  # fmt: skip
    tasks = "".join(
        json.dumps({"task_id": f"t{i}-" + "x" * 200, "src_id": "srv", "src_path": f"/data/f{i}.bin",
                    "dst_id": "local", "dst_path": f"out/f{i}.bin"}) + "\n"
        for i in range(count)
    ).encode()  # fmt: skip
    out = tiny_volume / "r.jsonl"
    with out.open("wb") as stdout:
        args = ["-o", str(out)] if how == "-o" else []
        done = subprocess.run(
            [sys.executable, "-m", "ftp_pooler.cli", "copy", "-", "--stats", "0", *args],
            env=env, input=tasks, stdout=stdout, stderr=subprocess.PIPE, timeout=60,
            check=False,
        )  # fmt: skip
    assert done.returncode == 4, done.stderr
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the file ends in a partial line"
    written = [json.loads(line) for line in lines[:-1]]
    assert 0 < len(written) < count
    summary = done.stderr.decode().strip().splitlines()[-1]
    assert summary.startswith(f"{count} tasks: {len(written)} completed, 0 skipped, 0 failed,")
    assert re.search(r"\d+ finished without a result line", summary), summary


def test_a_closed_stdout_pipe_ends_the_copy_quietly_with_141(tmp_path: Path) -> None:
    """M8: results to a pipe whose reader went away (| head): exit 128 + SIGPIPE, no
    traceback, no "Exception ignored" from the interpreter's last flush."""
    (tmp_path / "l.ini").write_text(f"[local]\ntype = local\nbase_path = {tmp_path}\n")
    env = dict(os.environ, FTP_POOLER_CONNECTIONS=str(tmp_path / "l.ini"))
    line = {"task_id": "t", "src_id": "local", "src_path": "a", "dst_id": "local", "dst_path": "b"}
    (tmp_path / "tasks.jsonl").write_text((json.dumps(line) + "\n") * 2000)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ftp_pooler.cli", "copy", str(tmp_path / "tasks.jsonl"),
             "--stats", "0"],
            env=env, stdout=write_end, stderr=subprocess.PIPE, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    stderr = done.stderr.decode()
    assert done.returncode == 141, stderr
    assert "Traceback" not in stderr and "Exception" not in stderr and "Error" not in stderr
    (summary,) = stderr.splitlines()
    pattern = (
        r"2000 tasks: 0 completed, 0 skipped, \d+ failed, [1-9]\d* finished without a result"
        r" line, 0 cancelled, \d+ not started"
    )
    assert re.match(pattern, summary), summary


# -- stopping (M6), dry run (M3), start-up (L1) -------------------------------------------


def test_a_task_waiting_for_a_retry_is_cancelled_by_a_signal_and_counted(
    pyftpd_server: FTPServer, tmp_path: Path
) -> None:
    """M6: once stopping, no new attempt starts: a task in its backoff ends at once,
    counted as cancelled (it used to go on retrying through the drain)."""
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    (tmp_path / "connections.ini").write_text(
        (tmp_path / "connections.ini").read_text()
        + f"\n[dead]\ntype = ftp\nhost = 127.0.0.1\nport = {closed_port()}\nuser = u\npass = p\n"
    )
    (tmp_path / "config.yaml").write_text(
        "logging:\n  level: WARNING\ntransfer:\n  initial_backoff_seconds: 2\n"
        "  max_backoff_seconds: 2\n"
    )
    task = {"task_id": "d", "src_id": "dead", "src_path": "/x", "dst_id": "local",
            "dst_path": "x", "options": {"retry_count": 10}}  # fmt: skip
    err = tmp_path / "stderr"
    with err.open("wb") as stderr_file:
        proc = _start("copy", "-", "-v", "--stats", "0", "--log-format", "console", env=env,
                      stdin=subprocess.PIPE, stderr=stderr_file)  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(task) + "\n").encode())
    proc.stdin.close()
    _wait_for(lambda: b"transfer.retry" in err.read_bytes())
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    stderr = err.read_bytes().decode()
    assert proc.returncode == 143, stderr
    assert time.monotonic() - started < 1.5  # not another backoff, not another attempt
    assert stderr.count("transfer.retry") == 1, stderr
    assert stdout == b""
    assert "1 tasks: 0 completed, 0 skipped, 0 failed, 1 cancelled, 0 not started" in stderr


def test_dry_run_refuses_what_planning_refuses(
    pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path
) -> None:
    """M3: paths and connections the real run refuses before any transfer are
    would-fail in a dry run, each named with its line."""
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "out").symlink_to("/etc")
    env = write_config(tmp_path, pyftpd_server, local)

    def task(n: int, **fields: str) -> str:
        base = {"task_id": f"t{n}", "src_id": "remote", "src_path": "/f0.bin",
                "dst_id": "local", "dst_path": "ok.bin"}  # fmt: skip
        return json.dumps({**base, **fields})

    lines = [
        task(1),
        task(2, dst_path="../escape.bin"),
        task(3, dst_path="/etc/passwd"),
        task(4, dst_path="sub/out/passwd"),
        task(5, src_path="/a\r\nDELE /x"),
        task(6, src_id="mars"),
        task(7, dst_path="dir/"),
    ]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join(lines) + "\n")
    done = ftp_pooler("copy", str(tasks), "--dry-run", env=env)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    for number, code in [(2, "PATH_NOT_ALLOWED"), (3, "PATH_NOT_ALLOWED"),
                         (4, "PATH_NOT_ALLOWED"), (5, "PATH_NOT_ALLOWED"),
                         (6, "INVALID_CONFIG"), (7, "PATH_NOT_ALLOWED")]:  # fmt: skip
        assert f"line {number}: {code}: " in err, (number, err)
    assert "line 1:" not in err
    assert "dry run: 7 tasks, 6 would fail before any transfer" in err
    assert not list(local.rglob("*.bin"))


def test_ctrl_c_while_starting_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """L1: SIGINT during the imports (caught here as libssl is mapped, when trio imports
    ssl: a few hundred milliseconds before main() runs)."""
    (tmp_path / "l.ini").write_text(f"[local]\ntype = local\nbase_path = {tmp_path}\n")
    (tmp_path / "tasks.jsonl").write_text("")
    proc = _start("copy", str(tmp_path / "tasks.jsonl"), "--connections",
                  str(tmp_path / "l.ini"), env=dict(os.environ))  # fmt: skip
    maps = Path(f"/proc/{proc.pid}/maps")
    _wait_for(lambda: "libssl.so" in maps.read_text(), timeout=20)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr.decode()
    assert stderr == b"" and stdout == b""


# -- task options (L5), paths (L6), check-connection (L7), logs (L8), help (L9, M5), config (L10)


def test_option_types_are_strict(pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path) -> None:
    """L5: "no" is not false and true is not 1: such tasks are INVALID_MESSAGE, not run."""
    (ftp_root / "f0.bin").write_bytes(b"zero")
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    options = [
        {"verify_size": "no"},
        {"retry_count": True},
        {"retry_count": "3"},
        {"retry_count": 3.0},
        {"overwrite": 0},
        {"retry_count": 2, "verify_size": False},
    ]
    lines = [
        json.dumps({"task_id": f"t{i}", "src_id": "remote", "src_path": "/f0.bin",
                    "dst_id": "local", "dst_path": f"f{i}.bin", "options": option})
        for i, option in enumerate(options)
    ]  # fmt: skip
    done = ftp_pooler("copy", "-", "--stats", "0", env=env, stdin="\n".join(lines).encode())
    results = {r["task_id"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert results.pop("t5")["status"] == "completed"
    assert {r["error_code"] for r in results.values()} == {"INVALID_MESSAGE"}, results
    assert "options.verify_size" in results["t0"]["error_message"]
    assert "options.retry_count" in results["t1"]["error_message"]


def test_a_local_path_ending_in_a_slash_is_refused(
    pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path
) -> None:
    """L6: "out/newdir/" used to write a file named out/newdir."""
    (ftp_root / "f0.bin").write_bytes(b"zero")
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    task = {"task_id": "t", "src_id": "remote", "src_path": "/f0.bin", "dst_id": "local",
            "dst_path": "out/newdir/"}  # fmt: skip
    done = ftp_pooler("copy", "-", "--stats", "0", env=env, stdin=json.dumps(task).encode())
    (result,) = map(json.loads, done.stdout.splitlines())
    assert result["error_code"] == "PATH_NOT_ALLOWED"
    assert result["error_message"] == "'out/newdir/' names a directory, not a file"
    assert not (tmp_path / "local" / "out" / "newdir").exists()


def test_check_connection_shows_what_worked_before_the_failing_step(
    pyftpd_server: FTPServer, tmp_path: Path
) -> None:
    """L7: the listing fails; the login and features lines are out first."""
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    done = ftp_pooler("check-connection", "remote", "--path", "/nonexistent", env=env)
    assert done.returncode == 1
    out = done.stdout.decode()
    assert out.startswith("logged in to ") and "\nfeatures: " in out, out
    assert len(done.stderr.splitlines()) == 1 and b"/nonexistent" not in done.stdout


def test_debug_level_shows_the_ftp_dialogue_without_the_password(
    pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path
) -> None:
    """L8: -vv (from WARNING) logs each command and the first line of each reply."""
    (ftp_root / "f0.bin").write_bytes(b"zero")
    env = write_config(tmp_path, pyftpd_server, tmp_path / "local")
    done = ftp_pooler("copy", "-", "-vv", "--stats", "0", "-o", str(tmp_path / "r.jsonl"),
                      env=env, stdin=_downloads(1).encode())  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith(b"{")]
    commands = [e["command"] for e in events if e["event"] == "ftp.command"]
    replies = [e["reply"] for e in events if e["event"] == "ftp.reply"]
    assert f"USER {pyftpd_server.user}" in commands and "PASS ***" in commands
    assert "RETR /f0.bin" in commands
    assert any(reply.startswith("230 ") for reply in replies)
    assert any(reply.startswith("226 ") for reply in replies)
    assert pyftpd_server.password.encode() not in done.stderr
    quiet = ftp_pooler("copy", "-", "-v", "--stats", "0", "-o", str(tmp_path / "r.jsonl"),
                       env=env, stdin=_downloads(1).encode())  # fmt: skip
    assert b"ftp.command" not in quiet.stderr


def test_help_is_plain_text_and_states_every_exit_status(tmp_path: Path) -> None:
    """L9: no reST markup; M5: the worker's 0 after a clean drain is said, as are 4 and 141."""
    done = ftp_pooler("--help", env=dict(os.environ))
    text = done.stdout.decode()
    assert done.returncode == 0
    assert "``" not in text and ":class:" not in text
    assert "0 done (the worker: also after a clean drain on SIGTERM" in " ".join(text.split())
    for status in ("4 copy could not write", "141 copy's results"):
        assert status in " ".join(text.split()), status


def test_a_connections_file_without_connections_is_refused(tmp_path: Path) -> None:
    """L10: check-config (or any command) with an empty connections file: one line, exit 2."""
    done = ftp_pooler("check-config", "--connections", "/dev/null", env=dict(os.environ))
    assert done.returncode == 2, done.stdout
    (line,) = done.stderr.decode().splitlines()
    assert line == (
        "ftp-pooler: INVALID_CONFIG: /dev/null: no connection defined"
        " (a [name] section per connection)"
    )
    assert done.stdout == b""


def _local_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "l.ini").write_text(f"[local]\ntype = local\nbase_path = {tmp_path}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTP_POOLER")}
    env["FTP_POOLER_CONNECTIONS"] = str(tmp_path / "l.ini")
    return env


def _limit_memory() -> None:
    # 600 MB of address space: enough for the CLI, far below what 10 million runners take
    # (about 4 KB each), so that on a build without the bound the test fails in seconds
    # instead of exhausting the machine.
    resource.setrlimit(resource.RLIMIT_AS, (600_000_000, 600_000_000))


@pytest.mark.parametrize(
    ("args", "variable", "expected"),
    [
        (
            ["-j", "10000000"],
            None,
            "ftp-pooler copy: argument --concurrency/-j: must be at most 10000, not 10000000",
        ),
        (
            [],
            "FTP_POOLER__POOL__MAX_SESSIONS_PER_POD",
            "pool.max_sessions_per_pod (from FTP_POOLER__POOL__MAX_SESSIONS_PER_POD):"
            " Input should be less than or equal to 10000",
        ),
        (
            [],
            "FTP_POOLER__WORKER__MAX_INFLIGHT",
            "worker.max_inflight (from FTP_POOLER__WORKER__MAX_INFLIGHT):"
            " Input should be less than or equal to 10000",
        ),
    ],
)
def test_copy_concurrency_above_its_bound_is_a_usage_error(
    tmp_path: Path, args: list[str], variable: str | None, expected: str
) -> None:
    """tester2: -j 10000000 started ten million runners (MemoryError, a traceback; more
    zeros: 24 GB). Now one line naming the option and its bound, exit 2, at once."""
    env = _local_env(tmp_path)
    if variable is not None:
        env[variable] = "10000000"
    done = subprocess.run(
        [sys.executable, "-m", "ftp_pooler.cli", "copy", "-", "--stats", "0", *args],
        env=env, input=b"{}\n", capture_output=True, timeout=60, check=False,
        preexec_fn=_limit_memory,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.decode().splitlines()
    assert expected in line
    assert done.stdout == b""


@pytest.mark.parametrize("command", ["check-config", "submit", "worker"])
@pytest.mark.parametrize(
    "servers", ["127.0.0.1:abc", "h:99999", "nohostport", "[a:1,b:2]", "::1:9092"]
)
def test_bootstrap_server_that_is_no_host_and_port_is_invalid_config(
    tmp_path: Path, command: str, servers: str
) -> None:
    """tester2: '127.0.0.1:abc' passed check-config and made worker and submit die with a
    ValueError traceback; 'h:99999' and 'nohostport' ended as 'Kafka unreachable'."""
    env = _local_env(tmp_path)
    env["FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS"] = servers
    args = [command, "-", "--kafka-timeout", "2"] if command == "submit" else [command]
    done = ftp_pooler(*args, env=env, stdin=b"", timeout=60)
    assert done.returncode == 2
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("ftp-pooler: INVALID_CONFIG: settings: kafka.bootstrap_servers"), line


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "stdin"])
def test_output_file_that_is_the_tasks_file_is_refused(tmp_path: Path, how: str) -> None:
    """tester2: 'copy tasks.jsonl -o tasks.jsonl' emptied the tasks file, then said
    '0 tasks' and exit 0. Now exit 2, one line, the file untouched."""
    env = _local_env(tmp_path)
    tasks = tmp_path / "tasks.jsonl"
    content = b'{"task_id": "a"}\n{"task_id": "b"}\n'
    tasks.write_bytes(content)
    output = tmp_path / "out.jsonl"
    if how == "symlink":
        output.symlink_to(tasks)
    elif how == "hard link":
        output.hardlink_to(tasks)
    else:
        output = tasks
    with tasks.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "ftp_pooler.cli", "copy", "-" if how == "stdin" else str(tasks),
             "-o", str(output), "--stats", "0"],
            env=env, stdin=stdin, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    assert tasks.read_bytes() == content
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        f"ftp-pooler: the output file {output} is the tasks file: it would be emptied"
    ]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_worker_stops_on_a_signal_while_waiting_for_kafka(tmp_path: Path, signum: int) -> None:
    """tester2: Ctrl-C while the worker waited for its first broker was ignored until
    kafka.request_timeout_ms ran out (28 s), then exit 3; SIGTERM exited at once (143).
    Now SIGINT too: at once, 130."""
    env = _local_env(tmp_path)
    (tmp_path / "c.yaml").write_text(
        f"kafka:\n  bootstrap_servers: 127.0.0.1:{closed_port()}\n"
        "api:\n  host: 127.0.0.1\n  port: 0\n"
    )
    env["FTP_POOLER_CONFIG"] = str(tmp_path / "c.yaml")
    proc = _start("worker", "--log-format", "json", env=env, stdout=subprocess.DEVNULL)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:  # kafka-python's log lines: the bootstrap wait has begun
            if b"Bootstrap" in line:
                break
        else:
            pytest.fail("the worker ended before waiting for Kafka")
        started = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=10)
        assert proc.returncode == 128 + signum
        assert time.monotonic() - started < 5
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("where", ["refusal", "listing"])
def test_check_connection_escapes_control_characters_from_the_server(
    make_scripted_ftp: Callable[..., Any], tmp_path: Path, where: str
) -> None:
    """tester2: check-connection printed a refusal's server text as it came: escape
    sequences (ESC ] 0;title BEL, ESC [2J) reached the user's terminal. Now escaped, as
    in results; the names of a listing too, and human log lines (-v: every reply)."""
    evil = "\x1b]0;pwned\x07\x1b[2J\x1b[31mno"
    if where == "refusal":
        server = make_scripted_ftp(
            files={"/data/a.bin": b"abc"}, rules=[Rule(r"(MLSD|LIST|NLST).*", f"550 {evil}")]
        )
    else:
        server = make_scripted_ftp(files={f"/data/{evil}": b"abc"})
    (tmp_path / "c.ini").write_text(
        f"[srv]\ntype = ftp\nhost = {server.host}\nport = {server.port}\n"
        f"user = {server.user}\npass = {server.password}\nbase_path = /data\n"
    )
    env = _local_env(tmp_path)
    done = ftp_pooler(
        "check-connection", "srv", "-v", "--log-format", "console", "--connections",
        str(tmp_path / "c.ini"), env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == (1 if where == "refusal" else 0), done.stderr
    output = done.stdout + done.stderr
    assert b"\x1b" not in output and b"\x07" not in output
    assert b"\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mno" in output


def test_check_config_warns_of_a_local_base_path_that_does_not_exist(tmp_path: Path) -> None:
    """A volume not mounted yet is no configuration error (exit 0), but said."""
    missing = tmp_path / "mnt" / "data"
    (tmp_path / "c.ini").write_text(
        f"[here]\ntype = local\nbase_path = {tmp_path}\n"
        f"[vol]\ntype = local\nbase_path = {missing}\n"
    )
    env = _local_env(tmp_path)
    done = ftp_pooler("check-config", "--connections", str(tmp_path / "c.ini"), env=env)
    assert done.returncode == 0
    assert done.stderr.decode().splitlines() == [
        f"ftp-pooler: warning: [vol] base_path {missing} does not exist: its tasks fail"
        " TRANSIENT until it does (a volume not mounted?)"
    ]
    assert json.loads(done.stdout)["connections"]["vol"]["base_path"] == str(missing)


def test_a_connection_value_with_a_line_break_is_invalid_config(tmp_path: Path) -> None:
    """tester2: an indented 'pass = ...' under 'user = ...' joined the user: check-config
    said fine and printed the password as part of the user. Now INVALID_CONFIG naming
    section and key, the value never shown."""
    (tmp_path / "c.ini").write_text(
        "[partner]\ntype = ftp\nhost = 127.0.0.1\nuser = transfer\n  pass = oops\n"
        f"[local]\ntype = local\nbase_path = {tmp_path}\n"
    )
    env = _local_env(tmp_path)
    done = ftp_pooler("check-config", "--connections", str(tmp_path / "c.ini"), env=env)
    assert b"oops" not in done.stdout + done.stderr
    assert done.returncode == 2
    (line,) = done.stderr.decode().splitlines()
    assert "[partner] user: the value goes on over several lines" in line


def test_a_signal_while_the_producer_keeps_stdin_open_stops_cleanly(tmp_path: Path) -> None:
    """M6 for stdin: the read waiting on the pipe is abandoned (no "Fatal Python error:
    could not acquire lock" at exit) and the summary says what it cannot know."""
    (tmp_path / "l.ini").write_text(f"[local]\ntype = local\nbase_path = {tmp_path}\n")
    env = dict(os.environ, FTP_POOLER_CONNECTIONS=str(tmp_path / "l.ini"))
    line = {"task_id": "t", "src_id": "local", "src_path": "a", "dst_id": "local", "dst_path": "b"}
    proc = _start("copy", "-", "--stats", "0", env=env, stdin=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write((json.dumps(line) + "\n").encode())
        proc.stdin.flush()
        assert select.select([proc.stdout], [], [], 20)[0], "no result while stdin is open"
        assert b'"task_id":"t"' in proc.stdout.readline()  # read and done; stdin stays open
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        proc.kill()
        proc.stdin.close()
    stderr = proc.stderr.read().decode()
    assert "Fatal" not in stderr and "Traceback" not in stderr, stderr
    assert "1+ tasks: 0 completed, 0 skipped, 1 failed, 0 cancelled, unknown not started" in stderr
