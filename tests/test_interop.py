"""Partner servers that bend the rules (issue 12, /work/shared/interop/CASES.md).

Each handed case (A1 ... G1) replays its dialogue with the scripted server
(tests/scripted_server.py) or a real vsftpd (F1) and runs ``copy`` in-process
(:func:`ftp_pooler.cli.batch.copy_tasks` with the engine); each asserts the result
lines (status, error_code, attempts) and the bytes on disk. The variants after
each case are other servers' forms of the same kind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ftp_pooler.cli.batch import copy_tasks
from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.ftp.config import FTPConfig, Timeouts
from ftp_pooler.ftp.pool import PoolLimits, open_session_pool
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.transfer.retry import RetryPolicy
from clients import ftp_config
from scripted_server import Rule, ScriptedFTPServer
from servers import FTPServer

MakeScripted = Callable[..., ScriptedFTPServer]
NO_WAIT = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
TIMEOUTS = Timeouts(connect=5.0, reply=2.0, data_stall=5.0)
MTIME = datetime(2021, 1, 2, 3, 4, 5, tzinfo=UTC)

A_BIN = os.urandom(300_000)
UP_BIN = os.urandom(120_000)


def config_for(server: ScriptedFTPServer | FTPServer, **overrides: Any) -> FTPConfig:
    """:func:`clients.ftp_config` with this module's timeouts."""
    return ftp_config(server, **{"timeouts": TIMEOUTS, **overrides})  # type: ignore[arg-type]


async def copy(
    local: Path,
    servers: dict[str, ScriptedFTPServer | FTPServer],
    tasks: list[dict[str, Any]],
    *,
    limits: PoolLimits | None = None,
    base_path: str = "",
    concurrency: int = 1,
    **ftp: Any,
) -> dict[str, dict[str, Any]]:
    """Run ``tasks`` like ``ftp-pooler copy`` (one at a time, in order, unless
    ``concurrency``); result lines by task id."""
    conns = Connections(
        [
            *(
                FTPConnection(id=name, ftp=config_for(s, **ftp), base_path=base_path)
                for name, s in servers.items()
            ),
            LocalConnection(id="local", base_path=local),
        ]
    )
    factories = {name: SessionFactory(conns[name].ftp) for name in servers}  # type: ignore[union-attr]
    source = io.BytesIO(b"".join(json.dumps(t).encode() + b"\n" for t in tasks))
    results = io.BytesIO()
    async with open_session_pool(factories, limits or PoolLimits()) as pool:
        engine = TransferEngine(conns, pool, retry=NO_WAIT, worker="interop")
        await copy_tasks(source, results, engine, concurrency=concurrency, worker="interop")
    lines = [json.loads(line) for line in results.getvalue().splitlines()]
    assert len(lines) == len(tasks)
    return {line["task_id"]: line for line in lines}


def download(remote: str, local: str, conn: str = "partner", **options: Any) -> dict[str, Any]:
    return {
        "task_id": f"dl {remote}",
        "src_id": conn,
        "src_path": remote,
        "dst_id": "local",
        "dst_path": local,
        "options": options,
    }


def upload(local: str, remote: str, conn: str = "partner", **options: Any) -> dict[str, Any]:
    return {
        "task_id": f"ul {remote}",
        "src_id": "local",
        "src_path": local,
        "dst_id": conn,
        "dst_path": remote,
        "options": options,
    }


def outcome(result: dict[str, Any]) -> tuple[str, str | None, int]:
    return result["status"], result.get("error_code"), result["attempts"]


COMPLETED_ONCE = ("completed", None, 1)


@pytest.fixture
def local(tmp_path: Path) -> Path:
    root = tmp_path / "local"
    (root / "in").mkdir(parents=True)
    (root / "in" / "up.bin").write_bytes(UP_BIN)
    return root


async def download_and_upload(local: Path, server: ScriptedFTPServer, **options: Any) -> None:
    """The task pair of cases A1, A2: both must complete on the first attempt, bytes intact."""
    results = await copy(
        local,
        {"partner": server},
        [
            download("/data/a.bin", "out/a.bin", **options),
            upload("in/up.bin", "/data/up.bin", **options),
        ],
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE, COMPLETED_ONCE], results
    assert (local / "out" / "a.bin").read_bytes() == A_BIN
    assert server.files["/data/up.bin"] == UP_BIN


def commands(server: ScriptedFTPServer, verb: str) -> list[str]:
    return [c for c in server.commands if c.split(" ", 1)[0].upper() == verb]


# --- A. Passive-mode replies ------------------------------------------------------------------


async def test_a1_epsv_answered_with_a_227(make_scripted_ftp: MakeScripted, local: Path) -> None:
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN}, rules=[Rule(r"EPSV", lambda s, m: s.pasv_reply())]
    )
    await download_and_upload(local, server)


async def test_a2_229_with_a_delimiter_missing_falls_back_to_pasv_for_good(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN},
        rules=[Rule(r"EPSV", "229 Entering Extended Passive Mode (||38835|)")],
    )
    await download_and_upload(local, server)
    assert len(commands(server, "EPSV")) == 1, "the refusal is remembered for the server"
    assert len(commands(server, "PASV")) == 2


@pytest.mark.parametrize(
    "pasv",
    [
        "227 Entering Passive Mode (127, 0, 0, 1, {p1}, {p2}).",
        "227 =127,0,0,1,{p1},{p2}",
        "227 Entering Passive Mode 127,0,0,1,{p1},{p2}",
        "227 Entering passive mode [127,0,0,1,{p1},{p2}]",
        "227 Entering Passive Mode (127,000,000,001,{p1},{p2}",
        "227 Entering Passive Mode (127,0,0,1,{p1:05d},{p2:05d})",
        "200 PASV ok: 127,0,0,1,{p1},{p2} (port {port})",
        "227-listen socket created\n227 (127,0,0,1,{p1},{p2})",
        "229 Entering Extended Passive Mode (|||{port}|)",
    ],
)
async def test_pasv_formats_servers_send(
    make_scripted_ftp: MakeScripted, local: Path, pasv: str
) -> None:
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN},
        rules=[
            Rule(r"EPSV", "500 EPSV not understood."),
            Rule(r"PASV", lambda s, m: s.pasv_reply(pasv)),
        ],
    )
    await download_and_upload(local, server)


@pytest.mark.parametrize(
    "epsv",
    [
        "229 Entering Extended Passive Mode ( |||{port}| )",
        "229 Entering Extended Passive Mode |||{port}|",
        "229 Entering Extended Passive Mode (|1|127.0.0.1|{port}|)",
        "229 Extended Passive Mode OK (!!!{port}!).",
        "200 EPSV ok (|||{port}|)",
    ],
)
async def test_epsv_forms_servers_send(
    make_scripted_ftp: MakeScripted, local: Path, epsv: str
) -> None:
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN}, rules=[Rule(r"EPSV", lambda s, m: s.epsv_reply(epsv))]
    )
    await download_and_upload(local, server)
    assert not commands(server, "PASV")


@pytest.mark.parametrize(
    "epsv",
    [
        "229 Entering Extended Passive Mode (|||{port})",
        "229 Entering Extended Passive Mode",
        "229 Entering Extended Passive Mode (|||0|)",
        "229 Entering Extended Passive Mode (|||99999|)",
        "200 EPSV ok",
    ],
)
async def test_unreadable_epsv_counts_as_refused(
    make_scripted_ftp: MakeScripted, local: Path, epsv: str
) -> None:
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN}, rules=[Rule(r"EPSV", lambda s, m: s.epsv_reply(epsv))]
    )
    await download_and_upload(local, server)
    assert len(commands(server, "EPSV")) == 1


@pytest.mark.parametrize(
    "epsv_reply",
    ["502 Command not implemented.", "229 Entering Extended Passive Mode (||38835|)"],
    ids=["502", "229-no-port"],
)
async def test_server_without_epsv_every_concurrent_download_completes(
    make_scripted_ftp: MakeScripted, local: Path, epsv_reply: str
) -> None:
    """tester2: EPSV refused on eight sessions at once. The sessions whose refusal arrived
    after another one had switched the server to PASV read it as a PASV reply and failed
    PERMANENT ('PASV: 502 ...'), or PROTOCOL_ERROR for the unusable 229 of case A2: a
    passive reply is read as the reply to the verb this session sent."""
    server = make_scripted_ftp(files={"/data/a.bin": A_BIN}, rules=[Rule(r"EPSV", epsv_reply)])
    tasks = [{**download("/data/a.bin", f"out/d{i}.bin", retry_count=0), "task_id": f"d{i}"}
             for i in range(8)]  # fmt: skip
    results = await copy(local, {"partner": server}, tasks, concurrency=8)
    failed = {k: r.get("error_message") for k, r in results.items() if r["status"] != "completed"}
    assert failed == {}
    assert all((local / "out" / f"d{i}.bin").read_bytes() == A_BIN for i in range(8))


# --- B. Reply framing -------------------------------------------------------------------------

B1_FEAT = (
    "211-Features:\n211-EPSV\n211-MDTM\n211-MFMT\n211-REST STREAM\n211-SIZE\n211-UTF8\n211 End"
)


@pytest.mark.parametrize(
    "feat",
    [
        B1_FEAT,
        "211-Features:\nEPSV\nMDTM\nMFMT\nREST STREAM\nSIZE\nUTF8\n211 End",
        "211-Extensions supported:\n EPSV\n MDTM\n MFMT\n SIZE\n UTF8\n211 END",
    ],
    ids=["b1-211-prefix", "no-indentation", "rfc-2389"],
)
async def test_b1_feat_lines_with_prefix_or_no_indentation(
    make_scripted_ftp: MakeScripted, local: Path, feat: str
) -> None:
    server = make_scripted_ftp(files={"/data/a.bin": A_BIN}, feat=feat, mtime=MTIME)
    os.utime(local / "in" / "up.bin", (1_600_000_000, 1_600_000_000))
    results = await copy(
        local,
        {"partner": server},
        [
            download("/data/a.bin", "out/a.bin", preserve_mtime=True),
            upload("in/up.bin", "/data/up.bin", preserve_mtime=True, verify_size=True),
        ],
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE, COMPLETED_ONCE], results
    assert (local / "out" / "a.bin").read_bytes() == A_BIN
    assert (local / "out" / "a.bin").stat().st_mtime == MTIME.timestamp()
    assert server.files["/data/up.bin"] == UP_BIN
    assert server.mtimes["/data/up.bin"] == datetime.fromtimestamp(1_600_000_000, UTC)
    assert any(c.startswith("SIZE /data/.up.bin.") for c in server.commands), "size-checked"
    assert "OPTS UTF8 ON" in server.commands


async def test_b2_multi_line_reply_closed_by_another_code(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = make_scripted_ftp(
        transfer_replies={
            "STOR": (
                "553-\n553- Directory excluded (precheck).\n"
                "150 Opening BINARY mode data connection for {name}.",
                "226 Transfer complete.",
            )
        }
    )
    results = await copy(
        local, {"partner": server}, [upload("in/up.bin", "/data/up.bin", retry_count=1)]
    )
    assert outcome(results["ul /data/up.bin"]) == COMPLETED_ONCE
    assert server.files["/data/up.bin"] == UP_BIN


async def test_download_150_block_closed_by_another_code(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN},
        transfer_replies={
            "RETR": (
                "125-Note: this server is old.\n125-\n150 Here it comes ({size} bytes).",
                "250-Transfer done.\n250-Statistics follow.\n226 Closing data connection.",
            )
        },
    )
    results = await copy(local, {"partner": server}, [download("/data/a.bin", "out/a.bin")])
    assert outcome(results["dl /data/a.bin"]) == COMPLETED_ONCE
    assert (local / "out" / "a.bin").read_bytes() == A_BIN


@pytest.mark.parametrize(
    "rule",
    [
        Rule(r"PASS .*", after="230 Already logged in."),
        Rule(r"PASS .*", after="230-Welcome back\n230 You are logged in.", after_delay=0.1),
        Rule(r"RETR .*", after="226 Transfer complete."),
        Rule(r"RETR .*", after="226 Transfer complete.", after_delay=0.2),
        Rule(r"STOR .*", after="226 Transfer complete.", after_delay=0.2),
        Rule(r"MDTM /data/.*", after="225 Data connection open; no transfer in progress."),
    ],
    ids=[
        "second-230",
        "late-multi-line-230",
        "duplicate-226",
        "late-226",
        "late-226-after-upload",
        "unasked-225",
    ],
)
async def test_unasked_replies_never_shift_later_replies(
    make_scripted_ftp: MakeScripted, local: Path, rule: Rule
) -> None:
    """A second 230, a late 226: each task still reads its own replies; sessions are reused."""
    files = {f"/data/f{i}.bin": os.urandom(10_000 + i) for i in range(4)}
    server = make_scripted_ftp(files=files, rules=[rule], mtime=MTIME)
    tasks = [download(p, f"out/f{i}.bin", preserve_mtime=True) for i, p in enumerate(files)]
    tasks.append(upload("in/up.bin", "/data/up.bin", preserve_mtime=True))
    results = await copy(
        local,
        {"partner": server},
        tasks,
        limits=PoolLimits(max_sessions_per_connection=1),
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 5, results
    for i, data in enumerate(files.values()):
        assert (local / "out" / f"f{i}.bin").read_bytes() == data
        assert (local / "out" / f"f{i}.bin").stat().st_mtime == MTIME.timestamp()
    assert server.files["/data/up.bin"] == UP_BIN


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        ("226 Transfer complete.", COMPLETED_ONCE),
        ("426 Transfer aborted.", ("failed", "TRANSIENT", 1)),
    ],
)
async def test_unasked_reply_during_a_transfer_is_not_its_final_reply(
    make_scripted_ftp: MakeScripted, local: Path, final: str, expected: tuple[str, str, int]
) -> None:
    """A 230 between the 150 and the final reply: the final reply still decides."""
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN},
        transfer_replies={"RETR": ("150 Opening data connection.\n230 Still logged in.", final)},
    )
    results = await copy(
        local, {"partner": server}, [download("/data/a.bin", "out/a.bin", retry_count=0)]
    )
    assert outcome(results["dl /data/a.bin"]) == expected


# --- C. Reply codes ---------------------------------------------------------------------------


async def test_c1_auth_tls_accepted_with_200(make_scripted_ftp: MakeScripted, local: Path) -> None:
    server = make_scripted_ftp(
        tls=True,
        files={"/data/a.bin": A_BIN},
        rules=[
            Rule(
                r"AUTH TLS",
                lambda s, m: s.start_tls("200 AUTH command ok; starting SSL connection..."),
            )
        ],
    )
    results = await copy(local, {"partner": server}, [download("/data/a.bin", "out/a.bin")])
    assert outcome(results["dl /data/a.bin"]) == COMPLETED_ONCE
    assert (local / "out" / "a.bin").read_bytes() == A_BIN


async def test_other_2xx_codes_for_other_commands(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """Kind C beyond AUTH: PBSZ/PROT/TYPE/MKD/RNTO/MFMT/SIZE/USER with other codes of the class."""

    def user(s: Any, m: Any) -> str:
        s.logged_in = True  # 232: logged in, no PASS wanted
        return "232 User logged in, authorized by security data exchange."

    def prot(s: Any, m: Any) -> str:
        s.prot_p = True
        return "234 PROT P accepted."

    def mkd(s: Any, m: Any) -> str:
        s.server.dirs.add(m["d"])
        return "250 Directory created."

    server = make_scripted_ftp(
        tls=True,
        rules=[
            Rule(r"USER .*", user),
            Rule(r"PBSZ .*", "234 PBSZ ok."),
            Rule(r"PROT P", prot),
            Rule(r"TYPE I", "250 Type set to I."),
            Rule(r"MKD (?P<d>.*)", mkd),
            Rule(r"SIZE (?P<p>.*)", lambda s, m: f"250 {len(s.server.files[m['p']])}"),
        ],
    )
    results = await copy(
        local,
        {"partner": server},
        [upload("in/up.bin", "/new/dir/up.bin", verify_size=True, preserve_mtime=True)],
    )
    assert outcome(results["ul /new/dir/up.bin"]) == COMPLETED_ONCE
    assert server.files["/new/dir/up.bin"] == UP_BIN
    assert not commands(server, "PASS")


# --- D. Error classes -------------------------------------------------------------------------


async def test_d1_mdtm_refused_after_a_good_download_completes_without_the_time(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    image = os.urandom(300_000)
    server = make_scripted_ftp(
        files={"/data/1_0_7.image": image},
        rules=[Rule(r"MDTM /data/1_0_7\.image", "550 1_0_7.image: Operation not permitted")],
    )
    results = await copy(
        local,
        {"partner": server},
        [download("/data/1_0_7.image", "out/1_0_7.image", preserve_mtime=True)],
    )
    assert outcome(results["dl /data/1_0_7.image"]) == COMPLETED_ONCE
    assert (local / "out" / "1_0_7.image").read_bytes() == image
    assert len(commands(server, "RETR")) == 1, "never a second download of the same bytes"


@pytest.mark.parametrize(
    "refusal",
    ["550 Permission denied.", "421 Timeout.", "500 MDTM not understood.", "213 garbage"],
)
async def test_metadata_failure_after_a_download_never_downloads_again(
    make_scripted_ftp: MakeScripted, local: Path, refusal: str
) -> None:
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN},
        rules=[Rule(r"MDTM .*", refusal), Rule(r"SIZE .*", refusal)],
        transfer_replies={"RETR": ("150 Opening data connection.", "226 Transfer complete.")},
    )
    results = await copy(
        local,
        {"partner": server},
        [download("/data/a.bin", "out/a.bin", preserve_mtime=True, verify_size=True)],
    )
    assert outcome(results["dl /data/a.bin"]) == COMPLETED_ONCE
    assert (local / "out" / "a.bin").read_bytes() == A_BIN
    assert len(commands(server, "RETR")) == 1


@pytest.mark.parametrize(
    ("verb", "refusal"),
    [
        ("RETR", "550 /data/a.bin: Operation not permitted"),
        ("RETR", "550 Access is denied."),
        ("RETR", "551 Read access denied by policy."),
        ("STOR", "553 Could not create file: Permission denied."),
        ("STOR", "550 Read-only file system"),
        ("STOR", "552 Upload not permitted here."),
    ],
)
async def test_not_permitted_and_denied_texts_are_permission_errors(
    make_scripted_ftp: MakeScripted, local: Path, verb: str, refusal: str
) -> None:
    server = make_scripted_ftp(files={"/data/a.bin": A_BIN}, rules=[Rule(rf"{verb} .*", refusal)])
    task = (
        download("/data/a.bin", "out/a.bin")
        if verb == "RETR"
        else upload("in/up.bin", "/data/up.bin")
    )
    [result] = (await copy(local, {"partner": server}, [task])).values()
    assert outcome(result) == ("failed", "PERMISSION_DENIED", 1)
    assert result["retryable"] is False
    assert refusal in result["error_message"]


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
    (unread bytes: a reset), then ``452``/``552`` on the control connection: the
    reply decides, not the reset (tester3)."""
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
    task = upload("in/big.bin", "/data/big.bin", verify_size=True, retry_count=0)
    [result] = (await copy(local, {"partner": server}, [task])).values()
    assert outcome(result) == ("failed", code, 1), result["error_message"]
    assert result["error_message"].startswith(f"STOR: {answer[:3]}"), result


OLD = b"the partner's previous, complete file"


@pytest.mark.parametrize(
    "refusal",
    [
        Rule(r"RNTO .*", "451 Rename failed, try later."),
        Rule(r"RNFR .*", "502 RNFR not implemented."),
        Rule(r"RNFR .*", "550 Permission denied."),
        Rule(r"RNTO .*", "502 RNTO not implemented."),
    ],
    ids=["rnto-451", "rnfr-502", "rnfr-550", "rnto-502"],
)
async def test_failed_upload_rename_never_deletes_the_existing_destination(
    make_scripted_ftp: MakeScripted, local: Path, refusal: Rule
) -> None:
    """tester2: a refused final rename (a transient 451, RNFR not implemented...) sent
    DELE for the partner's existing file, the rename failed again, and the file was gone
    with nothing in its place. Only RNTO refused with 550/553 after an accepted RNFR may
    mean "the target exists"; any other refusal leaves the destination alone."""
    server = make_scripted_ftp(files={"/data/up.bin": OLD}, rules=[refusal])
    task = upload("in/up.bin", "/data/up.bin", retry_count=1)
    [result] = (await copy(local, {"partner": server}, [task])).values()
    assert result["status"] == "failed", result
    assert server.files["/data/up.bin"] == OLD
    assert "DELE /data/up.bin" not in server.commands
    assert sorted(server.files) == ["/data/up.bin"], "the temporary files are removed"


async def test_refused_move_to_never_deletes_the_existing_archived_file(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """The same fallback served ``on_success: move_to``: a transient refusal of the move
    deleted the file already in the archive directory."""
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN, "/archive/a.bin": OLD},
        rules=[Rule(r"RNTO .*", "451 Rename failed, try later.")],
    )
    task = download("/data/a.bin", "out/a.bin", on_success={"move_to": "/archive/"})
    await copy(local, {"partner": server}, [task])
    assert server.files["/archive/a.bin"] == OLD
    assert server.files["/data/a.bin"] == A_BIN
    assert not commands(server, "DELE")


def _asides(files: Any) -> list[str]:
    return [name for name in files if ".aside" in str(name)]


@pytest.mark.parametrize("code", ["550 up.bin: Rename permission denied", "553 File exists."])
async def test_rename_refused_over_an_existing_file_moves_it_aside_then_deletes_it(
    make_scripted_ftp: MakeScripted, local: Path, code: str
) -> None:
    """A server that will not rename over an existing file: the old file is moved aside,
    ours renamed into place, the aside copy deleted. It is never deleted first."""
    server = make_scripted_ftp(
        files={"/data/up.bin": OLD}, rules=[Rule(r"RNTO /data/up\.bin", code, times=1)]
    )
    [result] = (
        await copy(local, {"partner": server}, [upload("in/up.bin", "/data/up.bin")])
    ).values()
    assert outcome(result) == COMPLETED_ONCE, result
    assert server.files == {"/data/up.bin": UP_BIN}
    renames = [c.split(" ", 1)[1] for c in server.commands if c.startswith(("RNFR", "RNTO"))]
    aside = renames[3]
    assert renames[2:] == ["/data/up.bin", aside, renames[0], "/data/up.bin"]
    assert commands(server, "DELE") == [f"DELE {aside}"]


async def test_rename_still_refused_after_moving_aside_puts_the_old_file_back(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """Ours still cannot take the name once the old file is aside: the old one goes back."""
    server = make_scripted_ftp(
        files={"/data/up.bin": OLD},
        rules=[Rule(r"RNTO /data/up\.bin", "550 Rename permission denied", times=2)],
    )
    task = upload("in/up.bin", "/data/up.bin", retry_count=0)
    [result] = (await copy(local, {"partner": server}, [task])).values()
    assert outcome(result) == ("failed", "PERMISSION_DENIED", 1), result
    assert server.files == {"/data/up.bin": OLD}
    assert "DELE /data/up.bin" not in server.commands


async def test_overwrite_on_a_server_refusing_dot_files_and_rename_over(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """A pure-ftpd-like server without dot-files (553 to any hidden name) that also will
    not rename over a file (proftpd ``AllowOverwrite off``): the upload went to the
    visible temporary name already; the aside name is visible too (tester3)."""

    def rnto(session: Any, match: Any) -> str | None:
        path = match["path"]
        if "/." in path:
            return "553 Prohibited file name."
        if path in session.server.files:
            return "550 Rename permission denied"
        session._cmd_RNTO(path)
        return None

    server = make_scripted_ftp(
        files={"/data/up.bin": OLD},
        rules=[
            Rule(r"STOR .*/\..*", "553 Prohibited file name."),
            Rule(r"RNTO (?P<path>.*)", rnto),
        ],
    )
    task = upload("in/up.bin", "/data/up.bin", if_exists="overwrite", verify_size=True)
    [result] = (await copy(local, {"partner": server}, [task])).values()
    assert outcome(result) == COMPLETED_ONCE, result
    assert server.files == {"/data/up.bin": UP_BIN}


@pytest.mark.parametrize("retries", [0, 1])
async def test_a_session_lost_in_the_middle_of_rename_over_leaves_the_destination_whole(
    make_scripted_ftp: MakeScripted, local: Path, retries: int
) -> None:
    """A server that will not rename over a file (proftpd ``AllowOverwrite off``) and
    closes the session (``421``) at the RNFR of step 2. Left: a file under the
    destination (the old one when the task failed, ours when it completed) and no
    leftover; the clean-up once deleted ours with the old one still aside (tester3)."""
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
        files={"/data/up.bin": OLD},
        rules=[Rule(r"RNTO (?P<path>.*)", rnto), Rule(r"RNFR (?P<path>.*)", rnfr)],
    )
    task = upload("in/up.bin", "/data/up.bin", if_exists="overwrite", retry_count=retries)
    [result] = (await copy(local, {"partner": server}, [task])).values()
    assert lost, "the session was lost between the two steps"
    assert result["status"] == ("failed" if retries == 0 else "completed"), result
    assert server.files == {"/data/up.bin": OLD if retries == 0 else UP_BIN}


async def test_proftpd_refusing_to_overwrite_gets_the_upload_in_place(
    make_proftpd: Callable[..., FTPServer], ftp_root: Path, local: Path, tmp_path: Path
) -> None:
    """proftpd with ``AllowOverwrite off`` answers RNTO onto an existing file with
    ``550 up.bin: Rename permission denied`` (vsftpd, pure-ftpd, pyftpdlib and proftpd by
    default rename over it): the old file is moved aside and deleted once ours is in place."""
    log = tmp_path / "commands.log"
    server = make_proftpd(
        extra_config=[
            f'ExtendedLog "{log}" ALL',
            "<Directory />",
            "  AllowOverwrite off",
            "</Directory>",
        ]
    )
    (ftp_root / "up.bin").write_bytes(OLD)
    [result] = (await copy(local, {"partner": server}, [upload("in/up.bin", "up.bin")])).values()
    assert outcome(result) == COMPLETED_ONCE, result
    assert [p.name for p in ftp_root.iterdir()] == ["up.bin"]
    assert (ftp_root / "up.bin").read_bytes() == UP_BIN
    dialogue = log.read_text()
    assert '"RNTO up.bin" 550' in dialogue, dialogue
    assert '"DELE up.bin"' not in dialogue, "the old file is never deleted in place"


async def test_temp_file_whose_dele_is_out_of_sequence_is_deleted_on_a_new_session(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """A DELE of the temporary file answered ``501 Bad sequence of commands`` (proftpd
    with an RNFR pending) never ran: it is not taken as done, a new session deletes it."""
    server = make_scripted_ftp(
        rules=[
            Rule(r"SIZE /data/.*\.part", "213 1"),
            Rule(r"DELE .*", "501 Bad sequence of commands.", times=1),
        ]
    )
    task = upload("in/up.bin", "/data/up.bin", retry_count=0)
    [result] = (await copy(local, {"partner": server}, [task])).values()
    assert outcome(result) == ("failed", "SIZE_MISMATCH", 1), result
    assert len(commands(server, "DELE")) == 2
    assert server.files == {}, "the temporary file is gone"


@pytest.mark.parametrize("verb", ["RNFR", "MFMT"])
async def test_uploaded_file_taken_away_is_never_file_not_found(
    make_scripted_ftp: MakeScripted, local: Path, verb: str
) -> None:
    """Kind D for uploads: a drop box that moves each file at once; RNFR (after MFMT,
    whose refusal alone is only a warning) then fails."""
    gone = "550 /data/x: No such file or directory"
    server = make_scripted_ftp(rules=[Rule(rf"{verb} .*", gone), Rule(r"RNFR .*", gone)])
    [result] = (
        await copy(
            local, {"partner": server}, [upload("in/up.bin", "/data/up.bin", preserve_mtime=True)]
        )
    ).values()
    assert outcome(result) == ("failed", "PERMANENT", 1), result
    assert "just uploaded" in result["error_message"]
    assert len(commands(server, "STOR")) == 1


@pytest.mark.parametrize(
    "refusal", ["550 Permission denied.", "550 Create directory operation failed."]
)
async def test_refused_mkd_is_reported_as_itself(
    make_scripted_ftp: MakeScripted, local: Path, refusal: str
) -> None:
    server = make_scripted_ftp(rules=[Rule(r"MKD /locked(/.*)?", refusal)])
    [result] = (
        await copy(local, {"partner": server}, [upload("in/up.bin", "/locked/deep/up.bin")])
    ).values()
    assert result["status"] == "failed"
    assert result["error_message"].startswith("MKD: "), result
    assert refusal in result["error_message"]
    assert result["error_code"] != "FILE_NOT_FOUND"
    if "denied" in refusal:
        assert result["error_code"] == "PERMISSION_DENIED"


# --- E. TLS endings ---------------------------------------------------------------------------


async def test_e1_ftps_data_closed_without_close_notify(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = make_scripted_ftp(
        tls=True, files={"/data/a.bin": A_BIN, "/data/empty.bin": b""}, close_notify=False
    )
    results = await copy(
        local,
        {"partner": server},
        [download("/data/a.bin", "out/a.bin"), download("/data/empty.bin", "out/empty.bin")],
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE, COMPLETED_ONCE], results
    assert (local / "out" / "a.bin").read_bytes() == A_BIN
    assert (local / "out" / "empty.bin").read_bytes() == b""


async def test_empty_file_whose_data_connection_never_starts_tls(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """Kind E: the server closes an empty file's data connection without any TLS at all."""
    server = make_scripted_ftp(
        tls=True, files={"/data/empty.bin": b"", "/data/a.bin": A_BIN}, empty_without_tls=True
    )
    results = await copy(
        local,
        {"partner": server},
        [download("/data/empty.bin", "out/empty.bin"), download("/data/a.bin", "out/a.bin")],
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE, COMPLETED_ONCE], results
    assert (local / "out" / "empty.bin").read_bytes() == b""
    assert (local / "out" / "a.bin").read_bytes() == A_BIN


async def test_ragged_tls_end_checked_against_size_when_150_names_none(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = make_scripted_ftp(
        tls=True,
        files={"/data/a.bin": A_BIN},
        close_notify=False,
        transfer_replies={"RETR": ("150 Opening data connection.", "226 Transfer complete.")},
    )
    results = await copy(local, {"partner": server}, [download("/data/a.bin", "out/a.bin")])
    assert outcome(results["dl /data/a.bin"]) == COMPLETED_ONCE
    assert (local / "out" / "a.bin").read_bytes() == A_BIN
    assert commands(server, "SIZE") == ["SIZE /data/a.bin"]


@pytest.mark.parametrize(
    "options",
    [
        {"data_limit": 100_000},
        {"data_limit": 100_000, "transfer_replies": {"RETR": ("150 Go.", "226 Done.")}},
        {
            "transfer_replies": {"RETR": ("150 Go.", "226 Done.")},
            "rules": [Rule(r"SIZE .*", "550 SIZE not allowed.")],
        },
        {"transfer_replies": {"RETR": ("150 Go ({size} bytes).", "")}},
    ],
    ids=["short-count", "short-count-by-size", "unverifiable", "no-final-reply"],
)
async def test_ragged_tls_end_that_cannot_be_trusted_is_still_an_error(
    make_scripted_ftp: MakeScripted, local: Path, options: dict[str, Any]
) -> None:
    server = make_scripted_ftp(
        tls=True, files={"/data/a.bin": A_BIN}, close_notify=False, **options
    )
    results = await copy(
        local, {"partner": server}, [download("/data/a.bin", "out/a.bin", retry_count=0)]
    )
    assert outcome(results["dl /data/a.bin"]) == ("failed", "TLS_ERROR", 1)
    assert "close_notify" in results["dl /data/a.bin"]["error_message"]
    assert not (local / "out" / "a.bin").exists()


# --- F. Pooled sessions -----------------------------------------------------------------------


@pytest.mark.vsftpd
async def test_f1_vsftpd_closed_an_idle_pooled_session(
    make_vsftpd: Callable[..., FTPServer],
    ftp_root: Path,
    make_scripted_ftp: MakeScripted,
    local: Path,
) -> None:
    for name in ("one", "two", "three"):
        (ftp_root / f"{name}.bin").write_bytes(A_BIN)
    partner = make_vsftpd(extra_config={"idle_session_timeout": 3})
    slow = make_scripted_ftp(files={"/slow.bin": UP_BIN}, rules=[Rule(r"RETR .*", delay=4.5)])
    started = time.monotonic()
    results = await copy(
        local,
        {"partner": partner, "other": slow},
        [
            download("/one.bin", "out/one.bin"),
            download("/slow.bin", "out/slow.bin", conn="other"),
            download("/two.bin", "out/two.bin", retry_count=0),
            download("/three.bin", "out/three.bin"),
        ],
        timeouts=Timeouts(connect=5.0, reply=10.0, data_stall=10.0),  # the slow RETR
    )
    assert time.monotonic() - started > 4.5
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 4, results
    for name in ("one", "two", "three"):
        assert (local / "out" / f"{name}.bin").read_bytes() == A_BIN


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "ftps"])
@pytest.mark.parametrize(
    "behaviour",
    [
        {"idle_timeout": 0.5},
        {"idle_timeout": 0.5, "idle_timeout_reply": None},
        {"lazy_idle_timeout": 0.5},
        {"rules": [Rule(r"EPSV", times=1), Rule(r"EPSV", lambda s, m: s.close(), times=1)]},
    ],
    ids=["421-then-close", "close-without-a-word", "421-at-next-command", "eof-at-second-epsv"],
)
async def test_session_the_server_closed_is_replaced_without_spending_an_attempt(
    make_scripted_ftp: MakeScripted, local: Path, behaviour: dict[str, Any], tls: bool
) -> None:
    """Kind F, found at checkout (no round trip) or at the first command after it."""
    partner = make_scripted_ftp(files={"/a.bin": A_BIN, "/b.bin": A_BIN}, tls=tls, **behaviour)
    slow = make_scripted_ftp(files={"/slow.bin": UP_BIN}, rules=[Rule(r"RETR .*", delay=1.0)])
    results = await copy(
        local,
        {"partner": partner, "other": slow},
        [
            download("/a.bin", "out/a.bin"),
            download("/slow.bin", "out/slow.bin", conn="other"),
            download("/b.bin", "out/b.bin", retry_count=0),
        ],
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 3, results
    assert (local / "out" / "b.bin").read_bytes() == A_BIN
    assert partner.sessions == 2


async def test_a_reply_to_an_earlier_command_never_reaches_the_next_task(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """#11 item 3: a server answering one command twice; the session is drained, never shifted."""
    files = {f"/f{i}.bin": os.urandom(5_000 + i) for i in range(4)}

    def size_twice(s: Any, m: Any) -> str:  # both replies in one write, as pyftpdlib does
        return f"213 {len(s.server.files[m['p']])}\n500 Command too long."

    server = make_scripted_ftp(
        files=files,
        rules=[Rule(r"SIZE (?P<p>.*)", size_twice)],
        transfer_replies={"RETR": ("150 Opening data connection.", "226 Transfer complete.")},
    )
    results = await copy(
        local,
        {"partner": server},
        [download(p, f"out/f{i}.bin", verify_size=True) for i, p in enumerate(files)],
        limits=PoolLimits(max_sessions_per_connection=1),
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 4, results
    # The first download sends SIZE with EPSV (pipelining auto): the doubled reply to
    # SIZE answers the EPSV, so pipelining stops and that task runs once more on a
    # fresh session without spending an attempt; one EPSV per file after that.
    assert len(commands(server, "EPSV")) == 5 and not commands(server, "PASV")


async def test_overlong_path_is_refused_and_the_pooled_session_stays_in_step(
    make_pyftpd: Callable[..., FTPServer], ftp_root: Path, local: Path
) -> None:
    """#11 item 3 with pyftpdlib: over-long paths, then valid tasks on the same session.

    A 10,000-character path is over the task contract's limit (INVALID_MESSAGE);
    a 3,000-character one passes the contract but not the command-line bound
    (PATH_NOT_ALLOWED while planning). Neither reaches the server.
    """
    for i in range(6):
        (ftp_root / f"ok{i}.bin").write_bytes(A_BIN[: 1000 + i])
    server = make_pyftpd()
    expected = {"10000": "INVALID_MESSAGE", "3000": "PATH_NOT_ALLOWED"}
    tasks: list[dict[str, Any]] = []
    for i in range(3):
        for length in expected:
            long_path = "/" + "x" * int(length)
            tasks.append(
                {**download(long_path, f"out/long{i}.bin"), "task_id": f"long-{length}-dl-{i}"}
            )
            tasks.append({**upload("in/up.bin", long_path), "task_id": f"long-{length}-ul-{i}"})
        tasks.append(download(f"/ok{i}.bin", f"out/ok{i}.bin"))
        tasks.append(upload("in/up.bin", f"/up{i}.bin"))
    results = await copy(
        local, {"partner": server}, tasks, limits=PoolLimits(max_sessions_per_connection=1)
    )
    for task_id, result in results.items():
        if task_id.startswith("long-"):
            # refused before any session is borrowed: no attempt made
            code = expected[task_id.split("-")[1]]
            assert outcome(result) == ("failed", code, 0), result
            assert "x" * 50 not in result["error_message"]
        else:
            assert outcome(result) == COMPLETED_ONCE, result
    assert server.connection_count() <= 1


async def test_overlong_command_is_refused_by_the_session_and_leaves_it_usable(
    make_pyftpd: Callable[..., FTPServer],
) -> None:
    """Below the engine: a command line too long for servers never reaches the wire."""
    from ftp_pooler.errors import FTPError

    session = await SessionFactory(config_for(make_pyftpd())).open()
    try:
        for _ in range(3):
            with pytest.raises(FTPError) as caught:
                await session.size("/" + "x" * 10_000)
            assert caught.value.code.value == "PATH_NOT_ALLOWED"
            assert not session.broken
            await session.noop()
        assert await session.pwd() == "/"
    finally:
        await session.aclose()


async def test_command_line_too_long_for_the_server_leaves_the_session_in_step(
    make_pyftpd: Callable[..., FTPServer], ftp_root: Path, local: Path
) -> None:
    """A path under the task limit whose command line still exceeds it (MFMT + temp name)."""
    from ftp_pooler.ftp.protocol import MAX_PATH_BYTES

    (ftp_root / "ok.bin").write_bytes(A_BIN[:5000])
    server = make_pyftpd()
    near = "/" + "/".join(["y" * 199] * (MAX_PATH_BYTES // 200)) + "/z.bin"
    assert MAX_PATH_BYTES - 200 < len(near) <= MAX_PATH_BYTES
    results = await copy(
        local,
        {"partner": server},
        [
            {**upload("in/up.bin", near, preserve_mtime=True), "task_id": "near"},
            download("/ok.bin", "out/ok.bin"),
        ],
        limits=PoolLimits(max_sessions_per_connection=1),
    )
    assert outcome(results["near"]) == COMPLETED_ONCE, results["near"]
    assert (ftp_root / near.lstrip("/")).read_bytes() == UP_BIN
    assert outcome(results["dl /ok.bin"]) == COMPLETED_ONCE


# --- G. Sizes announced in text -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["/data/invoice (5 bytes).csv", "/data/(1 bytes) (2 bytes).bin", "/data/report (12 Bytes).txt"],
)
async def test_g1_size_is_the_last_bytes_group(
    make_scripted_ftp: MakeScripted, local: Path, name: str
) -> None:
    payload = os.urandom(200_000)
    server = make_scripted_ftp(files={name: payload})
    results = await copy(local, {"partner": server}, [download(name, "out/file")])
    assert outcome(results[f"dl {name}"]) == COMPLETED_ONCE
    assert (local / "out" / "file").read_bytes() == payload
    assert len(commands(server, "RETR")) == 1


@pytest.mark.parametrize(
    ("name", "preliminary"),
    [
        ("/data/invoice (5 bytes).csv", "150 Opening BINARY mode data connection for {path}."),
        ("/data/invoice (5 bytes).csv", "150 Sending invoice (5 bytes).csv now."),
        ("/data/a (7 bytes).bin", "150 Opening data connection for a (7 bytes).bin ({size} bytes)"),
    ],
)
async def test_size_in_the_name_when_the_150_names_no_size_of_its_own(
    make_scripted_ftp: MakeScripted, local: Path, name: str, preliminary: str
) -> None:
    """Kind G, the other way round: the only ``(N bytes)`` belongs to the name (or its basename)."""
    payload = os.urandom(200_000)
    server = make_scripted_ftp(
        files={name: payload},
        transfer_replies={"RETR": (preliminary, "226 Transfer complete.")},
    )
    results = await copy(local, {"partner": server}, [download(name, "out/file")])
    assert outcome(results[f"dl {name}"]) == COMPLETED_ONCE
    assert (local / "out" / "file").read_bytes() == payload
    assert len(commands(server, "RETR")) == 1


async def test_announced_size_that_disagrees_is_checked_with_size_before_failing(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """A 150 whose text misleads (a size of something else): SIZE has the last word."""
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN},
        transfer_replies={"RETR": ("150 Quota left (12 bytes). Sending.", "226 Done.")},
    )
    results = await copy(local, {"partner": server}, [download("/data/a.bin", "out/a.bin")])
    assert outcome(results["dl /data/a.bin"]) == COMPLETED_ONCE
    assert commands(server, "SIZE") == ["SIZE /data/a.bin"]
    assert len(commands(server, "RETR")) == 1


async def test_download_stops_reading_past_the_announced_size(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """tester2: SIZE and the 150 both say 1000 bytes and the server keeps sending (a
    device streaming, a broken or hostile server): the attempt stops as soon as more
    arrived than announced, instead of writing all of it (200 MB in a manual run) to the
    temporary file first. The session is not reused, the temporary file is gone."""
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
        files={"/data/a.bin": b"x" * 1000, "/data/b.bin": A_BIN},
        rules=[Rule(r"SIZE /data/a\.bin", "213 1000"), Rule(r"RETR /data/a\.bin", stream)],
    )
    tasks = [
        download("/data/a.bin", "out/a.bin", retry_count=0),
        download("/data/b.bin", "out/b.bin"),
    ]
    results = await copy(local, {"partner": server}, tasks)
    assert outcome(results["dl /data/a.bin"]) == ("failed", "SIZE_MISMATCH", 1)
    assert sent and max(sent) < limit, f"the server got to send {sent} bytes"
    assert outcome(results["dl /data/b.bin"]) == COMPLETED_ONCE
    assert [p.name for p in (local / "out").iterdir()] == ["b.bin"], "no temporary file left"
    assert server.sessions == 2, "the session that stopped reading is not reused"


async def test_truncated_download_is_still_a_size_mismatch(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = make_scripted_ftp(files={"/data/a.bin": A_BIN}, data_limit=1000)
    results = await copy(
        local, {"partner": server}, [download("/data/a.bin", "out/a.bin", retry_count=0)]
    )
    assert outcome(results["dl /data/a.bin"]) == ("failed", "SIZE_MISMATCH", 1)
    assert not (local / "out" / "a.bin").exists()


# --- Retries that cannot help -------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        Rule(r"RETR .*", "226 Transfer complete."),
        Rule(r"TYPE I", "331 What?"),
        Rule(r"PWD", "257 no quotes here"),
    ],
    ids=["226-without-data", "3xx-to-type", "unparsable-257"],
)
async def test_a_protocol_error_that_repeats_is_tried_twice_then_not_retryable(
    make_scripted_ftp: MakeScripted, local: Path, rule: Rule
) -> None:
    server = make_scripted_ftp(files={"/data/a.bin": A_BIN}, rules=[rule])
    task = (
        upload("in/up.bin", "/new/up.bin", retry_count=5)
        if rule.pattern == "PWD"
        else download("/data/a.bin", "out/a.bin", retry_count=5)
    )
    if rule.pattern == "PWD":  # makedirs checks with PWD/CWD when MKD fails
        server.rules.append(Rule(r"MKD .*", "550 Create directory operation failed."))
    quick = Timeouts(connect=5.0, reply=0.5, data_stall=5.0)  # 3xx-to-type waits it out
    [result] = (await copy(local, {"partner": server}, [task], timeouts=quick)).values()
    assert outcome(result) == ("failed", "PROTOCOL_ERROR", 2), result
    assert result["retryable"] is False
    reply_text = rule.reply if isinstance(rule.reply, str) else ""
    assert reply_text in result["error_message"]
    if rule.pattern == "PWD":
        # One whole reply whose path cannot be read: the session stays in step (H1).
        assert server.sessions == 1, "the session was kept for the second try"
    else:
        assert server.sessions >= 2, "the second try ran on a fresh session"


# --- #11 item 7: the password never leaves in an error ----------------------------------------


@pytest.mark.parametrize(
    "echo",
    [
        "530 Login incorrect for password {pw}",
        "530-Login incorrect.\n530-You sent: PASS {pw}\n530 Bye.",
        "421 Too many failures for {pw}; closing.",
    ],
)
async def test_password_echoed_by_the_server_is_scrubbed(
    make_scripted_ftp: MakeScripted, local: Path, echo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    password = "Sup3r-S3cret-pw"
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN}, password=password, rules=[Rule(r"PASS (?P<pw>.*)", echo)]
    )
    results = await copy(
        local, {"partner": server}, [download("/data/a.bin", "out/a.bin", retry_count=1)]
    )
    [result] = results.values()
    assert result["status"] == "failed"
    assert password not in json.dumps(result)
    # The reply to PASS keeps its code, never its text (M1).
    assert result["error_message"].startswith(f"PASS: {echo[:3]} login refused")
    captured = capsys.readouterr()
    assert password not in captured.out + captured.err
    assert f"PASS {password}" in server.commands, "the server really got (and echoed) it"


async def test_password_is_scrubbed_from_the_error_object(make_scripted_ftp: MakeScripted) -> None:
    from ftp_pooler.errors import FTPError

    password = "another-Secret-9"
    server = make_scripted_ftp(
        password=password, rules=[Rule(r"PASS (?P<pw>.*)", "530 Bad password {pw}")]
    )
    factory = SessionFactory(config_for(server))
    with pytest.raises(FTPError) as caught:
        await factory.open()
    error = caught.value
    assert error.code.value == "AUTH_FAILED"
    for text in (str(error), repr(error), error.message, str(error.reply)):
        assert password not in text
    assert error.reply is not None and password not in "".join(error.reply.lines)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "ftps"])
async def test_scripted_server_round_trip(make_scripted_ftp: MakeScripted, tls: bool) -> None:
    """The fixture itself: the built-in server moves bytes both ways, plain and FTPS."""
    server = make_scripted_ftp(tls=tls, files={"/a": b"hello"})
    chunks: list[bytes] = []

    async def sink(chunk: bytes | bytearray | memoryview) -> None:
        chunks.append(bytes(chunk))

    async def source() -> Any:
        yield b"world"

    session = await SessionFactory(config_for(server)).open()
    try:
        await session.retrieve("/a", sink)
        await session.store("/b", source())
    finally:
        await session.aclose()
    assert b"".join(chunks) == b"hello"
    assert server.files["/b"] == b"world"
    assert server.commands[:2] == ["AUTH TLS", "USER user"] if tls else ["USER user", "PASS secret"]


# --- Property: unasked replies never shift a session's answers ----------------------------------

UNASKED_REPLIES = ["226 Transfer complete.", "230 Already logged in.", "225 Data connection open."]
ANSWERS: dict[str, tuple[str, Any]] = {
    "NOOP": ("200 NOOP ok.", None),
    "CWD": ("250 Directory successfully changed.", None),
    "SIZE": ("213 4096", 4096),
    "MDTM": ("213 20210102030405", MTIME),
    "PWD": ('257 "/home/x" is the current directory', "/home/x"),
}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(ANSWERS)),
            st.lists(st.tuples(st.sampled_from(UNASKED_REPLIES), st.booleans()), max_size=2),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_unasked_replies_never_shift_the_sessions_answers(
    dialogue: list[tuple[str, list[tuple[str, bool]]]],
) -> None:
    """Unasked replies sent before a command arrives or after it (before its answer):
    every command still gets its own answer, over a real socket pair."""
    from ftp_pooler.ftp.session import FTPSession, ServerQuirks

    async def main() -> None:
        client_sock, server_sock = trio.socket.socketpair()
        server = trio.SocketStream(server_sock)
        session = FTPSession(FTPConfig(host="127.0.0.1", timeouts=TIMEOUTS), None, ServerQuirks())
        session._tcp = session._stream = trio.SocketStream(client_sock)

        async def serve() -> None:
            buffer = b""
            for _verb, extras in dialogue:
                await server.send_all(
                    b"".join(f"{r}\r\n".encode() for r, after in extras if not after)
                )
                while b"\n" not in buffer:
                    buffer += await server.receive_some(4096)
                line, _, buffer = buffer.partition(b"\n")
                verb = line.split()[0].decode()
                late = b"".join(f"{r}\r\n".encode() for r, after in extras if after)
                await server.send_all(late + f"{ANSWERS[verb][0]}\r\n".encode())

        calls = {
            "NOOP": session.noop,
            "CWD": lambda: session.cwd("/d"),
            "SIZE": lambda: session.size("/f"),
            "MDTM": lambda: session.mdtm("/f"),
            "PWD": session.pwd,
        }
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            for verb, _extras in dialogue:
                assert await calls[verb]() == ANSWERS[verb][1]
        assert not session.broken
        await server.aclose()
        await session._stream.aclose()

    trio.run(main)


# --- Tester findings (FINDINGS.md, 2026-11-30) ---------------------------------------------------


def sized(fmt: str) -> Callable[[Any, Any], str]:
    """A SIZE answer in ``fmt`` (``{n}``: the file's size) for files the server has."""

    def answer(s: Any, m: Any) -> str:
        data = s.server.files.get(m["p"])
        return fmt.format(n=len(data)) if data is not None else "550 No such file."

    return answer


@pytest.mark.parametrize(
    "fmt",
    ["213 {n} bytes", "213 garbage", "213-Size follows\n213 {n}", "213-File status\n213 End"],
    ids=["n-bytes", "garbage", "multi-line", "multi-line-no-size"],
)
async def test_h1_upload_with_a_size_reply_we_cannot_read_completes(
    make_scripted_ftp: MakeScripted, local: Path, fmt: str
) -> None:
    """H1: a whole 213 whose size does not parse leaves the session in step; the
    upload completes on its first attempt, on one session, uploaded once."""
    server = make_scripted_ftp(rules=[Rule(r"SIZE (?P<p>.*)", sized(fmt))])
    results = await copy(
        local,
        {"partner": server},
        [upload("in/up.bin", "/data/up.bin"), upload("in/up.bin", "/data/again.bin")],
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 2, results
    assert server.files["/data/up.bin"] == server.files["/data/again.bin"] == UP_BIN
    assert len(commands(server, "STOR")) == 2
    assert server.sessions == 1, "the session stayed in step and was reused"


@pytest.mark.parametrize("fmt", ["213 5 bytes", "213-Size follows\n213 5"])
async def test_h1_a_size_read_from_words_or_lines_is_still_checked(
    make_scripted_ftp: MakeScripted, local: Path, fmt: str
) -> None:
    server = make_scripted_ftp(rules=[Rule(r"SIZE .*", fmt)])
    results = await copy(local, {"partner": server}, [upload("in/up.bin", "/data/up.bin")])
    assert outcome(results["ul /data/up.bin"]) == ("failed", "SIZE_MISMATCH", 4)
    assert "the server stored 5" in results["ul /data/up.bin"]["error_message"]


async def test_h1_an_unreadable_size_still_says_the_file_exists(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """``if_exists: skip``: SIZE answered with a 2xx means the file is there."""
    server = make_scripted_ftp(
        files={"/data/there.bin": b"old"}, rules=[Rule(r"SIZE (?P<p>.*)", sized("213 garbage"))]
    )
    results = await copy(
        local,
        {"partner": server},
        [
            upload("in/up.bin", "/data/there.bin", if_exists="skip"),
            upload("in/up.bin", "/data/new.bin", if_exists="skip"),
        ],
    )
    assert outcome(results["ul /data/there.bin"]) == ("skipped", None, 1)
    assert outcome(results["ul /data/new.bin"]) == COMPLETED_ONCE
    assert server.files["/data/there.bin"] == b"old"
    assert server.files["/data/new.bin"] == UP_BIN


def logs_out(s: Any, m: Any) -> str:
    """A server whose login expired (a re-authentication timeout): it answers 530."""
    s.logged_in = False
    return "530 Please log in again."


@pytest.mark.parametrize("verb", ["EPSV", "RETR .*", "MDTM .*"])
async def test_h2_session_the_server_logged_out_is_never_reused(
    make_scripted_ftp: MakeScripted, local: Path, verb: str
) -> None:
    """H2: a 530 after the login closes the session; the task meeting it before a
    transfer began runs again on a fresh session without spending an attempt (one
    meeting it at MDTM, after the bytes, completes without the time); a 530 to EPSV
    is no EPSV refusal."""
    files = {f"/f{i}.bin": os.urandom(3000 + i) for i in range(4)}
    server = make_scripted_ftp(
        files=files, rules=[Rule(verb, times=1), Rule(verb, logs_out, times=1)]
    )
    results = await copy(
        local,
        {"partner": server},
        [
            download(p, f"out/f{i}.bin", retry_count=0, preserve_mtime=True)
            for i, p in enumerate(files)
        ],
        limits=PoolLimits(max_sessions_per_connection=1),
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 4, results
    for i, (_, data) in enumerate(files.items()):
        assert (local / "out" / f"f{i}.bin").read_bytes() == data
    assert server.sessions == 2
    assert not commands(server, "PASV"), "EPSV stays in use"


@pytest.mark.parametrize("verb", ["MKD .*", "STOR .*", "SIZE /d2/up.bin"])
async def test_h2_upload_meeting_a_530_before_its_stor_began_gets_a_fresh_session(
    make_scripted_ftp: MakeScripted, local: Path, verb: str
) -> None:
    """H2 on the upload path: the existence check (SIZE), ``mkdir -p`` (MKD) or the
    STOR itself answered 530: a fresh session, no attempt spent."""
    server = make_scripted_ftp(rules=[Rule(verb, times=0 if "d2" in verb else 1)])
    server.rules.append(Rule(verb, logs_out, times=1))
    results = await copy(
        local,
        {"partner": server},
        [
            upload("in/up.bin", "/d1/up.bin", if_exists="skip"),
            upload("in/up.bin", "/d2/up.bin", if_exists="skip", retry_count=0),
        ],
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 2, results
    assert server.files["/d1/up.bin"] == server.files["/d2/up.bin"] == UP_BIN
    assert server.sessions == 2


async def test_h2_mkdir_p_stops_at_a_530_on_a_fresh_session(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """``mkdir -p`` goes on past a refused MKD, but not past one that ended the session."""
    server = make_scripted_ftp(rules=[Rule(r"MKD .*", logs_out, times=1)])
    results = await copy(
        local, {"partner": server}, [upload("in/up.bin", "/d1/d2/up.bin", retry_count=0)]
    )
    assert outcome(results["ul /d1/d2/up.bin"]) == COMPLETED_ONCE
    assert server.files["/d1/d2/up.bin"] == UP_BIN
    assert server.sessions == 2


async def test_h2_a_530_after_the_stor_spends_an_attempt_but_is_retried(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """After the bytes moved a 530 is no longer stale; still AUTH_FAILED, but retryable:
    the login worked, the server dropped it."""
    server = make_scripted_ftp(rules=[Rule(r"RNFR .*", logs_out, times=1)])
    results = await copy(
        local, {"partner": server}, [upload("in/up.bin", "/data/up.bin", retry_count=1)]
    )
    assert outcome(results["ul /data/up.bin"]) == ("completed", None, 2)
    assert sorted(server.files) == ["/data/up.bin"], "the first temporary file was removed"
    assert server.sessions == 2


async def test_h2_530_on_a_fresh_session_gets_another_one(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """FINDINGS D-530: the first RETR of a new session answered ``530 Not logged in.``"""
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN}, rules=[Rule(r"RETR .*", "530 Not logged in.", times=1)]
    )
    results = await copy(
        local, {"partner": server}, [download("/data/a.bin", "out/a.bin", retry_count=0)]
    )
    assert outcome(results["dl /data/a.bin"]) == COMPLETED_ONCE
    assert server.sessions == 2


async def test_h2_a_530_that_never_ends_fails_after_a_bounded_number_of_sessions(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    from ftp_pooler.transfer.engine import MAX_STALE_SESSIONS

    server = make_scripted_ftp(files={"/data/a.bin": A_BIN}, rules=[Rule(r"RETR .*", logs_out)])
    results = await copy(
        local, {"partner": server}, [download("/data/a.bin", "out/a.bin", retry_count=1)]
    )
    assert outcome(results["dl /data/a.bin"]) == ("failed", "AUTH_FAILED", 2)
    assert results["dl /data/a.bin"]["retryable"] is True
    assert server.sessions == MAX_STALE_SESSIONS + 2


@pytest.mark.parametrize("direction", ["download", "upload"])
async def test_m4_pooled_session_closed_at_the_transfer_command_is_stale(
    make_scripted_ftp: MakeScripted, local: Path, direction: str
) -> None:
    """M4: a reused session closed with no reply at RETR/STOR, nothing moved: a fresh
    session, no attempt spent (``retry_count: 0`` still completes)."""
    verb = "RETR" if direction == "download" else "STOR"
    server = make_scripted_ftp(
        files={"/a.bin": A_BIN, "/b.bin": A_BIN},
        rules=[Rule(rf"{verb} .*", times=1), Rule(rf"{verb} .*", lambda s, m: s.close(), times=1)],
    )
    if direction == "download":
        tasks = [download("/a.bin", "out/a.bin"), download("/b.bin", "out/b.bin", retry_count=0)]
    else:
        tasks = [upload("in/up.bin", "/u1.bin"), upload("in/up.bin", "/u2.bin", retry_count=0)]
    results = await copy(local, {"partner": server}, tasks)
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 2, results
    assert server.sessions == 2


async def test_m4_a_session_closed_after_the_transfer_began_spends_an_attempt(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """The other side of M4's line: after the 150, bytes may have moved: not stale."""

    def start_then_close(s: Any, m: Any) -> None:
        s.send("150 Opening BINARY mode data connection.")
        s.close()

    server = make_scripted_ftp(
        files={"/a.bin": A_BIN, "/b.bin": A_BIN},
        rules=[Rule(r"RETR .*", times=1), Rule(r"RETR .*", start_then_close, times=1)],
    )
    results = await copy(
        local,
        {"partner": server},
        [download("/a.bin", "out/a.bin"), download("/b.bin", "out/b.bin", retry_count=0)],
        pipelining="off",  # pipelined, RETR goes out with EPSV: the close beats our data connection
    )
    assert outcome(results["dl /b.bin"]) == ("failed", "CONNECTION_ERROR", 1)


async def test_m4_black_holed_pooled_session_is_a_timeout_and_a_retry(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """Documented decision (docs/ftp-client.md, "The pool"): a pooled session that
    stops answering is not told from a slow server without waiting the reply
    timeout; it is a TIMEOUT, the attempt counts, the retry runs on a new session."""
    server = make_scripted_ftp(
        files={"/a.bin": A_BIN, "/b.bin": A_BIN},
        rules=[Rule(r"EPSV", times=1), Rule(r"EPSV", lambda s, m: None, times=1)],
    )
    quick = Timeouts(connect=5.0, reply=0.5, data_stall=5.0)
    results = await copy(
        local,
        {"partner": server},
        [download("/a.bin", "out/a.bin"), download("/b.bin", "out/b.bin", retry_count=1)],
        timeouts=quick,
    )
    assert outcome(results["dl /b.bin"]) == ("completed", None, 2)
    assert server.sessions == 2


DOT_NAMES = r"STOR (?P<p>(?:.*/)?\.[^/]*)"
"""A STOR of a name starting with a dot (the hidden temporary name)."""


async def test_h3_server_refusing_dot_files_gets_the_visible_temporary_name(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """H3 (pure-ftpd -x wording): the hidden name refused once, then the visible form,
    remembered for the server."""
    server = make_scripted_ftp(rules=[Rule(DOT_NAMES, "553 Prohibited file name: {p}")])
    results = await copy(
        local,
        {"partner": server},
        [upload("in/up.bin", "/data/up.bin"), upload("in/up.bin", "/data/two.bin")],
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 2, results
    assert server.files["/data/up.bin"] == server.files["/data/two.bin"] == UP_BIN
    assert sorted(server.files) == ["/data/two.bin", "/data/up.bin"], "no temporary file left"
    stors = commands(server, "STOR")
    assert len(stors) == 3 and "/data/.up.bin." in stors[0]
    assert stors[1].startswith("STOR /data/up.bin.") and stors[1].endswith(".part")
    assert stors[2].startswith("STOR /data/two.bin."), "the server's refusal is remembered"


async def test_h3_a_directory_refusing_every_name_fails_naming_the_path(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = make_scripted_ftp(rules=[Rule(r"STOR .*", "550 Permission denied.")])
    results = await copy(
        local,
        {"partner": server},
        [upload("in/up.bin", "/data/up.bin"), upload("in/up.bin", "/data/two.bin")],
    )
    for name in ("up", "two"):
        result = results[f"ul /data/{name}.bin"]
        assert outcome(result) == ("failed", "PERMISSION_DENIED", 1)
        assert f"(path: /data/{name}.bin." in result["error_message"]
    stors = commands(server, "STOR")
    assert any("/data/.two.bin." in c for c in stors), "a refusal of both names teaches nothing"


@pytest.mark.parametrize("form", ["visible", "none"])
async def test_h3_upload_temp_setting(
    make_scripted_ftp: MakeScripted, local: Path, form: str
) -> None:
    server = make_scripted_ftp(files={"/data/up.bin": b"old"})
    results = await copy(
        local, {"partner": server}, [upload("in/up.bin", "/data/up.bin")], upload_temp=form
    )
    assert outcome(results["ul /data/up.bin"]) == COMPLETED_ONCE
    assert sorted(server.files) == ["/data/up.bin"] and server.files["/data/up.bin"] == UP_BIN
    [stor] = commands(server, "STOR")
    if form == "none":
        assert stor == "STOR /data/up.bin" and not commands(server, "RNFR")
    else:
        assert stor.startswith("STOR /data/up.bin.") and commands(server, "RNTO")


async def test_h3_upload_temp_none_deletes_its_partial_file_but_never_a_file_it_did_not_touch(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    refused = make_scripted_ftp(
        files={"/data/up.bin": b"old"}, rules=[Rule(r"STOR .*", "553 Could not create file.")]
    )
    aborted = make_scripted_ftp(
        transfer_replies={"STOR": ("150 Ok to send data.", "451 Aborted: disk error.")}
    )
    results = await copy(
        local,
        {"refused": refused, "aborted": aborted},
        [
            upload("in/up.bin", "/data/up.bin", conn="refused", retry_count=0),
            {**upload("in/up.bin", "/data/up.bin", conn="aborted", retry_count=0), "task_id": "ab"},
        ],
        upload_temp="none",
    )
    assert outcome(results["ul /data/up.bin"]) == ("failed", "PERMISSION_DENIED", 1)
    assert refused.files["/data/up.bin"] == b"old" and not commands(refused, "DELE")
    assert outcome(results["ab"]) == ("failed", "TRANSIENT", 1)
    assert commands(aborted, "DELE") == ["DELE /data/up.bin"]
    assert "/data/up.bin" not in aborted.files


@pytest.mark.parametrize("flag", ["-x", "-X"])
async def test_h3_pureftpd_refusing_dot_files(
    make_pureftpd: Callable[..., FTPServer], ftp_root: Path, local: Path, flag: str
) -> None:
    """Real pure-ftpd: ``-x`` forbids writing dot-files, ``-X`` any access to them."""
    server = make_pureftpd(extra_args=[flag])
    results = await copy(
        local,
        {"partner": server},
        [upload("in/up.bin", "/up.bin"), upload("in/up.bin", "/sub/two.bin", preserve_mtime=True)],
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 2, results
    assert (ftp_root / "up.bin").read_bytes() == (ftp_root / "sub" / "two.bin").read_bytes()
    assert (ftp_root / "up.bin").read_bytes() == UP_BIN
    assert sorted(p.name for p in ftp_root.rglob("*") if p.is_file()) == ["two.bin", "up.bin"]


@pytest.mark.vsftpd
@pytest.mark.parametrize("form", ["hidden", "none"])
async def test_h3_vsftpd_deny_file_dot_names(
    make_vsftpd: Callable[..., FTPServer], ftp_root: Path, local: Path, form: str
) -> None:
    """Real vsftpd with ``deny_file={.*}``: by fallback (default) or by setting."""
    server = make_vsftpd(extra_config={"deny_file": "{.*}"})
    results = await copy(
        local,
        {"partner": server},
        [upload("in/up.bin", "/up.bin"), upload("in/up.bin", "/two.bin")],
        upload_temp=form,
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 2, results
    assert (ftp_root / "up.bin").read_bytes() == (ftp_root / "two.bin").read_bytes() == UP_BIN
    assert sorted(p.name for p in ftp_root.iterdir()) == ["two.bin", "up.bin"]


@pytest.mark.parametrize(
    ("password", "echo", "kept"),
    [
        ("s3cr3t pw/\u00fc!", lambda pw: f"530 Login incorrect for {quote(pw, safe='')}", None),
        ("hunter2secret", lambda pw: f"530 LOGIN INCORRECT FOR {pw.upper()}", None),
        ("a", lambda pw: f"530 Login incorrect for {pw}", None),
        ("hunter2secret", None, "RETR: 550 no access for user with *** (session ***)"),
        ("5", None, "RETR: 550 Failed to open file."),
        ("a", None, "RETR: 550 /data/banana.bin: Permission denied"),
    ],
    ids=["pct-echo", "upper-echo", "one-char-echo", "retr-echo", "digit-pw", "one-char"],
)
async def test_m1_m2_password_in_other_spellings_and_short_passwords(
    make_scripted_ftp: MakeScripted,
    local: Path,
    capsys: pytest.CaptureFixture[str],
    password: str,
    echo: Callable[[str], str] | None,
    kept: str | None,
) -> None:
    """M1: a PASS reply keeps its code, never its text; other replies lose every
    spelling of the password. M2: a password under 4 characters is not cut out
    of every message (``******0``)."""
    rules = (
        [Rule(r"PASS (?P<pw>.*)", lambda s, m: echo(m["pw"]))]
        if echo is not None
        else [
            Rule(
                r"RETR .*",
                {
                    "5": "550 Failed to open file.",
                    "a": "550 /data/banana.bin: Permission denied",
                }.get(
                    password,
                    f"550 no access for user with {quote(password)} (session {password.upper()})",
                ),
            )
        ]
    )
    server = make_scripted_ftp(files={"/data/banana.bin": A_BIN}, password=password, rules=rules)
    results = await copy(
        local, {"partner": server}, [download("/data/banana.bin", "out/b.bin", retry_count=0)]
    )
    [result] = results.values()
    message = result["error_message"]
    if kept is None:
        assert outcome(result) == ("failed", "AUTH_FAILED", 1)
        assert message.startswith("PASS: 530 login refused"), message
    else:
        assert message == kept
    if len(password) > 1:
        captured = capsys.readouterr()
        everything = json.dumps(result) + captured.out + captured.err
        for form in (password, quote(password, safe=""), quote(password), password.upper()):
            assert form not in everything


@pytest.mark.parametrize(
    "path",
    ["..\\..\\windows\\win.ini", "sub\\..\\..\\x.bin", "sub/..\\x", "..\\x", "a\\..", "a/../b"],
)
async def test_m10_dot_dot_between_backslashes_never_leaves_base_path(
    make_scripted_ftp: MakeScripted, local: Path, path: str
) -> None:
    """M10: Windows servers (IIS FTP) take ``\\`` as a separator too."""
    server = make_scripted_ftp(files={"/outgoing/a.bin": A_BIN})
    results = await copy(
        local,
        {"partner": server},
        [download(path, "out/x.bin"), upload("in/up.bin", path)],
        base_path="/outgoing",
    )
    for result in results.values():
        assert outcome(result) == ("failed", "PATH_NOT_ALLOWED", 0), result
    assert server.sessions == 0, "refused before any session was borrowed"


async def test_l2_auth_tls_not_understood_tries_auth_ssl(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = make_scripted_ftp(
        tls=True, files={"/data/a.bin": A_BIN}, rules=[Rule(r"AUTH TLS", "504 Unknown AUTH type.")]
    )
    results = await copy(local, {"partner": server}, [download("/data/a.bin", "out/a.bin")])
    assert outcome(results["dl /data/a.bin"]) == COMPLETED_ONCE
    assert server.commands[:2] == ["AUTH TLS", "AUTH SSL"]
    assert (local / "out" / "a.bin").read_bytes() == A_BIN


async def test_l3_pbsz_refused_still_goes_on_with_prot_p(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = make_scripted_ftp(
        tls=True, files={"/data/a.bin": A_BIN}, rules=[Rule(r"PBSZ .*", "500 PBSZ not understood.")]
    )
    results = await copy(local, {"partner": server}, [download("/data/a.bin", "out/a.bin")])
    assert outcome(results["dl /data/a.bin"]) == COMPLETED_ONCE
    assert "PROT P" in server.commands
    assert (local / "out" / "a.bin").read_bytes() == A_BIN


@pytest.mark.parametrize(
    "pasv",
    [
        "227 Entering Passive Mode (127,0,0,1,0,0)",
        "227 Entering Passive Mode (127,0,0,1,000,00000)",
    ],
)
async def test_l11_pasv_port_0_is_a_protocol_error_not_four_connection_errors(
    make_scripted_ftp: MakeScripted, local: Path, pasv: str
) -> None:
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN},
        rules=[Rule(r"EPSV", "500 EPSV not understood."), Rule(r"PASV", pasv)],
    )
    results = await copy(local, {"partner": server}, [download("/data/a.bin", "out/a.bin")])
    assert outcome(results["dl /data/a.bin"]) == ("failed", "PROTOCOL_ERROR", 2)
    assert "port 0" in results["dl /data/a.bin"]["error_message"]


async def test_m2_user_reply_loses_its_text_when_the_password_is_too_short_to_scrub(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """A 3-character password equal to the user name: USER's reply echoes it, and it is
    too short to be searched for, so that reply keeps its code only."""
    server = make_scripted_ftp(
        user="bob", password="bob", rules=[Rule(r"USER (?P<u>.*)", "530 No access for {u}.")]
    )
    results = await copy(
        local, {"partner": server}, [download("/data/a.bin", "out/a.bin", retry_count=0)]
    )
    [result] = results.values()
    assert outcome(result) == ("failed", "AUTH_FAILED", 1)
    assert result["error_message"].startswith("USER: 530 login refused"), result
    assert "bob" not in json.dumps(result)
