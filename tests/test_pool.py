"""SessionPool against real servers: caps counted at the server, 421s, cancellation, reaping."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from pyftpdlib.handlers import FTPHandler

from clients import Collector, ftp_config
from ftp_pooler.errors import ErrorCode, FTPError, PoolerError
from ftp_pooler.ftp.pool import PoolLimits, SessionPool, open_session_pool
from ftp_pooler.ftp.session import SessionFactory
from servers import FTPServer, counted
from servers.pyftpd import StallDataHandler

MakeServer = Callable[..., FTPServer]


def fill(root: Path, count: int, size: int = 2_000) -> list[bytes]:
    payloads = [os.urandom(size) for _ in range(count)]
    for index, payload in enumerate(payloads):
        (root / f"f{index}.bin").write_bytes(payload)
    return payloads


async def download_all(
    pool: SessionPool, conn_id: str, payloads: list[bytes], borrowers: int
) -> list[BaseException]:
    """``borrowers`` concurrent tasks, each borrowing a session for one download; returns errors."""
    errors: list[BaseException] = []

    async def one(index: int) -> None:
        try:
            async with pool.session(conn_id) as session:
                sink = Collector()
                await session.retrieve(f"/f{index % len(payloads)}.bin", sink)
                assert bytes(sink.data) == payloads[index % len(payloads)]
        except Exception as exc:  # collected and asserted on by the caller
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for index in range(borrowers):
            nursery.start_soon(one, index)
    return errors


async def test_500_borrowers_never_open_more_than_the_cap(
    make_vsftpd: MakeServer, ftp_root: Path
) -> None:
    payloads = fill(ftp_root, 20)
    # Counted at a counting accept in front of vsftpd, not sampled: a sampler
    # thread that got no turn during the busy part once reported a peak of 0.
    with counted(make_vsftpd(passive_ports=200)) as server:
        factory = SessionFactory(ftp_config(server))
        limits = PoolLimits(max_sessions_per_connection=8)
        with server.track_connections() as tracker:
            async with open_session_pool({"vs": factory}, limits) as pool:
                errors = await download_all(pool, "vs", payloads, 500)
                stats = pool.stats()["vs"]
        assert errors == []
        assert 1 <= tracker.peak <= 8
        assert stats.opened_total <= 8
        assert server.counter.total() == stats.opened_total  # type: ignore[union-attr]
        assert stats.wait_count == 500
        assert stats.busy == 0 and stats.waiters == 0
        assert server.wait_connections(0) == 0


async def test_pod_cap_holds_across_connections(make_pyftpd: MakeServer, ftp_root: Path) -> None:
    payloads = fill(ftp_root, 10)
    server = make_pyftpd()
    factories = {name: SessionFactory(ftp_config(server)) for name in ("a", "b", "c")}
    limits = PoolLimits(max_sessions_per_pod=5, max_sessions_per_connection=4)
    with server.track_connections() as tracker:
        async with open_session_pool(factories, limits) as pool:
            async with trio.open_nursery() as nursery:
                for name in factories:
                    nursery.start_soon(download_all, pool, name, payloads, 60)
            assert pool.open_sessions <= 5
    assert tracker.peak <= 5


async def test_421_lowers_the_cap_and_every_borrower_still_succeeds(
    make_vsftpd: MakeServer, ftp_root: Path
) -> None:
    payloads = fill(ftp_root, 10)
    server = make_vsftpd(max_per_ip=3, passive_ports=100)
    factory = SessionFactory(ftp_config(server))
    limits = PoolLimits(max_sessions_per_connection=8, cap_recovery_seconds=3600)
    async with open_session_pool({"vs": factory}, limits) as pool:
        errors = await download_all(pool, "vs", payloads, 200)
        stats = pool.stats()["vs"]
    assert errors == []
    assert stats.refused_total >= 1
    assert 1 <= stats.cap <= 3
    assert stats.open <= stats.cap


class AdjustableLimitHandler(FTPHandler):  # type: ignore[misc]
    """Answers 421 to sessions beyond ``state["limit"]``, a limit tests change while running."""

    state: dict[str, int] = {}
    _counted = False

    def handle(self) -> None:
        if self.state["limit"] and self.state["open"] >= self.state["limit"]:
            self.respond("421 Too many connections from this IP.")
            self.close_when_done()
            return
        self.state["open"] += 1
        self._counted = True
        super().handle()

    def close(self) -> None:
        if self._counted:
            self._counted = False
            self.state["open"] -= 1
        super().close()


async def test_cap_recovers_after_a_quiet_period(make_pyftpd: MakeServer, ftp_root: Path) -> None:
    """The server first allows 2 sessions, later any number; the pool's cap follows it back up."""
    payloads = fill(ftp_root, 10)
    state = {"limit": 2, "open": 0}
    server = make_pyftpd(handler_class=type("Limited", (AdjustableLimitHandler,), {"state": state}))
    factory = SessionFactory(ftp_config(server))
    limits = PoolLimits(max_sessions_per_connection=6, cap_recovery_seconds=0.2)
    async with open_session_pool({"py": factory}, limits) as pool:
        assert await download_all(pool, "py", payloads, 60) == []
        assert pool.stats()["py"].cap <= 2
        state["limit"] = 0
        caps = []
        for _ in range(8):
            await trio.sleep(0.25)
            assert await download_all(pool, "py", payloads, 30) == []
            caps.append(pool.stats()["py"].cap)
    assert caps[-1] == 6, caps
    assert caps == sorted(caps)


class SlowGreetingHandler(FTPHandler):  # type: ignore[misc]
    """Greets 50 ms after accepting; counts sessions connected and not yet logged in."""

    state: dict[str, int] = {}
    _pending = False

    def handle(self) -> None:
        self._pending = True
        self.state["pending"] += 1
        self.state["peak"] = max(self.state["peak"], self.state["pending"])
        self.ioloop.call_later(0.05, super().handle, _errback=self.handle_error)

    def on_login(self, username: str) -> None:
        self._done_opening()

    def close(self) -> None:
        self._done_opening()
        super().close()

    def _done_opening(self) -> None:
        if self._pending:
            self._pending = False
            self.state["pending"] -= 1


async def test_sessions_are_opened_a_few_at_a_time_then_more(
    make_pyftpd: MakeServer, ftp_root: Path
) -> None:
    """16 borrowers at once open 16 sessions, 3 logins in progress at first, more once
    quick connects show the server keeps up (issue #15; before: never more than 3)."""
    payloads = fill(ftp_root, 4)
    state = {"pending": 0, "peak": 0}
    server = make_pyftpd(handler_class=type("Slow", (SlowGreetingHandler,), {"state": state}))
    limits = PoolLimits(max_sessions_per_connection=16, max_concurrent_opens=3)
    async with open_session_pool({"py": SessionFactory(ftp_config(server))}, limits) as pool:
        assert await download_all(pool, "py", payloads, 16) == []
        stats = pool.stats()["py"]
    assert stats.opened_total == 16
    assert 3 < state["peak"] <= 16


async def test_server_refusing_every_session_is_server_busy(
    make_pyftpd: MakeServer, ftp_root: Path
) -> None:
    fill(ftp_root, 1)
    server = make_pyftpd(max_cons=2)  # pyftpdlib counts its listening socket too
    blocker = await SessionFactory(ftp_config(server)).open()
    try:
        async with open_session_pool({"py": SessionFactory(ftp_config(server))}) as pool:
            with pytest.raises(FTPError) as caught:
                async with pool.session("py"):
                    pass
            assert caught.value.code is ErrorCode.SERVER_BUSY
            assert caught.value.retryable
            stats = pool.stats()["py"]
            assert stats.busy == 0 and stats.open == 0
    finally:
        await blocker.aclose()


async def test_cancelled_waiters_and_transfers_leak_nothing(
    make_pyftpd: MakeServer, ftp_root: Path
) -> None:
    handler = type("Stall", (StallDataHandler,), {"stall_after_bytes": 1_000})
    server = make_pyftpd(handler_class=handler)
    (ftp_root / "slow.bin").write_bytes(os.urandom(200_000))
    limits = PoolLimits(max_sessions_per_connection=3)
    async with open_session_pool({"py": SessionFactory(ftp_config(server))}, limits) as pool:
        started = 0

        async def borrow_and_hang() -> None:
            nonlocal started
            async with pool.session("py") as session:
                started += 1
                await session.retrieve("/slow.bin", Collector())

        with trio.move_on_after(1.0):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(borrow_and_hang)
        stats = pool.stats()["py"]
        assert started == 3
        assert (stats.busy, stats.waiters, stats.opening, stats.open) == (0, 0, 0, 0)
        assert stats.closed_total == 3
        assert server.wait_connections(0) == 0
        (ftp_root / "fast.bin").write_bytes(b"fine")
        async with pool.session("py") as session:
            sink = Collector()
            await session.retrieve("/fast.bin", sink)
            assert bytes(sink.data) == b"fine"


async def test_reaper_closes_idle_sessions(make_pyftpd: MakeServer, ftp_root: Path) -> None:
    payloads = fill(ftp_root, 5)
    server = make_pyftpd()
    limits = PoolLimits(max_sessions_per_connection=4, session_timeout_seconds=0.5)
    async with open_session_pool({"py": SessionFactory(ftp_config(server))}, limits) as pool:
        assert await download_all(pool, "py", payloads, 20) == []
        assert pool.stats()["py"].idle >= 1
        with trio.fail_after(10):  # a condition, not a sleep: the reaper may run late under load
            while pool.stats()["py"].idle or server.connection_count():
                await trio.sleep(0.05)
        assert pool.stats()["py"].closed_total >= 1


async def test_idle_session_dropped_by_the_server_is_replaced(
    make_pyftpd: MakeServer, ftp_root: Path
) -> None:
    payloads = fill(ftp_root, 1)
    server = make_pyftpd(handler_attrs={"timeout": 0.5})
    limits = PoolLimits(max_sessions_per_connection=1, noop_after_seconds=0.2)
    async with open_session_pool({"py": SessionFactory(ftp_config(server))}, limits) as pool:
        assert await download_all(pool, "py", payloads, 1) == []
        # wait until the server has dropped the idle session (timeout 0.5 s;
        # its IO loop may be late under load), not a fixed time
        with trio.fail_after(10):
            while server.connection_count():
                await trio.sleep(0.05)
        assert await download_all(pool, "py", payloads, 1) == []
        stats = pool.stats()["py"]
    assert stats.opened_total == 2
    assert stats.closed_total >= 1


async def test_sessions_are_reused_last_in_first_out(
    make_pyftpd: MakeServer, ftp_root: Path
) -> None:
    fill(ftp_root, 1)
    server = make_pyftpd()
    async with open_session_pool({"py": SessionFactory(ftp_config(server))}) as pool:
        async with pool.session("py") as outer, pool.session("py") as inner:
            pass  # inner goes back first, outer last
        async with pool.session("py") as again:
            assert again is outer
        assert outer is not inner
        assert pool.stats()["py"].opened_total == 2


async def test_unknown_connection_id_is_invalid_config(pyftpd_server: FTPServer) -> None:
    async with open_session_pool({"py": SessionFactory(ftp_config(pyftpd_server))}) as pool:
        with pytest.raises(PoolerError) as caught:
            async with pool.session("nope"):
                pass
    assert caught.value.code is ErrorCode.INVALID_CONFIG
