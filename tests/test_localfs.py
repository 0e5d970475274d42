"""localfs: the offload policy alone, LocalIO, the group commit, durable commits.

The policy is pure and tested with made-up durations. The rest runs real
file-system calls: on a tmp directory, and on ``tests/servers/slowfs.py`` (a
FUSE volume with 2 ms per metadata operation that keeps, after a power cut,
only what was fsynced).
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
import trio
from clients import ftp_config
from conftest import unavailable
from trio.testing import wait_all_tasks_blocked

from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.contract import ResultStatus, Task
from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.ftp.pool import PoolLimits, open_session_pool
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.transfer import localfs
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.transfer.localfs import LocalIO, LocalRoot, OffloadPolicy
from servers import FTPServer, ServerUnavailable
from servers.slowfs import SlowFS

T = TypeVar("T")

# -- OffloadPolicy (pure) ----------------------------------------------------------------


def test_a_kind_starts_on_the_loop_and_stays_while_fast() -> None:
    policy = OffloadPolicy(slow=0.001, probe_after=1.0)
    for now in range(100):
        assert policy.inline("write", float(now))
        policy.observe("write", 0.0001, float(now))
    assert policy.threaded() == []


def test_slow_calls_move_a_kind_only_when_in_a_row() -> None:
    policy = OffloadPolicy(slow=0.001, probe_after=1.0, moves_after=3)
    for _ in range(10):  # a preempted call now and then: stays on the loop
        policy.observe("write", 0.0001, 0.0)
        policy.observe("write", 0.0001, 0.0)
        policy.observe("write", 0.006, 0.0)
    assert policy.threaded() == []
    policy.observe("create", 0.003, 0.0)
    policy.observe("create", 0.003, 0.0)
    assert policy.inline("create", 0.0)
    policy.observe("create", 0.003, 0.0)
    assert not policy.inline("create", 0.5)
    assert policy.threaded() == ["create"]
    assert policy.inline("write", 0.5)  # kinds are independent


def test_a_threaded_kind_is_probed_on_the_loop_after_the_period() -> None:
    policy = OffloadPolicy(slow=0.001, probe_after=1.0, moves_after=1)
    policy.observe("rename", 0.002, 10.0)
    assert not policy.inline("rename", 10.9)
    assert policy.inline("rename", 11.0)  # the probe
    policy.observe("rename", 0.002, 11.0)  # still slow: threads for twice as long
    assert not policy.inline("rename", 12.9)
    assert policy.inline("rename", 13.0)
    policy.observe("rename", 0.0001, 13.0)  # fast now: back on the loop
    assert policy.inline("rename", 13.0)
    assert policy.threaded() == []


def test_the_probe_period_doubles_while_probes_are_slow_up_to_a_limit() -> None:
    policy = OffloadPolicy(slow=0.001, probe_after=1.0, moves_after=1, probe_max=5.0)
    now, periods = 0.0, []
    for _ in range(6):
        policy.observe("land", 0.002, now)  # the first move, then each probe, slow
        until = now
        while not policy.inline("land", until):
            until += 0.5
        periods.append(until - now)
        now = until
    assert periods == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    policy.observe("land", 0.0001, now)  # fast: on the loop, and the period starts over
    policy.observe("land", 0.002, now)
    assert policy.inline("land", now + 1.0)


def test_a_slow_probe_sends_a_kind_back_at_once() -> None:
    policy = OffloadPolicy(slow=0.001, probe_after=1.0, moves_after=4)
    for _ in range(4):
        policy.observe("commit", 0.002, 0.0)
    assert not policy.inline("commit", 0.5)
    policy.observe("commit", 0.002, 1.0)  # one slow probe, not four
    assert not policy.inline("commit", 1.5)


# -- LocalIO -----------------------------------------------------------------------------


async def test_fast_calls_run_on_the_loop_thread(tmp_path: Path) -> None:
    io = LocalIO()
    threads = set()

    def call() -> None:
        threads.add(threading.get_ident())
        os.path.lexists(tmp_path / "x")

    for _ in range(50):
        await io.run("lookup", call)
    assert threads == {threading.get_ident()}
    assert io.policy.threaded() == []


async def test_slow_calls_move_to_worker_threads() -> None:
    io = LocalIO(policy=OffloadPolicy(slow=0.001, probe_after=60.0, moves_after=1))
    threads = []

    def call() -> int:
        threads.append(threading.get_ident())
        time.sleep(0.003)
        return 7

    assert await io.run("create", call) == 7  # measured on the loop: slow
    assert await io.run("create", call) == 7
    assert threads[0] == threading.get_ident()
    assert threads[1] != threading.get_ident()


async def test_errors_of_a_threaded_call_pass_through() -> None:
    io = LocalIO(policy=OffloadPolicy(slow=0.0, probe_after=60.0, moves_after=1))
    await io.run("x", time.sleep, 0.001)

    def fail() -> None:
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError, match="I/O error"):
        await io.run("x", fail)


# -- GroupCommit -------------------------------------------------------------------------


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every directory fsync made, in order; each takes 20 ms."""
    done: list[str] = []

    def slow_fsync(path: str) -> None:
        time.sleep(0.02)
        done.append(path)

    monkeypatch.setattr(localfs, "_fsync_directory", slow_fsync)
    yield done


def threaded_root(base: Path) -> LocalRoot:
    """A durable root whose landings and directory syncs (only they) always run in worker
    threads."""
    policy = OffloadPolicy(slow=1.0, probe_after=3600.0, moves_after=1)
    policy.observe("land", 2.0, time.perf_counter())
    policy.observe("sync", 2.0, time.perf_counter())
    return LocalRoot(base, io=LocalIO(policy=policy))


async def land(root: LocalRoot, rel: str, payload: bytes) -> Path:
    path = root.resolve(rel)
    await root.make_parent(path)
    file = await root.open_atomic(path)
    for start in range(0, len(payload), 65536):
        await file.write(payload[start : start + 65536])
    await file.commit(replace=True)
    return path


async def test_files_committed_during_a_batch_land_together_in_the_next(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gate = threading.Event()  # holds the first batch's directory fsync
    entered = threading.Event()
    fsyncs: list[str] = []

    def gated_fsync(path: str) -> None:
        entered.set()
        gate.wait(10)
        fsyncs.append(path)

    root = threaded_root(tmp_path)
    await land(root, "in/warm", b"")  # syncs in/ and its chain once
    monkeypatch.setattr(localfs, "_fsync_directory", gated_fsync)
    finished: dict[str, int] = {}

    async def download(name: str) -> None:
        await land(root, f"in/{name}", name.encode())
        finished[name] = len(fsyncs)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(download, "first")
        while not entered.is_set():
            await trio.sleep(0.005)  # the first batch is running
        for index in range(10):
            nursery.start_soon(download, f"later-{index}")
        while sum(name.startswith("later-") for name in os.listdir(tmp_path / "in")) < 10:
            await trio.sleep(0.005)  # each renamed at once (in a thread of its own) ...
        await wait_all_tasks_blocked()  # ... then all wait for the batch
        gate.set()
    inbox = str(tmp_path / "in")
    assert fsyncs == [inbox, inbox]  # 11 files, 2 batches, one directory fsync each
    assert finished["first"] == 1
    # each later file waited for a batch that started after it was written
    assert all(finished[f"later-{index}"] == 2 for index in range(10))
    assert sorted(os.listdir(inbox)) == sorted(["warm", *finished])  # no temporary files


async def test_a_batch_syncs_each_directory_once_and_new_parents_until_synced(
    fsyncs: list[str], tmp_path: Path
) -> None:
    root = threaded_root(tmp_path)
    async with trio.open_nursery() as nursery:
        for index in range(6):
            nursery.start_soon(land, root, f"a/b{index % 2}/f{index}", b"x")
    # b0 and b1 for the files, a for their names, the base for a's name
    assert set(fsyncs) == {str(tmp_path / d) for d in ("a/b0", "a/b1", "a", ".")}
    # 3 files each: one fsync that a file waited for, one for those renamed meanwhile
    assert fsyncs.count(str(tmp_path / "a/b0")) <= 2
    assert fsyncs.count(str(tmp_path / "a/b1")) <= 2
    fsyncs.clear()
    await land(root, "a/b0/again", b"x")
    assert fsyncs == [str(tmp_path / "a/b0")]  # its chain is known durable now


async def test_a_file_alone_in_its_directory_lands_in_one_call(tmp_path: Path) -> None:
    """fsync, rename and the directory's fsync in one call through LocalIO (one hop to a
    thread on a slow volume), not one for the file and one for its directory."""
    calls: list[str] = []

    class CountingIO(LocalIO):
        async def run(self, kind: str, call: Callable[..., T], *args: object) -> T:
            calls.append(kind)
            return await super().run(kind, call, *args)

    root = LocalRoot(tmp_path, io=CountingIO())
    await land(root, "a/f", b"x")
    await land(root, "a/g", b"y")
    assert calls == ["mkdir", "create", "write", "land", "create", "write", "land"]
    assert (tmp_path / "a/g").read_bytes() == b"y"


@pytest.mark.parametrize("durable", [True, False])
async def test_a_directory_removed_during_a_write_is_forgotten_and_made_again(
    tmp_path: Path, durable: bool
) -> None:
    """The rename into a directory removed while the file was written fails (the bytes
    went with it) and the directory is forgotten: the next file makes it again. When
    base_path itself went, the failure is TRANSIENT (not mounted?), as in make_parent."""
    calls: list[str] = []

    class CountingIO(LocalIO):
        async def run(self, kind: str, call: Callable[..., T], *args: object) -> T:
            calls.append(kind)
            return await super().run(kind, call, *args)

    base = tmp_path / "base"
    base.mkdir()
    root = LocalRoot(base, durable=durable, io=CountingIO())
    final = base / "out" / "a"
    await root.make_parent(final)
    file = await root.open_atomic(final)
    await file.write(b"x")
    shutil.rmtree(base / "out")
    with pytest.raises(PoolerError) as removed:
        await file.commit(replace=True)
    assert removed.value.code is ErrorCode.FILE_NOT_FOUND
    calls.clear()
    await land(root, "out/a", b"y")
    assert calls[:2] == ["mkdir", "create"]  # made again first: no create met ENOENT
    assert final.read_bytes() == b"y"
    file = await root.open_atomic(final)
    await file.write(b"z")
    shutil.rmtree(base)
    with pytest.raises(PoolerError) as gone:
        await file.commit(replace=True)
    assert gone.value.code is ErrorCode.TRANSIENT
    assert "does not exist (not mounted?)" in gone.value.message
    assert not base.exists()


async def test_a_directory_does_not_wait_for_another_directorys_fsync(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gate = threading.Event()  # holds every fsync of slow/
    entered = threading.Event()
    root = threaded_root(tmp_path)
    await land(root, "slow/warm", b"")
    await land(root, "fast/warm", b"")
    real_fsync = localfs._fsync_directory

    def gated_fsync(path: str) -> None:
        if path.endswith("/slow"):
            entered.set()
            gate.wait(10)
        real_fsync(path)

    monkeypatch.setattr(localfs, "_fsync_directory", gated_fsync)
    landed: list[str] = []

    async def download(name: str) -> None:
        await land(root, name, b"x")
        landed.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(download, "slow/f")
        while not entered.is_set():
            await trio.sleep(0.005)  # slow/'s fsync has begun
        with trio.fail_after(5):
            await download("fast/f")  # while slow/'s fsync hangs
        assert landed == ["fast/f"]
        gate.set()
    assert landed == ["fast/f", "slow/f"]


async def test_a_batch_runs_to_the_end_when_its_leader_is_cancelled(
    fsyncs: list[str], tmp_path: Path
) -> None:
    """Whoever leads a batch may be cancelled (its runner drained): the batch still
    lands, so the others waiting on it are never told a sync that was not."""
    root = threaded_root(tmp_path)
    path = root.resolve("f")
    file = await root.open_atomic(path)
    with trio.CancelScope() as leader:
        leader.cancel()
        await file.commit(replace=True)
    assert path.read_bytes() == b""
    assert fsyncs == [str(tmp_path)]


async def test_a_caller_cancelled_while_its_batch_waits_still_lands_its_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gate = threading.Event()
    fsyncs: list[str] = []

    def gated_fsync(path: str) -> None:
        gate.wait(10)
        fsyncs.append(path)

    root = threaded_root(tmp_path)
    await land(root, "in/warm", b"")
    monkeypatch.setattr(localfs, "_fsync_directory", gated_fsync)
    scope = trio.CancelScope()

    async def cancelled_download() -> None:
        with scope:
            await land(root, "in/second", b"late")
            await trio.sleep(0)  # where the cancellation arrives: after the commit

    async with trio.open_nursery() as nursery:
        nursery.start_soon(land, root, "in/first", b"x")
        await wait_all_tasks_blocked()  # the first batch runs
        nursery.start_soon(cancelled_download)
        await wait_all_tasks_blocked()  # the second waits for it
        scope.cancel()
        gate.set()
    assert scope.cancelled_caught
    assert (tmp_path / "in/second").read_bytes() == b"late"
    assert fsyncs == [str(tmp_path / "in")] * 2


async def test_a_failed_directory_fsync_fails_every_file_of_its_batch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(path: str) -> None:
        time.sleep(0.01)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(localfs, "_fsync_directory", broken)
    root = threaded_root(tmp_path)
    errors = []

    async def download(name: str) -> None:
        try:
            await land(root, name, b"x")
        except PoolerError as exc:
            errors.append((exc.code, "syncing directory" in exc.message))

    async with trio.open_nursery() as nursery:
        for index in range(3):
            nursery.start_soon(download, f"f{index}")
    assert errors == [(ErrorCode.IO_ERROR, True)] * 3


async def test_a_file_that_cannot_land_fails_alone(tmp_path: Path) -> None:
    root = threaded_root(tmp_path)
    (tmp_path / "taken").write_bytes(b"old")
    outcomes: dict[str, str] = {}

    async def download(name: str, replace: bool) -> None:
        file = await root.open_atomic(root.resolve(name))
        await file.write(b"new")
        try:
            await file.commit(replace=replace)
            outcomes[name] = "ok"
        except PoolerError as exc:
            outcomes[name] = exc.code.value

    async with trio.open_nursery() as nursery:
        nursery.start_soon(download, "taken", False)
        for index in range(3):
            nursery.start_soon(download, f"free{index}", False)
    assert outcomes == {"taken": "FILE_EXISTS", **{f"free{i}": "ok" for i in range(3)}}
    assert (tmp_path / "taken").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["free0", "free1", "free2", "taken"]  # no temp


# -- durable commits on a volume that loses power ----------------------------------------


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[SlowFS]:
    fs = SlowFS(tmp_path / "volume", tmp_path / "volume-state", delay=0.002)
    try:
        fs.start()
    except ServerUnavailable as exc:
        unavailable(str(exc))
    try:
        yield fs
    finally:
        fs.stop()


async def test_a_durable_commit_survives_a_power_cut_in_new_nested_directories(
    volume: SlowFS,
) -> None:
    """Bytes, name and the names of the directories made for it (a/b/c) all survive."""
    root = LocalRoot(volume.mount, durable=True)
    payload = os.urandom(300_000)
    await land(root, "a/b/c/f.bin", payload)
    await land(root, "a/b/c/g.bin", payload[:1000])
    await land(root, "top.bin", payload[:5])
    await trio.to_thread.run_sync(volume.crash)
    assert (volume.mount / "a/b/c/f.bin").read_bytes() == payload
    assert (volume.mount / "a/b/c/g.bin").read_bytes() == payload[:1000]
    assert (volume.mount / "top.bin").read_bytes() == payload[:5]
    assert sorted(os.listdir(volume.mount / "a/b/c")) == ["f.bin", "g.bin"]  # no temp files


async def test_without_durability_a_power_cut_loses_the_file(volume: SlowFS) -> None:
    root = LocalRoot(volume.mount, durable=False)
    await land(root, "a/f.bin", os.urandom(10_000))
    await trio.to_thread.run_sync(volume.crash)
    assert not (volume.mount / "a").exists()


async def test_a_slow_volume_runs_its_metadata_calls_in_threads(volume: SlowFS) -> None:
    root = LocalRoot(volume.mount, durable=True)
    for index in range(6):  # 4 slow calls in a row move a kind
        await land(root, f"d/f{index}", b"x" * 100_000)
    threaded = root.io.policy.threaded()
    assert {"create", "land"} <= set(threaded)
    assert "write" not in threaded  # writes land in the page cache: fast


# -- uploads read a slow volume off the event loop ---------------------------------------

OPEN_DELAY = 0.1  # seconds per open on the volume below: a stall nobody could miss
UPLOADS = 10


class LongSteps(trio.abc.Instrument):
    """Counts task steps that held the event loop longer than ``limit`` seconds."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.count = 0
        self._started: float | None = None  # None: the step that added us, not timed

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self._started is not None and time.perf_counter() - self._started > self.limit:
            self.count += 1
        self._started = None


async def test_an_upload_reads_a_slow_volume_without_stalling_the_loop(
    tmp_path: Path, pureftpd_server: FTPServer
) -> None:
    """Each open of the file to upload costs the volume 100 ms: only the few calls that
    measure the volume (4 slow ones in a row, then one probe a second) may hold the
    loop that long; every other open runs in a thread. The old code opened (and read,
    and stat-ed) on the loop: one long step per upload."""
    fs = SlowFS(tmp_path / "volume", tmp_path / "volume-state", delay=OPEN_DELAY)
    try:
        fs.start()
    except ServerUnavailable as exc:
        unavailable(str(exc))
    try:
        payloads = {f"up/f{index}.bin": os.urandom(300_000) for index in range(UPLOADS)}
        (fs.mount / "up").mkdir()
        with ThreadPoolExecutor(UPLOADS) as pool:  # the volume's delays overlap
            list(pool.map(lambda item: (fs.mount / item[0]).write_bytes(item[1]), payloads.items()))
        conns = Connections(
            [
                FTPConnection(id="remote", ftp=ftp_config(pureftpd_server)),
                LocalConnection(id="local", base_path=fs.mount),
            ]
        )
        factories = {"remote": SessionFactory(conns["remote"].ftp)}  # type: ignore[union-attr]
        steps = LongSteps(OPEN_DELAY * 0.9)
        async with open_session_pool(factories, PoolLimits(max_sessions_per_connection=2)) as pool:
            engine = TransferEngine(conns, pool, worker="test")
            trio.lowlevel.add_instrument(steps)
            started = time.monotonic()
            try:
                for name in payloads:
                    task = {
                        "task_id": name,
                        "source": {"connection_id": "local", "path": name},
                        "destination": {"connection_id": "remote", "path": f"/{name}"},
                    }
                    result = await engine.run(Task.model_validate(task))
                    assert result.status is ResultStatus.COMPLETED, result
            finally:
                trio.lowlevel.remove_instrument(steps)
            elapsed = time.monotonic() - started
        for name, payload in payloads.items():
            assert (pureftpd_server.root / name).read_bytes() == payload
        probes = math.ceil(elapsed / localfs.PROBE_SECONDS)
        assert steps.count <= localfs.SLOW_CALLS_TO_MOVE + probes < UPLOADS
    finally:
        fs.stop()
