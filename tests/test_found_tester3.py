"""tester3's findings on today's features (pipelined uploads, rename_over, charset,
reload, slow volumes, Kafka), each a strict xfail until fixed.

Each test runs tasks as ``ftp-pooler copy`` does (:func:`copy_tasks` through a
real :class:`TransferEngine` and session pool) against the scripted server.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ftp_pooler.cli.batch import copy_tasks
from ftp_pooler.config import Connections, FTPConnection, LocalConnection, load_connections
from ftp_pooler.contract import Task
from ftp_pooler.ftp.config import FTPConfig, Timeouts
from ftp_pooler.ftp.pool import PoolLimits, open_session_pool
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.service.reload import ConnectionsWatcher
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.transfer.retry import RetryPolicy
from clients import ftp_config
from scripted_server import ScriptedFTPServer
from test_worker import _padded, download_tasks, remote_files, setup

__all__ = ["setup"]  # the worker fixture of test_worker, used here

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


# -- 4. a refused version's new pass_file appearing later is never applied -------------------


@pytest.mark.xfail(
    strict=True,
    reason="tester3: a connections.ini naming a new pass_file that does not exist yet is "
    "refused (right), but when that file appears the version is never loaded again: the "
    "watcher watches only the files of the version in use",
)
async def test_a_version_refused_for_a_missing_pass_file_is_applied_once_the_file_appears(
    tmp_path: Path,
) -> None:
    """connections.ini (a ConfigMap) now names the password of a Secret that is mounted a
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
    assert results == ["refused"]  # passes today
    (tmp_path / "new").write_text("new-secret\n")
    for _ in range(3):
        await watcher.check()
    passwords = [c["p"].ftp.password.get_secret_value() for c in applied]  # type: ignore[union-attr]
    assert passwords == ["new-secret"]


# -- 5. a corrupt compressed batch crashes the worker (a crash loop) ------------------------


@pytest.mark.xfail(
    strict=True,
    reason="tester3: a record batch whose gzip/lz4/zstd/snappy payload does not decode makes "
    "kafka-python's poll raise the codec's own error (RuntimeError, ZstdError, "
    "UncompressError, BadGzipFile), not a KafkaError: the poller does not catch it, the "
    "worker exits 1 with a traceback, and meets the same batch at each restart",
)
@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd", "snappy"])
def test_a_corrupt_compressed_batch_is_a_poll_failure_not_a_crash(
    setup: Any, ftp_root: Path, tmp_path: Path, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The producer (in this process) writes a batch flagged ``codec`` whose payload is
    not a frame of it (its CRC is right): operations.md promises one kafka.poll_failed
    line and a degraded poller for "a corrupt record", never a crash."""
    import kafka.record.default_records as records

    monkeypatch.setattr(records, f"{codec}_encode", lambda data: b"\x00not-a-frame" * 8)
    digests = remote_files(ftp_root, 3)
    topics, _, start, _ = setup(partitions=1)
    topics.produce(_padded(download_tasks(sorted(digests))), codec)
    worker = start("w1")
    try:
        log = tmp_path / "w1.log"
        deadline = time.monotonic() + 30
        while b"kafka.poll_failed" not in log.read_bytes():
            assert worker.process.poll() is None, log.read_text()[-1000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert worker.stop() == 0
    finally:
        worker.kill()


# -- 6. a local directory removed after a download made it stays "made" for the process ------


async def run_one_by_one(
    local: Path, config: FTPConfig, tasks: list[dict[str, Any]], between: Callable[[], None]
) -> list[dict[str, Any]]:
    """Each task through one engine (its caches kept), ``between()`` after the first."""
    conns = Connections(
        [FTPConnection(id="partner", ftp=config), LocalConnection(id="local", base_path=local)]
    )
    limits = PoolLimits(max_sessions_per_connection=1)
    results: list[dict[str, Any]] = []
    async with open_session_pool({"partner": SessionFactory(config)}, limits) as pool:
        engine = TransferEngine(conns, pool, retry=NO_WAIT, worker="tester3")
        for index, task in enumerate(tasks):
            result = await engine.run(Task.model_validate(task))
            results.append(result.model_dump(mode="json"))
            if index == 0:
                between()
    return results


def download(remote: str, local: str) -> dict[str, Any]:
    return {
        "task_id": f"dl {local}",
        "src_id": "partner",
        "src_path": remote,
        "dst_id": "local",
        "dst_path": local,
        "options": {"verify_size": True, "retry_count": 0},
    }


@pytest.mark.xfail(
    strict=True,
    reason="tester3: localfs remembers a directory it made (_made_dirs) for the whole "
    "process: once it is removed (a clean-up job, a volume remounted), every later "
    "download into it fails FILE_NOT_FOUND, not retryable, until a restart",
)
async def test_a_download_directory_removed_between_tasks_is_made_again(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = make_scripted_ftp(files={"/data/a.bin": PAYLOAD, "/data/b.bin": PAYLOAD[::-1]})
    tasks = [download("/data/a.bin", "out/a.bin"), download("/data/b.bin", "out/b.bin")]
    results = await run_one_by_one(
        local,
        ftp_config(server, timeouts=TIMEOUTS),
        tasks,
        lambda: shutil.rmtree(local / "out"),
    )
    assert [r["status"] for r in results] == ["completed", "completed"], results[1]
    assert (local / "out" / "b.bin").read_bytes() == PAYLOAD[::-1]


@pytest.mark.xfail(
    strict=True,
    reason="tester3: a base_path that disappears mid-run (volume unmounted) fails the "
    "next downloads FILE_NOT_FOUND, not retryable, instead of the documented TRANSIENT "
    "'the local base path ... does not exist (not mounted?)'",
)
async def test_a_base_path_gone_mid_run_is_transient(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    server = make_scripted_ftp(files={"/data/a.bin": PAYLOAD, "/data/b.bin": PAYLOAD[::-1]})
    tasks = [download("/data/a.bin", "out/a.bin"), download("/data/b.bin", "out/b.bin")]
    results = await run_one_by_one(
        local, ftp_config(server, timeouts=TIMEOUTS), tasks, lambda: shutil.rmtree(local)
    )
    assert results[0]["status"] == "completed"
    second = results[1]
    assert (second["error_code"], second["retryable"]) == ("TRANSIENT", True), second
    assert "does not exist (not mounted?)" in second["error_message"]
    assert not local.exists()


# -- 9. docs left behind by today's changes ------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="tester3: docs/operations.md still says pass_file/ca_file are 'Not watched' and a "
    "CA file changed under the same path is read only after another change, right after "
    "describing that both are watched and compared by digest (commit f09da18)",
)
def test_operations_md_does_not_say_pass_and_ca_files_are_not_watched() -> None:
    text = (Path(__file__).parents[1] / "docs" / "operations.md").read_text(encoding="utf-8")
    assert "each `pass_file` and\n   `ca_file`" in text  # the new behaviour, described (passes)
    assert "Not watched: files that `connections.ini` names" not in text


@pytest.mark.xfail(
    strict=True,
    reason="tester3: docs/contract.md says an upload with overwrite on a server refusing to "
    "rename over a file 'deletes it (DELE) and renames again'; since 93c6a17 the old file "
    "is moved aside and never deleted first (docs/ftp-client.md)",
)
def test_contract_md_describes_the_move_aside_not_dele_first() -> None:
    text = (Path(__file__).parents[1] / "docs" / "contract.md").read_text(encoding="utf-8")
    assert "**`if_exists` on uploads.**" in text  # the section (passes)
    assert "the worker deletes it (`DELE`) and renames again" not in text
