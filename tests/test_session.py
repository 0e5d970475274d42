"""FTPSession against real servers on loopback: pyftpdlib, vsftpd and pure-ftpd."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from pyftpdlib.handlers import FTPHandler

from clients import Collector, chunks_of, ftp_config
from ftp_pooler.errors import ErrorCode, FTPError
from ftp_pooler.ftp.config import Timeouts, TLSMode
from ftp_pooler.ftp.protocol import UnsafeArgumentError
from ftp_pooler.ftp.session import FTPSession, SessionFactory
from servers import FTPServer
from servers.pyftpd import DropControlMidTransferHandler, StallDataHandler

KINDS = ("pyftpdlib", "vsftpd", "pure-ftpd")
MakeServer = Callable[..., FTPServer]


async def open_session(server: FTPServer, **overrides: Any) -> FTPSession:
    return await SessionFactory(ftp_config(server, **overrides)).open()


async def roundtrip(session: FTPSession, root: Path) -> None:
    """Upload, inspect, download, rename, list and delete one file; check every step."""
    payload = os.urandom(1_500_000)
    await session.makedirs("/up/nested/deeper")
    await session.makedirs("/up/nested/deeper")  # exists already: fine
    sent = await session.store("/up/nested/deeper/blob.bin", chunks_of(payload))
    assert sent == len(payload)
    assert (root / "up/nested/deeper/blob.bin").read_bytes() == payload
    assert await session.size("/up/nested/deeper/blob.bin") == len(payload)

    sink = Collector()
    download = await session.retrieve("/up/nested/deeper/blob.bin", sink)
    assert download.received == len(payload)
    assert download.announced_size in (None, len(payload))
    assert bytes(sink.data) == payload

    await session.rename("/up/nested/deeper/blob.bin", "/up/nested/final.bin")
    assert (root / "up/nested/final.bin").exists()
    names = {entry.name: entry for entry in await session.list_dir("/up/nested")}
    assert set(names) == {"deeper", "final.bin"}
    assert names["final.bin"].type == "file" and names["final.bin"].size == len(payload)
    assert names["deeper"].type == "dir"
    assert sorted(await session.nlst("/up/nested")) == ["deeper", "final.bin"]

    await session.delete("/up/nested/final.bin")
    assert not (root / "up/nested/final.bin").exists()
    await session.noop()
    assert session.broken is False


@pytest.mark.parametrize("kind", KINDS)
async def test_plain_roundtrip(make_ftp_server: MakeServer, ftp_root: Path, kind: str) -> None:
    server = make_ftp_server(kind)
    session = await open_session(server)
    try:
        assert "SIZE" in session.features
        await roundtrip(session, ftp_root)
    finally:
        await session.aclose()
    assert session.closed


@pytest.mark.parametrize("kind", KINDS)
async def test_ftps_roundtrip_with_data_protection(
    make_ftp_server: MakeServer, ftp_root: Path, kind: str
) -> None:
    """Explicit FTPS, PROT P, TLS required on control and data (vsftpd: require_ssl_reuse=YES)."""
    server = make_ftp_server(kind, tls=True, tls_control_required=True, tls_data_required=True)
    session = await open_session(server)
    try:
        await roundtrip(session, ftp_root)
    finally:
        await session.aclose()


async def test_vsftpd_ftps_demands_session_reuse_and_gets_it(
    make_vsftpd: MakeServer, ftp_root: Path
) -> None:
    server = make_vsftpd(tls=True, tls_data_required=True, require_ssl_reuse=True)
    session = await open_session(server)
    try:
        for _ in range(3):
            await session.store("/again.bin", chunks_of(b"x" * 70_000))
            sink = Collector()
            download = await session.retrieve("/again.bin", sink)
            assert download.received == download.announced_size == 70_000
    finally:
        await session.aclose()


async def test_certificate_is_verified_by_default(make_pyftpd: MakeServer) -> None:
    server = make_pyftpd(tls=True)
    with pytest.raises(FTPError) as caught:
        await open_session(server, ca_file=None)
    assert caught.value.code is ErrorCode.TLS_ERROR
    assert not caught.value.retryable


async def test_verification_can_be_turned_off_per_connection(make_pyftpd: MakeServer) -> None:
    server = make_pyftpd(tls=True)
    session = await open_session(server, ca_file=None, verify=False)
    await session.noop()
    await session.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_wrong_password_is_auth_failed(make_ftp_server: MakeServer, kind: str) -> None:
    server = make_ftp_server(kind)
    slow_to_say_no = Timeouts(connect=5, reply=20, data_stall=5)  # pure-ftpd waits ~4 s, PAM ~2 s
    with pytest.raises(FTPError) as caught:
        await open_session(server, password="not-the-password", timeouts=slow_to_say_no)
    assert caught.value.code is ErrorCode.AUTH_FAILED
    assert "not-the-password" not in str(caught.value)


@pytest.mark.parametrize("kind", KINDS)
async def test_missing_file_leaves_session_usable(make_ftp_server: MakeServer, kind: str) -> None:
    server = make_ftp_server(kind)
    session = await open_session(server)
    try:
        with pytest.raises(FTPError) as caught:
            await session.retrieve("/no/such/file.bin", Collector())
        assert caught.value.code is ErrorCode.FILE_NOT_FOUND
        with pytest.raises(FTPError) as caught:
            await session.size("/no-such-file")
        assert caught.value.code is ErrorCode.FILE_NOT_FOUND
        assert not session.broken
        await session.noop()
    finally:
        await session.aclose()


@pytest.mark.parametrize("kind", ("pyftpdlib", "vsftpd"))
async def test_mtime_can_be_read_and_set(make_ftp_server: MakeServer, kind: str) -> None:
    """pyftpdlib offers MFMT; vsftpd only its two-argument MDTM."""
    server = make_ftp_server(kind)
    session = await open_session(server)
    try:
        await session.store("/dated.txt", chunks_of(b"dated"))
        moment = datetime(2021, 6, 5, 4, 3, 2, tzinfo=UTC)
        await session.set_mtime("/dated.txt", moment)
        assert await session.mdtm("/dated.txt") == moment
        assert (server.root / "dated.txt").stat().st_mtime == moment.timestamp()
    finally:
        await session.aclose()


async def test_unconnected_connection_refused_is_connection_error() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    factory = SessionFactory(
        ftp_config(
            FTPServer("none", "127.0.0.1", port, "u", "p", Path("/"), False, None)
        )
    )
    with pytest.raises(FTPError) as caught:
        await factory.open()
    assert caught.value.code is ErrorCode.CONNECTION_ERROR
    assert caught.value.retryable


class RecordingHandler(FTPHandler):  # type: ignore[misc]
    """Keeps every command line the server received."""

    received: list[str] = []

    def found_terminator(self) -> None:
        type(self).received.append(self._in_buffer_as_text())
        super().found_terminator()

    def _in_buffer_as_text(self) -> str:
        return b"".join(self._in_buffer).decode("utf-8", "replace")


@pytest.mark.parametrize("path", ["a\r\nDELE victim", "a\nDELE victim", "a\x00b", "\rDELE victim"])
async def test_cr_lf_in_a_path_never_reaches_the_wire(
    make_pyftpd: MakeServer, ftp_root: Path, path: str
) -> None:
    handler = type("Recording", (RecordingHandler,), {"received": []})
    server = make_pyftpd(handler_class=handler)
    (ftp_root / "victim").write_bytes(b"keep me")
    session = await open_session(server)
    try:
        seen_before = len(handler.received)
        for attempt in (session.size, session.delete, session.makedirs):
            with pytest.raises(UnsafeArgumentError) as caught:
                await attempt(path)
            assert caught.value.code is ErrorCode.PATH_NOT_ALLOWED
        with pytest.raises(UnsafeArgumentError):
            await session.retrieve(path, Collector())
        await session.noop()
        after = handler.received[seen_before:]
        assert after[-1] == "NOOP"
        assert not any("DELE" in line or "SIZE" in line or "RETR" in line for line in after)
        assert (ftp_root / "victim").read_bytes() == b"keep me"
        assert not session.broken
    finally:
        await session.aclose()


class NoEpsvHandler(FTPHandler):  # type: ignore[misc]
    """Refuses EPSV and names an unroutable address in its 227 replies, like a server behind NAT."""

    masquerade_address = "10.255.255.1"
    epsv_calls: list[str] = []

    def ftp_EPSV(self, line: str) -> None:
        self.epsv_calls.append(line)
        self.respond("502 EPSV not implemented.")


async def test_pasv_fallback_is_remembered_and_uses_the_control_peer(
    make_pyftpd: MakeServer, ftp_root: Path
) -> None:
    handler = type("NoEpsv", (NoEpsvHandler,), {"epsv_calls": []})
    server = make_pyftpd(handler_class=handler)
    (ftp_root / "f.txt").write_bytes(b"hello")
    factory = SessionFactory(ftp_config(server))
    first = await factory.open()
    second = await factory.open()
    try:
        for session in (first, second, first):
            sink = Collector()
            await session.retrieve("/f.txt", sink)
            assert bytes(sink.data) == b"hello"
        assert len(handler.epsv_calls) == 1
        assert factory.quirks.epsv is False
    finally:
        await first.aclose()
        await second.aclose()


async def test_control_connection_dropped_mid_transfer_breaks_the_session(
    make_pyftpd: MakeServer, ftp_root: Path
) -> None:
    handler = type("Drop", (DropControlMidTransferHandler,), {"drop_after_bytes": 200_000})
    server = make_pyftpd(handler_class=handler)
    (ftp_root / "big.bin").write_bytes(os.urandom(3_000_000))
    session = await open_session(server)
    sink = Collector()
    with pytest.raises(FTPError) as caught:
        await session.retrieve("/big.bin", sink)
    assert caught.value.code in (ErrorCode.CONNECTION_ERROR, ErrorCode.TRANSIENT)
    assert caught.value.retryable
    assert session.broken
    assert len(sink.data) < 3_000_000
    await session.aclose()


async def test_stalled_download_times_out_and_breaks_the_session(
    make_pyftpd: MakeServer, ftp_root: Path
) -> None:
    handler = type("Stall", (StallDataHandler,), {"stall_after_bytes": 100_000})
    server = make_pyftpd(handler_class=handler)
    (ftp_root / "slow.bin").write_bytes(os.urandom(1_000_000))
    session = await open_session(server, timeouts=Timeouts(connect=5, reply=5, data_stall=0.5))
    started = trio.current_time()
    with pytest.raises(FTPError) as caught:
        await session.retrieve("/slow.bin", Collector())
    assert caught.value.code is ErrorCode.TIMEOUT
    assert trio.current_time() - started < 4
    assert session.broken
    with pytest.raises(FTPError):
        await session.noop()
    await session.aclose()


async def test_stalled_upload_times_out(make_pyftpd: MakeServer) -> None:
    handler = type("Stall", (StallDataHandler,), {"stall_after_bytes": 100_000})
    server = make_pyftpd(handler_class=handler)
    session = await open_session(server, timeouts=Timeouts(connect=5, reply=5, data_stall=0.5))
    started = trio.current_time()
    with pytest.raises(FTPError) as caught:
        await session.store("/stuck.bin", chunks_of(os.urandom(64_000_000), 1_000_000))
    assert caught.value.code is ErrorCode.TIMEOUT
    assert trio.current_time() - started < 4
    assert session.broken
    await session.aclose()


async def test_cancelling_a_transfer_breaks_the_session_and_closes_it(
    make_pyftpd: MakeServer, ftp_root: Path
) -> None:
    handler = type("Stall", (StallDataHandler,), {"stall_after_bytes": 10_000})
    server = make_pyftpd(handler_class=handler)
    (ftp_root / "slow.bin").write_bytes(os.urandom(100_000))
    session = await open_session(server)
    with trio.move_on_after(0.3) as scope:
        await session.retrieve("/slow.bin", Collector())
    assert scope.cancelled_caught
    assert session.broken
    await session.aclose()
    assert server.wait_connections(0) == 0


async def test_repr_never_shows_the_password(pyftpd_server: FTPServer) -> None:
    config = ftp_config(pyftpd_server)
    session = await SessionFactory(config).open()
    try:
        for text in (repr(session), str(session), repr(config), str(config)):
            assert pyftpd_server.password not in text
    finally:
        await session.aclose()


class ImplicitTLSHandler(FTPHandler):  # type: ignore[misc]
    """TLS from the first byte (the fixture mixes in pyftpdlib's TLS_FTPHandler)."""

    def handle(self) -> None:
        self.secure_connection(self.ssl_context)
        super().handle()


async def test_implicit_ftps_roundtrip(make_pyftpd: MakeServer, ftp_root: Path) -> None:
    server = make_pyftpd(tls=True, handler_class=ImplicitTLSHandler)
    session = await open_session(server, tls=TLSMode.IMPLICIT)
    try:
        await session.store("/implicit.bin", chunks_of(b"over tls" * 1000))
        sink = Collector()
        await session.retrieve("/implicit.bin", sink)
        assert bytes(sink.data) == b"over tls" * 1000
    finally:
        await session.aclose()
    with pytest.raises(FTPError):
        await open_session(server, tls=TLSMode.NONE, timeouts=Timeouts(connect=2, reply=2))


async def test_listing_without_end_is_stopped(
    make_scripted_ftp: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sibling of a download streaming past its size: a listing is held in memory
    whole, so a server sending one without end (here 50 MB of names) is stopped past
    ``MAX_LISTING_BYTES`` (lowered to 1 MB here) instead of filling the memory."""
    import contextlib

    from ftp_pooler.ftp import session as session_module
    from scripted_server import Rule

    monkeypatch.setattr(session_module, "MAX_LISTING_BYTES", 1_000_000)
    limit = 50_000_000
    sent: list[int] = []

    def stream(s: Any, m: Any) -> None:
        conn = s._accept_data("150 Here comes the directory listing.")
        total = 0
        with contextlib.suppress(OSError):
            while total < limit:
                conn.sendall(b"name\r\n" * 10_000)
                total += 60_000
        sent.append(total)
        with contextlib.suppress(OSError):
            conn.close()
        s.send("226 Directory send OK.")

    server = make_scripted_ftp(rules=[Rule(r"NLST .*", stream)])
    session = await SessionFactory(ftp_config(server)).open()  # type: ignore[arg-type]
    try:
        with pytest.raises(FTPError) as caught:
            await session.nlst("/data")
        assert caught.value.code is ErrorCode.PROTOCOL_ERROR
        assert session.broken
    finally:
        await session.aclose()
    with trio.fail_after(5):
        while not sent:
            await trio.sleep(0.01)
    assert max(sent) < limit
