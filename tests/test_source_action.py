"""on_success: the source is deleted or moved after a transfer, and a repeated task is recognised.

Real servers (pyftpdlib, vsftpd, pure-ftpd) and real files. The crash states
are made three ways: in process, by running a task (with ``keep`` for "the
destination landed, the source not yet acted on"; to the end, its result
dropped, for "the source acted on, the result not published") and running it
again; with ``ftp-pooler copy`` killed (SIGKILL) while the server holds its
DELE or RNTO unanswered, before or after carrying it out; and with
``ftp-pooler worker`` killed after publishing, before committing, so the real
broker delivers every task again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pyftpdlib.handlers import FTPHandler

from clients import ftp_config
from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.contract import (
    MoveTo,
    Result,
    SourceAction,
    Task,
    parse_task,
    result_json_schema,
    task_json_schema,
)
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.ftp.pool import PoolLimits, open_session_pool
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.transfer.retry import RetryPolicy
from ftp_pooler.transfer.source_action import archive_path, is_repeat, same_file
from servers import FTPServer
from servers.kafka import KafkaBroker

MakeServer = Callable[..., FTPServer]
KINDS = ("pyftpdlib", "vsftpd", "pure-ftpd")
NO_WAIT = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
MOVE = {"move_to": "/archive/"}


# -- pure decisions ----------------------------------------------------------------------


def test_archive_path_keeps_the_file_name() -> None:
    assert archive_path("/archive/", "out/2026/a.csv") == "/archive/a.csv"
    assert archive_path("/archive", "/a.csv") == "/archive/a.csv"
    assert archive_path("done", "a.csv") == "done/a.csv"
    assert archive_path("/", "x/a.csv") == "/a.csv"


def test_a_repeat_needs_the_source_gone_and_the_destination_there() -> None:
    delete, move = SourceAction.DELETE, MoveTo(move_to="/archive")
    assert is_repeat(delete, None, 10, None)
    assert not is_repeat(delete, 10, 10, None)  # the source is still there: transfer again
    assert not is_repeat(delete, None, None, None)  # nothing anywhere: FILE_NOT_FOUND
    assert is_repeat(move, None, 10, 10)
    assert not is_repeat(move, None, 10, None)  # moved by someone else, or deleted
    assert not is_repeat(move, None, 10, 9)  # the archived file is another one


def test_a_skipped_destination_stands_for_the_source_only_with_its_size() -> None:
    assert same_file(5, 5)
    assert not same_file(5, 6)
    assert not same_file(None, 5)


# -- contract ------------------------------------------------------------------------------


def flat(**options: Any) -> dict[str, Any]:
    return {"task_id": "t", "src_id": "a", "src_path": "p", "dst_id": "b", "dst_path": "q",
            "options": options}


def test_on_success_in_the_flat_and_the_nested_form() -> None:
    assert parse_task(json.dumps(flat())).options.on_success is SourceAction.KEEP
    assert parse_task(json.dumps(flat(on_success="delete"))).options.on_success is (
        SourceAction.DELETE
    )
    nested = {"task_id": "t", "source": {"connection_id": "a", "path": "p"},
              "destination": {"connection_id": "b", "path": "q"},
              "options": {"on_success": {"move_to": "/archive/", "unknown": 1}}}
    assert parse_task(json.dumps(nested)).options.on_success == MoveTo(move_to="/archive/")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("remove", 'options.on_success: should be "keep", "delete" or {"move_to": "<directory>"}'),
        (None, 'options.on_success: should be "keep", "delete" or {"move_to": "<directory>"}'),
        ({}, "options.on_success: move_to: Field required"),
        ({"move_to": ""}, "options.on_success: move_to: String should have at least 1 character"),
    ],
)
def test_a_bad_on_success_is_one_clear_line(value: Any, message: str) -> None:
    with pytest.raises(PoolerError) as caught:
        parse_task(json.dumps(flat(on_success=value)))
    assert caught.value.code is ErrorCode.INVALID_MESSAGE
    assert caught.value.message == message


def test_the_schemas_name_the_option_and_the_result_fields() -> None:
    tasks = json.dumps(task_json_schema())
    assert "on_success" in tasks and "move_to" in tasks
    result = result_json_schema()["properties"]
    assert result["source_action"]
    assert {"source_action_error_code", "source_action_error_message"} <= result.keys()
    for name in ("task.schema.json", "result.schema.json"):  # regenerated
        written = json.loads((Path(__file__).parents[1] / "docs" / "schemas" / name).read_text())
        assert written == (task_json_schema() if name.startswith("task") else result_json_schema())


def test_a_result_reports_an_action_error_only_with_failed() -> None:
    task = parse_task(json.dumps(flat(on_success="delete")))
    with pytest.raises(ValueError, match="source_action_error_code"):
        Result.model_validate(
            {**Result.completed(task, worker="w", bytes_transferred=1, duration_ms=1,
                                attempts=1).model_dump(), "source_action_error_code": "IO_ERROR"}
        )


# -- real servers --------------------------------------------------------------------------


@pytest.fixture
def local_root(tmp_path: Path) -> Path:
    root = tmp_path / "local"
    root.mkdir()
    return root


@pytest.fixture
def run_tasks(local_root: Path) -> Callable[..., Any]:
    """``await run_tasks(server, [task dicts], durable=True)`` -> results, in order."""

    async def run(server: FTPServer, tasks: list[dict[str, Any]], durable: bool = True
                  ) -> list[Result]:
        conns = Connections(
            [FTPConnection(id="remote", ftp=ftp_config(server)),
             LocalConnection(id="local", base_path=local_root)]
        )
        factories = {"remote": SessionFactory(conns["remote"].ftp)}  # type: ignore[union-attr]
        async with open_session_pool(factories, PoolLimits(max_sessions_per_connection=2)) as pool:
            engine = TransferEngine(conns, pool, retry=NO_WAIT, worker="w", durable=durable)
            return [await engine.run(Task.model_validate(task)) for task in tasks]

    return run


def download(on_success: Any, **options: Any) -> dict[str, Any]:
    return {
        "task_id": "dl",
        "source": {"connection_id": "remote", "path": "/out/a.bin"},
        "destination": {"connection_id": "local", "path": "in/a.bin"},
        "options": {"on_success": on_success, **options},
    }


def upload(on_success: Any, **options: Any) -> dict[str, Any]:
    return {
        "task_id": "ul",
        "source": {"connection_id": "local", "path": "out/b.bin"},
        "destination": {"connection_id": "remote", "path": "/in/b.bin"},
        "options": {"on_success": on_success, **options},
    }


def outbox(root: Path, name: str = "a.bin", size: int = 300_000) -> bytes:
    """A file in ``root/out`` (made before a server starts, so it belongs to its user)."""
    payload = os.urandom(size)
    (root / "out").mkdir(exist_ok=True)
    (root / "out" / name).write_bytes(payload)
    return payload


def summary(result: Result) -> tuple[str, int, str | None]:
    action = result.source_action.value if result.source_action else None
    return result.status.value, result.bytes_transferred, action


@pytest.mark.parametrize("kind", (*KINDS, "proftpd"))
async def test_download_deletes_or_moves_the_remote_source(
    make_ftp_server: MakeServer, ftp_root: Path, local_root: Path, run_tasks: Any, kind: str
) -> None:
    payload = outbox(ftp_root)
    other = outbox(ftp_root, "c.bin", 1000)
    (ftp_root / "archive").mkdir()  # an older file of the same name is replaced
    (ftp_root / "archive" / "c.bin").write_bytes(b"yesterday's")
    server = make_ftp_server(kind)
    moved = {**download({"move_to": "/archive/deeper"}), "task_id": "mv"}
    moved["source"] = {"connection_id": "remote", "path": "/out/c.bin"}
    moved["destination"] = {"connection_id": "local", "path": "in/c.bin"}
    replaced = {**moved, "task_id": "mv2", "options": {"on_success": MOVE}}

    deleted, = await run_tasks(server, [download("delete")])
    assert summary(deleted) == ("completed", len(payload), "deleted"), deleted
    assert (local_root / "in" / "a.bin").read_bytes() == payload
    assert not (ftp_root / "out" / "a.bin").exists()

    # move_to a directory that does not exist yet (mkdir -p), then over an existing file
    first, = await run_tasks(server, [moved])
    assert summary(first) == ("completed", len(other), "moved"), first
    assert (ftp_root / "archive" / "deeper" / "c.bin").read_bytes() == other
    (ftp_root / "archive" / "deeper" / "c.bin").rename(ftp_root / "out" / "c.bin")
    second, = await run_tasks(server, [replaced])
    assert summary(second) == ("completed", len(other), "moved"), second
    assert (ftp_root / "archive" / "c.bin").read_bytes() == other
    assert not (ftp_root / "out" / "c.bin").exists()
    assert (local_root / "in" / "c.bin").read_bytes() == other
    assert json.loads(second.to_json())["source_action"] == "moved"


async def test_upload_deletes_or_moves_the_local_source(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    payload = outbox(local_root, "b.bin")
    deleted, = await run_tasks(pyftpd_server, [upload("delete")])
    assert summary(deleted) == ("completed", len(payload), "deleted"), deleted
    assert (ftp_root / "in" / "b.bin").read_bytes() == payload
    assert not (local_root / "out" / "b.bin").exists()

    payload = outbox(local_root, "b.bin", 5000)
    moved, = await run_tasks(pyftpd_server, [upload({"move_to": "done/2026"})])
    assert summary(moved) == ("completed", 5000, "moved"), moved
    assert (local_root / "done" / "2026" / "b.bin").read_bytes() == payload
    assert not (local_root / "out" / "b.bin").exists()


async def test_keep_leaves_the_source_and_says_nothing(
    pyftpd_server: FTPServer, ftp_root: Path, run_tasks: Any
) -> None:
    outbox(ftp_root)
    kept, = await run_tasks(pyftpd_server, [download("keep")])
    assert summary(kept) == ("completed", 300_000, None)
    assert (ftp_root / "out" / "a.bin").exists()
    assert b"source_action" not in kept.to_json()


# -- crash states, in process ---------------------------------------------------------------


def act_by_hand(source: Path, on_success: Any, archive: Path) -> None:
    """What the source action does, done here: to reach state (b) where the task cannot."""
    if on_success == "delete":
        source.unlink()
    else:
        archive.mkdir(exist_ok=True)
        source.rename(archive / source.name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("on_success", ["delete", MOVE], ids=["delete", "move"])
@pytest.mark.parametrize("if_exists", ["overwrite", "skip", "fail"])
async def test_download_repeated_from_each_crash_state(
    make_ftp_server: MakeServer,
    ftp_root: Path,
    local_root: Path,
    run_tasks: Any,
    kind: str,
    on_success: Any,
    if_exists: str,
) -> None:
    payload = outbox(ftp_root)
    server = make_ftp_server(kind)
    task = download(on_success, if_exists=if_exists)
    landed = local_root / "in" / "a.bin"

    # (a) the destination landed, the source not yet acted on (the keep run leaves just that)
    keep, = await run_tasks(server, [download("keep")])
    assert summary(keep) == ("completed", len(payload), None)
    first, = await run_tasks(server, [task])
    action = "deleted" if on_success == "delete" else "moved"
    if if_exists == "overwrite":  # the source is there: not recognisable, transferred again
        assert summary(first) == ("completed", len(payload), action), first
    elif if_exists == "skip":  # the destination has the source's size: skipped, acted on
        assert summary(first) == ("skipped", 0, action), first
    else:  # fail: the destination exists and the source is there: FILE_EXISTS, as without
        assert (first.status, first.error_code) == ("failed", ErrorCode.FILE_EXISTS), first
        assert first.source_action is None
        act_by_hand(ftp_root / "out" / "a.bin", on_success, ftp_root / "archive")
    assert landed.read_bytes() == payload
    assert not (ftp_root / "out" / "a.bin").exists()
    if on_success == MOVE:
        assert (ftp_root / "archive" / "a.bin").read_bytes() == payload

    # (b) the source acted on, the result not published: the same task again
    # (c) both done, and the task delivered once more
    for _ in ("b", "c"):
        again, = await run_tasks(server, [task])
        assert summary(again) == ("completed", 0, "already_done"), again
        assert again.error_code is None and again.attempts == 1
        assert landed.read_bytes() == payload


@pytest.mark.parametrize("on_success", ["delete", {"move_to": "done"}], ids=["delete", "move"])
@pytest.mark.parametrize("if_exists", ["overwrite", "skip", "fail"])
async def test_upload_repeated_from_each_crash_state(
    pyftpd_server: FTPServer,
    ftp_root: Path,
    local_root: Path,
    run_tasks: Any,
    on_success: Any,
    if_exists: str,
) -> None:
    payload = outbox(local_root, "b.bin")
    task = upload(on_success, if_exists=if_exists)
    keep, = await run_tasks(pyftpd_server, [upload("keep")])  # (a)
    assert summary(keep) == ("completed", len(payload), None)
    first, = await run_tasks(pyftpd_server, [task])
    action = "deleted" if on_success == "delete" else "moved"
    if if_exists == "fail":
        assert (first.status, first.error_code) == ("failed", ErrorCode.FILE_EXISTS), first
        act_by_hand(local_root / "out" / "b.bin", on_success, local_root / "done")
    else:
        expected = len(payload) if if_exists == "overwrite" else 0
        status = "completed" if if_exists == "overwrite" else "skipped"
        assert summary(first) == (status, expected, action), first
    assert not (local_root / "out" / "b.bin").exists()
    for _ in ("b", "c"):
        again, = await run_tasks(pyftpd_server, [task])
        assert summary(again) == ("completed", 0, "already_done"), again
    assert (ftp_root / "in" / "b.bin").read_bytes() == payload
    if on_success != "delete":
        assert (local_root / "done" / "b.bin").read_bytes() == payload


async def test_a_missing_source_without_its_destination_is_still_file_not_found(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    missing, = await run_tasks(pyftpd_server, [download("delete")])
    assert (missing.status, missing.error_code) == ("failed", ErrorCode.FILE_NOT_FOUND)
    # move_to: the destination is there but nothing of its size was archived (someone
    # else took the source away): not recognised either.
    (local_root / "in").mkdir(exist_ok=True)
    (local_root / "in" / "a.bin").write_bytes(b"12345")
    (ftp_root / "archive").mkdir()
    (ftp_root / "archive" / "a.bin").write_bytes(b"123")
    moved, = await run_tasks(pyftpd_server, [download(MOVE)])
    assert (moved.status, moved.error_code) == ("failed", ErrorCode.FILE_NOT_FOUND), moved
    uploaded, = await run_tasks(pyftpd_server, [upload("delete")])
    assert (uploaded.status, uploaded.error_code) == ("failed", ErrorCode.FILE_NOT_FOUND)


class NoSizeHandler(FTPHandler):  # type: ignore[misc]
    """A server without SIZE (502), as some appliances are."""

    def ftp_SIZE(self, path: str) -> None:
        self.respond("502 Command not implemented.")


async def test_a_repeat_check_the_server_cannot_answer_keeps_the_original_error(
    make_pyftpd: MakeServer, local_root: Path, run_tasks: Any
) -> None:
    server = make_pyftpd(handler_class=NoSizeHandler)
    (local_root / "in").mkdir()
    (local_root / "in" / "a.bin").write_bytes(b"an older file")
    missing, = await run_tasks(server, [download("delete")])
    # not PERMANENT from the SIZE the check needed: the task's own failure
    assert (missing.status, missing.error_code) == ("failed", ErrorCode.FILE_NOT_FOUND), missing
    assert "RETR" in (missing.error_message or "")


async def test_a_skipped_destination_of_another_size_keeps_the_source(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    payload = outbox(ftp_root)
    (local_root / "in").mkdir()
    (local_root / "in" / "a.bin").write_bytes(b"another file")
    skipped, = await run_tasks(pyftpd_server, [download("delete", if_exists="skip")])
    assert summary(skipped) == ("skipped", 0, "failed"), skipped
    assert skipped.source_action_error_code is ErrorCode.FILE_EXISTS
    assert "300000 bytes" in (skipped.source_action_error_message or "")
    assert (ftp_root / "out" / "a.bin").read_bytes() == payload
    assert (local_root / "in" / "a.bin").read_bytes() == b"another file"


@pytest.mark.parametrize("kind", ["vsftpd", "pure-ftpd"])
async def test_a_refused_delete_completes_the_task_and_reports_the_refusal(
    make_ftp_server: MakeServer, ftp_root: Path, local_root: Path, run_tasks: Any, kind: str
) -> None:
    payload = outbox(ftp_root)
    server = make_ftp_server(kind)  # chowns the outbox to the server's user
    os.chmod(ftp_root / "out", 0o555)  # the user may read the file, not remove it
    result, = await run_tasks(server, [download("delete")])
    assert summary(result) == ("completed", len(payload), "failed"), result
    # pure-ftpd says why; vsftpd's "550 Delete operation failed." does not, and the file
    # is still there: not FILE_NOT_FOUND, whatever a bare 550 to DELE usually means
    refusal = {"vsftpd": ErrorCode.PERMANENT, "pure-ftpd": ErrorCode.PERMISSION_DENIED}[kind]
    assert result.source_action_error_code is refusal, result
    assert result.source_action_error_message and "DELE" in result.source_action_error_message
    assert result.error_code is None and result.attempts == 1
    assert (local_root / "in" / "a.bin").read_bytes() == payload
    assert (ftp_root / "out" / "a.bin").read_bytes() == payload
    encoded = json.loads(result.to_json())
    assert encoded["source_action_error_code"] == refusal.value


async def test_a_local_move_that_cannot_be_made_reports_it_and_keeps_the_source(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    payload = outbox(local_root, "b.bin")
    (local_root / "done").write_bytes(b"a file where move_to's directory should be")
    result, = await run_tasks(pyftpd_server, [upload({"move_to": "done"})])
    assert summary(result) == ("completed", len(payload), "failed"), result
    assert result.source_action_error_code in (ErrorCode.FILE_EXISTS, ErrorCode.PATH_NOT_ALLOWED)
    assert (local_root / "out" / "b.bin").read_bytes() == payload
    assert (ftp_root / "in" / "b.bin").read_bytes() == payload


@pytest.mark.parametrize(
    ("task", "words"),
    [
        (download({"move_to": "/out"}), "source's own directory"),
        (download({"move_to": "/x/../out"}), "'..'"),
        (upload({"move_to": "/etc"}), "outside"),
        (upload({"move_to": "out/"}), "source's own directory"),
    ],
)
async def test_a_refused_move_to_fails_before_any_transfer(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path, run_tasks: Any,
    task: dict[str, Any], words: str,
) -> None:
    outbox(ftp_root)
    outbox(local_root, "b.bin")
    result, = await run_tasks(pyftpd_server, [task])
    assert (result.status, result.error_code) == ("failed", ErrorCode.PATH_NOT_ALLOWED), result
    assert words in (result.error_message or "") and result.attempts == 0
    assert (ftp_root / "out" / "a.bin").exists() and (local_root / "out" / "b.bin").exists()


class RecordingHandler(FTPHandler):  # type: ignore[misc]
    """Appends ("DELE", path) to ``events`` when a DELE arrives, then carries it out."""

    events: list[tuple[str, str]]

    def ftp_DELE(self, path: str) -> None:
        self.events.append(("DELE", path))
        super().ftp_DELE(path)


@pytest.mark.parametrize("durable", [True, False], ids=["fsync", "none"])
async def test_the_source_is_deleted_only_after_the_destination_is_synced(
    make_pyftpd: MakeServer,
    ftp_root: Path,
    local_root: Path,
    run_tasks: Any,
    monkeypatch: pytest.MonkeyPatch,
    durable: bool,
) -> None:
    """The order of the fsyncs of the landed file and its directory and the DELE the server got.

    With ``transfer.durability: none`` too: the landing does not sync, so the
    source action does, before it deletes anything.
    """
    payload = outbox(ftp_root)
    events: list[tuple[str, str]] = []
    server = make_pyftpd(handler_class=RecordingHandler, handler_attrs={"events": events})
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    monkeypatch.setattr(os, "fsync", fsync)
    result, = await run_tasks(server, [download("delete")], durable=durable)
    assert summary(result) == ("completed", len(payload), "deleted"), result
    landed = local_root / "in" / "a.bin"
    order = [kind if kind == "DELE" else path for kind, path in events]
    assert order.count("DELE") == 1, events
    before = order[: order.index("DELE")]
    # the file under its temporary name before the rename (fsync), or its final name (none)
    file_synced = [p for p in before if Path(p).name == "a.bin" or p.startswith(
        f"{landed.parent}/.a.bin.")]
    assert file_synced and str(landed.parent) in before, events
    assert before.index(file_synced[0]) < before.index(str(landed.parent)), events
    assert landed.read_bytes() == payload


# -- crash states, for real: ftp-pooler copy killed while the server holds DELE or RNTO -------


class FreezingHandler(FTPHandler):  # type: ignore[misc]
    """Leaves the first ``control["verb"]`` (DELE or RNTO) unanswered, so the client waits.

    With ``control["carry_out"]`` the server deletes or renames first (the
    source acted on, the client not yet told); without, it does nothing.
    ``control["frozen"]`` (a threading.Event) is set once it holds the command.
    """

    control: dict[str, Any]

    def ftp_DELE(self, path: str) -> None:
        if not self._freeze("DELE", lambda: os.remove(path)):
            super().ftp_DELE(path)

    def ftp_RNTO(self, path: str) -> None:
        source = self._rnfr
        if not self._freeze("RNTO", lambda: os.rename(source, path)):
            super().ftp_RNTO(path)

    def _freeze(self, verb: str, carry_out: Callable[[], None]) -> bool:
        control = self.control
        if control.get("verb") != verb:
            return False
        control["verb"] = None
        if control["carry_out"]:
            carry_out()
        control["frozen"].set()
        return True


def copy_env(tmp_path: Path, server: FTPServer, local_root: Path) -> dict[str, str]:
    (tmp_path / "password").write_text(server.password + "\n")
    (tmp_path / "connections.ini").write_text(
        f"[remote]\ntype = ftp\nhost = {server.host}\nport = {server.port}\n"
        f"user = {server.user}\npass_file = {tmp_path / 'password'}\n\n"
        f"[local]\ntype = local\nbase_path = {local_root}\n"
    )
    (tmp_path / "config.yaml").write_text(
        "worker:\n  name: crash-test\nlogging:\n  level: WARNING\n"
    )
    return {
        **os.environ,
        "FTP_POOLER_CONFIG": str(tmp_path / "config.yaml"),
        "FTP_POOLER_CONNECTIONS": str(tmp_path / "connections.ini"),
    }


def copy_command(tasks: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "ftp_pooler.cli", "copy", str(tasks), "--output", str(output)]


@pytest.mark.parametrize("verb", ["DELE", "RNTO"])
@pytest.mark.parametrize("carried_out", [False, True], ids=["before", "after"])
def test_copy_killed_around_the_source_action_then_run_again(
    make_pyftpd: MakeServer, ftp_root: Path, local_root: Path, tmp_path: Path,
    verb: str, carried_out: bool,
) -> None:
    """(a) killed before the server acted, (b) after it acted but before the result; then (c)."""
    payload = outbox(ftp_root)
    (ftp_root / "archive").mkdir()
    frozen = threading.Event()
    control = {"verb": verb, "carry_out": carried_out, "frozen": frozen}
    server = make_pyftpd(handler_class=FreezingHandler, handler_attrs={"control": control})
    env = copy_env(tmp_path, server, local_root)
    task = download("delete" if verb == "DELE" else MOVE)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(task) + "\n")
    landed = local_root / "in" / "a.bin"

    killed = tmp_path / "killed.jsonl"
    process = subprocess.Popen(copy_command(tasks, killed), env=env, stderr=subprocess.PIPE)
    try:
        assert frozen.wait(60), "the server never got the source action"
        # the command reached the server: the file had landed under its final name before
        assert landed.read_bytes() == payload
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    assert not killed.exists() or killed.read_bytes() == b""  # no result was published
    assert (ftp_root / "out" / "a.bin").exists() is not carried_out

    runs = []
    for name in ("redelivered", "once-more"):
        output = tmp_path / f"{name}.jsonl"
        done = subprocess.run(copy_command(tasks, output), env=env, capture_output=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr.decode()
        runs.append(json.loads(output.read_text()))
    action = "deleted" if verb == "DELE" else "moved"
    first = (runs[0]["status"], runs[0]["bytes_transferred"], runs[0].get("source_action"))
    if carried_out:  # (b): recognised, nothing transferred again
        assert first == ("completed", 0, "already_done"), runs[0]
    else:  # (a): the source is there, so the file is transferred again, then acted on
        assert first == ("completed", len(payload), action), runs[0]
    again = (runs[1]["status"], runs[1]["bytes_transferred"], runs[1].get("source_action"))
    assert again == ("completed", 0, "already_done"), runs[1]  # (c)
    assert landed.read_bytes() == payload
    assert not (ftp_root / "out" / "a.bin").exists()
    if verb == "RNTO":
        assert (ftp_root / "archive" / "a.bin").read_bytes() == payload
    assert not [p for p in local_root.rglob("*.part")]


# -- through Kafka: the worker killed after acting on sources, before committing ----------


def read_results(broker: KafkaBroker, topics: tuple[str, str], wanted: int) -> list[dict[str, Any]]:
    """Results on both topics from the start, until ``wanted`` of them (60 s at most)."""
    consumer = KafkaConsumer(**broker.consumer_config())
    partitions = [TopicPartition(topic, 0) for topic in topics]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    try:
        while len(results) < wanted and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=500).values():
                results.extend(json.loads(message.value) for message in messages)
    finally:
        consumer.close()
    assert len(results) >= wanted, f"{len(results)} results of {wanted}"
    return results


def test_worker_killed_before_its_commit_redelivers_and_every_repeat_completes(
    kafka_broker: KafkaBroker, make_vsftpd: MakeServer, ftp_root: Path, local_root: Path,
    tmp_path: Path,
) -> None:
    """The crash the issue names: sources moved, results published, offsets not committed.

    The commit interval is longer than the test, so the SIGKILL comes before any
    commit and the restarted worker gets every task again: each must complete
    (``already_done``, nothing transferred), none FILE_NOT_FOUND, nothing lost.
    """
    count = 30
    payloads = {f"f{i}.bin": os.urandom(1000 + i) for i in range(count)}
    (ftp_root / "out").mkdir()
    for name, payload in payloads.items():
        (ftp_root / "out" / name).write_bytes(payload)
    server = make_vsftpd(passive_ports=100)
    suffix = uuid.uuid4().hex[:8]
    tasks_topic = kafka_broker.create_topic(f"tasks-{suffix}", 1)
    results_topic = kafka_broker.create_topic(f"results-{suffix}", 1)
    failures_topic = kafka_broker.create_topic(f"failures-{suffix}", 1)
    (tmp_path / "password").write_text(server.password)
    (tmp_path / "connections.ini").write_text(
        f"[ftp]\ntype = ftp\nhost = {server.host}\nport = {server.port}\nuser = {server.user}\n"
        f"pass_file = {tmp_path / 'password'}\n\n[local]\ntype = local\nbase_path = {local_root}\n"
    )
    (tmp_path / "none.yaml").write_text("{}\n")
    env = {
        **os.environ,
        "FTP_POOLER_CONNECTIONS": str(tmp_path / "connections.ini"),
        "FTP_POOLER_CONFIG": str(tmp_path / "none.yaml"),
        "FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "FTP_POOLER__KAFKA__INPUT_TOPIC": tasks_topic,
        "FTP_POOLER__KAFKA__RESULT_TOPIC": results_topic,
        "FTP_POOLER__KAFKA__FAIL_TOPIC": failures_topic,
        "FTP_POOLER__KAFKA__CONSUMER_GROUP": f"workers-{suffix}",
        "FTP_POOLER__KAFKA__SESSION_TIMEOUT_MS": "2000",
        "FTP_POOLER__KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "FTP_POOLER__KAFKA__COMMIT_INTERVAL_SECONDS": "600",
        "FTP_POOLER__LOGGING__LEVEL": "WARNING",
    }
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    for name in payloads:
        task = {"task_id": name, "src_id": "ftp", "src_path": f"/out/{name}", "dst_id": "local",
                "dst_path": f"in/{name}", "options": {"on_success": MOVE}}
        producer.send(tasks_topic, key=name.encode(), value=json.dumps(task).encode())
    producer.flush()
    producer.close()

    def worker(name: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("wb") as log:  # the child keeps its own copy
            return subprocess.Popen(
                [sys.executable, "-m", "ftp_pooler.cli", "worker"],
                env={**env, "FTP_POOLER__API__HOST": "127.0.0.1", "FTP_POOLER__API__PORT": "0",
                     "FTP_POOLER__WORKER__NAME": name},
                stdout=subprocess.DEVNULL, stderr=log,
            )

    first = worker("w1")
    try:
        before = read_results(kafka_broker, (results_topic, failures_topic), count)
    finally:
        first.kill()  # SIGKILL: no drain, no commit
        first.wait(30)
    assert {(r["status"], r.get("source_action")) for r in before} == {("completed", "moved")}
    assert not list((ftp_root / "out").iterdir())

    second = worker("w2")
    try:
        results = read_results(kafka_broker, (results_topic, failures_topic), 2 * count)
    finally:
        second.kill()
        second.wait(30)
    repeats = [r for r in results if r["worker"] == "w2"]
    assert len(repeats) == count, results
    assert {(r["status"], r["bytes_transferred"], r.get("source_action")) for r in repeats} == {
        ("completed", 0, "already_done")
    }, [r for r in repeats if r.get("source_action") != "already_done"][:3]
    for name, payload in payloads.items():
        assert (local_root / "in" / name).read_bytes() == payload
        assert (ftp_root / "archive" / name).read_bytes() == payload
