"""Helpers shared by tests that drive our FTP client against the servers in ``servers/``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ftp_pooler.ftp.config import FTPConfig, Timeouts, TLSMode
from servers import FTPServer

FAST_TIMEOUTS = Timeouts(connect=5.0, reply=5.0, data_stall=5.0)


def ftp_config(server: FTPServer, **overrides: Any) -> FTPConfig:
    """An FTPConfig for a test server: explicit FTPS when the server has TLS, short timeouts."""
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "tls": TLSMode.EXPLICIT if server.tls else TLSMode.NONE,
        "ca_file": server.ca_file,
        "timeouts": FAST_TIMEOUTS,
    }
    values.update(overrides)
    return FTPConfig(**values)


class Collector:
    """A download sink that keeps the bytes."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def __call__(self, chunk: bytes | memoryview) -> None:
        self.data.extend(chunk)


async def chunks_of(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    """An upload source yielding ``data`` in pieces."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
