"""A Trio FTP session: the thin I/O layer around :mod:`ftp_pooler.ftp.protocol`.

One :class:`FTPSession` is one logged-in control connection. Its methods
send commands and read replies; transfers open a passive data connection
each. Any failure that leaves the conversation out of step (a timeout, a
dropped connection, a cancellation, a reply we cannot parse) marks the
session ``broken``: it is closed and never reused. A plain error reply
(``550 No such file``) leaves it usable.

Before each command, complete replies that arrived unasked (a second 230,
a late 226) are read and dropped, found without a round trip: the parser's
buffer and a zero-timeout poll of the control socket. A reply whose code
cannot answer the command sent (see :func:`protocol.is_unsolicited`) is
dropped too, so one unasked reply never shifts every later one by one.
The same check, run by the pool on an idle session, finds sessions the
server has closed (EOF, or ``421`` waiting in the socket).

Every error leaving a session has the session's password scrubbed from its
message and reply: servers echo arguments (``530 ... password hunter2``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import ssl
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import structlog
import trio

from ftp_pooler import logs
from ftp_pooler.errors import ErrorCode, FTPError, PoolerError, error_for_reply
from ftp_pooler.ftp import protocol
from ftp_pooler.ftp.config import FTPConfig, TLSMode
from ftp_pooler.ftp.listing import ListingEntry, parse_list_line, parse_mlsd_line, parse_nlst_line
from ftp_pooler.ftp.protocol import Reply, ReplyParser, build_command

log = structlog.get_logger(__name__)

CHUNK_SIZE = 256 * 1024
"""Largest read from a socket, and the size uploads are sent in."""

_T = TypeVar("_T")

_TLS_RECORD_WAIT = 0.05
"""Seconds the unasked-reply check waits when the control socket is readable but the
TLS layer has no reply yet (records such as session tickets); plain TCP never waits."""

Sink = Callable[[memoryview | bytes | bytearray], Awaitable[object]]
"""Where downloaded bytes go, one chunk at a time; a chunk is only valid during the call."""


@dataclass(frozen=True, slots=True)
class Download:
    """What a RETR moved."""

    received: int
    """Bytes written to the sink."""
    announced_size: int | None
    """The size the server named in its 150 reply (``(1234 bytes)``), if it did (or
    the SIZE that vouched for a data connection closed without TLS close_notify)."""


@dataclass
class ServerQuirks:
    """What one server taught us, shared by all sessions to it."""

    epsv: bool = True
    """Cleared when the server refuses EPSV (a 5xx, or a 229 with no port we can read,
    as a server behind a broken NAT helper sends); PASV is used from then on."""


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
        self._secrets = (config.password.get_secret_value(),)
        self._ragged_eof = False
        self._no_data_tls = False
        self.reused = False
        """Set by the pool when it hands out an idle session; cleared by the first
        reply after that. A session the server closed while idle fails its first
        command with ``stale_session`` set on the error (see :class:`FTPError`)."""

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
            # RFC 4217 says 234; some servers say 200 and start the handshake all the same.
            await self._command("AUTH", "TLS")
            with self._guard("AUTH TLS"), _FailAfter(config.timeouts.connect):
                await self._start_tls()
        reply = await self._command("USER", config.user, intermediate=(331,))
        if reply.code == 331:
            await self._command("PASS", config.password.get_secret_value())
        if config.tls is not TLSMode.NONE:
            await self._command("PBSZ", "0")
            await self._command("PROT", "P")
        feat = await self._exchange(build_command("FEAT"))
        if feat.is_success:
            with self._guard("FEAT"):
                self.features = protocol.parse_feat(feat)
        if "UTF8" in self.features:
            await self._exchange(build_command("OPTS", "UTF8", "ON"))
        await self._command("TYPE", "I")

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

    def _mark(self, error: FTPError) -> None:
        """Scrub the password from an error leaving the session; flag a stale pooled session."""
        message = protocol.scrub(error.message, self._secrets)
        if message != error.message:
            error.set_message(message)
        if error.reply is not None:
            error.reply = protocol.scrub_reply(error.reply, self._secrets)
        dead = error.code is ErrorCode.CONNECTION_ERROR or (
            error.reply is not None and error.reply.code == 421
        )
        if self.reused and dead:
            error.stale_session = True

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
            self._parser.feed(await self._receive_control(stream))
        if logs.debug_enabled:
            log.debug("ftp.reply", host=self.config.host, reply=self._shown(reply.lines[0]))
        return reply

    @staticmethod
    async def _receive_control(stream: trio.abc.Stream) -> bytes | bytearray:
        """Bytes from the control connection.

        Raises:
            FTPError: CONNECTION_ERROR when the server closed it, with TLS
                ``close_notify`` or without (servers closing an idle FTPS
                session often skip it): a closed connection, not a TLS failure.
        """
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError as exc:
            if not _is_ragged_eof(exc):
                raise
            data = b""
        if not data:
            raise FTPError(ErrorCode.CONNECTION_ERROR, "server closed the control connection")
        return data

    async def _send(self, command: bytes) -> None:
        if self._stream is None or self.broken:
            raise FTPError(ErrorCode.CONNECTION_ERROR, "session is closed or broken")
        await self._drain_unasked()
        if logs.debug_enabled:
            for line in command.decode(errors="replace").splitlines():  # one write may hold several
                log.debug("ftp.command", host=self.config.host, command=self._shown(line))
        await self._stream.send_all(command)

    def _shown(self, line: str) -> str:
        """A line of the dialogue for a debug log: secrets scrubbed, PASS/ACCT's argument hidden."""
        if line[:5].upper() in ("PASS ", "ACCT "):
            return line[:5] + "***"
        return protocol.scrub(line, self._secrets)

    def _has_unread(self) -> bool:
        """Whether bytes wait in the parser or the control socket (no round trip, no wait)."""
        if self._parser.has_partial_data:
            return True
        if self._tcp is None:
            return False
        poller = select.poll()
        poller.register(self._tcp.socket.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    async def _drain_unasked(self) -> None:
        """Read and drop complete replies that came unasked; waits only to finish a partial one.

        Raises:
            FTPError: SERVER_BUSY when one is a 421 (the server is closing the
                session: idle timeout, shutdown), CONNECTION_ERROR on EOF.
        """
        assert self._stream is not None
        while True:
            while (reply := self._parser.next_reply()) is not None:
                self._drop_unasked(None, reply)
            data: bytes | bytearray | None = None
            if self._parser.has_partial_data:
                data = await self._receive_control(self._stream)  # the rest of a reply
            elif self._has_unread():
                # Over TLS the bytes may be records with no reply in them (TLS 1.3
                # session tickets after the handshake): wait for a reply only briefly.
                with trio.move_on_after(_TLS_RECORD_WAIT):
                    data = await self._receive_control(self._stream)
                if data is None:
                    return
            else:
                return
            self._parser.feed(data)

    def _drop_unasked(self, verb: str | None, reply: Reply) -> None:
        if reply.code in (421, 221):
            raise error_for_reply(reply, verb)
        log.warning(
            "ftp.unasked_reply",
            server=f"{self.config.host}:{self.config.port}",
            command=verb,
            reply=protocol.scrub(str(reply), self._secrets)[:200],
        )

    async def check_idle(self) -> bool:
        """Whether an idle session is still usable, found without a round trip.

        Replies that arrived while idle are read and dropped; a 421 or an EOF
        among them (the server closed the session: vsftpd's
        ``idle_session_timeout`` sends ``421 Timeout.`` and closes) makes the
        session broken. Waits only to complete a partial reply (at most the
        reply timeout). Never raises but for cancellation.
        """
        if self.broken or self._stream is None:
            return False
        if not self._has_unread():
            return True
        try:
            with self._guard("idle check"), _FailAfter(self.config.timeouts.reply):
                await self._drain_unasked()
        except FTPError:
            self.broken = True  # a 221 too: the server said goodbye
            return False
        return not self.broken

    async def _exchange(self, command: bytes) -> Reply:
        """Send one command and read its final reply (skipping 1xx and unasked replies)."""
        verb = protocol.verb_of(command)
        dropped: Reply | None = None
        with self._guard(verb):
            try:
                with _FailAfter(self.config.timeouts.reply):
                    await self._send(command)
                    reply = await self._read_reply()
                    while reply.is_preliminary or protocol.is_unsolicited(verb, reply):
                        if not reply.is_preliminary:
                            self._drop_unasked(verb, reply)
                            dropped = reply
                        reply = await self._read_reply()
            except trio.TooSlowError:
                if dropped is None:
                    raise
                # Not an unasked reply after all, but the server's (wrong) answer.
                raise FTPError(
                    ErrorCode.PROTOCOL_ERROR,
                    f"{verb}: unexpected reply {dropped}, and no other reply followed",
                ) from None
            self.last_used = trio.current_time()
            if reply.code != 421:  # a 421 says the server is closing the session
                self.reused = False
            return reply

    async def _command(self, verb: str, *args: str, intermediate: tuple[int, ...] = ()) -> Reply:
        """Send a command; any 2xx (or a code in ``intermediate``) is success.

        Success is the reply class, not one code (RFC 959 section 4.2: the
        first digit says whether the command succeeded; servers differ in the
        others: ``200`` to AUTH TLS, ``250`` or ``200`` to CWD, MKD, DELE).

        Raises:
            FTPError: The mapped error of a 4xx/5xx; PROTOCOL_ERROR for a 1xx/3xx
                the command does not allow.
        """
        command = build_command(verb, *args)
        reply = await self._exchange(command)
        if not reply.is_success and reply.code not in intermediate:
            with self._guard(verb):
                if reply.is_intermediate or reply.is_preliminary:
                    raise FTPError(
                        ErrorCode.PROTOCOL_ERROR, f"{verb}: unexpected reply {reply}", None
                    )
                raise error_for_reply(reply, verb)
        return reply

    # -- simple commands -------------------------------------------------------------

    async def noop(self) -> None:
        await self._command("NOOP")

    async def pwd(self) -> str:
        return self._parsed(protocol.parse_257, await self._command("PWD"), "PWD")

    async def cwd(self, path: str) -> None:
        await self._command("CWD", path)

    async def size(self, path: str) -> int:
        """Size in bytes (binary mode is always on, so it is exact)."""
        return self._parsed(protocol.parse_size, await self._command("SIZE", path), "SIZE")

    async def mdtm(self, path: str) -> datetime:
        """Modification time, UTC."""
        return self._parsed(protocol.parse_mdtm, await self._command("MDTM", path), "MDTM")

    def _parsed(self, parse: Callable[[Reply], _T], reply: Reply, verb: str) -> _T:
        """``parse(reply)``; a reply that does not parse is a protocol error (session broken)."""
        with self._guard(verb):
            return parse(reply)

    async def set_mtime(self, path: str, moment: datetime) -> None:
        """Set a file's modification time with MFMT, or vsftpd's two-argument MDTM.

        Raises:
            FTPError: PERMANENT when the server offers neither.
        """
        stamp = protocol.format_time_val(moment)
        if "MFMT" in self.features:
            await self._command("MFMT", stamp, path)
        elif "MDTM" in self.features:
            await self._command("MDTM", stamp, path)
        else:
            raise FTPError(ErrorCode.PERMANENT, "server cannot set modification times")

    async def mkd(self, path: str) -> None:
        await self._command("MKD", path)

    async def makedirs(self, path: str) -> None:
        """``mkdir -p``: create ``path`` and any missing parents; existing ones are fine.

        Creating a directory that exists fails on every server with some 5xx, so
        errors on the parents are ignored and only the last directory is checked.

        Raises:
            FTPError: The refusal of the MKD of the shallowest directory that
                does not exist afterwards (``550 Permission denied`` ->
                PERMISSION_DENIED), never the CWD used to check it.
        """
        try:
            await self.mkd(path)
            return
        except FTPError as exc:
            if exc.reply is None:
                raise
            whole = exc
        parts = [p for p in path.split("/") if p]
        prefix = "/" if path.startswith("/") else ""
        refused: list[tuple[str, FTPError]] = []
        created_last = False
        for part in parts:
            prefix = f"{prefix}{part}"
            try:
                await self.mkd(prefix)
                created_last = True
            except FTPError as exc:
                if exc.reply is None:
                    raise
                refused.append((prefix, exc))
                created_last = False
            prefix += "/"
        if not created_last:
            await self._require_directory(path, refused or [(path, whole)])

    async def _require_directory(self, path: str, refused: list[tuple[str, FTPError]]) -> None:
        """Check ``path`` exists (CWD there and back); if not, raise the MKD refusal behind it."""
        here = await self.pwd()
        try:
            await self.cwd(path)
        except FTPError as exc:
            if exc.reply is None:
                raise
            cause = await self._first_missing(refused)
            await self.cwd(here)
            raise cause from None
        await self.cwd(here)

    async def _first_missing(self, refused: list[tuple[str, FTPError]]) -> FTPError:
        """The MKD refusal of the first of ``refused`` that CWD cannot enter."""
        for directory, refusal in refused:
            try:
                await self.cwd(directory)
            except FTPError as exc:
                if exc.reply is None:
                    raise
                return refusal
        return refused[-1][1]

    async def rename(self, source: str, target: str) -> None:
        await self._command("RNFR", source, intermediate=(350,))
        await self._command("RNTO", target)

    async def delete(self, path: str) -> None:
        await self._command("DELE", path)

    # -- data connections --------------------------------------------------------------

    async def _passive_address(self) -> tuple[str, int]:
        """Where to connect the next data connection: EPSV, else PASV (RFC 2428, RFC 959).

        EPSV answered with a 227 is read as PASV (some servers do), PASV
        answered with a 229 as EPSV; a 5xx, or a 2xx whose port cannot be read
        (``(||38835|)``), counts as EPSV refused: PASV from then on for that
        server, recorded in its quirks.
        """
        if self.quirks.epsv:
            reply = await self._exchange(build_command("EPSV"))
            if reply.code == 227:
                return self._pasv_target(reply, "EPSV")
            if reply.is_success:
                try:
                    return self._peer_host, protocol.parse_epsv(reply)
                except FTPError:
                    pass
            elif reply.code // 100 != 5:
                with self._guard("EPSV"):
                    raise error_for_reply(reply, "EPSV")
            self.quirks.epsv = False
        reply = await self._command("PASV")
        if reply.code == 229:  # an EPSV answer to PASV (servers behind NAT64)
            with self._guard("PASV"):
                return self._peer_host, protocol.parse_epsv(reply)
        return self._pasv_target(reply, "PASV")

    def _pasv_target(self, reply: Reply, verb: str) -> tuple[str, int]:
        with self._guard(verb):
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
                try:
                    await data.do_handshake()
                except trio.BrokenResourceError as exc:
                    # Some servers close the data connection of an empty file without
                    # starting TLS at all: the same as a ragged end after 0 bytes,
                    # judged by the final reply and the size like one.
                    if not _closed_by_peer(exc):
                        raise
                    self._no_data_tls = True

        with self._guard(verb), _FailAfter(self.config.timeouts.reply):
            await self._send(command)
            if isinstance(data, trio.SSLStream):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(handshake)
                    reply = await self._read_answer(verb)
                    if not reply.is_preliminary:
                        nursery.cancel_scope.cancel()
            else:
                reply = await self._read_answer(verb)
        assert reply is not None
        if not reply.is_preliminary:
            with self._guard(verb):
                if reply.is_success:
                    raise FTPError(ErrorCode.PROTOCOL_ERROR, f"{verb}: no data was sent: {reply}")
                raise error_for_reply(reply, verb)
        return reply

    async def _read_answer(self, verb: str) -> Reply:
        """The next reply that can answer ``verb``; replies it cannot are dropped as unasked."""
        reply = await self._read_reply()
        while protocol.is_unsolicited(verb, reply):
            self._drop_unasked(verb, reply)
            reply = await self._read_reply()
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
        self._ragged_eof = False
        self._no_data_tls = False
        try:
            preliminary = await self._start_transfer(data, verb, path)
            final: Reply | None = None
            moved = 0
            with self._guard(verb):
                async with trio.open_nursery() as nursery:

                    async def watch_reply() -> None:
                        nonlocal final
                        final = await self._read_answer(verb)
                        if not final.is_success:
                            nursery.cancel_scope.cancel()

                    nursery.start_soon(watch_reply)
                    moved = await move(data)
                    await _end_of_data(tcp, data)
                    nursery.cancel_scope.deadline = trio.current_time() + self.config.timeouts.reply
                if final is None:
                    if self._ragged_eof:
                        raise FTPError(
                            ErrorCode.TLS_ERROR,
                            f"{verb}: data connection ended without TLS close_notify"
                            " and no reply followed",
                        )
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
        if self._no_data_tls:
            self._ragged_eof = True
            return 0
        with trio.CancelScope(deadline=trio.current_time() + stall) as scope:
            if isinstance(data, trio.SocketStream):
                sock = data.socket
                view = memoryview(self._buffer)
                while count := await sock.recv_into(view):
                    total += count
                    await sink(view[:count])
                    scope.deadline = trio.current_time() + stall
            else:
                try:
                    while chunk := await data.receive_some(CHUNK_SIZE):
                        total += len(chunk)
                        await sink(chunk)
                        scope.deadline = trio.current_time() + stall
                except trio.BrokenResourceError as exc:
                    if not _is_ragged_eof(exc):
                        raise
                    self._ragged_eof = True
        if scope.cancelled_caught:
            raise FTPError(ErrorCode.TIMEOUT, f"{verb}: data stalled for {stall:g} s")
        return total

    async def retrieve(self, path: str, sink: Sink) -> Download:
        """Download ``path``, handing each chunk to ``sink``.

        An FTPS data connection that ends with a bare TCP FIN instead of TLS
        ``close_notify`` (servers on .NET and IIS) is complete when the final
        2xx came and the byte count equals the size announced in the 150
        reply or, failing that, the one SIZE gives: what curl and lftp accept.

        Raises:
            FTPError: FILE_NOT_FOUND, PERMISSION_DENIED, TIMEOUT when no byte
                arrives for ``timeouts.data_stall`` seconds, TRANSIENT on 426/451,
                TLS_ERROR when the TLS ending is missing and the count does not
                match (or cannot be checked)...
        """
        received, preliminary = await self._transfer(
            "RETR", path, lambda data: self._receive("RETR", data, sink)
        )
        announced = protocol.announced_size(preliminary, path)
        if self._ragged_eof:
            expected = announced
            if expected is None and "SIZE" in self.features:
                with contextlib.suppress(FTPError):  # reported below as the TLS ending
                    expected = await self.size(path)
            if expected != received:
                said = "no size" if expected is None else f"{expected} bytes"
                raise FTPError(
                    ErrorCode.TLS_ERROR,
                    f"RETR: data connection ended without TLS close_notify after {received}"
                    f" bytes; the server said {said}",
                )
            announced = expected
        return Download(received, announced)

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
        session = self._session
        what = self._what
        if isinstance(exc, FTPError):
            if exc.reply is None or exc.reply.code == 421:
                session.broken = True
            session._mark(exc)
            if exc is raised:
                return False
            raise exc from None
        session.broken = True
        if isinstance(exc, PoolerError):  # the sink's or the source's local error, mid-transfer
            raise exc from exc.__cause__
        if isinstance(exc, trio.TooSlowError):
            raise FTPError(ErrorCode.TIMEOUT, f"{what}: timed out") from None
        if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
            tls_error = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
            raise FTPError(ErrorCode.TLS_ERROR, f"{what}: {tls_error}") from exc
        if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError)):
            detail = str(exc) or type(exc).__name__
            error = FTPError(ErrorCode.CONNECTION_ERROR, f"{what}: {detail}")
            session._mark(error)
            raise error from exc
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


def _is_ragged_eof(exc: trio.BrokenResourceError) -> bool:
    """Whether a TLS stream broke because the peer sent FIN without ``close_notify``.

    As trio's own check (``trio._ssl._is_eof``): OpenSSL 3 reports it as
    ``SSLEOFError`` or as ``UNEXPECTED_EOF_WHILE_READING``.
    """
    cause = exc.__cause__
    return isinstance(cause, ssl.SSLEOFError) or (
        isinstance(cause, ssl.SSLError) and "UNEXPECTED_EOF_WHILE_READING" in str(cause)
    )


def _closed_by_peer(exc: trio.BrokenResourceError) -> bool:
    """Whether a TLS handshake broke because the peer closed the connection (EOF or reset)."""
    cause = exc.__cause__
    return _is_ragged_eof(exc) or isinstance(cause, ConnectionResetError | BrokenPipeError)


def _routable(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (address.is_unspecified or address.is_multicast or address.is_reserved)
