"""Problems found by tester2 (a new user breaking ftp-pooler), each as a failing test.

Every test here is ``xfail(strict=True)``: it fails on today's code, and the
suite stays green. When a fix lands, the test passes, strict xfail turns that
into a failure, and the marker must be removed: the test then guards the fix.

The tests drive the command line as a person does (a real subprocess) against
the scripted FTP server (tests/scripted_server.py) or real servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
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
# HIGH: a server without EPSV fails concurrent downloads PERMANENT
# ---------------------------------------------------------------------------
@pytest.mark.xfail(
    strict=True,
    reason="tester2: EPSV refused on several sessions at once: the sessions whose 502 "
    "arrives after another session switched the server to PASV read that 502 as a PASV "
    "refusal and fail PERMANENT ('PASV: 502 ...') without ever sending PASV "
    "(session.py _passive_reply_address decides from the shared quirks.epsv, not from "
    "the verb that was sent). The unusable 229 of CASES.md A2 fails the same way: "
    "PROTOCOL_ERROR 'no port in EPSV reply' on the sessions that lost the race",
)
@pytest.mark.parametrize(
    "epsv_reply",
    ["502 Command not implemented.", "229 Entering Extended Passive Mode (||38835|)"],
    ids=["502", "229-no-port"],
)
def test_server_without_epsv_every_concurrent_download_completes(
    make_scripted_ftp: MakeScripted, tmp_path: Path, local: Path, epsv_reply: str
) -> None:
    payload = os.urandom(50_000)
    server = make_scripted_ftp(
        files={"/data/a.bin": payload},
        rules=[Rule(r"EPSV", epsv_reply)],
    )
    env = _env(tmp_path, _scripted_ini(server, local))
    tasks = _tasks(
        *(
            {
                "task_id": f"d{i}",
                "src_id": "srv",
                "src_path": "/data/a.bin",
                "dst_id": "local",
                "dst_path": f"out/d{i}.bin",
                # a refused EPSV must not cost an attempt (CASES.md A2)
                "options": {"retry_count": 0},
            }
            for i in range(8)
        )
    )
    proc = _run("copy", "-", "--stats", "0", "-j", "8", env=env, stdin=tasks)
    results = _results(proc.stdout)
    failed = {k: r.get("error_message") for k, r in results.items() if r["status"] != "completed"}
    assert failed == {}
    assert proc.returncode == 0


# ---------------------------------------------------------------------------
# HIGH: a failed final rename deletes the partner's existing file
# ---------------------------------------------------------------------------
@pytest.mark.xfail(
    strict=True,
    reason="tester2: an upload whose RNFR/RNTO is refused (a transient 451, RNFR "
    "'502 not implemented', a 553) sends DELE for the existing destination file, the "
    "rename fails again, and the task fails: the partner's previous complete file is "
    "gone and nothing replaces it. The delete-then-rename fallback (meant for servers "
    "that refuse to rename over a file) runs for any refusal, even one that says "
    "nothing about the destination: RNFR refused, or a transient 4xx",
)
@pytest.mark.parametrize(
    "refusal",
    [
        Rule(r"RNTO .*", "451 Rename failed, try later."),
        Rule(r"RNFR .*", "502 RNFR not implemented."),
    ],
    ids=["rnto-451", "rnfr-502"],
)
def test_failed_upload_rename_never_deletes_the_existing_destination(
    make_scripted_ftp: MakeScripted, tmp_path: Path, local: Path, refusal: Rule
) -> None:
    old = b"the partner's previous, complete file"
    server = make_scripted_ftp(files={"/data/up.bin": old}, rules=[refusal])
    (local / "up.bin").write_bytes(os.urandom(10_000))
    env = _env(tmp_path, _scripted_ini(server, local))
    task = {
        "task_id": "u",
        "src_id": "local",
        "src_path": "up.bin",
        "dst_id": "srv",
        "dst_path": "/data/up.bin",
        "options": {"retry_count": 1},
    }
    proc = _run("copy", "-", "--stats", "0", env=env, stdin=_tasks(task))
    assert _results(proc.stdout)["u"]["status"] == "failed"
    assert server.files.get("/data/up.bin") == old, [
        c for c in server.commands if c.split()[0] in ("STOR", "RNFR", "RNTO", "DELE")
    ]


# ---------------------------------------------------------------------------
# MEDIUM: a download is read to the end however far past the announced size it goes
# ---------------------------------------------------------------------------
@pytest.mark.xfail(
    strict=True,
    reason="tester2: with SIZE and the 150 both saying 1000 bytes, a server that keeps "
    "sending (a device streaming, a broken server, a hostile one) is read to its end: "
    "every attempt writes all of it to the temporary file (200 MB each in a manual run) "
    "and only then fails SIZE_MISMATCH. An endless stream fills the shared local "
    "volume. Once more bytes arrived than announced the attempt could stop at once",
)
def test_download_stops_reading_past_the_announced_size(
    make_scripted_ftp: MakeScripted, tmp_path: Path, local: Path
) -> None:
    limit = 50_000_000
    sent: list[int] = []

    def stream(session: Any, match: Any) -> None:
        conn = session._accept_data(
            "150 Opening BINARY mode data connection for /data/a.bin (1000 bytes)."
        )
        total = 0
        try:
            while total < limit:
                conn.sendall(b"\0" * 65536)
                total += 65536
        except OSError:
            pass
        sent.append(total)
        with contextlib.suppress(OSError):
            conn.close()
        session.send("226 Transfer complete.")

    server = make_scripted_ftp(
        files={"/data/a.bin": b"x" * 1000},
        rules=[Rule(r"SIZE .*", "213 1000"), Rule(r"RETR .*", stream)],
    )
    env = _env(tmp_path, _scripted_ini(server, local))
    task = {
        "task_id": "d",
        "src_id": "srv",
        "src_path": "/data/a.bin",
        "dst_id": "local",
        "dst_path": "out/a.bin",
        "options": {"retry_count": 0},
    }
    proc = _run("copy", "-", "--stats", "0", env=env, stdin=_tasks(task))
    assert _results(proc.stdout)["d"]["error_code"] == "SIZE_MISMATCH"
    assert sent and max(sent) < limit, f"the server got to send {sent} bytes"


