"""Connections changed without a restart (issue #16 part 3): the diff, the watch, the pool's
switch, and the worker running against a real broker and real FTP servers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
import trio
import trio.testing
from pyftpdlib.handlers import ThrottledDTPHandler  # type: ignore[import-untyped]

from ftp_pooler.config import (
    ConfigError,
    Connections,
    FTPConnection,
    LocalConnection,
    load_connections,
)
from ftp_pooler.contract import Result, Task
from ftp_pooler.transfer.engine import Transfer, TransferEngine
from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.ftp.config import FTPConfig
from ftp_pooler.ftp.pool import SessionPool
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.scheduling.transfers import ScheduledTransfers
from ftp_pooler.service.reload import ConnectionsWatcher, FileStamp, WatchStep, diff_connections
from servers import FTPServer, wait_until
from servers.kafka import KafkaBroker
from test_worker import Topics, Worker

MakeServer = Callable[..., FTPServer]


# -- the pure parts ----------------------------------------------------------------------


def _ftp(conn_id: str, **ftp: Any) -> FTPConnection:
    return FTPConnection(id=conn_id, ftp=FTPConfig(**{"host": "127.0.0.1", **ftp}))


def test_diff_names_added_removed_and_changed_ids() -> None:
    old = Connections(
        [
            _ftp("same"),
            _ftp("pw", password="a"),
            _ftp("gone"),
            LocalConnection(id="l", base_path=Path("/a")),
        ]
    )
    new = Connections(
        [
            _ftp("same"),
            _ftp("pw", password="b"),
            _ftp("new"),
            LocalConnection(id="l", base_path=Path("/b")),
        ]
    )
    changes = diff_connections(old, new)
    assert (changes.added, changes.removed, changes.changed) == (("new",), ("gone",), ("l", "pw"))
    assert not diff_connections(old, Connections(list(old.values())))


def test_watch_step_loads_a_new_version_only_once_it_holds_still() -> None:
    v1, v2, v3 = FileStamp(1, 1), FileStamp(1, 2), FileStamp(1, 3)
    step = WatchStep(v1, v1)
    step, load = step.look(v1)
    assert not load
    step, load = step.look(v2)  # just changed: may be half written
    assert not load
    step, load = step.look(v3)  # changed again
    assert not load
    step, load = step.look(v3)
    assert load and step.loaded == v3
    step, load = step.look(v3)
    assert not load  # loaded once (applied or refused), not again


def _secret_dir(root: Path, text: str) -> Path:
    """A Kubernetes Secret volume: connections.ini -> ..data/connections.ini -> ..<stamp>/."""
    root.mkdir(exist_ok=True)
    _secret_update(root, text)
    (root / "connections.ini").symlink_to("..data/connections.ini")
    return root / "connections.ini"


def _secret_update(root: Path, text: str) -> None:
    """What the kubelet's atomic writer does: a new timestamped directory, then a swap of ..data."""
    version = root / f"..2026_11_30_{time.monotonic_ns()}"
    version.mkdir()
    (version / "connections.ini").write_text(text)
    link = root / "..data_tmp"
    link.symlink_to(version.name)
    os.replace(link, root / "..data")


async def test_watcher_follows_a_kubernetes_symlink_swap_and_refuses_a_broken_version(
    tmp_path: Path,
) -> None:
    path = _secret_dir(tmp_path / "secret", "[a]\ntype = local\nbase_path = /a\n")
    applied: list[Connections] = []
    results: list[str] = []

    async def apply(connections: Connections) -> None:
        applied.append(connections)

    watcher = ConnectionsWatcher(
        path, load_connections(path), apply, interval=1, reloaded=results.append
    )
    _secret_update(tmp_path / "secret", "[a]\ntype = local\nbase_path = /b\n")
    await watcher.check()
    await watcher.check()
    assert [c["a"].base_path for c in applied] == [Path("/b")]  # type: ignore[union-attr]
    _secret_update(tmp_path / "secret", "[a]\ntype = nonsense\n")
    await watcher.check()
    await watcher.check()
    await watcher.check()
    assert results == ["applied", "refused"] and len(applied) == 1


def _rotate(root: Path, name: str, data: bytes) -> None:
    """A kubelet update of a one-file Secret volume: ``name -> ..data/name``, ``..data`` swapped."""
    version = root / f"..2026_11_30_{time.monotonic_ns()}"
    version.mkdir(parents=True)
    (version / name).write_bytes(data)
    link = root / "..data_tmp"
    link.symlink_to(version.name)
    os.replace(link, root / "..data")
    if not (root / name).is_symlink():
        (root / name).symlink_to(f"..data/{name}")


async def test_a_password_rotated_in_its_own_secret_is_applied(tmp_path: Path) -> None:
    """``pass_file`` in another Secret: its rotation changes no line of connections.ini,
    and the watcher still applies the new password."""
    _rotate(tmp_path / "password", "password", b"old-secret\n")
    path = tmp_path / "connections.ini"
    path.write_text(
        "[p]\ntype = ftp\nhost = 127.0.0.1\npass_file = password/password\n"
        "[local]\ntype = local\nbase_path = /a\n"
    )
    applied: list[Connections] = []

    async def apply(connections: Connections) -> None:
        applied.append(connections)

    watcher = ConnectionsWatcher(path, load_connections(path), apply, interval=1)
    await watcher.check()
    assert applied == []  # nothing changed yet
    _rotate(tmp_path / "password", "password", b"new-secret\n")
    await watcher.check()
    await watcher.check()
    assert [c["p"].ftp.password.get_secret_value() for c in applied] == ["new-secret"]  # type: ignore[union-attr]
    await watcher.check()
    assert len(applied) == 1


async def test_a_version_refused_for_a_missing_pass_file_is_applied_once_the_file_appears(
    tmp_path: Path,
) -> None:
    """tester3: connections.ini (a ConfigMap) now names the password of a Secret that is mounted a
    moment later: operations.md says a refused version is tried again when the file
    changes; the file it names changing is such a change (it is watched once in use)."""
    (tmp_path / "old").write_text("old-secret\n")
    path = tmp_path / "connections.ini"
    section = (
        "[p]\ntype = ftp\nhost = 127.0.0.1\npass_file = {}\n[l]\ntype = local\nbase_path = /a\n"
    )
    path.write_text(section.format("old"))
    applied: list[Connections] = []
    results: list[str] = []

    async def apply(connections: Connections) -> None:
        applied.append(connections)

    watcher = ConnectionsWatcher(
        path, load_connections(path), apply, interval=1, reloaded=results.append
    )
    path.write_text(section.format("new"))
    os.utime(path, ns=(1, 1))
    for _ in range(3):
        await watcher.check()
    assert results == ["refused"]
    (tmp_path / "new").write_text("new-secret\n")
    for _ in range(3):
        await watcher.check()
    passwords = [c["p"].ftp.password.get_secret_value() for c in applied]  # type: ignore[union-attr]
    assert passwords == ["new-secret"]
    assert results == ["refused", "applied"]


def test_a_refused_connections_file_names_the_files_it_tried(tmp_path: Path) -> None:
    """The loader's error carries the files a refused version read or tried (the missing
    one included), in order: the watcher watches them."""
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    (tmp_path / "p1").write_text("one\n")
    path = tmp_path / "connections.ini"
    path.write_text(
        "[a]\ntype = ftp\nhost = h\npass_file = p1\n[b]\ntype = ftp\nhost = h\n"
        "pass_file = p2\n[c]\ntype = ftp\nhost = h\npass_file = p3\n"
    )
    with pytest.raises(ConfigError) as missing:
        load_connections(path)
    assert missing.value.files == (tmp_path / "p1", tmp_path / "p2")
    path.write_text("[a]\ntype = ftp\nhost = h\ntls = explicit\nca_file = ca.pem\n")
    with pytest.raises(ConfigError) as not_pem:
        load_connections(path)
    assert not_pem.value.files == (tmp_path / "ca.pem",)


async def test_a_ca_bundle_replaced_under_the_same_path_makes_the_connection_changed(
    tmp_path: Path,
) -> None:
    """A rotated CA (same path, new bytes) makes a new FTPConfig, so the pool builds a new
    factory (and TLS context) for it; the old engine kept the old context."""
    trustme = pytest.importorskip("trustme")
    _rotate(tmp_path / "ca", "ca.pem", trustme.CA().cert_pem.bytes())
    path = tmp_path / "connections.ini"
    path.write_text(
        "[p]\ntype = ftp\nhost = 127.0.0.1\ntls = explicit\nca_file = ca/ca.pem\n"
        "[local]\ntype = local\nbase_path = /a\n"
    )
    first = load_connections(path)
    applied: list[Connections] = []

    async def apply(connections: Connections) -> None:
        applied.append(connections)

    watcher = ConnectionsWatcher(path, first, apply, interval=1)
    _rotate(tmp_path / "ca", "ca.pem", trustme.CA().cert_pem.bytes())
    await watcher.check()
    await watcher.check()
    assert len(applied) == 1
    assert diff_connections(first, applied[0]).changed == ("p",)
    assert applied[0]["p"].ftp.ca_file == first["p"].ftp.ca_file  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "# emptied by a writer that truncates first\n",
        "",
        "[a]\ntype = local\nbase_path = /a\nuser = x\n  pass = y\n",
        "[ a ]\ntype = local\nbase_path = /a\n",
    ],
    ids=["comments-only", "empty", "continuation-line", "spaced-name"],
)
async def test_reload_refuses_a_connections_file_without_any_connection(
    tmp_path: Path, text: str
) -> None:
    """tester2: start-up refused a file without any connection, the reload applied it
    and removed every connection. Both now use one loader: every start-up check
    refuses a new version too, and the version in use stays."""
    path = tmp_path / "connections.ini"
    path.write_text("[a]\ntype = local\nbase_path = /a\n")
    applied: list[Connections] = []
    results: list[str] = []

    async def apply(connections: Connections) -> None:
        applied.append(connections)

    watcher = ConnectionsWatcher(
        path, load_connections(path), apply, interval=1, reloaded=results.append
    )
    path.write_text(text)
    os.utime(path, ns=(1, 1))  # another version even when the same size in the same tick
    for _ in range(3):
        await watcher.check()
    assert applied == []
    assert results == ["refused"]


async def test_reload_logs_a_local_base_path_that_does_not_exist(tmp_path: Path) -> None:
    """Applied (a volume may come later), and said: its tasks fail TRANSIENT until then."""
    path = tmp_path / "connections.ini"
    path.write_text(f"[a]\ntype = local\nbase_path = {tmp_path}\n")

    async def apply(connections: Connections) -> None:
        pass

    watcher = ConnectionsWatcher(path, load_connections(path), apply, interval=1)
    path.write_text(f"[a]\ntype = local\nbase_path = {tmp_path / 'vol'}\n")
    with capture_logs() as logs:
        await watcher.check()
        await watcher.check()
    missing = [line for line in logs if line["event"] == "config.base_path_missing"]
    assert missing == [
        {"event": "config.base_path_missing", "log_level": "warning", "connection": "a",
         "base_path": str(tmp_path / "vol")}
    ]  # fmt: skip


async def test_a_change_between_the_start_up_load_and_the_watcher_is_not_missed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "connections.ini"
    path.write_text("[a]\ntype = local\nbase_path = /a\n")
    at_start_up = load_connections(path)
    applied: list[Connections] = []
    results: list[str] = []

    async def apply(connections: Connections) -> None:
        applied.append(connections)

    quiet = ConnectionsWatcher(path, at_start_up, apply, interval=1, reloaded=results.append)
    await quiet.check()
    assert not applied and not results  # the first look confirms the start-up version
    path.write_text("[a]\ntype = local\nbase_path = /b\n")  # before the watcher starts
    watcher = ConnectionsWatcher(path, at_start_up, apply, interval=1, reloaded=results.append)
    await watcher.check()
    assert [c["a"].base_path for c in applied] == [Path("/b")]  # type: ignore[union-attr]
    assert results == ["applied"]


async def test_a_version_the_pool_cannot_use_is_refused_and_changes_nothing(
    make_pyftpd: MakeServer, tmp_path: Path
) -> None:
    server = make_pyftpd()
    path = tmp_path / "connections.ini"
    path.write_text(_section("p", server) + f"[local]\ntype = local\nbase_path = {tmp_path}\n")
    first = load_connections(path)
    pool = SessionPool(first.session_factories())
    engine = TransferEngine(first, pool, worker="w")
    results: list[str] = []
    watcher = ConnectionsWatcher(
        path, first, engine.reconfigure, interval=1, reloaded=results.append
    )
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with path.open("a") as rewritten:  # in place: same inode; the loader refuses the CA file
        rewritten.write("[q]\ntype = ftp\nhost = 127.0.0.1\ntls = explicit\nca_file = junk.pem\n")
    await watcher.check()
    await watcher.check()
    assert results == ["refused"]
    assert engine.connections is first
    with pytest.raises(PoolerError):
        pool.pin("q")
    async with pool.session("p") as session:
        await session.noop()
    await pool.aclose()


# -- the pool's switch, against a real server ------------------------------------------


def _config(server: FTPServer, **changes: Any) -> FTPConfig:
    return FTPConfig(
        host=server.host, port=server.port, user=server.user, password=server.password, **changes
    )


async def test_pool_reconfigure_retires_idle_sessions_and_closes_borrowed_ones_on_return(
    make_pyftpd: MakeServer,
) -> None:
    old, new = make_pyftpd(), make_pyftpd(user="other", password="new-secret")
    pool = SessionPool({"a": SessionFactory(_config(old)), "b": SessionFactory(_config(old))})
    async with pool.session("a") as busy:
        async with pool.session("a"):
            pass  # returned: one idle session
        async with pool.session("b"):
            pass
        assert wait_until(lambda: old.connection_count() == 3)
        closing = pool.reconfigure(
            {"a": _config(new)}
        )  # a changed (port, user, password), b removed
        await pool.close_sessions(closing)
        assert len(closing) == 2
        stats = pool.stats()  # the borrowed session of the old version is still counted
        assert (stats["a"].open, stats["a"].busy) == (1, 1)
        assert "b" not in stats  # removed, nothing of it out
        assert await trio.to_thread.run_sync(
            lambda: wait_until(lambda: old.connection_count() == 1)
        )
        await busy.noop()  # the borrowed session of the old version still works
    assert await trio.to_thread.run_sync(lambda: wait_until(lambda: old.connection_count() == 0))
    async with pool.session("a") as session:
        assert session.config.port == new.port and new.connection_count() == 1
    assert (pool.stats()["a"].open, pool.stats()["a"].busy) == (1, 0)
    with pytest.raises(PoolerError) as caught:
        async with pool.session("b"):
            pass
    assert caught.value.code is ErrorCode.INVALID_CONFIG
    assert pool.allowance("b").limit > 0  # queued tasks of b start, to fail at once
    await pool.aclose()


async def test_pool_stats_count_a_removed_connections_session_until_it_is_returned(
    make_pyftpd: MakeServer,
) -> None:
    server = make_pyftpd()
    pool = SessionPool({"a": SessionFactory(_config(server)), "b": SessionFactory(_config(server))})
    async with pool.session("b"):
        await pool.close_sessions(pool.reconfigure({"a": _config(server)}))  # b removed
        stats = pool.stats()
        assert (stats["b"].cap, stats["b"].open, stats["b"].busy) == (0, 1, 1)
    assert "b" not in pool.stats()  # returned and closed
    await pool.aclose()


async def test_results_are_labelled_with_their_ftp_connection_after_it_was_removed() -> None:
    local = LocalConnection(id="local", base_path=Path("/srv"))
    first = Connections([_ftp("partner"), _ftp("other"), local])
    pool = SessionPool(first.session_factories())
    engine = TransferEngine(first, pool, worker="w")

    def result(operation: str, source: str, destination: str) -> Result:
        return Result.model_validate(
            {
                "task_id": "t",
                "status": "completed",
                "operation": operation,
                "source": {"connection_id": source, "path": "a"},
                "destination": {"connection_id": destination, "path": "b"},
                "bytes_transferred": 0,
                "duration_ms": 0,
                "attempts": 1,
                "completed_at": "2026-11-30T04:00:00.000Z",
                "worker": "w",
            }
        )

    assert engine.ftp_side(result("download", "partner", "local")) == "partner"
    assert engine.ftp_side(result("upload", "local", "other")) == "other"
    await engine.reconfigure(Connections([_ftp("other"), local]))  # partner removed
    assert engine.ftp_side(result("download", "partner", "local")) == "partner"
    assert engine.ftp_side(result("download", "made-up", "local")) == ""  # never a label
    await pool.aclose()


async def test_a_pinned_connection_keeps_its_settings_after_a_change_or_removal(
    make_pyftpd: MakeServer,
) -> None:
    old, new = make_pyftpd(), make_pyftpd(user="other", password="new-secret")
    pool = SessionPool({"a": SessionFactory(_config(old)), "b": SessionFactory(_config(old))})
    pinned_a, pinned_b = pool.pin("a"), pool.pin("b")
    await pool.close_sessions(pool.reconfigure({"a": _config(new)}))
    for pinned in (pinned_a, pinned_b):  # an attempt planned before the switch
        async with pool.session(pinned) as session:
            assert session.config.port == old.port and old.connection_count() == 1
        assert await trio.to_thread.run_sync(
            lambda: wait_until(lambda: old.connection_count() == 0)
        )
    async with pool.session("a") as session:  # by id: the new version
        assert session.config.port == new.port
    with pytest.raises(PoolerError):
        pool.pin("b")
    await pool.aclose()


def _engine_task(task_id: str, path: str = "/f.txt") -> Task:
    return Task.model_validate(
        {
            "task_id": task_id,
            "source": {"connection_id": "p", "path": path},
            "destination": {"connection_id": "local", "path": f"in/{task_id}"},
        }
    )


async def test_engine_plans_an_attempt_again_on_the_version_current_when_it_starts(
    make_pyftpd: MakeServer, tmp_path: Path
) -> None:
    roots = {name: tmp_path / name for name in ("old", "new", "local_old", "local_new")}
    for name, root in roots.items():
        root.mkdir()
        (root / "f.txt").write_text(name)
    old, new = make_pyftpd(root=roots["old"]), make_pyftpd(root=roots["new"])

    def version(server: FTPServer, local: Path) -> Connections:
        ftp = FTPConnection(id="p", ftp=_config(server))
        return Connections([ftp, LocalConnection(id="local", base_path=local)])

    first = version(old, roots["local_old"])
    pool = SessionPool(first.session_factories())
    engine = TransferEngine(first, pool, worker="w")
    queued, gone = engine.prepare(_engine_task("t1")), engine.prepare(_engine_task("t2"))
    assert isinstance(queued, Transfer) and isinstance(gone, Transfer)
    await engine.reconfigure(version(new, roots["local_new"]))
    result = await engine.attempt(queued)
    assert isinstance(result, Result) and result.status.value == "completed"
    assert (roots["local_new"] / "in" / "t1").read_text() == "new"  # both sides: the new version
    await engine.reconfigure(Connections([LocalConnection(id="local", base_path=tmp_path)]))
    failed = await engine.attempt(gone)
    assert isinstance(failed, Result) and failed.error_code is ErrorCode.INVALID_CONFIG
    assert failed.attempts == 0 and "unknown connection id" in (failed.error_message or "")
    await pool.aclose()


async def test_queued_tasks_of_a_removed_connection_fail_while_its_running_one_finishes(
    make_pyftpd: MakeServer, ftp_root: Path, tmp_path: Path
) -> None:
    _files(ftp_root, small=1000, big=512 * 1024)  # ~2 s at the slow server's pace
    server = _slow_server(make_pyftpd)
    conns = Connections(
        [
            FTPConnection(id="p", ftp=_config(server, max_sessions=1)),
            LocalConnection(id="local", base_path=tmp_path),
        ]
    )
    pool = SessionPool(conns.session_factories())
    engine = TransferEngine(conns, pool, worker="w")
    results: dict[str, Result] = {}

    def finished(result: Result, token: str, task: Task) -> None:
        results[token] = result

    def crashed(exc: Exception, token: str, task: Task) -> None:
        raise AssertionError(f"{token} crashed: {exc!r}")

    transfers: ScheduledTransfers[str] = ScheduledTransfers(
        engine, runners=4, finished=finished, crashed=crashed
    )
    tasks = [_engine_task("big", "/src/big")] + [_engine_task(f"q{i}") for i in range(3)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transfers.run)
        for task in tasks:
            transfers.submit(task, task.task_id)
        transfers.close()
        while not any(tmp_path.glob("in/.big*")):  # big runs; the others queue (cap 1)
            await trio.sleep(0.01)
        await engine.reconfigure(Connections([LocalConnection(id="local", base_path=tmp_path)]))
    assert results["big"].status.value == "completed"
    for queued in ("q0", "q1", "q2"):
        assert results[queued].error_code is ErrorCode.INVALID_CONFIG, results[queued]
    assert await trio.to_thread.run_sync(lambda: wait_until(lambda: server.connection_count() == 0))
    await pool.aclose()


# -- the worker running, tasks in flight ---------------------------------------------------


class _Slow(ThrottledDTPHandler):  # type: ignore[misc]
    read_limit = 256 * 1024
    write_limit = 256 * 1024


def _slow_server(make_pyftpd: MakeServer, **kwargs: Any) -> FTPServer:
    return make_pyftpd(handler_attrs={"dtp_handler": _Slow, "use_sendfile": False}, **kwargs)


def _section(name: str, server: FTPServer) -> str:
    return (
        f"[{name}]\ntype = ftp\nhost = {server.host}\nport = {server.port}\nuser = {server.user}\n"
        f"pass = {server.password}\ntimeout = 5\nconnect_timeout = 5\ndata_stall_timeout = 5\n\n"
    )


def _task(task_id: str, src_id: str, name: str) -> bytes:
    return json.dumps(
        {
            "task_id": task_id,
            "src_id": src_id,
            "src_path": f"/src/{name}",
            "dst_id": "local",
            "dst_path": f"in/{task_id}",
        }
    ).encode()


def _metric(worker: Worker, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", worker.metrics(), re.MULTILINE)
    return float(match.group(1)) if match else 0.0


class Running:
    """A worker process with its topics, connections file (a Kubernetes Secret) and results."""

    def __init__(self, broker: KafkaBroker, tmp_path: Path, first: str) -> None:
        self.topics = Topics(broker, 1)
        self.secret = tmp_path / "secret"
        self.local = tmp_path / "local"
        self.local.mkdir()
        self.base = f"[local]\ntype = local\nbase_path = {self.local}\n\n"
        path = _secret_dir(self.secret, self.base + first)
        (tmp_path / "none.yaml").write_text("{}\n")
        env = {
            **os.environ,
            "FTP_POOLER_CONNECTIONS": str(path),
            "FTP_POOLER_CONFIG": str(tmp_path / "none.yaml"),
            "FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "FTP_POOLER__KAFKA__INPUT_TOPIC": self.topics.tasks,
            "FTP_POOLER__KAFKA__RESULT_TOPIC": self.topics.results,
            "FTP_POOLER__KAFKA__FAIL_TOPIC": self.topics.failures,
            "FTP_POOLER__KAFKA__CONSUMER_GROUP": self.topics.group,
            "FTP_POOLER__KAFKA__SESSION_TIMEOUT_MS": "2000",
            "FTP_POOLER__KAFKA__HEARTBEAT_INTERVAL_MS": "500",
            "FTP_POOLER__KAFKA__COMMIT_INTERVAL_SECONDS": "0.5",
            "FTP_POOLER__WORKER__CONNECTIONS_RELOAD_SECONDS": "0.1",
            "FTP_POOLER__TRANSFER__INITIAL_BACKOFF_SECONDS": "0.2",
            "FTP_POOLER__LOGGING__LEVEL": "WARNING",
            "FTP_POOLER__LOGGING__FORMAT": "json",
        }
        self.worker = Worker(tmp_path, env, "w1")
        self.log_path = tmp_path / "w1.log"
        self.worker.wait_ready()
        self.results: dict[str, dict[str, Any]] = {}
        self.applied = 0.0

    def run(self, tasks: dict[str, bytes]) -> dict[str, dict[str, Any]]:
        self.topics.produce(list(tasks.values()))
        return self.wait(set(tasks))

    def wait(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        for result in self.topics.read_results(ids, timeout=30):
            self.results[result["task_id"]] = result
        return {task_id: self.results[task_id] for task_id in ids}

    def update(self, text: str, result: str = "applied") -> None:
        """Swap a new version in; wait until the worker counted it."""
        name = f'ftp_pooler_config_reloads_total{{result="{result}"}}'
        before = _metric(self.worker, name)
        _secret_update(self.secret, self.base + text)
        assert wait_until(lambda: _metric(self.worker, name) > before, timeout=10)

    def wait_in_flight(self, task_id: str) -> None:
        assert wait_until(lambda: any(self.local.glob(f"in/.{task_id}*")), timeout=10)


@pytest.fixture
def running(kafka_broker: KafkaBroker, tmp_path: Path) -> Iterator[Callable[[str], Running]]:
    started: list[Running] = []

    def start(first: str) -> Running:
        started.append(Running(kafka_broker, tmp_path, first))
        return started[-1]

    yield start
    for run in started:
        run.worker.kill()


def _files(root: Path, **sizes: int) -> dict[str, str]:
    digests = {}
    for name, size in sizes.items():
        payload = os.urandom(size)
        (root / "src").mkdir(parents=True, exist_ok=True)
        (root / "src" / name).write_bytes(payload)
        digests[name] = hashlib.sha256(payload).hexdigest()
    return digests


def test_partner_added_used_then_broken_version_refused_then_removed_mid_transfer(
    running: Callable[[str], Running], make_pyftpd: MakeServer, ftp_root: Path
) -> None:
    digests = _files(ftp_root, small=1000, big=2 * 1024 * 1024)
    first, partner = make_pyftpd(), _slow_server(make_pyftpd)
    run = running(_section("a", first))
    before = run.run({"early": _task("early", "b", "small")})["early"]
    assert (before["status"], before["error_code"]) == ("failed", "INVALID_CONFIG")

    run.update(_section("a", first) + _section("b", partner))  # the Secret gains partner b
    assert run.run({"b1": _task("b1", "b", "small")})["b1"]["status"] == "completed"

    run.update("[b]\ntype = ftp\nhost =\n", result="refused")  # a broken version
    refusals = [line for line in run.log_path.read_text().splitlines() if "reload_refused" in line]
    assert len(refusals) == 1 and "[b] host" in refusals[0]
    assert _metric(run.worker, "ftp_pooler_config_refused") == 1
    applied_mtime = _metric(run.worker, "ftp_pooler_config_mtime_seconds")
    assert 0 < applied_mtime < time.time()  # still the version applied before
    assert run.run({"b2": _task("b2", "b", "small")})["b2"]["status"] == "completed"

    run.topics.produce([_task("b3", "b", "big")])  # ~8 s at the partner's pace
    run.wait_in_flight("b3")
    assert run.run({"b2x": _task("b2x", "b", "small")})["b2x"]["status"] == "completed"
    assert partner.connection_count() == 2  # b3's session, busy; b2x's, idle
    run.update(_section("a", first))  # partner b removed while b3 transfers
    assert wait_until(lambda: partner.connection_count() == 1, timeout=5)  # the idle one closed
    assert any(run.local.glob("in/.b3*")), "b3 should still be transferring"
    assert _metric(run.worker, "ftp_pooler_config_refused") == 0
    assert _metric(run.worker, "ftp_pooler_config_mtime_seconds") > applied_mtime
    late = run.run({"b4": _task("b4", "b", "small")})["b4"]
    assert (late["status"], late["error_code"]) == ("failed", "INVALID_CONFIG")
    assert "unknown connection id" in late["error_message"]
    assert run.wait({"b3"})["b3"]["status"] == "completed"  # the running transfer finished
    assert hashlib.sha256((run.local / "in" / "b3").read_bytes()).hexdigest() == digests["big"]
    assert wait_until(lambda: partner.connection_count() == 0, timeout=10)  # nothing left open
    assert run.run({"a1": _task("a1", "a", "small")})["a1"]["status"] == "completed"


def test_partner_password_and_port_changed_mid_transfer(
    running: Callable[[str], Running], make_pyftpd: MakeServer, ftp_root: Path
) -> None:
    digests = _files(ftp_root, small=1000, big=1024 * 1024)
    old = _slow_server(make_pyftpd)
    new = make_pyftpd(user="pooler2", password="rotated-secret")
    run = running(_section("p", old))
    assert run.run({"p0": _task("p0", "p", "small")})["p0"]["status"] == "completed"
    run.topics.produce([_task("p1", "p", "big")])
    run.wait_in_flight("p1")
    run.update(_section("p", new))  # new port and credentials (the old ones fail on `new`)
    done = run.run({"p2": _task("p2", "p", "small")})["p2"]
    assert done["status"] == "completed" and new.peak_connections() >= 1
    assert run.wait({"p1"})["p1"]["status"] == "completed"  # the old session's transfer finished
    assert hashlib.sha256((run.local / "in" / "p1").read_bytes()).hexdigest() == digests["big"]
    assert wait_until(lambda: old.connection_count() == 0, timeout=10)
