"""tester3's findings on today's features (pipelined uploads, rename_over, charset,
reload, slow volumes, Kafka), each a strict xfail until fixed.

Each test runs tasks as ``ftp-pooler copy`` does (:func:`copy_tasks` through a
real :class:`TransferEngine` and session pool) against the scripted server.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ftp_pooler.cli.batch import copy_tasks
from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.ftp.config import FTPConfig, Timeouts
from ftp_pooler.ftp.pool import PoolLimits, open_session_pool
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.transfer.retry import RetryPolicy
from clients import ftp_config
from scripted_server import Rule, ScriptedFTPServer

MakeScripted = Callable[..., ScriptedFTPServer]
NO_WAIT = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
TIMEOUTS = Timeouts(connect=5.0, reply=1.0, data_stall=5.0)
PAYLOAD = os.urandom(70_000)


async def run_tasks(
    local: Path, config: FTPConfig, tasks: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Run tasks one at a time on one session, as ``ftp-pooler copy``; their results."""
    conns = Connections(
        [FTPConnection(id="partner", ftp=config), LocalConnection(id="local", base_path=local)]
    )
    source = io.BytesIO(b"".join(json.dumps(t).encode() + b"\n" for t in tasks))
    results = io.BytesIO()
    limits = PoolLimits(max_sessions_per_connection=1)
    async with open_session_pool({"partner": SessionFactory(config)}, limits) as pool:
        engine = TransferEngine(conns, pool, retry=NO_WAIT, worker="tester3")
        await copy_tasks(source, results, engine, concurrency=1, worker="tester3")
    lines = {r["task_id"]: r for r in map(json.loads, results.getvalue().splitlines())}
    return [lines[t["task_id"]] for t in tasks]


def upload(local: str, remote: str, **options: Any) -> dict[str, Any]:
    return {
        "task_id": f"ul {remote}",
        "src_id": "local",
        "src_path": local,
        "dst_id": "partner",
        "dst_path": remote,
        "options": {"verify_size": True, "retry_count": 0, **options},
    }


@pytest.fixture
def local(tmp_path: Path) -> Path:
    root = tmp_path / "local"
    (root / "in").mkdir(parents=True)
    (root / "in" / "up.bin").write_bytes(PAYLOAD)
    return root


# -- 1. the EPSV sent with RNTO answered 421/530 fails an upload that landed ---------------


@pytest.mark.xfail(
    strict=True,
    reason="tester3: a 421/530 to the speculative EPSV sent with RNTO (after RNTO's 250) "
    "fails the upload (SERVER_BUSY/AUTH_FAILED) though the file is in place; with "
    "retries it is uploaded again",
)
@pytest.mark.parametrize("answer", ["421 Service closing.", "530 Not logged in."])
async def test_a_session_ending_reply_to_the_epsv_sent_with_rnto_fails_no_upload(
    make_scripted_ftp: MakeScripted, local: Path, answer: str
) -> None:
    """RNTO got its 250: the upload is done. The EPSV that went with it (for the next
    transfer) only says the session is over; the next task takes a new session."""
    calls: list[int] = []

    def epsv(session: Any, match: Any) -> str:
        calls.append(1)
        return answer if len(calls) == 2 else str(session.epsv_reply())

    server = make_scripted_ftp(files={}, rules=[Rule(r"EPSV", epsv)])
    tasks = [upload("in/up.bin", f"/data/up{i}.bin") for i in range(2)]
    results = await run_tasks(local, ftp_config(server, timeouts=TIMEOUTS), tasks)
    assert server.files["/data/up0.bin"] == PAYLOAD  # landed (passes today)
    assert [(r["status"], r["attempts"]) for r in results] == [("completed", 1)] * 2


@pytest.mark.xfail(
    strict=True,
    reason="tester3: with if_exists=fail and retries, a 421 to the EPSV sent with RNTO "
    "fails attempt 1 after its file landed; attempt 2 then finds that file and the task "
    "ends FILE_EXISTS",
)
async def test_an_upload_that_landed_never_ends_file_exists_because_of_the_spare_epsv(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    calls: list[int] = []

    def epsv(session: Any, match: Any) -> str:
        calls.append(1)
        return "421 Service closing." if len(calls) == 2 else str(session.epsv_reply())

    server = make_scripted_ftp(files={}, rules=[Rule(r"EPSV", epsv)])
    task = upload("in/up.bin", "/data/up0.bin", retry_count=2, if_exists="fail")
    [result] = await run_tasks(local, ftp_config(server, timeouts=TIMEOUTS), [task])
    assert server.files["/data/up0.bin"] == PAYLOAD  # landed (passes today)
    assert (result["status"], result.get("error_code")) == ("completed", None), result


# -- 2. a disk-full refusal after the 150 is reported as a connection reset -----------------


@pytest.mark.xfail(
    strict=True,
    reason="tester3: STOR refused with 452/552 mid-data (server closes the data "
    "connection, then replies) fails CONNECTION_ERROR 'connection reset by peer': the "
    "server's reply is never read (552 should be PERMANENT, not retried)",
)
@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ("452 Insufficient storage space.", "TRANSIENT"),
        ("552 Exceeded storage allocation.", "PERMANENT"),
    ],
)
async def test_a_stor_refused_for_space_mid_data_fails_with_the_servers_reply(
    make_scripted_ftp: MakeScripted, local: Path, answer: str, code: str
) -> None:
    """vsftpd/proftpd on a full disk: 150, some data read, the data connection closed
    (unread bytes: a reset), then ``452``/``552`` on the control connection."""
    (local / "in" / "big.bin").write_bytes(os.urandom(4 << 20))

    def stor(session: Any, match: Any) -> None:
        conn, _ = session.passive.accept()
        session.passive.close()
        session.passive = None
        session.send("150 Ok to send data.")
        conn.settimeout(5)
        got = 0
        while got < 200_000 and (chunk := conn.recv(65536)):
            got += len(chunk)
        conn.close()
        session.send(answer)

    server = make_scripted_ftp(files={}, rules=[Rule(r"STOR (?P<path>.*)", stor)])
    results = await run_tasks(
        local, ftp_config(server, timeouts=TIMEOUTS), [upload("in/big.bin", "/data/big.bin")]
    )
    assert results[0]["status"] == "failed"
    assert (results[0]["error_code"], results[0]["error_message"][:9]) == (
        code,
        f"STOR: {answer[:3]}",
    )


# -- 3. rename_over's aside name is hidden even on a server that refuses dot-files ---------


@pytest.mark.xfail(
    strict=True,
    reason="tester3: rename_over moves the old file aside to '.name.<hex>.aside' even on a "
    "server known to refuse hidden names (quirks.hidden_temp off): overwrite fails there",
)
async def test_overwrite_on_a_server_refusing_dot_files_and_rename_over(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """A pure-ftpd-like server without dot-files (553 to any hidden name) that also will
    not rename over a file (proftpd ``AllowOverwrite off``): the upload went to the
    visible temporary name already; the aside name must be visible too."""

    def rnto(session: Any, match: Any) -> str | None:
        path = match["path"]
        if "/." in path:
            return "553 Prohibited file name."
        if path in session.server.files:
            return "550 Rename permission denied"
        session._cmd_RNTO(path)
        return None

    server = make_scripted_ftp(
        files={"/data/up.bin": b"old"},
        rules=[
            Rule(r"STOR .*/\..*", "553 Prohibited file name."),
            Rule(r"RNTO (?P<path>.*)", rnto),
        ],
    )
    task = upload("in/up.bin", "/data/up.bin", if_exists="overwrite")
    results = await run_tasks(local, ftp_config(server, timeouts=TIMEOUTS), [task])
    assert results[0]["status"] == "completed", results[0].get("error_message")
    assert server.files["/data/up.bin"] == PAYLOAD


# -- 7. a failed STOR on a server answering SIZE during the transfer: the SIZE's 550 taken ---


@pytest.mark.xfail(
    strict=True,
    reason="tester3: on a server that answers commands during a transfer, an upload whose "
    "STOR ends 451/426 after the early SIZE was answered 550 (not stored yet) fails "
    "FILE_NOT_FOUND (not retried) with the SIZE's text: the 550 is read as STOR's reply",
)
@pytest.mark.parametrize("final", ["451 Local error in processing.", "426 Transfer aborted."])
async def test_a_transient_stor_failure_after_an_early_size_is_transient(
    make_scripted_ftp: MakeScripted, local: Path, final: str
) -> None:
    """150, then (during the transfer) SIZE's ``550``, then STOR's ``451``: the first
    upload to this server, so the client does not know yet that it answers early."""
    server = make_scripted_ftp(
        files={},
        transfer_replies={"STOR": ("150 Ok.", final)},
        stor_final_delay=0.2,
        during_transfer="answer",
    )
    results = await run_tasks(
        local, ftp_config(server, timeouts=TIMEOUTS), [upload("in/up.bin", "/data/up.bin")]
    )
    assert (results[0]["error_code"], results[0]["retryable"]) == ("TRANSIENT", True), results[0]
    assert results[0]["error_message"].startswith(f"STOR: {final[:3]}")


# -- 8. rename_over: the session lost between "aside" and "into place" ----------------------


@pytest.mark.xfail(
    strict=True,
    reason="tester3: when the session is lost after rename_over moved the old file aside "
    "and before ours went into place, the destination is left without any file (the old "
    "one hidden as .name.<hex>.aside, ours deleted by the clean-up session); after a "
    "retry that completes, the .aside copy is never removed",
)
@pytest.mark.parametrize("retries", [0, 1])
async def test_a_session_lost_in_the_middle_of_rename_over_leaves_the_destination_whole(
    make_scripted_ftp: MakeScripted, local: Path, retries: int
) -> None:
    """A server that will not rename over a file (proftpd ``AllowOverwrite off``) and
    closes the session (``421``) at the RNFR of step 2. What should be left: a file under
    the destination (the old one when the task failed, ours when it completed) and no
    hidden leftover."""
    lost: list[str] = []

    def rnto(session: Any, match: Any) -> str | None:
        if match["path"] in session.server.files:
            return "550 Rename permission denied"
        session._cmd_RNTO(match["path"])
        return None

    def rnfr(session: Any, match: Any) -> str | None:
        aside = "/data/up.bin" not in session.server.files
        if ".part" in match["path"] and aside and not lost:
            lost.append(match["path"])
            session.send("421 Going down.")
            session.sock.close()
            return None
        session._cmd_RNFR(match["path"])
        return None

    server = make_scripted_ftp(
        files={"/data/up.bin": b"old"},
        rules=[Rule(r"RNTO (?P<path>.*)", rnto), Rule(r"RNFR (?P<path>.*)", rnfr)],
    )
    task = upload("in/up.bin", "/data/up.bin", if_exists="overwrite", retry_count=retries)
    results = await run_tasks(local, ftp_config(server, timeouts=TIMEOUTS), [task])
    assert lost, "the session was lost between the two steps"
    expected = b"old" if results[0]["status"] == "failed" else PAYLOAD
    assert server.files.get("/data/up.bin") == expected
    assert [name for name in server.files if name.endswith((".aside", ".part"))] == []
