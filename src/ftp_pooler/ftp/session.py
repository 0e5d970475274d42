"""A Trio FTP session: the thin I/O layer around :mod:`ftp_pooler.ftp.protocol`.

One :class:`FTPSession` is one logged-in control connection. Its methods
send commands and read replies; transfers open a passive data connection
each. Any failure that leaves the conversation out of step (a timeout, a
dropped connection, a cancellation, a reply we cannot parse) marks the
session ``broken``: it is closed and never reused. A plain error reply
(``550 No such file``) leaves it usable.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import trio

from ftp_pooler.errors import ErrorCode, FTPError, PoolerError, error_for_reply
from ftp_pooler.ftp import protocol
from ftp_pooler.ftp.config import FTPConfig, TLSMode
from ftp_pooler.ftp.listing import ListingEntry, parse_list_line, parse_mlsd_line, parse_nlst_line
from ftp_pooler.ftp.protocol import Reply, ReplyParser, build_command

CHUNK_SIZE = 256 * 1024
"""Largest read from a socket, and the size uploads are sent in."""

Sink = Callable[[memoryview | bytes | bytearray], Awaitable[object]]
"""Where downloaded bytes go, one chunk at a time; a chunk is only valid during the call."""


@dataclass(frozen=True, slots=True)
class Download:
    """What a RETR moved."""

    received: int
    """Bytes written to the sink."""
    announced_size: int | None
    """The size the server named in its 150 reply (``(1234 bytes)``), if it did."""


@dataclass
class ServerQuirks:
    """What one server taught us, shared by all sessions to it."""

    epsv: bool = True
    """Cleared when the server answers EPSV with a 5xx; PASV is used from then on."""


class SessionFactory:
    """Opens sessions to one server; holds its config, TLS context and quirks."""

    def __init__(self, config: FTPConfig) -> None:
        self.config = config
        self.quirks = ServerQuirks(epsv=config.epsv)
        self._ssl_context = config.ssl_context() if config.tls is not TLSMode.NONE else None

    async def open(self) -> FTPSession:
        """Connect and log in.

        Raises:
            FTPError: With SERVER_BUSY when the server refuses more sessions (421),
                AUTH_FAILED, CONNECTION_ERROR, TIMEOUT or TLS_ERROR.
        """
        session = FTPSession(self.config, self._ssl_context, self.quirks)
        try:
            await session._connect()
            await session._login()
        except BaseException:
            await session.aclose(quit=False)
            raise
        return session

    def __repr__(self) -> str:
        return f"SessionFactory({self.config.user}@{self.config.host}:{self.config.port})"


class FTPSession:
    """One control connection, logged in. Create with :meth:`SessionFactory.open`."""

    def __init__(
        self, config: FTPConfig, ssl_context: ssl.SSLContext | None, quirks: ServerQuirks
    ) -> None:
        self.config = config
        self.quirks = quirks
        self.features: dict[str, str] = {}
        self.broken = False
        self.last_used = trio.current_time()
        self._ssl_context = ssl_context
        self._tcp: trio.SocketStream | None = None
        self._stream: trio.abc.Stream | None = None
        self._parser = ReplyParser()
        self._peer_host = config.host
        self._buffer = bytearray(CHUNK_SIZE)

    def __repr__(self) -> str:
        state = "broken" if self.broken else "open"
        return f"<FTPSession {self.config.user}@{self.config.host}:{self.config.port} {state}>"

    # -- lifecycle ---------------------------------------------------------------

    async def _connect(self) -> None:
        with self._guard("connect"), _FailAfter(self.config.timeouts.connect):
            self._tcp = await trio.open_tcp_stream(self.config.host, self.config.port)
            self._peer_host = self._tcp.socket.getpeername()[0]
            self._stream = self._tcp
            if self.config.tls is TLSMode.IMPLICIT:
                await self._start_tls()
            greeting = await self._read_reply()
            while greeting.is_preliminary:
                greeting = await self._read_reply()
            if greeting.code != 220:
                raise error_for_reply(greeting, "CONNECT")

    async def _login(self) -> None:
        config = self.config
        if config.tls is TLSMode.EXPLICIT:
            await self._command("AUTH", "TLS", expect=(234,))
            with self._guard("AUTH TLS"), _FailAfter(config.timeouts.connect):
                await self._start_tls()
        reply = await self._command("USER", config.user, expect=(230, 331))
        if reply.code == 331:
            await self._command("PASS", config.password.get_secret_value(), expect=(230, 202))
        if config.tls is not TLSMode.NONE:
            await self._command("PBSZ", "0", expect=(200,))
            await self._command("PROT", "P", expect=(200,))
        feat = await self._exchange(build_command("FEAT"))
        if feat.code == 211:
            self.features = protocol.parse_feat(feat)
        if "UTF8" in self.features:
            await self._exchange(build_command("OPTS", "UTF8", "ON"))
        await self._command("TYPE", "I", expect=(200,))

    async def _start_tls(self) -> None:
        assert self._stream is not None and self._ssl_context is not None
        tls = trio.SSLStream(self._stream, self._ssl_context, server_hostname=self.config.host)
        await tls.do_handshake()
        self._stream = tls

    async def aclose(self, *, quit: bool = True) -> None:
        """Say QUIT (briefly, if the session is healthy) and close. Never raises.

        Runs shielded: closing must finish even when the caller is being cancelled.
        """
        stream, self._stream, self._tcp = self._stream, None, None
        if stream is None:
            return
        with trio.CancelScope(shield=True):
            if quit and not self.broken:
                with trio.move_on_after(1.0):
                    try:
                        await stream.send_all(build_command("QUIT"))
                        await self._read_reply_from(stream)
                        while await stream.receive_some(4096):
                            pass
                    except (
                        OSError,
                        trio.BrokenResourceError,
                        trio.ClosedResourceError,
                        ssl.SSLError,
                        FTPError,
                    ):
                        pass
            self.broken = True
            await trio.aclose_forcefully(stream)

    @property
    def closed(self) -> bool:
        return self._stream is None

    # -- control channel -----------------------------------------------------------

    def _guard(self, what: str) -> _Guard:
        """Translate transport failures into :class:`FTPError` and mark the session broken.

        An :class:`FTPError` that carries a reply other than 421 leaves the session
        usable; anything else, cancellation included, breaks it. Errors that a
        nursery wrapped in an exception group come out unwrapped.
        """
        return _Guard(self, what)

    async def _read_reply(self) -> Reply:
        assert self._stream is not None
        return await self._read_reply_from(self._stream)

    async def _read_reply_from(self, stream: trio.abc.Stream) -> Reply:
        while (reply := self._parser.next_reply()) is None:
            data = await stream.receive_some(65536)
            if not data:
                raise FTPError(ErrorCode.CONNECTION_ERROR, "server closed the control connection")
            self._parser.feed(data)
        return reply

    async def _send(self, command: bytes) -> None:
        if self._stream is None or self.broken:
            raise FTPError(ErrorCode.CONNECTION_ERROR, "session is closed or broken")
        await self._stream.send_all(command)

    async def _exchange(self, command: bytes) -> Reply:
        """Send one command and read its final reply (skipping 1xx)."""
        with self._guard(protocol.verb_of(command)), _FailAfter(self.config.timeouts.reply):
            await self._send(command)
            reply = await self._read_reply()
            while reply.is_preliminary:
                reply = await self._read_reply()
            self.last_used = trio.current_time()
            return reply

    async def _command(self, verb: str, *args: str, expect: tuple[int, ...]) -> Reply:
        """Send a command; raise the mapped :class:`FTPError` unless the reply is in ``expect``."""
        command = build_command(verb, *args)
        reply = await self._exchange(command)
        if reply.code not in expect:
            with self._guard(verb):
                if reply.is_success or reply.is_intermediate:
                    raise FTPError(
                        ErrorCode.PROTOCOL_ERROR, f"{verb}: unexpected reply {reply}", None
                    )
                raise error_for_reply(reply, verb)
        return reply

    # -- simple commands -------------------------------------------------------------

    async def noop(self) -> None:
        await self._command("NOOP", expect=(200,))

    async def pwd(self) -> str:
        return protocol.parse_257(await self._command("PWD", expect=(257,)))

    async def cwd(self, path: str) -> None:
        await self._command("CWD", path, expect=(250, 200))

    async def size(self, path: str) -> int:
        """Size in bytes (binary mode is always on, so it is exact)."""
        return protocol.parse_size(await self._command("SIZE", path, expect=(213,)))

    async def mdtm(self, path: str) -> datetime:
        """Modification time, UTC."""
        return protocol.parse_mdtm(await self._command("MDTM", path, expect=(213,)))

    async def set_mtime(self, path: str, moment: datetime) -> None:
        """Set a file's modification time with MFMT, or vsftpd's two-argument MDTM.

        Raises:
            FTPError: PERMANENT when the server offers neither.
        """
        stamp = protocol.format_time_val(moment)
        if "MFMT" in self.features:
            await self._command("MFMT", stamp, path, expect=(213, 200, 250))
        elif "MDTM" in self.features:
            await self._command("MDTM", stamp, path, expect=(213, 200, 250))
        else:
            raise FTPError(ErrorCode.PERMANENT, "server cannot set modification times")

    async def mkd(self, path: str) -> None:
        await self._command("MKD", path, expect=(257, 250))

    async def makedirs(self, path: str) -> None:
        """``mkdir -p``: create ``path`` and any missing parents; existing ones are fine.

        Creating a directory that exists fails on every server with some 5xx, so
        errors on the parents are ignored and only the last directory is checked.
        """
        try:
            await self.mkd(path)
            return
        except FTPError as exc:
            if exc.reply is None:
                raise
        parts = [p for p in path.split("/") if p]
        prefix = "/" if path.startswith("/") else ""
        created_last = False
        for part in parts:
            prefix = f"{prefix}{part}"
            try:
                await self.mkd(prefix)
                created_last = True
            except FTPError as exc:
                if exc.reply is None:
                    raise
                created_last = False
            prefix += "/"
        if not created_last:
            await self._require_directory(path)

    async def _require_directory(self, path: str) -> None:
        here = await self.pwd()
        await self.cwd(path)
        await self.cwd(here)

    async def rename(self, source: str, target: str) -> None:
        await self._command("RNFR", source, expect=(350,))
        await self._command("RNTO", target, expect=(250, 200))

    async def delete(self, path: str) -> None:
        await self._command("DELE", path, expect=(250, 200))

    # -- data connections --------------------------------------------------------------

    async def _passive_address(self) -> tuple[str, int]:
        if self.quirks.epsv:
            reply = await self._exchange(build_command("EPSV"))
            if reply.code == 229:
                with self._guard("EPSV"):
                    return self._peer_host, protocol.parse_epsv(reply)
            if reply.code // 100 != 5:
                with self._guard("EPSV"):
                    raise error_for_reply(reply, "EPSV")
            self.quirks.epsv = False
        reply = await self._command("PASV", expect=(227,))
        with self._guard("PASV"):
            host, port = protocol.parse_pasv(reply)
        if self.config.pasv_use_reply_address and _routable(host):
            return host, port
        return self._peer_host, port

    async def _open_data(self) -> tuple[trio.SocketStream, trio.abc.Stream]:
        """Connect a passive data connection: the TCP stream, and the stream to move bytes on.

        The address is always numeric, so a plain socket connect does: no
        resolver, no happy-eyeballs nursery (``open_tcp_stream`` costs several
        times more, on every file).
        """
        host, port = await self._passive_address()
        with self._guard("data connection"), _FailAfter(self.config.timeouts.connect):
            tcp = await _connect(host, port)
        if self.config.tls is TLSMode.NONE:
            return tcp, tcp
        assert self._ssl_context is not None and isinstance(self._stream, trio.SSLStream)
        tls = trio.SSLStream(
            _HalfClosingStream(tcp), self._ssl_context, server_hostname=self.config.host
        )
        tls.session = self._stream.session
        return tcp, tls

    async def _start_transfer(self, data: trio.abc.Stream, verb: str, path: str) -> Reply:
        """Send the transfer command and wait for its 1xx, doing the data TLS handshake alongside.

        Servers differ on whether they send 150 before or after the data
        connection's TLS handshake, so both run at once.
        """
        command = build_command(verb, path)
        reply: Reply | None = None

        async def handshake() -> None:
            with self._guard(f"{verb} TLS handshake"):
                assert isinstance(data, trio.SSLStream)
                await data.do_handshake()

        with self._guard(verb), _FailAfter(self.config.timeouts.reply):
            await self._send(command)
            if isinstance(data, trio.SSLStream):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(handshake)
                    reply = await self._read_reply()
                    if not reply.is_preliminary:
                        nursery.cancel_scope.cancel()
            else:
                reply = await self._read_reply()
        assert reply is not None
        if not reply.is_preliminary:
            with self._guard(verb):
                if reply.is_success:
                    raise FTPError(ErrorCode.PROTOCOL_ERROR, f"{verb}: no data was sent: {reply}")
                raise error_for_reply(reply, verb)
        return reply

    async def _transfer(
        self, verb: str, path: str, move: Callable[[trio.abc.Stream], Awaitable[int]]
    ) -> tuple[int, Reply]:
        """Run one data transfer; ``move`` moves the bytes and returns how many.

        The final reply is read while the data moves: a server may send 226
        before or after the end of the data, and an early 426/451 stops the
        transfer at once. Returns the byte count and the 1xx reply.
        """
        tcp, data = await self._open_data()
        try:
            preliminary = await self._start_transfer(data, verb, path)
            final: Reply | None = None
            moved = 0
            with self._guard(verb):
                async with trio.open_nursery() as nursery:

                    async def watch_reply() -> None:
                        nonlocal final
                        final = await self._read_reply()
                        if not final.is_success:
                            nursery.cancel_scope.cancel()

                    nursery.start_soon(watch_reply)
                    moved = await move(data)
                    await _end_of_data(tcp, data)
                    nursery.cancel_scope.deadline = trio.current_time() + self.config.timeouts.reply
                if final is None:
                    raise FTPError(ErrorCode.TIMEOUT, f"{verb}: no reply after the data")
                if not final.is_success:
                    raise error_for_reply(final, verb)
            self.last_used = trio.current_time()
            return moved, preliminary
        finally:
            tcp.socket.close()  # nothing waits on it any more; aclose would cost two checkpoints

    async def _receive(self, verb: str, data: trio.abc.Stream, sink: Sink) -> int:
        """Move a data connection's bytes to ``sink`` until EOF.

        Plain TCP is read into one reused buffer: a fresh 256 KiB ``bytes``
        per read costs an mmap, page faults and a munmap each time.
        """
        stall = self.config.timeouts.data_stall
        total = 0
        with trio.CancelScope(deadline=trio.current_time() + stall) as scope:
            if isinstance(data, trio.SocketStream):
                sock = data.socket
                view = memoryview(self._buffer)
                while count := await sock.recv_into(view):
                    total += count
                    await sink(view[:count])
                    scope.deadline = trio.current_time() + stall
            else:
                while chunk := await data.receive_some(CHUNK_SIZE):
                    total += len(chunk)
                    await sink(chunk)
                    scope.deadline = trio.current_time() + stall
        if scope.cancelled_caught:
            raise FTPError(ErrorCode.TIMEOUT, f"{verb}: data stalled for {stall:g} s")
        return total

    async def retrieve(self, path: str, sink: Sink) -> Download:
        """Download ``path``, handing each chunk to ``sink``.

        Raises:
            FTPError: FILE_NOT_FOUND, PERMISSION_DENIED, TIMEOUT when no byte
                arrives for ``timeouts.data_stall`` seconds, TRANSIENT on 426/451...
        """
        received, preliminary = await self._transfer(
            "RETR", path, lambda data: self._receive("RETR", data, sink)
        )
        return Download(received, protocol.announced_size(preliminary))

    async def store(self, path: str, source: AsyncIterable[bytes | memoryview]) -> int:
        """Upload ``source`` to ``path``; returns the byte count.

        Raises:
            FTPError: PERMISSION_DENIED, TIMEOUT when the server takes no byte for
                ``timeouts.data_stall`` seconds, TRANSIENT on 426/451/452...
        """
        stall = self.config.timeouts.data_stall

        async def move(data: trio.abc.Stream) -> int:
            total = 0
            with trio.CancelScope(deadline=trio.current_time() + stall) as scope:
                async for chunk in source:
                    await data.send_all(chunk)
                    total += len(chunk)
                    scope.deadline = trio.current_time() + stall
            if scope.cancelled_caught:
                raise FTPError(ErrorCode.TIMEOUT, f"STOR: data stalled for {stall:g} s")
            return total

        sent, _ = await self._transfer("STOR", path, move)
        return sent

    async def _read_listing(self, verb: str, path: str) -> list[str]:
        """The lines of a listing, each decoded on its own (one odd name spoils no other)."""
        chunks: list[bytes] = []

        async def sink(chunk: memoryview | bytes | bytearray) -> None:
            chunks.append(bytes(chunk))

        await self._transfer(verb, path, lambda data: self._receive(verb, data, sink))
        lines = b"".join(chunks).split(b"\n")
        return [
            protocol.decode_text(line.removesuffix(b"\r")) for line in lines if line.strip(b"\r")
        ]

    async def list_dir(self, path: str) -> list[ListingEntry]:
        """Entries of a directory, without ``.`` and ``..``: MLSD when offered, else LIST."""
        if "MLST" in self.features:
            entries = [parse_mlsd_line(line) for line in await self._read_listing("MLSD", path)]
        else:
            now = datetime.now(UTC)
            lines = await self._read_listing("LIST", path)
            entries = [e for e in (parse_list_line(line, now) for line in lines) if e is not None]
        return [e for e in entries if not e.is_self_or_parent]

    async def nlst(self, path: str) -> list[str]:
        """Names in a directory (NLST), without ``.`` and ``..``."""
        names = (parse_nlst_line(line) for line in await self._read_listing("NLST", path))
        return [name for name in names if name not in (None, ".", "..")]


async def _connect(host: str, port: int) -> trio.SocketStream:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _end_of_data(tcp: trio.SocketStream, data: trio.abc.Stream) -> None:
    """Tell the server the data is over, without closing the socket yet.

    TLS ends with ``close_notify``, plain TCP with FIN. Servers wait for it
    before their final reply, on downloads too (vsftpd: ~40 ms per file
    without it, waiting for our side to close).
    """
    if data is tcp:
        await tcp.send_eof()
    else:
        await data.aclose()


class _HalfClosingStream(trio.abc.Stream):
    """A data connection's TCP stream whose ``aclose`` only sends FIN.

    Closing a socket that holds unread bytes (such as a TLS 1.3 session ticket
    the server sent on the data connection) makes the kernel answer with RST,
    and a server may then drop upload data it had not read yet. So the end of
    the data (after TLS ``close_notify``, if any) is only a half-close; the
    socket itself is closed after the server's final reply.
    """

    def __init__(self, tcp: trio.SocketStream) -> None:
        self._tcp = tcp

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._tcp.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._tcp.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._tcp.receive_some(max_bytes)

    async def aclose(self) -> None:
        try:
            await self._tcp.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self._tcp.aclose()


class _Guard:
    """:meth:`FTPSession._guard`; a class, not a generator: it is entered a dozen times per file."""

    __slots__ = ("_session", "_what")

    def __init__(self, session: FTPSession, what: str) -> None:
        self._session = session
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: object, raised: BaseException | None, tb: object
    ) -> Literal[False]:
        if raised is None:
            return False
        exc = _meaningful(raised)
        what = self._what
        if isinstance(exc, FTPError):
            if exc.reply is None or exc.reply.code == 421:
                self._session.broken = True
            if exc is raised:
                return False
            raise exc from None
        self._session.broken = True
        if isinstance(exc, PoolerError):  # the sink's or the source's local error, mid-transfer
            raise exc from exc.__cause__
        if isinstance(exc, trio.TooSlowError):
            raise FTPError(ErrorCode.TIMEOUT, f"{what}: timed out") from None
        if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
            tls_error = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
            raise FTPError(ErrorCode.TLS_ERROR, f"{what}: {tls_error}") from exc
        if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError)):
            detail = str(exc) or type(exc).__name__
            raise FTPError(ErrorCode.CONNECTION_ERROR, f"{what}: {detail}") from exc
        return False


class _FailAfter:
    """``trio.fail_after`` without its two generator-based context managers (hot path)."""

    __slots__ = ("_scope",)

    def __init__(self, seconds: float) -> None:
        self._scope = trio.CancelScope(deadline=trio.current_time() + seconds)

    def __enter__(self) -> trio.CancelScope:
        return self._scope.__enter__()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> Literal[False]:
        self._scope.__exit__(exc_type, exc, tb)
        if self._scope.cancelled_caught:
            raise trio.TooSlowError
        return False


def _meaningful(exc: BaseException) -> BaseException:
    """The first error in an exception group that is not a cancellation, else ``exc`` itself."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    for leaf in _leaves(exc):
        if not isinstance(leaf, trio.Cancelled):
            return leaf
    return exc


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _routable(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (address.is_unspecified or address.is_multicast or address.is_reserved)
