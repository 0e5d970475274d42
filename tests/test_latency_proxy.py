"""The latency proxy (tests/servers/latency_proxy.py) adds the round-trip time it is set to,
and carries downloads and uploads intact (half-closes included)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import trio

from clients import Collector, chunks_of, ftp_config
from ftp_pooler.ftp.session import SessionFactory
from servers import FTPServer
from servers.latency_proxy import LatencyProxy

RTT = 0.1


def proxied_ports(server: FTPServer) -> list[int]:
    assert server.passive_ports is not None
    low, high = server.passive_ports
    return [server.port, *range(low, high + 1)]


async def test_round_trips_cost_the_rtt_and_files_arrive_intact(
    make_pyftpd: Callable[..., FTPServer], ftp_root: Path
) -> None:
    server = make_pyftpd(passive_ports=8)
    payload = os.urandom(300_000)
    (ftp_root / "in.bin").write_bytes(payload)
    with LatencyProxy(proxied_ports(server), RTT) as proxy:
        factory = SessionFactory(ftp_config(server, host=proxy.host))
        started = time.monotonic()
        session = await factory.open()
        opened = time.monotonic() - started
        try:
            # connect (1 RTT) + greeting (0.5) + USER, PASS, FEAT and more: several RTTs
            assert opened >= 3 * RTT
            noops = []
            for _ in range(3):
                started = time.monotonic()
                await session.noop()
                noops.append(time.monotonic() - started)
            assert RTT <= min(noops) < RTT + 0.05, noops
            sink = Collector()
            await session.retrieve("/in.bin", sink)
            assert bytes(sink.data) == payload
            sent = await session.store("/out.bin", chunks_of(payload))
            assert sent == len(payload)
        finally:
            await session.aclose()
    await trio.sleep(0)
    assert (ftp_root / "out.bin").read_bytes() == payload
