"""Reproductions of bugs found by the tester (each FAILS on main as merged 2026-11-30).

Run: .venv/bin/python -m pytest -q repro/test_repro_bugs.py -p no:cacheprovider
Every test drives the real `ftp-pooler copy` CLI (a subprocess) against the scripted
server of tests/scripted_server.py, through repro/harness.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import A_BIN, CLI, Case, Rule, ScriptedFTPServer, dl, run, ul  # noqa: E402

COMPLETED_ONCE = ("completed", None, 1)


def outcomes(results):
    return [(r["status"], r.get("error_code"), r["attempts"]) for r in results]


# --- 1. Upload verify_size (the default) fails whenever SIZE's reply is not a bare number ---
@pytest.mark.parametrize(
    "fmt", ["213 {n} bytes", "213 garbage", "213-Size follows\n213 {n}"],
    ids=["n-bytes", "garbage", "multi-line"],
)
def test_upload_with_an_unreadable_size_reply_completes(fmt: str) -> None:
    """docs/ftp-client.md 'After a transfer': a failed SIZE check completes without that datum.
    Observed: CONNECTION_ERROR 'session is closed or broken' after 4 full uploads (the parse
    failure marks the session broken, the next command, RNFR, then fails)."""
    def size(s, m):
        data = s.server.files.get(m["p"])
        return fmt.format(n=len(data)) if data is not None else "550 No such file."
    case = Case("upload-size", dict(rules=[Rule(r"SIZE (?P<p>.*)", size)]),
                [ul("in/up.bin", "/data/up.bin")])  # verify_size defaults to true
    ok, results, _ = run(case)
    assert outcomes(results) == [COMPLETED_ONCE], results


# --- 2. A session whose login the server dropped goes back to the pool and fails every task ---
def test_session_that_answered_530_is_not_handed_to_the_next_tasks() -> None:
    """Observed: 7 of 8 tasks fail AUTH_FAILED (not retryable) on the one poisoned session;
    the 530 to EPSV is also taken as 'EPSV refused' (PASV from then on)."""
    def drop_login(s, m):
        s.logged_in = False
        return "530 Please log in again."
    files = {f"/data/f{i}.bin": A_BIN for i in range(8)}
    case = Case("530-pool", dict(files=files, rules=[Rule(r"EPSV", times=1), Rule(r"EPSV", drop_login, times=1)]),
                [dl(p, f"out/f{i}.bin") for i, p in enumerate(files)], args=["-j", "1"])
    ok, results, _ = run(case)
    failed = [r for r in results if r["status"] != "completed"]
    assert len(failed) <= 1, [r.get("error_message") for r in failed]
    assert not [c for c in case._srv.commands if c.startswith("PASV")], "530 is not an EPSV refusal"


# --- 3. Kind F variant: pooled session closed by the server at RETR, before any byte ---------
def test_pooled_session_closed_at_retr_gets_a_fresh_one_without_spending_an_attempt() -> None:
    case = Case("eof-at-retr", dict(files={"/a.bin": A_BIN, "/b.bin": A_BIN},
                                    rules=[Rule(r"RETR .*", times=1), Rule(r"RETR .*", lambda s, m: s.close(), times=1)]),
                [dl("/a.bin", "out/a.bin"), dl("/b.bin", "out/b.bin", retry_count=0)], args=["-j", "1"])
    ok, results, _ = run(case)
    assert outcomes(results) == [COMPLETED_ONCE, COMPLETED_ONCE], results


# --- 4. Secrets: echoes in other spellings leak; a short password mangles every message -------
@pytest.mark.parametrize("spell", [lambda pw: urllib.parse.quote(pw, safe=""), str.upper], ids=["percent", "upper"])
def test_password_echoed_in_another_spelling_is_scrubbed(spell) -> None:
    pw = "s3cr3t pw/\u00fc!" if spell is not str.upper else "hunter2secret"
    case = Case("echo", dict(rules=[Rule(r"PASS (?P<pw>.*)", lambda s, m: "530 Login incorrect for " + spell(m["pw"]))]),
                [dl("/data/a.bin", "out/a.bin", retry_count=0)], password=pw,
                expect={"dl /data/a.bin": ("failed", "AUTH_FAILED", 1)})
    ok, results, stderr = run(case)
    assert spell(pw) not in json.dumps(results) + stderr


def test_one_character_password_does_not_mangle_reply_codes() -> None:
    """Observed error_message: 'RETR: ******0 Failed to open file.' (password '5')."""
    case = Case("short-pw", dict(files={}, rules=[Rule(r"RETR .*", "550 Failed to open file.")]),
                [dl("/data/a.bin", "out/a.bin", retry_count=0)], password="5",
                expect={"dl /data/a.bin": ("failed", "FILE_NOT_FOUND", 1)})
    ok, results, _ = run(case)
    assert results[0]["error_message"] == "RETR: 550 Failed to open file."


# --- 5. --dry-run says 'would succeed' for a task the real run refuses while planning --------
def test_dry_run_reports_a_path_the_run_would_refuse(tmp_path: Path) -> None:
    srv = ScriptedFTPServer(files={"/a.bin": b"x"}).start()
    try:
        (tmp_path / "base").mkdir()
        ini = tmp_path / "c.ini"
        ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={srv.port}\nuser=user\npass=secret\n"
                       f"[local]\ntype=local\nbase_path={tmp_path / 'base'}\n")
        tasks = tmp_path / "t.jsonl"
        tasks.write_text(json.dumps({"task_id": "t", "src_id": "p", "src_path": "/a.bin",
                                     "dst_id": "local", "dst_path": "../escape.bin"}) + "\n")
        real = subprocess.run([CLI, "copy", str(tasks), "--connections", str(ini), "--stats", "0"],
                              capture_output=True, text=True, timeout=60)
        assert json.loads(real.stdout)["error_code"] == "PATH_NOT_ALLOWED"
        dry = subprocess.run([CLI, "copy", str(tasks), "--connections", str(ini), "--dry-run"],
                             capture_output=True, text=True, timeout=60)
        assert dry.returncode == 1, dry.stderr  # observed: 0, "0 invalid"
    finally:
        srv.stop()


# --- 6. Ctrl-C in the first few hundred ms prints a KeyboardInterrupt traceback --------------
def test_sigint_while_starting_prints_no_traceback(tmp_path: Path) -> None:
    import signal
    tasks = tmp_path / "t.jsonl"
    tasks.write_text("")
    ini = tmp_path / "c.ini"
    ini.write_text(f"[local]\ntype=local\nbase_path={tmp_path}\n")
    p = subprocess.Popen([CLI, "copy", str(tasks), "--connections", str(ini)], stderr=subprocess.PIPE, text=True)
    time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=30)[1]
    assert "Traceback" not in err
    assert p.returncode == 130


# --- 7. README: 'Exit status, for every command: ... 143 stopped by SIGTERM' -----------------
# The worker exits 0 after SIGTERM (repro/worker_check.py prints 'worker exit on SIGTERM: 0').
# Not encoded as a test here (needs a broker); see FINDINGS.md.


# --- 8. Servers refusing dot-files (pure-ftpd -x/-X, vsftpd deny_file={.*}) refuse every upload ---
def test_upload_to_a_server_that_refuses_dot_files_completes() -> None:
    """Real-server versions: repro/case_pureftpd_dotfiles.py, repro/case_vsftpd_deny_dotfiles.py.
    Observed: ('failed', 'PERMISSION_DENIED', 1) STOR: 553 Prohibited file name: /data/.up.bin.<hex>.part"""
    case = Case("dotfiles", dict(rules=[Rule(r"STOR (?P<p>.*/\..*)", "553 Prohibited file name: {p}")]),
                [ul("in/up.bin", "/data/up.bin")])
    ok, results, _ = run(case)
    assert outcomes(results) == [COMPLETED_ONCE], results


# --- 9. Result lines are not written as tasks end (file output; stdin input) --------------------
def test_result_file_records_a_finished_task_while_the_run_goes_on(tmp_path: Path) -> None:
    srv = ScriptedFTPServer(files={"/fast.bin": b"f", "/slow.bin": b"s"}, rules=[Rule(r"RETR /slow.bin", delay=5)]).start()
    try:
        (tmp_path / "base").mkdir()
        ini = tmp_path / "c.ini"
        ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={srv.port}\nuser=user\npass=secret\ntimeout=10\n"
                       f"[local]\ntype=local\nbase_path={tmp_path / 'base'}\n")
        tasks = tmp_path / "t.jsonl"
        tasks.write_text("".join(json.dumps({"task_id": n, "src_id": "p", "src_path": f"/{n}.bin", "dst_id": "local",
                                             "dst_path": f"{n}.bin"}) + "\n" for n in ("fast", "slow")))
        out = tmp_path / "res.jsonl"
        p = subprocess.Popen([CLI, "copy", str(tasks), "--connections", str(ini), "-j", "2", "--stats", "0", "-o", str(out)],
                             stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 4
        while not (tmp_path / "base" / "fast.bin").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        seen = out.read_text() if out.exists() else ""
        p.kill()
        p.wait()
        assert '"fast"' in seen
    finally:
        srv.stop()


def test_a_task_from_stdin_starts_when_its_line_arrives(tmp_path: Path) -> None:
    (tmp_path / "l.ini").write_text(f"[local]\ntype=local\nbase_path={tmp_path}\n")
    line = json.dumps({"task_id": "x", "src_id": "local", "src_path": "a", "dst_id": "local", "dst_path": "b"}) + "\n"
    p = subprocess.Popen([CLI, "copy", "-", "--connections", str(tmp_path / "l.ini"), "--stats", "0"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        p.stdin.write(line.encode())
        p.stdin.flush()
        os.set_blocking(p.stdout.fileno(), False)
        deadline = time.monotonic() + 3
        got = b""
        while not got and time.monotonic() < deadline:
            got = p.stdout.read() or b""
            time.sleep(0.05)
        assert b'"task_id":"x"' in got
    finally:
        p.stdin.close()
        p.wait(30)


# --- 10. A '..' between backslashes leaves the FTP base_path on Windows servers ----------------
def test_backslash_dotdot_in_a_remote_path_is_refused() -> None:
    case = Case("backslash", dict(files={"/outgoing/a.bin": b"x"}),
                [dl("..\\..\\windows\\win.ini", "out/w.ini", retry_count=0)],
                ini_extra="timeout = 3\nbase_path = /outgoing\n",
                expect={"dl ..\\..\\windows\\win.ini": ("failed", "PATH_NOT_ALLOWED", 0)})
    ok, results, _ = run(case)
    assert outcomes(results) == [("failed", "PATH_NOT_ALLOWED", 0)], results
    assert not [c for c in case._srv.commands if c.startswith("RETR")]
