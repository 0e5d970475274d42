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
from ftp_pooler.errors import ErrorCode, FTPError
from ftp_pooler.ftp.config import FTPConfig, Pipelining, Timeouts
from ftp_pooler.ftp.directories import RemoteDirectories
from ftp_pooler.ftp.opening import STALL_SECONDS, OpeningPolicy
from ftp_pooler.ftp.pipeline import PipelineAnomaly, ReplyMatcher
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
    for i in range(3):
        put(real_server, f"pipe{i}.bin", PAYLOAD[i:])
    tasks = [download(f"/pipe{i}.bin", f"out/pipe{i}.bin") for i in range(3)]
    tasks += [upload("in/up.bin", f"/pipe/new/up{i}.bin") for i in range(3)]
    config = config_for(real_server, timeouts=Timeouts(connect=5, reply=5, data_stall=5))
    outcomes, factory = await run_tasks(local, config, tasks, concurrency=2, sessions=2)
    assert outcomes == [COMPLETED_ONCE] * 6
    assert factory.quirks.pipelining is True, "the server answered commands sent together"
    for i in range(3):
        assert (local / "out" / f"pipe{i}.bin").read_bytes() == PAYLOAD[i:]
        assert (real_server.root / "pipe" / "new" / f"up{i}.bin").read_bytes() == PAYLOAD
    assert not [p for p in (real_server.root / "pipe" / "new").iterdir() if ".part" in p.name]


# -- round trips, from the latency proxy's transcript ---------------------------------------------


async def test_round_trips_per_file_at_steady_state(
    make_ftp_server: Callable[..., FTPServer], local: Path, tmp_path: Path
) -> None:
    """Pipelined: 1 wait per download (SIZE+EPSV+RETR in one write) and 3 per upload
    (EPSV+STOR, SIZE+RNFR, RNTO); before: 3 and 5 (EPSV, RETR, then SIZE alone; EPSV,
    STOR, SIZE, RNFR, RNTO each waited for).
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
        outcomes, _ = await run_tasks(local, config, uploads)
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
    assert transfer_up == {"EPSV": files, "STOR": 1, "SIZE": files, "RNTO": files}


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
