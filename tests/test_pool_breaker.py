"""The session pool's circuit breaker against servers that are down, and one that comes back.

A mute server (accepts, never speaks) and a closed port (refuses) are real
sockets on loopback; the server that comes back is a real pyftpdlib server.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import trio

from clients import ftp_config
from ftp_pooler.errors import ErrorCode, FTPError
from ftp_pooler.ftp.config import FTPConfig, Timeouts
from ftp_pooler.ftp.pool import PoolLimits, SessionPool
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.scheduling.breaker import BreakerState
from ftp_pooler.scheduling.scheduler import Allowance
from servers import FTPServer
from servers.dead import MuteServer, closed_port

LIMITS = PoolLimits(
    max_sessions_per_connection=4,
    breaker_failures=3,
    breaker_open_seconds=0.5,
    breaker_max_open_seconds=1.0,
)
QUICK = Timeouts(connect=0.3, reply=2.0, data_stall=2.0)


def dead_config(port: int) -> FTPConfig:
    return FTPConfig(host="127.0.0.1", port=port, user="u", password="p", timeouts=QUICK)


async def try_open(pool: SessionPool, conn_id: str) -> FTPError:
    with pytest.raises(FTPError) as caught:
        async with pool.session(conn_id):
            pass
    return caught.value


async def test_a_closed_port_trips_the_breaker_and_further_opens_fail_at_once() -> None:
    pool = SessionPool({"dead": SessionFactory(dead_config(closed_port()))}, LIMITS)
    assert pool.allowance("dead") == Allowance(4)
    for _ in range(3):
        error = await try_open(pool, "dead")
        assert error.code is ErrorCode.CONNECTION_ERROR
    assert pool.stats()["dead"].breaker is BreakerState.OPEN
    allowance = pool.allowance("dead")
    assert allowance.limit == 0 and allowance.down and allowance.retry_at is not None
    error = await try_open(pool, "dead")
    assert error.code is ErrorCode.CONNECTION_ERROR and error.retryable
    assert "marked down after 3 failed connects" in error.message
    assert pool.stats()["dead"].opened_total == 0


async def test_a_mute_server_gets_one_probe_at_a_time_once_the_open_period_ends() -> None:
    with MuteServer() as mute:
        pool = SessionPool({"mute": SessionFactory(dead_config(mute.port))}, LIMITS)
        started = time.monotonic()
        async with trio.open_nursery() as nursery:  # three at once: each waits out the greeting
            for _ in range(3):
                nursery.start_soon(try_open, pool, "mute")
        assert time.monotonic() - started < 2 * QUICK.connect + 0.5
        assert mute.accepted == 3
        assert pool.stats()["mute"].breaker is BreakerState.OPEN
        await try_open(pool, "mute")  # refused by the breaker: no connection
        assert mute.accepted == 3

        await trio.sleep(LIMITS.breaker_open_seconds)
        assert pool.allowance("mute") == Allowance(1, down=True)
        errors: list[FTPError] = []

        async def probe_or_refused() -> None:
            errors.append(await try_open(pool, "mute"))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(probe_or_refused)
        assert mute.accepted == 4, "one probe, the other four refused by the breaker"
        assert sum("marked down" in e.message for e in errors) == 4
        assert [e.code for e in errors].count(ErrorCode.TIMEOUT) == 1
        after = pool.allowance("mute")
        assert after.limit == 0 and after.retry_at is not None
        assert pool.stats()["mute"].breaker is BreakerState.OPEN


async def test_a_server_that_comes_back_is_found_by_the_probe_and_closes_the_breaker(
    make_pyftpd: Callable[..., FTPServer],
) -> None:
    server = make_pyftpd()
    port = server.port
    server_config = ftp_config(server, timeouts=QUICK)
    down = server_config.model_copy(update={"port": closed_port()})
    factory = SessionFactory(down)
    pool = SessionPool({"back": factory}, LIMITS)
    for _ in range(3):
        await try_open(pool, "back")
    assert pool.stats()["back"].breaker is BreakerState.OPEN
    factory.config = server_config  # the server is reachable again (same factory, same pool)
    await trio.sleep(LIMITS.breaker_open_seconds)
    async with pool.session("back") as session:
        assert session.config.port == port
    assert pool.stats()["back"].breaker is BreakerState.CLOSED
    assert pool.allowance("back") == Allowance(4)
    await pool.aclose()


async def test_a_refused_login_does_not_count_as_down(
    make_pyftpd: Callable[..., FTPServer],
) -> None:
    server = make_pyftpd()
    wrong = ftp_config(server, password="not-the-password", timeouts=QUICK)
    pool = SessionPool({"up": SessionFactory(wrong)}, LIMITS)
    for _ in range(5):
        error = await try_open(pool, "up")
        assert error.code is ErrorCode.AUTH_FAILED
    assert pool.stats()["up"].breaker is BreakerState.CLOSED


def test_limits_refuse_an_open_period_above_its_maximum() -> None:
    with pytest.raises(ValueError):
        PoolLimits(breaker_open_seconds=10, breaker_max_open_seconds=5)
