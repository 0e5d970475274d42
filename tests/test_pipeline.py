"""Pipelining (issue #15): commands sent together, replies paired by position, fallback.

- :class:`ReplyMatcher` (pure): every reply goes to its command, unasked
  replies are dropped, a reply to a later command is an anomaly (property tests);
- the scripted server that drops or rejects commands sent together: every task
  completes on its first attempt and the server is talked to one command at a
  time afterwards;
- the four real servers take the pipelined conversation (login in one write,
  SIZE, EPSV and RETR together, EPSV with STOR, SIZE and RNFR before RNTO);
- round trips counted from the latency proxy's transcript: at steady state a
  download costs 1 wait and an upload 3 (3 and 5 before);
- mkdir -p runs once for tasks that start together into one new directory.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from ftp_pooler.cli.batch import copy_tasks
from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.errors import ErrorCode, FTPError, PoolerError
from ftp_pooler.ftp.config import FTPConfig, Pipelining, Timeouts
from ftp_pooler.ftp.directories import RemoteDirectories
from ftp_pooler.ftp.opening import STALL_SECONDS, OpeningPolicy
from ftp_pooler.ftp.pipeline import (
    TRANSFER_ENDS,
    TRANSFER_FAILURES,
    PipelineAnomaly,
    ReplyMatcher,
    TransferEndMatcher,
)
from ftp_pooler.ftp.pool import PoolLimits, open_session_pool
from ftp_pooler.ftp.protocol import Reply, is_unsolicited
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.transfer.retry import RetryPolicy
from clients import ftp_config
from scripted_server import Rule, ScriptedFTPServer
from servers import FTPServer
from servers.latency_proxy import LatencyProxy, read_transcript, waits

MakeScripted = Callable[..., ScriptedFTPServer]
NO_WAIT = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
TIMEOUTS = Timeouts(connect=5.0, reply=1.0, data_stall=5.0)
PAYLOAD = os.urandom(70_000)
COMPLETED_ONCE = ("completed", None, 1)


def reply(code: int) -> Reply:
    return Reply(code, (f"{code} text",))


# -- the matcher (pure) ------------------------------------------------------------------

ANSWERS: dict[str, list[tuple[int, ...]]] = {
    "SIZE": [(213,), (550,)],
    "EPSV": [(229,), (227,), (500,)],
    "PASV": [(227,), (229,)],
    "RNFR": [(350,), (550,)],
    "RNTO": [(250,), (553,)],
    "TYPE": [(200,)],
    "FEAT": [(211,), (500,)],
    "USER": [(331,), (230,), (530,)],
    "PASS": [(230,), (530,)],
    "RETR": [(150, 226), (125, 250), (550,), (150, 451)],
    "STOR": [(150, 226), (553,)],
}
UNASKED = (225, 226, 230, 232, 227, 229, 331, 350)

conversations = st.lists(
    st.sampled_from(sorted(ANSWERS)).flatmap(
        lambda verb: st.tuples(st.just(verb), st.sampled_from(ANSWERS[verb]))
    ),
    min_size=1,
    max_size=6,
)


@given(conversations, st.lists(st.sampled_from(UNASKED), max_size=10), st.randoms())
def test_every_reply_goes_to_its_command_and_unasked_ones_are_dropped(
    sent: list[tuple[str, tuple[int, ...]]], extra: list[int], rng: Any
) -> None:
    matcher = ReplyMatcher()
    matcher.sent(*(verb for verb, _ in sent))
    finals: list[tuple[str, int]] = []
    dropped: list[int] = []
    for index, (verb, codes) in enumerate(sent):
        for code in codes:
            waiting = [v for v, _ in sent[index:]]
            # an unasked reply no waiting command could own, slipped in anywhere
            for unasked in [c for c in extra if all(is_unsolicited(v, reply(c)) for v in waiting)]:
                if rng.random() < 0.3:
                    answer = matcher.match(reply(unasked))
                    assert answer.verb is None and not answer.final
                    dropped.append(unasked)
            answer = matcher.match(reply(code))
            assert answer.verb == verb
            if answer.final:
                finals.append((verb, code))
    assert finals == [(verb, codes[-1]) for verb, codes in sent]
    assert matcher.waiting == ()
    assert matcher.match(reply(226)).verb is None  # nothing waiting: unasked


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        (["SIZE", "EPSV"], 229),  # SIZE dropped: EPSV's answer comes first
        (["TYPE", "PASV"], 227),
        (["SIZE", "RNFR"], 350),
        (["FEAT", "TYPE", "RETR"], 150),
        (["SIZE", "EPSV", "RETR"], 226),
    ],
)
def test_a_reply_to_a_later_command_is_an_anomaly_never_unasked(sent: list[str], code: int) -> None:
    matcher = ReplyMatcher()
    matcher.sent(*sent)
    with pytest.raises(PipelineAnomaly):
        matcher.match(reply(code))


@given(st.lists(st.sampled_from(sorted(ANSWERS)), min_size=2, max_size=6), st.data())
def test_skipping_a_command_is_caught_when_the_next_answer_belongs_to_a_later_one(
    verbs: list[str], data: st.DataObject
) -> None:
    """A reply that the oldest command cannot own but a later one can is never dropped."""
    skipped = data.draw(st.integers(0, len(verbs) - 2))
    later = verbs[skipped + 1]
    code = data.draw(st.sampled_from(ANSWERS[later]))[0]
    matcher = ReplyMatcher()
    matcher.sent(*verbs)
    for verb in verbs[:skipped]:
        for c in ANSWERS[verb][0]:
            matcher.match(reply(c))
    head = verbs[skipped]
    answer_or_error: Any
    try:
        answer_or_error = matcher.match(reply(code))
    except PipelineAnomaly as exc:
        answer_or_error = exc
    if isinstance(answer_or_error, PipelineAnomaly):
        assert is_unsolicited(head, reply(code)) or reply(code).is_preliminary
    else:
        # taken by the head: a code the head may get (a generic one, or one it owns)
        assert answer_or_error.verb in (head, None)
        assert answer_or_error.verb is None or not is_unsolicited(head, reply(code))
        if answer_or_error.verb is None:  # dropped as unasked: no waiting command owns it
            assert all(is_unsolicited(v, reply(code)) for v in verbs[skipped:])


# -- mkdir -p once per directory ----------------------------------------------------------


async def test_concurrent_makers_of_one_directory_wait_for_the_first() -> None:
    dirs = RemoteDirectories()
    made: list[str] = []

    async def make(directory: str) -> None:
        await trio.sleep(0.05)
        made.append(directory)

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(dirs.ensure, "/a/b", make)
        nursery.start_soon(dirs.ensure, "/c", make)
    assert sorted(made) == ["/a/b", "/c"]
    assert dirs.known("/a/b")
    dirs.forget("/a/b")
    await dirs.ensure("/a/b", make)
    assert made.count("/a/b") == 2


async def test_a_failed_make_is_tried_again_by_the_next_waiter() -> None:
    dirs = RemoteDirectories()
    calls: list[int] = []
    errors: list[Exception] = []

    async def make(directory: str) -> None:
        calls.append(1)
        await trio.sleep(0.05)
        if len(calls) == 1:
            raise RuntimeError("550 refused")

    async def task() -> None:
        try:
            await dirs.ensure("/d", make)
        except RuntimeError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(task)
    assert len(calls) == 2 and len(errors) == 1
    assert dirs.known("/d")


# -- the end of a transfer with SIZE written after its data (pure) ------------------------------

STOR_FINALS = st.sampled_from([226, 250, 426, 451, 452, 550, 552])
SIZE_ANSWERS = st.sampled_from([213, 550, 500, 503])
NOISE = st.lists(st.sampled_from([150, 125, 230]), max_size=2)


@given(STOR_FINALS, SIZE_ANSWERS, NOISE, NOISE)
def test_in_order_the_first_reply_ends_the_transfer_and_the_next_answers_size(
    final: int, size: int, noise_a: list[int], noise_b: list[int]
) -> None:
    """A server that runs SIZE after the transfer: 226 (or the error) first, then SIZE's."""
    end = TransferEndMatcher("STOR")
    end.sent("SIZE")
    for code in [*noise_a, final, *noise_b, size]:
        unasked = end.feed(reply(code))
        assert unasked == (code in (150, 125, 230))
    assert end.done
    result = end.result()
    assert result == end.result()
    assert result.final is not None and result.final.code == final
    assert result.anomaly is None
    assert result.early is not None and [r.code for r in result.early] == [size]


@given(st.sampled_from([213, 550, 500, 503]), st.sampled_from(sorted(TRANSFER_ENDS)))
def test_size_answered_before_the_226_is_an_anomaly_and_never_used(size: int, final: int) -> None:
    """proftpd and pyftpdlib answer SIZE during the transfer (213 with the bytes so far),
    pure-ftpd says 500 to the line it read as a would-be ABOR: then the 226 comes second."""
    end = TransferEndMatcher("STOR")
    end.sent("SIZE")
    end.feed(reply(size))
    assert not end.done
    end.feed(reply(final))
    result = end.result()
    assert result.final is not None and result.final.code == final
    assert result.early is None and result.anomaly is not None


@given(STOR_FINALS, NOISE)
def test_without_early_commands_the_first_possible_final_reply_ends_it(
    final: int, noise: list[int]
) -> None:
    end = TransferEndMatcher("STOR")
    for code in noise:
        assert end.feed(reply(code))
    assert not end.done
    assert end.feed(reply(final)) is False
    assert end.done and end.result() == end.result()
    result = end.result()
    assert result.final is not None and result.final.code == final and result.early is None
    with pytest.raises(ValueError):
        end.sent("SIZE")


@given(SIZE_ANSWERS, st.sampled_from(sorted(TRANSFER_FAILURES)), NOISE)
def test_size_answered_before_a_failed_transfer_never_takes_its_place(
    size: int, final: int, noise: list[int]
) -> None:
    """150, SIZE's answer during the transfer (550: nothing stored yet), then STOR's 451
    or 426: the failure is the transfer's, never SIZE's 550 (FILE_NOT_FOUND, not
    retried) (tester3)."""
    end = TransferEndMatcher("STOR")
    end.sent("SIZE")
    for code in [*noise, size, final]:
        end.feed(reply(code))
    assert end.done
    result = end.result()
    assert result.final is not None and result.final.code == final
    assert result.early is None and result.anomaly is not None


def test_an_unanswered_size_leaves_a_226_as_the_end_and_nothing_to_use() -> None:
    """A server that dropped SIZE: after the time runs out, the 226 still ends the STOR."""
    end = TransferEndMatcher("STOR")
    end.sent("SIZE")
    end.feed(reply(226))
    assert not end.done
    result = end.result()
    assert result.final is not None and result.final.code == 226
    assert result.early is None and result.anomaly == "no reply to SIZE"
    silent = TransferEndMatcher("STOR")
    silent.sent("SIZE")
    assert silent.result().final is None


# -- through the engine ----------------------------------------------------------------------


def config_for(server: ScriptedFTPServer | FTPServer, **overrides: Any) -> FTPConfig:
    """:func:`clients.ftp_config` with this module's timeouts."""
    return ftp_config(server, **{"timeouts": TIMEOUTS, **overrides})  # type: ignore[arg-type]


async def run_tasks(
    local: Path,
    config: FTPConfig,
    tasks: list[dict[str, Any]],
    *,
    concurrency: int = 1,
    sessions: int = 1,
) -> tuple[list[tuple[str, str | None, int]], SessionFactory]:
    """Run tasks as ``ftp-pooler copy`` does; their outcomes in order, and the factory."""
    conns = Connections(
        [FTPConnection(id="partner", ftp=config), LocalConnection(id="local", base_path=local)]
    )
    factory = SessionFactory(config)
    source = io.BytesIO(b"".join(json.dumps(t).encode() + b"\n" for t in tasks))
    results = io.BytesIO()
    limits = PoolLimits(max_sessions_per_connection=sessions)
    async with open_session_pool({"partner": factory}, limits) as pool:
        engine = TransferEngine(conns, pool, retry=NO_WAIT, worker="pipeline")
        await copy_tasks(source, results, engine, concurrency=concurrency, worker="pipeline")
    lines = {r["task_id"]: r for r in map(json.loads, results.getvalue().splitlines())}
    outcomes = [
        (r["status"], r.get("error_code"), r["attempts"])
        for r in (lines[t["task_id"]] for t in tasks)
    ]
    return outcomes, factory


def download(remote: str, local: str) -> dict[str, Any]:
    return {
        "task_id": f"dl {remote}",
        "src_id": "partner",
        "src_path": remote,
        "dst_id": "local",
        "dst_path": local,
        "options": {"verify_size": True, "retry_count": 0},
    }


def upload(local: str, remote: str) -> dict[str, Any]:
    return {
        "task_id": f"ul {remote}",
        "src_id": "local",
        "src_path": local,
        "dst_id": "partner",
        "dst_path": remote,
        "options": {"verify_size": True, "retry_count": 0},
    }


@pytest.fixture
def local(tmp_path: Path) -> Path:
    root = tmp_path / "local"
    (root / "in").mkdir(parents=True)
    (root / "in" / "up.bin").write_bytes(PAYLOAD)
    return root


TASKS = [
    download("/data/a.bin", "out/a.bin"),
    upload("in/up.bin", "/data/new/up.bin"),
    download("/data/b.bin", "out/b.bin"),
    upload("in/up.bin", "/data/new/up2.bin"),
]


def check_files(local: Path, server: ScriptedFTPServer) -> None:
    assert (local / "out" / "a.bin").read_bytes() == PAYLOAD
    assert (local / "out" / "b.bin").read_bytes() == PAYLOAD[::-1]
    assert server.files["/data/new/up.bin"] == PAYLOAD
    assert server.files["/data/new/up2.bin"] == PAYLOAD
    assert [name for name in server.files if ".part" in name] == []


def scripted(make: MakeScripted, **options: Any) -> ScriptedFTPServer:
    return make(files={"/data/a.bin": PAYLOAD, "/data/b.bin": PAYLOAD[::-1]}, **options)


async def test_pipelined_commands_go_out_together_in_order(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """A server that refuses anything sent together would refuse these: here it takes them."""
    server = scripted(make_scripted_ftp)
    outcomes, factory = await run_tasks(local, config_for(server), TASKS)
    assert outcomes == [COMPLETED_ONCE] * 4
    check_files(local, server)
    assert factory.quirks.pipelining is True
    flow = [c.split(" ", 1)[0] for c in server.commands]
    # login checked FEAT with TYPE; a download sends SIZE, EPSV and RETR together; an
    # upload EPSV and STOR, then SIZE and RNFR after its data, RNTO after that
    assert flow[:4] == ["USER", "PASS", "FEAT", "TYPE"]
    first_retr = flow.index("RETR")
    assert flow[first_retr - 2 : first_retr + 1] == ["SIZE", "EPSV", "RETR"]
    first_stor = flow.index("STOR")
    assert flow[first_stor + 1 : first_stor + 4] == ["SIZE", "RNFR", "RNTO"]


@pytest.mark.parametrize("behaviour", ["drop", "reject"])
async def test_a_server_that_drops_or_rejects_commands_sent_together_fails_no_task(
    make_scripted_ftp: MakeScripted, local: Path, behaviour: str
) -> None:
    server = scripted(make_scripted_ftp, pipelined=behaviour)
    outcomes, factory = await run_tasks(local, config_for(server), TASKS)
    assert outcomes == [COMPLETED_ONCE] * 4
    check_files(local, server)
    assert factory.quirks.pipelining is False, "remembered for the server"
    if behaviour == "drop":
        assert server.dropped == ["TYPE I"], "only the login's check was lost"
    assert server.sessions == 2, "one login checked pipelining, the next talked one at a time"


@pytest.mark.parametrize("verb", ["EPSV", "RNTO"])
async def test_a_pipelined_command_refused_after_login_reruns_the_task_on_a_fresh_session(
    make_scripted_ftp: MakeScripted, local: Path, verb: str
) -> None:
    """The login check passes (TYPE is taken), then EPSV, or RNTO sent with RNFR, is
    refused: the task runs again on a fresh session (EPSV), or RNFR and RNTO go again
    one at a time (RNTO: a refused RNTO moved nothing)."""
    server = scripted(make_scripted_ftp, pipelined="reject", pipelined_verbs={verb})
    tasks = TASKS[1:] if verb == "RNTO" else TASKS
    outcomes, factory = await run_tasks(local, config_for(server), tasks)
    assert outcomes == [COMPLETED_ONCE] * len(tasks)
    assert factory.quirks.pipelining is False
    assert server.files["/data/new/up.bin"] == PAYLOAD
    assert [name for name in server.files if ".part" in name] == []


async def test_pipelining_off_sends_every_command_alone(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = scripted(make_scripted_ftp, pipelined="reject")
    outcomes, factory = await run_tasks(local, config_for(server, pipelining=Pipelining.OFF), TASKS)
    assert outcomes == [COMPLETED_ONCE] * 4
    assert server.sessions == 1, "no pipelined login to retry"
    assert factory.quirks.pipelining is False


async def test_tasks_into_one_new_directory_make_it_once(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """Before: each of the 6 tasks that started before the first mkdir -p ended made it again."""
    server = make_scripted_ftp(rules=[Rule(r"MKD .*", None, delay=0.2)])
    tasks = [upload("in/up.bin", f"/deep/new/dir/f{i}.bin") for i in range(6)]
    outcomes, _ = await run_tasks(local, config_for(server), tasks, concurrency=6, sessions=6)
    assert outcomes == [COMPLETED_ONCE] * 6
    # one mkdir -p: the whole path at once, refused (no parent), then level by level
    made = [c for c in server.commands if c.startswith("MKD")]
    assert made == ["MKD /deep/new/dir", "MKD /deep", "MKD /deep/new", "MKD /deep/new/dir"]


# -- uploads: SIZE before the 226, RNFR with RNTO, the next EPSV with RNTO ------------------------

UPLOADS = [upload("in/up.bin", f"/data/new/up{i}.bin") for i in range(3)]


def check_uploads(server: ScriptedFTPServer) -> None:
    for i in range(len(UPLOADS)):
        assert server.files[f"/data/new/up{i}.bin"] == PAYLOAD
    assert [name for name in server.files if ".part" in name] == []


def upload_flow(server: ScriptedFTPServer) -> list[str]:
    """The verbs after the login and the directory, in order."""
    flow = [c.split(" ", 1)[0] for c in server.commands]
    return flow[len(flow) - flow[::-1].index("MKD") :]


async def test_uploads_ask_size_before_the_226_and_connect_to_the_epsv_sent_with_rnto(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """Before: EPSV, STOR, SIZE, RNFR, RNTO per file, the next EPSV only for the next STOR.
    (The 226 comes 0.2 s after the data, so SIZE goes out before it.)"""
    server = scripted(make_scripted_ftp, stor_final_delay=0.2)
    outcomes, factory = await run_tasks(local, config_for(server), UPLOADS)
    assert outcomes == [COMPLETED_ONCE] * 3
    check_uploads(server)
    assert factory.quirks.early_check and factory.quirks.spare_passive
    per_file = ["STOR", "SIZE", "RNFR", "RNTO", "EPSV"]
    assert upload_flow(server) == ["EPSV", *per_file * 3, "QUIT"]


@pytest.mark.parametrize("mode", ["answer", "refuse", "eat"])
async def test_a_server_reading_commands_during_the_transfer_gets_size_again_after_it(
    make_scripted_ftp: MakeScripted, local: Path, mode: str
) -> None:
    """SIZE answered before the 226 (550: the file is not stored yet), refused with 503,
    or eaten with a 500 (pure-ftpd): not used; SIZE and RNFR go again after the 226, and
    the server is not asked early again. No task fails."""
    server = scripted(make_scripted_ftp, during_transfer=mode)
    outcomes, factory = await run_tasks(local, config_for(server), UPLOADS)
    assert outcomes == [COMPLETED_ONCE] * 3
    check_uploads(server)
    assert factory.quirks.early_check is False, "remembered for the server"
    assert factory.quirks.pipelining is True and factory.quirks.spare_passive
    flow = upload_flow(server)
    assert flow[:7] == ["EPSV", "STOR", "SIZE", "SIZE", "RNFR", "RNTO", "EPSV"]
    assert flow[7:] == ["STOR", "SIZE", "RNFR", "RNTO", "EPSV"] * 2 + ["QUIT"]


async def test_an_upload_sends_its_data_without_waiting_for_the_150(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """A server that says 150 only once it has the whole file: the data must not wait
    for it (before: no data until the 150, which never came: TIMEOUT)."""

    def stor(session: Any, match: Any) -> str:
        conn, _ = session.passive.accept()
        session.passive.close()
        session.passive = None
        conn.settimeout(5)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        conn.close()
        session.server.files[match["path"]] = data
        return "150 Ok to send data.\n226 Transfer complete."

    server = scripted(make_scripted_ftp, rules=[Rule(r"STOR (?P<path>.*)", stor)])
    outcomes, _ = await run_tasks(local, config_for(server), UPLOADS)
    assert outcomes == [COMPLETED_ONCE] * 3
    check_uploads(server)


@pytest.mark.parametrize("listener", ["kept", "closed"])
async def test_an_upload_refused_while_its_data_is_on_the_way_fails_with_the_refusal(
    make_scripted_ftp: MakeScripted, local: Path, listener: str
) -> None:
    """The data goes out with STOR, before the 150: a refused STOR is still the task's
    error, whether the server leaves the connection unread or resets it (a closed
    listener; 8 MiB, more than the socket buffers take), and nothing is stored."""
    (local / "in" / "big.bin").write_bytes(os.urandom(8 << 20))

    def refuse(session: Any, match: Any) -> str:
        if listener == "closed":
            session.passive.close()
            session.passive = None
        return "553 Prohibited file name."

    server = scripted(make_scripted_ftp, rules=[Rule(r"STOR .*", refuse)])
    tasks = [upload("in/big.bin", f"/data/new/big{i}.bin") for i in range(2)]
    outcomes, _ = await run_tasks(local, config_for(server), tasks)
    assert outcomes == [("failed", "PERMISSION_DENIED", 1)] * 2
    assert not [name for name in server.files if name.startswith("/data/new")]


async def test_a_size_measured_too_early_is_asked_again_before_the_rename(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """In order, but the first SIZE saw a file still being written: asked again, alone."""
    early = Rule(r"SIZE /data/new/\..*\.part", "213 1", times=1)
    server = scripted(make_scripted_ftp, rules=[early], stor_final_delay=0.2)
    outcomes, factory = await run_tasks(local, config_for(server), UPLOADS)
    assert outcomes == [COMPLETED_ONCE] * 3
    check_uploads(server)
    assert factory.quirks.early_check is False
    assert upload_flow(server)[:7] == ["EPSV", "STOR", "SIZE", "SIZE", "RNFR", "RNTO", "EPSV"]


async def test_a_size_that_stays_wrong_fails_the_task_and_nothing_is_renamed(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = scripted(make_scripted_ftp, rules=[Rule(r"SIZE /data/new/\..*\.part", "213 1")])
    outcomes, _ = await run_tasks(local, config_for(server), UPLOADS[:1])
    assert outcomes == [("failed", "SIZE_MISMATCH", 1)]
    assert "/data/new/up0.bin" not in server.files
    assert not [c for c in server.commands if c.startswith(("RNFR", "RNTO"))]


@pytest.mark.parametrize("dead", ["refused", "no listener"])
async def test_a_dead_epsv_address_from_rnto_costs_a_fresh_epsv_not_the_task(
    make_scripted_ftp: MakeScripted, local: Path, dead: str
) -> None:
    """The EPSV sent with RNTO names a port nothing listens on (connect refused), or one
    whose listener is not the server's (the STOR then gets 425)."""
    stranger = socket.socket()
    stranger.bind(("127.0.0.1", 0))
    port = stranger.getsockname()[1]
    if dead == "refused":
        stranger.close()
    else:
        stranger.listen(4)
    calls: list[int] = []

    def epsv(session: Any, match: Any) -> str:
        calls.append(1)
        if len(calls) == 2:  # the one sent with the first RNTO
            return f"229 Entering Extended Passive Mode (|||{port}|)"
        return str(session.epsv_reply())

    server = scripted(make_scripted_ftp, rules=[Rule(r"EPSV", epsv)])
    try:
        outcomes, factory = await run_tasks(local, config_for(server), UPLOADS)
    finally:
        stranger.close()
    assert outcomes == [COMPLETED_ONCE] * 3
    check_uploads(server)
    assert factory.quirks.spare_passive is False, "remembered for the server"
    assert factory.quirks.pipelining is True and server.sessions == 1


async def test_a_dropped_epsv_sent_with_rnto_fails_no_task(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """The server drops the EPSV that came in one read with RNTO: the rename stands, the
    session (perhaps out of step) is closed, and the next task takes a fresh one."""
    server = scripted(make_scripted_ftp, pipelined="drop", pipelined_verbs={"EPSV"})
    outcomes, factory = await run_tasks(local, config_for(server), UPLOADS)
    assert outcomes == [COMPLETED_ONCE] * 3
    check_uploads(server)
    assert server.dropped == ["EPSV"]
    assert factory.quirks.spare_passive is False
    assert server.sessions == 2


@pytest.mark.parametrize("final", ["451 Local error in processing.", "426 Transfer aborted."])
async def test_a_transient_stor_failure_after_an_early_size_is_transient(
    make_scripted_ftp: MakeScripted, local: Path, final: str
) -> None:
    """150, then (during the transfer) SIZE's ``550``, then STOR's ``451``: the first
    upload to this server, so the client does not know yet that it answers early.
    The 550 was once read as STOR's reply: FILE_NOT_FOUND, not retried (tester3)."""
    server = make_scripted_ftp(
        files={},
        transfer_replies={"STOR": ("150 Ok.", final)},
        stor_final_delay=0.2,
        during_transfer="answer",
    )
    task = upload("in/up.bin", "/data/up.bin")
    conns = Connections(
        [
            FTPConnection(id="partner", ftp=config_for(server)),
            LocalConnection(id="local", base_path=local),
        ]
    )
    source = io.BytesIO(json.dumps(task).encode() + b"\n")
    results = io.BytesIO()
    limits = PoolLimits(max_sessions_per_connection=1)
    async with open_session_pool({"partner": SessionFactory(config_for(server))}, limits) as pool:
        engine = TransferEngine(conns, pool, retry=NO_WAIT, worker="pipeline")
        await copy_tasks(source, results, engine, concurrency=1, worker="pipeline")
    [result] = map(json.loads, results.getvalue().splitlines())
    assert (result["error_code"], result["retryable"]) == ("TRANSIENT", True), result
    assert result["error_message"].startswith(f"STOR: {final[:3]}")


@pytest.mark.parametrize("answer", ["421 Service closing.", "530 Not logged in."])
async def test_a_session_ending_reply_to_the_epsv_sent_with_rnto_fails_no_upload(
    make_scripted_ftp: MakeScripted, local: Path, answer: str
) -> None:
    """RNTO got its 250: the upload is done. The EPSV that went with it (for the next
    transfer) only says the session is over; the next task takes a new session
    (tester3)."""
    calls: list[int] = []

    def epsv(session: Any, match: Any) -> str:
        calls.append(1)
        return answer if len(calls) == 2 else str(session.epsv_reply())

    server = make_scripted_ftp(files={}, rules=[Rule(r"EPSV", epsv)])
    tasks = [upload("in/up.bin", f"/data/up{i}.bin") for i in range(2)]
    outcomes, _ = await run_tasks(local, config_for(server), tasks)
    assert server.files["/data/up0.bin"] == server.files["/data/up1.bin"] == PAYLOAD
    assert outcomes == [COMPLETED_ONCE] * 2
    assert server.sessions == 2


async def test_an_upload_that_landed_never_ends_file_exists_because_of_the_spare_epsv(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """With if_exists=fail and retries, a 421 to the EPSV sent with RNTO once failed the
    attempt whose file had landed; the retry then found that file: FILE_EXISTS (tester3)."""
    calls: list[int] = []

    def epsv(session: Any, match: Any) -> str:
        calls.append(1)
        return "421 Service closing." if len(calls) == 2 else str(session.epsv_reply())

    server = make_scripted_ftp(files={}, rules=[Rule(r"EPSV", epsv)])
    task = upload("in/up.bin", "/data/up0.bin")
    task["options"] |= {"retry_count": 2, "if_exists": "fail"}
    outcomes, _ = await run_tasks(local, config_for(server), [task])
    assert server.files["/data/up0.bin"] == PAYLOAD
    assert outcomes == [COMPLETED_ONCE]


# -- the real servers --------------------------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=[
        pytest.param((kind, tls), id=f"{kind}-{'ftps' if tls else 'plain'}")
        for kind in ("vsftpd", "pure-ftpd", "proftpd", "pyftpdlib")
        for tls in (False, True)
    ],
)
def real_server(
    request: pytest.FixtureRequest,
    launch_ftp_server: Callable[..., AbstractContextManager[FTPServer]],
) -> Iterator[FTPServer]:
    kind, tls = request.param
    with launch_ftp_server(kind, tls=tls, passive_ports=16) as running:
        yield running


def put(server: FTPServer, name: str, data: bytes) -> None:
    owner = server.root.stat()
    path = server.root / name
    path.write_bytes(data)
    os.chown(path, owner.st_uid, owner.st_gid)


async def test_real_servers_take_the_pipelined_conversation(
    real_server: FTPServer, local: Path
) -> None:
    """Uploads first: a download after an upload on a session leaves the EPSV sent with
    RNTO unused and asks another (the server drops the first listener)."""
    for i in range(3):
        put(real_server, f"pipe{i}.bin", PAYLOAD[i:])
    tasks = [upload("in/up.bin", f"/pipe/new/up{i}.bin") for i in range(3)]
    tasks += [download(f"/pipe{i}.bin", f"out/pipe{i}.bin") for i in range(3)]
    config = config_for(real_server, timeouts=Timeouts(connect=5, reply=5, data_stall=5))
    outcomes, factory = await run_tasks(local, config, tasks, concurrency=2, sessions=2)
    assert outcomes == [COMPLETED_ONCE] * 6
    assert factory.quirks.pipelining is True, "the server answered commands sent together"
    assert factory.quirks.spare_passive, "the EPSV sent with RNTO served the next transfer"
    for i in range(3):
        assert (local / "out" / f"pipe{i}.bin").read_bytes() == PAYLOAD[i:]
        assert (real_server.root / "pipe" / "new" / f"up{i}.bin").read_bytes() == PAYLOAD
    assert not [p for p in (real_server.root / "pipe" / "new").iterdir() if ".part" in p.name]


# -- round trips, from the latency proxy's transcript ---------------------------------------------


async def test_round_trips_per_file_at_steady_state(
    make_ftp_server: Callable[..., FTPServer], local: Path, tmp_path: Path
) -> None:
    """Pipelined: 1 wait per download (SIZE+EPSV+RETR in one write) and 3 per upload
    (STOR and its data at once on the EPSV address asked with the last RNTO, then 2 of
    SIZE, RNFR, RNTO); before: 3 and 5 (EPSV, RETR, then SIZE alone; EPSV, STOR, SIZE,
    RNFR, RNTO each waited for). The first pipelining also had 3 per upload (EPSV+STOR,
    SIZE+RNFR, RNTO), but then the EPSV's round trip came before the data connection's
    and the data waited for the 150: what a control transcript does not show.
    A wait is a command written after a reply arrived, read from the proxy's transcript
    of the control connection: no timing in the assertion."""
    server = make_ftp_server("pure-ftpd", passive_ports=16)
    files = 5
    for i in range(files):
        put(server, f"rt{i}.bin", PAYLOAD)
    assert server.passive_ports is not None
    low, high = server.passive_ports
    transcript = tmp_path / "transcript.jsonl"
    with LatencyProxy(
        [server.port, *range(low, high + 1)],
        0.01,
        transcript=transcript,
        control_ports=[server.port],
    ) as proxy:
        config = config_for(server, host=proxy.host)
        downloads = [download(f"/rt{i}.bin", f"out/rt{i}.bin") for i in range(files)]
        outcomes, _ = await run_tasks(local, config, downloads)
        assert outcomes == [COMPLETED_ONCE] * files
        down = waits(read_transcript(transcript))
        uploads = [upload("in/up.bin", f"/rt/up{i}.bin") for i in range(files)]
        outcomes, factory = await run_tasks(local, config, uploads)
        assert outcomes == [COMPLETED_ONCE] * files
        both = waits(read_transcript(transcript))
    up = both - down
    login = {"USER", "PASS", "FEAT", "OPTS", "QUIT"}
    # the first file waits for its EPSV's answer before RETR (the server's EPSV is not
    # known to work yet), every later one is one write: SIZE, EPSV and RETR
    assert sum(n for verb, n in down.items() if verb not in login) == files + 1, down
    assert down["SIZE"] == files and down["RETR"] == 1
    transfer_up = {verb: n for verb, n in up.items() if verb not in login}
    # the first upload makes the directory (one MKD) and waits for its EPSV before
    # STOR; then 3 per file
    assert transfer_up.pop("MKD") == 1, up
    assert transfer_up.pop("EPSV") == 1 and transfer_up.pop("STOR") == files, up
    # then 2 more per file: SIZE once the 150 came (with the data already sent), and
    # RNFR+RNTO+EPSV; or, when the 226 came with the 150, SIZE+RNFR and RNTO+EPSV; one
    # more, once, if pure-ftpd read the early SIZE during the transfer (a 500): asked
    # again after the 226, and not early again
    assert set(transfer_up) <= {"SIZE", "RNFR", "RNTO"}, up
    extra = 0 if factory.quirks.early_check else 1
    assert sum(transfer_up.values()) == 2 * files + extra, up


# -- opening sessions: how many at once --------------------------------------------------------


def test_opening_grows_by_one_per_quick_connect_and_halves_on_a_stall() -> None:
    policy = OpeningPolicy(limit=4, ceiling=8)
    assert [policy.opened(0.01) for _ in range(6)] == [5, 6, 7, 8, 8, 8]
    assert policy.opened(STALL_SECONDS) == 4, "a SYN retransmit: the backlog overflowed"
    assert policy.failed() == 2
    assert policy.failed() == 1
    assert policy.failed() == 1, "never below one"
    assert OpeningPolicy(limit=4, ceiling=2).limit == 2, "never above the session cap"


async def test_a_refused_password_in_a_pipelined_login_is_not_tried_again(
    make_scripted_ftp: MakeScripted,
) -> None:
    """A 530 is the server's answer, not a pipelining problem: one connection, not two
    (a second try could count towards an account lockout)."""
    passwords: list[str] = []

    def password(s: Any, m: Any) -> str:
        passwords.append(m.group(1))
        if len(passwords) == 1:
            s.logged_in = True
            return "230 Logged in."
        return "530 Login incorrect."

    server = make_scripted_ftp(rules=[Rule(r"PASS (.*)", password)])
    factory = SessionFactory(config_for(server))
    first = await factory.open()  # one command at a time, then FEAT and TYPE together
    await first.aclose()
    assert factory.quirks.pipelining is True
    with pytest.raises(FTPError) as caught:
        await factory.open()  # the whole login in one write
    assert caught.value.code is ErrorCode.AUTH_FAILED
    assert server.sessions == 2 and len(passwords) == 2


async def test_size_mismatch_after_size_and_rnfr_leaves_no_rnfr_pending_on_proftpd(
    make_proftpd: Callable[..., FTPServer], ftp_root: Path
) -> None:
    """SIZE and RNFR go out together when the upload's SIZE was not asked before its 226
    (pipelining fallback; proftpd itself, whose early SIZE is turned off). A size that
    does not match stops before RNTO with the RNFR pending, and proftpd answers any
    command but RNTO after an RNFR with ``501 Bad sequence of commands``: the DELE of
    the temporary file was refused, and the engine took it as done and left the file."""
    session = await SessionFactory(config_for(make_proftpd())).open()
    try:
        assert session.pipelining

        async def source() -> Any:
            yield b"x" * 1000

        def mismatch(stored: int | None) -> None:
            raise PoolerError(
                ErrorCode.SIZE_MISMATCH, f"sent 999 bytes, the server stored {stored}"
            )

        await session.store("t.part", source())
        with pytest.raises(PoolerError) as caught:
            await session.rename("t.part", "t.bin", size_check=mismatch)
        assert caught.value.code is ErrorCode.SIZE_MISMATCH
        await session.delete("t.part")
        assert list(ftp_root.iterdir()) == []
    finally:
        await session.aclose()


async def test_an_anomaly_found_while_a_login_is_retried_alone_is_kept(
    make_scripted_ftp: MakeScripted,
) -> None:
    """Race on the shared ``pipelining`` quirk: a failed pipelined login is retried one
    command at a time. That retry switched the server's shared quirk off and put it back
    afterwards, so an anomaly another session found meanwhile (its report a no-op while
    the quirk was off) was undone when the retry failed: pipelining back on for a server
    that mishandles it."""
    reached, release = threading.Event(), threading.Event()
    types = []

    def type_i(s: Any, m: Any) -> str:
        types.append(m.group(0))
        if len(types) < 3:
            return "200 Type set to I."
        reached.set()  # the third TYPE: the one-at-a-time retry of the second login
        release.wait(5)
        return "451 Local error in processing."

    server = scripted(
        make_scripted_ftp,
        pipelined="reject",
        pipelined_verbs={"PASS"},
        rules=[Rule(r"TYPE I", type_i)],
    )
    factory = SessionFactory(config_for(server))
    first = await factory.open()  # one command at a time, then FEAT and TYPE together
    await first.aclose()
    assert factory.quirks.pipelining is True
    failures: list[FTPError] = []

    async def second() -> None:
        with pytest.raises(FTPError) as caught:
            await factory.open()  # pipelined: PASS refused, so once more alone: TYPE fails
        failures.append(caught.value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        with trio.fail_after(5):
            while not reached.is_set():
                await trio.sleep(0.01)
        factory.quirks.pipeline_anomaly("another session", "a reply out of order")
        release.set()
    assert failures and failures[0].code is ErrorCode.TRANSIENT
    assert factory.quirks.pipelining is False, "the other session's anomaly stands"
