"""ScheduledTransfers with real servers: retries go back to their queue, a server marked down
holds its tasks until their retry budget, and every task gets exactly one result.

A pyftpdlib server is the healthy connection; the dead one is a closed port
(refused at once) or a mute server (accepts, never speaks).
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from clients import ftp_config
from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.contract import Result, Task
from ftp_pooler.cli.batch import copy_tasks
from ftp_pooler.transfer.engine import Transfer, TransferEngine
from ftp_pooler.ftp.config import FTPConfig, Timeouts
from ftp_pooler.ftp.pool import PoolLimits, open_session_pool
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.transfer.retry import RetryPolicy
from ftp_pooler.scheduling.transfers import ScheduledTransfers
from servers import FTPServer
from servers.dead import MuteServer, closed_port

QUICK = Timeouts(connect=0.3, reply=5.0, data_stall=5.0)
RETRY = RetryPolicy(initial_backoff=0.2, max_backoff=0.2, jitter=0.0)
LIMITS = PoolLimits(
    max_sessions_per_connection=2,
    breaker_failures=2,
    breaker_open_seconds=30.0,
    breaker_max_open_seconds=30.0,
)


def task(task_id: str, conn: str, path: str) -> Task:
    return Task.model_validate(
        {
            "task_id": task_id,
            "source": {"connection_id": conn, "path": path},
            "destination": {"connection_id": "local", "path": f"in/{task_id}"},
            "options": {"retry_count": 1},
        }
    )


async def run_all(
    conns: Connections, tasks: list[Task], runners: int = 8
) -> dict[str, tuple[Result, float]]:
    """Every task through ScheduledTransfers; task id -> (result, seconds after the start)."""
    factories = {
        c.id: SessionFactory(c.ftp) for c in conns.values() if isinstance(c, FTPConnection)
    }
    results: dict[str, tuple[Result, float]] = {}
    async with open_session_pool(factories, LIMITS) as pool:
        engine = TransferEngine(conns, pool, retry=RETRY, worker="w")
        start = trio.current_time()

        def finished(result: Result, token: str, task: Task) -> None:
            assert token not in results, f"{token} got two results"
            assert task.task_id == token
            results[token] = (result, trio.current_time() - start)

        def crashed(exc: Exception, token: str, task: Task) -> None:
            raise AssertionError(f"{token} crashed: {exc!r}")

        transfers: ScheduledTransfers[str] = ScheduledTransfers(
            engine, runners=runners, finished=finished, crashed=crashed
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transfers.run)
            for t in tasks:
                transfers.submit(t, t.task_id)
            transfers.close()
    assert results.keys() == {t.task_id for t in tasks}
    return results


def dead_config(port: int) -> FTPConfig:
    return FTPConfig(host="127.0.0.1", port=port, user="u", password="p", timeouts=QUICK)


async def test_tasks_of_a_refusing_server_wait_out_their_budget_while_healthy_ones_run(
    make_pyftpd: Callable[..., FTPServer], ftp_root: Path, tmp_path: Path
) -> None:
    for i in range(20):
        (ftp_root / f"f{i}.bin").write_bytes(os.urandom(1000))
    server = make_pyftpd()
    conns = Connections(
        [
            FTPConnection(id="ok", ftp=ftp_config(server, timeouts=QUICK)),
            FTPConnection(id="dead", ftp=dead_config(closed_port())),
            LocalConnection(id="local", base_path=tmp_path),
        ]
    )
    tasks = [task(f"dead-{i}", "dead", "/x") for i in range(10)]
    tasks += [task(f"ok-{i}", "ok", f"/f{i}.bin") for i in range(20)]
    results = await run_all(conns, tasks)

    budget = RETRY.with_retries(1).patience(QUICK.connect)  # 2 x 0.3 + 0.2 s
    gave_up = 0
    for task_id, (result, seconds) in results.items():
        if task_id.startswith("ok"):
            assert result.status == "completed" and seconds < budget
            continue
        assert result.status == "failed" and result.retryable is True
        assert result.error_code == "CONNECTION_ERROR"
        assert result.attempts <= 2
        if "gave up after waiting" in (result.error_message or ""):
            gave_up += 1
            assert result.attempts <= 1 and budget <= seconds < budget + 0.5
    # two refused connects trip the breaker; the others wait out their budget, no connect
    assert gave_up >= 10 - 2


async def test_a_retry_goes_back_to_its_queue_and_holds_no_runner(
    make_pyftpd: Callable[..., FTPServer], ftp_root: Path, tmp_path: Path
) -> None:
    """With one runner, a mute server's first attempt costs a connect timeout; its retry
    waits 0.2 s in the queue, and meanwhile the healthy tasks use the one runner."""
    for i in range(5):
        (ftp_root / f"f{i}.bin").write_bytes(os.urandom(1000))
    server = make_pyftpd()
    with MuteServer() as mute:
        conns = Connections(
            [
                FTPConnection(id="ok", ftp=ftp_config(server, timeouts=QUICK)),
                FTPConnection(id="mute", ftp=dead_config(mute.port)),
                LocalConnection(id="local", base_path=tmp_path),
            ]
        )
        tasks = [task("mute-0", "mute", "/x")] + [
            task(f"ok-{i}", "ok", f"/f{i}.bin") for i in range(5)
        ]
        results = await run_all(conns, tasks, runners=1)
    mute_result, mute_done = results["mute-0"]
    assert mute_result.error_code == "TIMEOUT" and mute_result.attempts == 2
    ok_done = max(seconds for task_id, (_, seconds) in results.items() if task_id.startswith("ok"))
    assert ok_done < mute_done, "the healthy tasks ran during the mute task's backoff"
    assert mute.accepted == 2


async def test_an_attempt_that_raises_is_one_crashed_result_and_the_others_go_on(
    make_pyftpd: Callable[..., FTPServer],
    ftp_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in an attempt (here: TransferEngine.attempt raising for one task) ends that
    task with one UNKNOWN_ERROR result carrying its message back, through copy_tasks'
    boundary; the runner and the other tasks go on."""
    for i in range(10):
        (ftp_root / f"f{i}.bin").write_bytes(os.urandom(1000))
    server = make_pyftpd()
    conns = Connections(
        [
            FTPConnection(id="ok", ftp=ftp_config(server, timeouts=QUICK)),
            LocalConnection(id="local", base_path=tmp_path),
        ]
    )
    real_attempt = TransferEngine.attempt

    async def attempt(self: TransferEngine, transfer: Transfer) -> Result | float:
        if transfer.task.task_id == "t3":
            raise RuntimeError("a bug in one attempt")
        return await real_attempt(self, transfer)

    monkeypatch.setattr(TransferEngine, "attempt", attempt)
    lines = b"".join(
        json.dumps(
            {"task_id": f"t{i}", "src_id": "ok", "src_path": f"/f{i}.bin",
             "dst_id": "local", "dst_path": f"in/{i}"}
        ).encode() + b"\n"
        for i in range(10)
    )  # fmt: skip
    output = io.BytesIO()
    factories = {"ok": SessionFactory(conns["ok"].ftp)}  # type: ignore[union-attr]
    async with open_session_pool(factories, LIMITS) as pool:
        engine = TransferEngine(conns, pool, retry=RETRY, worker="w")
        summary = await copy_tasks(io.BytesIO(lines), output, engine, concurrency=1, worker="w")
    results = {r["task_id"]: r for r in map(json.loads, output.getvalue().splitlines())}
    assert summary.tasks == len(results) == 10
    crashed = results.pop("t3")
    assert (crashed["error_code"], crashed["error_message"]) == (
        "UNKNOWN_ERROR",
        "RuntimeError: a bug in one attempt",
    )
    assert base64.b64decode(crashed["input"]["payload_base64"]) == lines.splitlines()[3]
    assert {r["status"] for r in results.values()} == {"completed"}
