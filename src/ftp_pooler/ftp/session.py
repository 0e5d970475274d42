"""A Trio FTP session: the thin I/O layer around :mod:`ftp_pooler.ftp.protocol`.

One :class:`FTPSession` is one logged-in control connection. Its methods
send commands and read replies; transfers open a passive data connection
each. Any failure that leaves the conversation out of step (a timeout, a
dropped connection, a cancellation, bytes that are not a reply) marks the
session ``broken``: it is closed and never reused; so does a reply that ends
the session (``421``, or ``530`` after the login). A plain error reply
(``550 No such file``), or a whole reply whose content we cannot read
(``213 garbage``), leaves it usable.

Before each command, complete replies that arrived unasked (a second 230,
a late 226) are read and dropped, found without a round trip: the parser's
buffer and a zero-timeout poll of the control socket. A reply whose code
cannot answer the command sent (see :func:`protocol.is_unsolicited`) is
dropped too, so one unasked reply never shifts every later one by one.
The same check, run by the pool on an idle session, finds sessions the
server has closed (EOF, or ``421`` waiting in the socket).

The text of a reply to PASS is never kept, and every other error leaving a
session has the session's password, in any spelling, scrubbed from its
message and reply: servers echo arguments (``530 ... password hunter2``).

Commands whose replies are not needed before the next one go out together
when the server copes (pipelining, docs/ftp-client.md): the login, ``SIZE``
with ``EPSV`` and the transfer command, ``SIZE`` with ``RNFR``. The replies
are paired with the commands by :class:`~ftp_pooler.ftp.pipeline.ReplyMatcher`.
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
from typing import Any, Literal, NoReturn, TypeVar

import structlog
import trio

from ftp_pooler import logs
from ftp_pooler.errors import ErrorCode, FTPError, PoolerError, error_for_reply
from ftp_pooler.ftp import protocol
from ftp_pooler.ftp.config import FTPConfig, Pipelining, TLSMode
from ftp_pooler.ftp.listing import ListingEntry, parse_list_line, parse_mlsd_line, parse_nlst_line
from ftp_pooler.ftp.pipeline import PipelineAnomaly, ReplyMatcher, TransferEndMatcher
from ftp_pooler.ftp.protocol import Reply, ReplyParser, build_command

log = structlog.get_logger(__name__)

CHUNK_SIZE = 256 * 1024
"""Largest read from a socket, and the size uploads are sent in."""

_T = TypeVar("_T")

_LOGIN_FAILURES_AS_SUCH = frozenset({ErrorCode.SERVER_BUSY, ErrorCode.CONNECTION_ERROR})
"""Failed logins not tried again one command at a time: a full server, a lost connection
(and a ``530``: a refused password, where a second try could count towards a lockout)."""

_SENT_TOGETHER_REFUSALS = frozenset({500, 501, 503})
"""Replies to a passive command sent after SIZE that may mean the server choked on the
two lines together (unrecognised, garbled, out of sequence) rather than refused EPSV."""

_TLS_RECORD_WAIT = 0.05
"""Seconds the unasked-reply check waits when the control socket is readable but the
TLS layer has no reply yet (records such as session tickets); plain TCP never waits."""

SPARE_PASSIVE_SECONDS = 3.0
"""Longest a passive address asked with an upload's RNTO (the next transfer's, see
:meth:`FTPSession.rename`) is used for: servers close an unused passive listener after
a while (pyftpdlib after 30 s, proftpd at its ``TimeoutNoTransfer``)."""

MAX_LISTING_BYTES = 64 * 1024 * 1024
"""Largest directory listing read (about 600,000 ``LIST`` lines): a listing is held in
memory whole, so one without end is stopped instead."""

Sink = Callable[[memoryview | bytes | bytearray], Awaitable[object]]
"""Where downloaded bytes go, one chunk at a time; a chunk is only valid during the call."""


@dataclass(frozen=True, slots=True)
class Download:
    """What a RETR moved."""

    received: int
    """Bytes written to the sink."""
    announced_size: int | None
    """The size the server named in its 150 reply (``(1234 bytes)``), if it did, else
    the SIZE asked with the EPSV (pipelining), or the SIZE that vouched for a data
    connection closed without TLS close_notify."""


@dataclass(frozen=True, slots=True)
class _CheckedUpload:
    """An upload's SIZE, answered in order after its 226 (:meth:`FTPSession.store`)."""

    path: str
    size: Reply


@dataclass
class ServerQuirks:
    """What one server taught us, shared by all sessions to it."""

    hidden_temp: bool = True
    """Cleared when the server refused to STOR an upload's hidden temporary name
    (``.name.<hex>.part``) with a permission 55x and took the visible form: a
    server hiding or refusing dot-files (pure-ftpd ``-x``/``-X``, vsftpd
    ``deny_file={.*}``). Read and set by the engine's upload."""
    epsv: bool = True
    """Cleared when the server refuses EPSV (a 5xx, or a 229 with no port we can read,
    as a server behind a broken NAT helper sends); PASV is used from then on."""
    pipelining: bool | None = None
    """Whether commands are sent together (docs/ftp-client.md, "Pipelining"):
    ``None`` not known yet (``pipelining = auto`` before the first login's check),
    ``True`` yes, ``False`` one at a time."""
    pipelining_forced: bool = False
    """``pipelining = on``: anomalies are handled but never turn pipelining off."""
    features: dict[str, str] | None = None
    """FEAT of the last login, so a pipelined login knows whether to send OPTS UTF8."""
    pipelined_passive: bool = True
    """With pipelining, whether the transfer command goes out with the EPSV (cleared
    when a passive reply sent that way could not be used)."""
    early_check: bool = True
    """With pipelining, whether an upload's ``SIZE`` goes out as soon as its data
    ended, before the ``226`` (cleared when the server answered it before the ``226``,
    refused it, left it unanswered, or measured a size that was still growing:
    :meth:`FTPSession.store`)."""
    spare_passive: bool = True
    """With pipelining, whether the next transfer's ``EPSV`` goes out with an upload's
    ``RNTO`` (cleared when the server refused that EPSV, or its address did not serve
    the next transfer: :meth:`FTPSession.rename`)."""
    passive_verified: bool = False
    """Set once the server answered the passive command in use (EPSV, or PASV after a
    refused EPSV) with an address we could use: only then does a transfer command go
    out with it. A server given RETR with no listener open may refuse it, wait, or
    connect back to us (pyftpdlib), so the first transfer never risks it."""

    def pipeline_anomaly(self, server: str, what: str) -> None:
        """The server mishandled commands sent together: one at a time from now on."""
        if self.pipelining_forced or self.pipelining is False:
            return
        self.pipelining = False
        log.warning("ftp.pipelining_off", server=server, reason=what[:200])

    def step_anomaly(
        self, server: str, step: Literal["early_check", "spare_passive"], what: str
    ) -> None:
        """One pipelined step misfired on this server: that step is not taken again
        (even with ``pipelining = on``: each has a fallback that costs a round trip)."""
        if getattr(self, step):
            setattr(self, step, False)
            log.warning("ftp.pipelined_step_off", server=server, step=step, reason=what[:200])


class SessionFactory:
    """Opens sessions to one server; holds its config, TLS context and quirks."""

    def __init__(self, config: FTPConfig) -> None:
        self.config = config
        mode = config.pipelining
        self.quirks = ServerQuirks(
            epsv=config.epsv,
            pipelining={Pipelining.ON: True, Pipelining.OFF: False}.get(mode),
            pipelining_forced=mode is Pipelining.ON,
        )
        self._ssl_context = config.ssl_context() if config.tls is not TLSMode.NONE else None

    async def open(self) -> FTPSession:
        """Connect and log in.

        Raises:
            FTPError: With SERVER_BUSY when the server refuses more sessions (421),
                AUTH_FAILED, CONNECTION_ERROR, TIMEOUT or TLS_ERROR.
        """
        pipelined = self.quirks.pipelining is not False
        session = await self._connect()
        try:
            await session._login()
            session.logged_in = True
            return session
        except FTPError as exc:
            await session.aclose(quit=False)
            refused = exc.reply is not None and exc.reply.code in (430, 530, 532)
            if not pipelined or refused or exc.code in _LOGIN_FAILURES_AS_SUCH:
                raise
            # The login went out pipelined (or checked pipelining) and failed: once more,
            # one command at a time; if that works, the pipelining was the trouble. (Only
            # a failed login: a server that does not connect or greet costs one try.)
            # The shared quirks are not switched meanwhile: another session's anomaly
            # found during this login must not be undone by putting them back.
            session = await self._open(alone=True)
            self.quirks.pipeline_anomaly(self._server, f"pipelined login failed: {exc.message}")
            return session
        except BaseException:
            await session.aclose(quit=False)
            raise

    @property
    def _server(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    async def _connect(self) -> FTPSession:
        """A session connected and greeted, not logged in."""
        session = FTPSession(self.config, self._ssl_context, self.quirks)
        try:
            await session._connect()
        except BaseException:
            await session.aclose(quit=False)
            raise
        return session

    async def _open(self, *, alone: bool = False) -> FTPSession:
        session = await self._connect()
        try:
            await session._login(alone=alone)
        except BaseException:
            await session.aclose(quit=False)
            raise
        session.logged_in = True
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
        self._charset = config.wire_charset
        self._parser = ReplyParser(self._charset)
        self._peer_host = config.host
        self._buffer = bytearray(CHUNK_SIZE)
        self._secrets = (config.password.get_secret_value(),)
        self._ragged_eof = False
        self._no_data_tls = False
        self._spare: tuple[str, int, float] | None = None
        """A passive address asked with the last RNTO: host, port, when (trio time)."""
        self._checked: _CheckedUpload | None = None
        """SIZE answer of the last upload, asked before its 226 (:meth:`store`)."""
        self.connect_seconds = 0.0
        """Seconds the TCP connect took (for the pool's opening policy)."""
        self.reused = False
        """Set by the pool when it hands out an idle session. A reused session the
        server closed (EOF, 421) before a transfer began fails with ``stale_session``
        set on the error (see :class:`FTPError`)."""
        self.logged_in = False
        """Set once the login finished: a 530 from then on means the server forgot it."""
        self.transfer_began = False
        """Whether a transfer's 1xx came since the session was last idle (reset by
        :meth:`check_idle`, which the pool runs on every session it hands out):
        from then on bytes may have moved, and a failure is never ``stale_session``."""

    def __repr__(self) -> str:
        state = "broken" if self.broken else "open"
        return f"<FTPSession {self.config.user}@{self.config.host}:{self.config.port} {state}>"

    # -- lifecycle ---------------------------------------------------------------

    async def _connect(self) -> None:
        started = trio.current_time()
        with self._guard("connect"), _FailAfter(self.config.timeouts.connect):
            self._tcp = await trio.open_tcp_stream(self.config.host, self.config.port)
            self.connect_seconds = trio.current_time() - started
            self._peer_host = self._tcp.socket.getpeername()[0]
            self._stream = self._tcp
            if self.config.tls is TLSMode.IMPLICIT:
                await self._start_tls()
            greeting = await self._read_reply()
            while greeting.is_preliminary:
                greeting = await self._read_reply()
            if greeting.code != 220:
                raise error_for_reply(greeting, "CONNECT")

    async def _login(self, *, alone: bool = False) -> None:
        """Log in; ``alone``: one command at a time, whatever the server's quirks say.

        How to log in is decided once, before the first command: the shared
        :attr:`ServerQuirks.pipelining` may change while this login runs.
        """
        config = self.config
        mode = False if alone else self.quirks.pipelining
        if config.tls is TLSMode.EXPLICIT:
            await self._auth()
            with self._guard("AUTH TLS"), _FailAfter(config.timeouts.connect):
                await self._start_tls()
        if mode and self.quirks.features is not None:
            await self._login_pipelined()
            return
        reply = await self._command("USER", config.user, intermediate=(331,))
        if reply.code == 331:
            await self._command("PASS", config.password.get_secret_value())
        if config.tls is not TLSMode.NONE:
            await self._pbsz()
            await self._command("PROT", "P")
        if mode is False:
            self._take_features(await self._exchange(build_command("FEAT")))
            if self._opts_utf8(self.features):
                await self._exchange(build_command("OPTS", "UTF8", "ON"))
            await self._command("TYPE", "I")
            return
        # Not known yet (auto), or on: FEAT and TYPE I together show whether the
        # server answers a second command sent before the first one's reply.
        feat, type_reply = await self._exchange_all(
            [build_command("FEAT"), build_command("TYPE", "I")]
        )
        self._take_features(feat)
        self._check("TYPE", type_reply)
        if self.quirks.pipelining is None:
            self.quirks.pipelining = True
            log.info("ftp.pipelining_on", server=self._server)
        if self._opts_utf8(self.features):
            await self._exchange(build_command("OPTS", "UTF8", "ON"))

    async def _login_pipelined(self) -> None:
        """USER, PASS, (PBSZ, PROT,) FEAT, (OPTS UTF8,) TYPE I in one write: one round trip.

        Safe once the server answered commands sent together in order: a
        refused USER or PASS fails the login as it would alone (the commands
        after it are refused too, as not logged in, and nothing changes), and
        FEAT, OPTS and TYPE change nothing but this session's settings.
        """
        config = self.config
        assert self.quirks.features is not None
        commands = [
            self._build("USER", config.user),
            self._build("PASS", config.password.get_secret_value()),
        ]
        if config.tls is not TLSMode.NONE:
            commands += [build_command("PBSZ", "0"), build_command("PROT", "P")]
        commands.append(build_command("FEAT"))
        utf8 = self._opts_utf8(self.quirks.features)
        if utf8:
            commands.append(build_command("OPTS", "UTF8", "ON"))
        commands.append(build_command("TYPE", "I"))
        replies = iter(await self._exchange_all(commands))
        user = next(replies)
        password = next(replies)
        if user.code == 331:
            self._check("PASS", password)
        elif not user.is_success:
            self._check("USER", user)
        if config.tls is not TLSMode.NONE:
            pbsz = next(replies)
            if pbsz.code == 421:  # a refused PBSZ is ignored, as when sent alone (_pbsz)
                self._refused("PBSZ", pbsz)
            self._check("PROT", next(replies))
        self._take_features(next(replies))
        if utf8:
            next(replies)  # OPTS UTF8 ON: a refusal is harmless, as when sent alone
        self._check("TYPE", next(replies))

    def _build(self, verb: str, *args: str) -> bytes:
        """:func:`build_command` in the connection's charset (``FTPConfig.charset``).

        Raises:
            FTPError: PATH_NOT_ALLOWED, as :func:`build_command`.
        """
        return build_command(verb, *args, charset=self._charset)

    def _opts_utf8(self, features: dict[str, str]) -> bool:
        """Whether the login sends ``OPTS UTF8 ON`` (RFC 2640 section 3.2): with ``charset =
        auto`` when FEAT lists ``UTF8``; with ``utf-8`` always (servers that switch to UTF-8
        only when asked, without listing it); with any other charset never."""
        if self._charset is None:
            return "UTF8" in features
        return self._charset == "utf-8"

    def _take_features(self, feat: Reply) -> None:
        if feat.is_success:
            with self._guard("FEAT"):
                self.features = protocol.parse_feat(feat)
        self.quirks.features = self.features

    def _check(self, verb: str, reply: Reply, intermediate: tuple[int, ...] = ()) -> None:
        """Raise the error a reply to ``verb`` means unless a 2xx (or in ``intermediate``)."""
        if not reply.is_success and reply.code not in intermediate:
            with self._guard(verb):
                if reply.is_intermediate or reply.is_preliminary:
                    raise FTPError(
                        ErrorCode.PROTOCOL_ERROR, f"{verb}: unexpected reply {reply}", None
                    )
                raise error_for_reply(reply, verb)

    @property
    def _server(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    @property
    def pipelining(self) -> bool:
        """Whether commands go out together on this session now (the server's quirk)."""
        return self.quirks.pipelining is True

    async def _auth(self) -> None:
        """``AUTH TLS``; refused as unknown (:data:`protocol.NOT_UNDERSTOOD`), ``AUTH SSL`` once.

        RFC 4217 says 234; some servers say 200 and start the handshake all
        the same. Older servers know only the pre-RFC 4217 name ``SSL`` (curl
        tries the other name when the first is refused, ``lib/ftp.c``).
        """
        reply = await self._exchange(build_command("AUTH", "TLS"))
        if reply.code in protocol.NOT_UNDERSTOOD:
            await self._command("AUTH", "SSL")
        elif not reply.is_success:
            self._refused("AUTH", reply)

    async def _pbsz(self) -> None:
        """``PBSZ 0``, whose refusal is ignored: ``PROT P`` decides (RFC 4217 section 9 wants
        PBSZ first; servers that refuse it still take PROT, and curl ignores PBSZ's reply).
        A 421 is not ignored: the server is closing the session."""
        reply = await self._exchange(build_command("PBSZ", "0"))
        if reply.code == 421:
            self._refused("PBSZ", reply)

    def _refused(self, verb: str, reply: Reply) -> None:
        with self._guard(verb):
            raise error_for_reply(reply, verb)

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

    def _mark(self, error: FTPError, verb: str | None = None) -> None:
        """Scrub the password from an error leaving the session; flag a stale session.

        The text of a reply to ``verb`` is dropped where it may echo the password
        (:func:`protocol.withholds_text`). Stale (``stale_session``), when no
        transfer began since the session was handed out: a reused session the
        server closed (EOF, 421), or any session the server logged out (530
        after the login: a re-authentication timeout). Such a 530 is
        AUTH_FAILED but retryable: the credentials worked.
        """
        if protocol.withholds_text(verb, self._secrets[0]):
            if error.reply is not None:
                error.reply = protocol.withheld(error.reply)
                error.set_message(f"{verb}: {error.reply}")
            elif error.code is ErrorCode.PROTOCOL_ERROR:
                error.set_message(f"{verb}: unexpected reply (text not kept)")
        message = protocol.scrub(error.message, self._secrets)
        if message != error.message:
            error.set_message(message)
        if error.reply is not None:
            error.reply = protocol.scrub_reply(error.reply, self._secrets)
        reply = error.reply
        closed = error.code is ErrorCode.CONNECTION_ERROR or (
            reply is not None and reply.code == 421
        )
        logged_out = reply is not None and reply.code == 530 and self.logged_in
        if logged_out:
            error.retryable = True  # the login worked; the server dropped it
        if not self.transfer_began and ((self.reused and closed) or logged_out):
            error.stale_session = True

    def _ends_session(self, reply: Reply) -> bool:
        """Whether an error reply leaves the session unusable: 421 (the server is closing
        it) or 530 after the login (RFC 959: not logged in; the server forgot the login)."""
        return reply.code == 421 or (reply.code == 530 and self.logged_in)

    # -- control channel -----------------------------------------------------------

    def _guard(self, what: str) -> _Guard:
        """Translate transport failures into :class:`FTPError` and mark the session broken.

        An :class:`FTPError` that carries a reply leaves the session usable, unless
        the reply ends it (:meth:`_ends_session`); anything else, cancellation
        included, breaks it. Errors that a nursery wrapped in an exception group
        come out unwrapped.
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

    async def _send(self, command: bytes, *, drain: bool = True) -> None:
        """Write ``command`` (one or several lines). Any command forgets the last
        upload's early SIZE answer and the passive address asked with RNTO: they are
        good only for the commands that follow at once. ``drain=False`` while a
        reader waits on the control connection (it reads the unasked replies itself)."""
        self._spare = None
        self._checked = None
        if self._stream is None or self.broken:
            raise FTPError(ErrorCode.CONNECTION_ERROR, "session is closed or broken")
        if drain:
            await self._drain_unasked()
        if logs.debug_enabled:
            text = protocol.decode_text(command, self._charset)
            for line in text.splitlines():  # one write may hold several
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
        self.transfer_began = False
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
            return reply

    async def _exchange_all(
        self, commands: list[bytes], *, then: bytes | None = None
    ) -> list[Reply]:
        """Send ``commands`` in one write; their final replies, in order (a pipeline).

        ``then`` (a transfer command) goes out in the same write, after them;
        its replies are left for the caller to read.

        Unasked replies before the batch are drained first, as for one
        command; once it is out, every reply goes through a
        :class:`ReplyMatcher`, so a reply to a later command is never taken
        for an unasked one. A reply out of order, or a later command left
        unanswered while an earlier one was answered (the server dropped it),
        is an anomaly: pipelining stops for this server and the error says
        the session was not at fault (``stale_session``): the task runs
        again on a fresh session without spending an attempt.

        Raises:
            FTPError: As :meth:`_exchange`; PROTOCOL_ERROR for an anomaly.
        """
        verbs = [protocol.verb_of(command) for command in commands]
        matcher = ReplyMatcher()
        replies: list[Reply] = []
        later = 0 if then is None else 1
        try:
            with self._guard(verbs[0]), _FailAfter(self.config.timeouts.reply):
                await self._send(b"".join(commands) + (then or b""))
                matcher.sent(*verbs)
                if then is not None:
                    matcher.sent(protocol.verb_of(then))
                while len(matcher.waiting) > later:
                    answer = matcher.match(await self._read_reply())
                    if answer.final:
                        replies.append(answer.reply)
                    elif answer.verb is None:
                        self._drop_unasked(matcher.waiting[0], answer.reply)
        except FTPError as exc:
            dropped = exc.code is ErrorCode.TIMEOUT and 0 < len(replies) < len(commands)
            if isinstance(exc, PipelineAnomaly) or dropped:
                what = exc.message if not dropped else f"no reply to {verbs[len(replies)]}"
                self.quirks.pipeline_anomaly(self._server, what)
                exc.stale_session = True
            raise
        self.last_used = trio.current_time()
        return replies

    async def _command(self, verb: str, *args: str, intermediate: tuple[int, ...] = ()) -> Reply:
        """Send a command; any 2xx (or a code in ``intermediate``) is success.

        Success is the reply class, not one code (RFC 959 section 4.2: the
        first digit says whether the command succeeded; servers differ in the
        others: ``200`` to AUTH TLS, ``250`` or ``200`` to CWD, MKD, DELE).

        Raises:
            FTPError: The mapped error of a 4xx/5xx; PROTOCOL_ERROR for a 1xx/3xx
                the command does not allow.
        """
        command = self._build(verb, *args)
        reply = await self._exchange(command)
        self._check(verb, reply, intermediate)
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
        """``parse(reply)``. A reply that does not parse is a PROTOCOL_ERROR carrying it;
        it was one whole, well-framed reply, so the session stays in step and usable."""
        with self._guard(verb):
            try:
                return parse(reply)
            except FTPError as exc:
                exc.reply = reply
                raise

    @property
    def can_set_mtime(self) -> bool:
        """Whether FEAT offers a way to set a file's time (:meth:`set_mtime`)."""
        return "MFMT" in self.features or "MDTM" in self.features

    async def set_mtime(self, path: str, moment: datetime) -> None:
        """Set a file's modification time with MFMT, or vsftpd's two-argument MDTM.

        Raises:
            FTPError: PERMANENT when the server offers neither (:attr:`can_set_mtime`);
                the refusal of the command otherwise.
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
            if exc.reply is None or self.broken:
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
                if exc.reply is None or self.broken:
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
            if exc.reply is None or self.broken:
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
                if exc.reply is None or self.broken:
                    raise
                return refusal
        return refused[-1][1]

    async def rename(
        self,
        source: str,
        target: str,
        *,
        size_check: Callable[[int | None], object] | None = None,
    ) -> None:
        """RNFR ``source``, RNTO ``target``; with ``size_check``, SIZE ``source`` first.

        ``size_check`` gets the size the server reports for ``source`` (``None``
        when it offers no SIZE or refuses it: the transfer's own reply already
        vouched for the bytes) and raises to stop before RNTO. Pipelined, SIZE
        and RNFR go out together and RNTO once the size checked out: RNFR
        changes nothing on the server until RNTO, so a rename stopped there
        leaves the file where it was; the pending RNFR is ended with ``RNTO
        source`` (:meth:`_end_rename`).

        When the upload just stored ``source`` had its SIZE answered already
        (:meth:`store` with ``check=True``), that answer is used and RNFR and
        RNTO go out together. Pipelined, the next transfer's EPSV goes out with
        RNTO (:meth:`_rnto`).

        Raises:
            FTPError: The refusal of RNFR or RNTO; whatever ``size_check`` raises.
        """
        checked, self._checked = self._checked, None
        if checked is not None and checked.path == source and size_check is not None:
            await self._rename_checked(checked, target, size_check)
            return
        check_size = size_check is not None and "SIZE" in self.features
        if check_size and self.pipelining:
            size_reply, rnfr = await self._exchange_all(
                [self._build("SIZE", source), self._build("RNFR", source)]
            )
            if rnfr.code != 350 and size_reply.is_success and not self.quirks.pipelining_forced:
                # Refused when sent with SIZE (a server that rejects or drops a second
                # line): once more alone. A late answer to the first RNFR can only be a
                # 350, which RNTO's reading drops as unasked (protocol.is_unsolicited).
                what = protocol.scrub(f"RNFR refused pipelined: {rnfr}", self._secrets)
                self.quirks.pipeline_anomaly(self._server, what)
                rnfr = await self._exchange(self._build("RNFR", source))
            assert size_check is not None
            try:
                size_check(self._size_of(size_reply))
            except PoolerError:
                if rnfr.code == 350:
                    await self._end_rename(source)
                raise
            self._check("RNFR", rnfr, (350,))
        else:
            if size_check is not None:
                size_check(await self._size_or_none(source) if check_size else None)
            await self._command("RNFR", source, intermediate=(350,))
        await self._rnto(target)

    async def _end_rename(self, source: str) -> None:
        """End an RNFR left pending when the size check stopped the rename: ``RNTO source``
        (onto itself: nothing moves), whatever its reply. proftpd answers every command
        but RNTO after an RNFR with ``501 Bad sequence of commands``, so the DELE of the
        temporary file that follows a size mismatch would otherwise be refused."""
        reply = await self._exchange(self._build("RNTO", source))
        if self._ends_session(reply):
            self._refused("RNTO", reply)

    async def _rename_checked(
        self, checked: _CheckedUpload, target: str, size_check: Callable[[int | None], object]
    ) -> None:
        """:meth:`rename` with SIZE answered after the upload's 226 (:meth:`store`):
        RNFR and RNTO (and the next EPSV) then go out in one write.

        A size that does not match is asked once more, alone: a server that
        answers in order but whose SIZE still saw a file being written (it
        finishes writing after its 226) is judged by its later word, and
        asked this way no more. RNFR is sent only after a size that matched,
        so no RNFR is ever left pending (proftpd answers every command but
        RNTO after an RNFR with ``501 Bad sequence of commands``).
        """
        try:
            size_check(self._size_of(checked.size))
        except PoolerError as exc:
            if exc.code is not ErrorCode.SIZE_MISMATCH:
                raise
            again = await self._size_or_none(checked.path)
            if again is None:
                raise
            size_check(again)
            what = f"SIZE said {checked.size} right after the 226, {again} when asked again"
            self.quirks.step_anomaly(self._server, "early_check", what)
        await self._rnto(target, checked.path)

    async def _rnto(self, target: str, source: str | None = None) -> None:
        """RNTO ``target`` (after ``RNFR source`` when given); pipelined, in one write
        with the RNFR, and with the next transfer's EPSV.

        RNFR's and RNTO's replies alone decide the rename (a refused RNFR makes
        the RNTO after it refused too, and nothing moves). The EPSV's address
        is kept (:attr:`_spare`) for the next transfer on this session, which
        then connects at once instead of asking EPSV first: one round trip
        less per file. Only EPSV (its address is the control connection's
        host), once this server's EPSV served a transfer. A refused EPSV turns
        the step off for the server; one left unanswered too, and the session
        is closed (its reply may still come), the rename done all the same.
        A reply that ends the session (421, or 530 after the login) marks it
        broken and nothing more: RNTO's 250 already completed the upload.
        Every later command but the transfer's forgets the address
        (:meth:`_send`); the server drops an unused listener at the next EPSV
        or when the session ends.

        Raises:
            FTPError: The refusal of RNFR or RNTO.
        """
        quirks = self.quirks
        if not self.pipelining:
            if source is not None:
                await self._command("RNFR", source, intermediate=(350,))
            await self._command("RNTO", target)
            return
        commands = [self._build("RNTO", target)]
        if source is not None:
            commands.insert(0, self._build("RNFR", source))
        spare = quirks.spare_passive and quirks.epsv and quirks.passive_verified
        if not spare:
            await self._renamed(source, target, await self._exchange_all(commands))
            return
        replies = await self._exchange_all(commands, then=build_command("EPSV"))
        epsv: Reply | None = None
        with self._guard("EPSV"), trio.move_on_after(self.config.timeouts.reply):
            epsv = await self._read_answer("EPSV")
        if epsv is None:
            self.broken = True  # in step no more: the EPSV's reply may still come
            quirks.step_anomaly(self._server, "spare_passive", "no reply to EPSV sent with RNTO")
            await self._renamed(source, target, replies)
            return
        if not await self._renamed(source, target, replies):
            return  # RNTO was sent again, alone: the EPSV's listener is gone
        address = self._usable_address(epsv, "EPSV") if epsv.is_success else None
        if address is None:
            if self._ends_session(epsv):
                # The rename is done (RNTO's 250): a 421/530 here ends this session,
                # never the task; the pool drops a broken session.
                self.broken = True
                log.warning(
                    "ftp.session_ended_after_rename",
                    server=self._server,
                    reply=protocol.scrub(str(epsv), self._secrets)[:200],
                )
                return
            what = protocol.scrub(f"EPSV sent with RNTO: {epsv}", self._secrets)
            quirks.step_anomaly(self._server, "spare_passive", what)
            return
        self._spare = (*address, trio.current_time())

    async def _renamed(self, source: str | None, target: str, replies: list[Reply]) -> bool:
        """Check the replies to ``[RNFR source,] RNTO target`` sent in one write; whether
        they did it (``False``: RNTO was refused as sent with the RNFR and went again alone).

        A server that refuses a second line read with the first (``500``-``504``
        to RNTO while RNFR got its 350) is talked to one command at a time from
        then on, and RNFR and RNTO go again, one at a time: a refused RNTO moved
        nothing. Other refusals are the rename's.

        Raises:
            FTPError: The refusal of RNFR or RNTO.
        """
        rnto = replies[-1]
        if source is not None:
            self._check("RNFR", replies[0], (350,))
            sequence = rnto.code in protocol.NOT_UNDERSTOOD or rnto.code == 503
            if sequence and not self.quirks.pipelining_forced:
                what = protocol.scrub(f"RNTO refused when sent with RNFR: {rnto}", self._secrets)
                self.quirks.pipeline_anomaly(self._server, what)
                await self._command("RNFR", source, intermediate=(350,))
                await self._command("RNTO", target)
                return False
        self._check("RNTO", rnto)
        return True

    def _suspect(self, verb: str, reply: Reply) -> None:
        """A command sent after another in one write was refused while the first worked.

        Servers that reject a command read in the same packet as the one
        before (``500``/``503`` to the second line), or answer one command
        twice, look like this, and the session may be out of step: it is
        broken, the server talked to one command at a time from now on (in
        ``auto`` mode), and the error is flagged ``stale_session`` so the task
        runs again on a fresh session without spending an attempt. In ``on``
        mode the reply is taken as the answer.

        Raises:
            FTPError: PROTOCOL_ERROR, unless pipelining is forced on.
        """
        if self.quirks.pipelining_forced:
            return
        what = protocol.scrub(
            f"{verb} refused when sent with the command before it: {reply}", self._secrets
        )
        self.quirks.pipeline_anomaly(self._server, what)
        self.broken = True
        error = FTPError(ErrorCode.PROTOCOL_ERROR, what)
        self._mark(error)
        error.stale_session = True
        raise error

    def _size_of(self, reply: Reply) -> int | None:
        """The size in a SIZE reply, or ``None`` (logged) when the server refused it or
        sent a size we cannot read (the reply is one reply all the same: still in step)."""
        if reply.is_success:
            try:
                return protocol.parse_size(reply)
            except FTPError:
                pass
        log.warning(
            "ftp.size_unavailable",
            server=self._server,
            reply=protocol.scrub(str(reply), self._secrets)[:200],
        )
        return None

    async def _size_or_none(self, path: str) -> int | None:
        reply = await self._exchange(self._build("SIZE", path))
        if reply.code == 421:
            self._check("SIZE", reply)
        return self._size_of(reply)

    async def delete(self, path: str) -> None:
        await self._command("DELE", path)

    async def rename_over(
        self,
        source: str,
        target: str,
        *,
        size_check: Callable[[int | None], object] | None = None,
    ) -> None:
        """:meth:`rename`, replacing ``target`` on a server that will not rename over an
        existing file.

        Only when RNFR was accepted and RNTO refused with a permanent reply that can
        mean "the target exists" (:func:`protocol.may_refuse_existing_target`: proftpd
        with ``AllowOverwrite off`` says ``550 ...: Rename permission denied``) is the
        target touched, and never deleted first: it is moved aside, ours renamed into
        place, the aside copy deleted (:meth:`_replace_aside`). Any other refusal (a
        refused RNFR, a transient 4xx, a 502) is raised as it is: the destination
        stays as it was.

        Raises:
            FTPError: The refusal of the rename (the first one when the target could
                not be moved aside); whatever ``size_check`` raises.
        """
        try:
            await self.rename(source, target, size_check=size_check)
            return
        except FTPError as exc:
            if self.broken or not protocol.may_refuse_existing_target(exc.command, exc.reply):
                raise
            refusal = exc
        await self._replace_aside(source, target, refusal)

    async def _replace_aside(self, source: str, target: str, refusal: FTPError) -> None:
        """Put ``source`` in ``target``'s place after RNTO refused to replace it.

        Steps, one command at a time, and what the server holds after each
        (a crash or a lost session can stop it between any two):

        1. ``RNFR target``, ``RNTO aside`` (beside it: ``source``'s name with
           ``.aside`` added, so hidden or visible as the upload's temporary name
           is, which a server refusing dot-files took, and unique as it is):
           the old file whole under the aside name, no file under ``target``,
           ours under ``source``. Refused (no such target, or no right to
           rename it): nothing changed, ``refusal`` is raised.
        2. ``RNFR source``, ``RNTO target``: ours in place, the old one aside.
           Refused: the old file is moved back (``RNFR aside``, ``RNTO target``)
           and the refusal raised; if that fails too, the old file stays under
           the aside name (logged as ``ftp.replaced_file_aside``), never gone.
        3. ``DELE aside``: only ours. Refused: the old copy stays aside (logged);
           the upload is in place.

        At no step is the old file's content only in our memory: each rename is
        one atomic step on the server, so it is always under ``target`` or the
        aside name. The window without a file under ``target`` lasts one round
        trip (between steps 1 and 2), as the delete-then-rename it replaces left.

        Raises:
            FTPError: ``refusal``, or the refusal of step 2.
        """
        aside = aside_name(source, target)
        try:
            await self._rename_alone(target, aside)
        except FTPError as exc:
            if exc.reply is None or self.broken:
                log.error("ftp.replaced_file_aside", server=self._server, path=target, aside=aside)
                raise
            raise refusal from None
        try:
            await self._rename_alone(source, target)
        except FTPError:
            restored = False
            if not self.broken:
                with contextlib.suppress(FTPError):
                    await self._rename_alone(aside, target)
                    restored = True
            if not restored:
                log.error("ftp.replaced_file_aside", server=self._server, path=target, aside=aside)
            raise
        try:
            await self.delete(aside)
        except FTPError as exc:
            if exc.reply is None or self.broken:
                raise
            log.warning("ftp.replaced_file_aside", server=self._server, path=target, aside=aside)

    async def restore_aside(self, source: str, target: str) -> bool:
        """After a session lost in :meth:`rename_over`, on a new one: move ``target``'s
        aside copy (:func:`aside_name`) back under ``target``; whether one was.

        The lost session may have stopped between :meth:`_replace_aside`'s
        steps 1 and 2: the old file aside, none under ``target``, ours under
        ``source`` (which the caller deletes next). Moving the old file back
        leaves the destination as it was before the failed task. ``RNFR
        aside`` refused (``550``: there is none, the usual case) or ``RNTO
        target`` refused (a file is there already, on a server that will not
        rename over it) changes nothing.

        Raises:
            FTPError: Only when the session itself fails (no reply, a 421).
        """
        aside = aside_name(source, target)
        try:
            await self._rename_alone(aside, target)
        except FTPError as exc:
            if exc.reply is None or self.broken:
                raise
            return False
        log.warning("ftp.replaced_file_restored", server=self._server, path=target, aside=aside)
        return True

    async def _rename_alone(self, source: str, target: str) -> None:
        """RNFR and RNTO, one at a time, nothing sent with them."""
        await self._command("RNFR", source, intermediate=(350,))
        await self._command("RNTO", target)

    # -- data connections --------------------------------------------------------------

    async def _passive_address(self, size_of: str | None = None) -> tuple[str, int, int | None]:
        """Where to connect the next data connection: EPSV, else PASV (RFC 2428, RFC 959).

        EPSV answered with a 227 is read as PASV (some servers do), PASV
        answered with a 229 as EPSV; any 4xx or 5xx but 421 and 530
        (:func:`protocol.refuses_epsv`: those say the session is gone), or a
        2xx whose port cannot be read (``(||38835|)``), counts as EPSV
        refused: PASV from then on for that server, recorded in its quirks.

        With ``size_of`` and pipelining, ``SIZE size_of`` goes out with the
        EPSV (or PASV) in one write: its answer (the third value, ``None`` if
        refused or not asked) costs no round trip of its own. Safe: SIZE
        changes nothing, and the EPSV's reply is read whatever SIZE's was.
        """
        size: int | None = None
        prefix: list[bytes] = []
        if size_of is not None and self.pipelining and "SIZE" in self.features:
            prefix = [self._build("SIZE", size_of)]
        if prefix:
            passive = build_command("EPSV" if self.quirks.epsv else "PASV")
            size_reply, first = await self._exchange_all([*prefix, passive])
            size = self._size_of(size_reply)
            if first.code in _SENT_TOGETHER_REFUSALS:
                # What a server that rejects a line read with the one before it says;
                # any other refusal (502 "not implemented", 550/534/425 to EPSV, a 421
                # or a 530) is about the verb or the session, pipelined or not.
                self._suspect(protocol.verb_of(passive), first)
            sent = protocol.verb_of(passive)
        else:
            first, sent = None, None
        host, port = await self._passive_after(first, sent)
        return host, port, size

    async def _passive_after(self, first: Reply | None, sent: str | None) -> tuple[str, int]:
        """:meth:`_passive_address` from the reply to the passive command ``sent`` on this
        session (``None``, ``None``: none sent yet)."""
        address, used = await self._passive_reply_address(first, sent)
        if (used == "EPSV") is self.quirks.epsv:  # the verb in use for this server now
            self.quirks.passive_verified = True
        return address

    async def _passive_reply_address(
        self, first: Reply | None, sent: str | None
    ) -> tuple[tuple[str, int], str]:
        """The address from ``first``, the reply to ``sent``, read as a reply to that verb,
        and the verb whose reply gave it.

        The verb is the one this session sent, never the server's shared
        :attr:`ServerQuirks.epsv` read again: another session may turn EPSV off
        while this one's EPSV is on the wire, and its reply (a ``502``, a ``229``
        with no port) must still be read as EPSV's, and PASV asked next.
        """
        if first is None:
            sent = "EPSV" if self.quirks.epsv else "PASV"
        if sent == "EPSV":
            reply = first if first is not None else await self._exchange(build_command("EPSV"))
            first = None
            if reply.code == 227:
                return self._pasv_target(reply, "EPSV"), "EPSV"
            if reply.is_success:
                try:
                    return (self._peer_host, protocol.parse_epsv(reply)), "EPSV"
                except FTPError:
                    pass
            elif not protocol.refuses_epsv(reply, ipv6=":" in self._peer_host):
                with self._guard("EPSV"):
                    raise error_for_reply(reply, "EPSV")
            if self.quirks.epsv:  # another session may have found it first (and PASV working)
                self.quirks.epsv = False
                self.quirks.passive_verified = False
        if first is not None:
            self._check("PASV", first)
            reply = first
        else:
            reply = await self._command("PASV")
        if reply.code == 229:  # an EPSV answer to PASV (servers behind NAT64)
            with self._guard("PASV"):
                return (self._peer_host, protocol.parse_epsv(reply)), "PASV"
        return self._pasv_target(reply, "PASV"), "PASV"

    def _pasv_target(self, reply: Reply, verb: str) -> tuple[str, int]:
        with self._guard(verb):
            host, port = protocol.parse_pasv(reply)
        if self.config.pasv_use_reply_address and _routable(host):
            return host, port
        return self._peer_host, port

    async def _open_data(
        self, size_of: str | None = None
    ) -> tuple[trio.SocketStream, trio.abc.Stream, int | None]:
        """Connect a passive data connection: the TCP stream, the stream to move bytes on,
        and the size of ``size_of`` if it was asked alongside (:meth:`_passive_address`).

        The address is always numeric, so a plain socket connect does: no
        resolver, no happy-eyeballs nursery (``open_tcp_stream`` costs several
        times more, on every file).
        """
        host, port, size = await self._passive_address(size_of)
        tcp, data = await self._connect_data(host, port)
        return tcp, data, size

    async def _open_data_with(
        self, command: bytes, size_of: str | None
    ) -> tuple[trio.SocketStream, trio.abc.Stream, int | None, bool]:
        """:meth:`_open_data`, with the transfer ``command`` sent in the same write as the
        EPSV (and SIZE): ``[SIZE path] EPSV RETR path`` is one round trip, not two.
        Returns the streams, the size, and whether ``command`` is still to be answered
        (``False``: it was refused, and must be sent again).

        Safe because the server takes commands in order: the transfer command
        reaches it after the passive listener is open, and it waits for our
        connect (RFC 959 section 3.2: the server listens after PASV; RFC 2428
        section 3 for EPSV). If the passive reply cannot be used, the server
        got the transfer command with no listener open and refuses it (``425
        Use PORT or PASV first``): that refusal is read, and the usual
        fallback (PASV after a refused EPSV) runs as without pipelining. Any
        other answer (a 1xx: the server connects back to us) breaks the
        session; the task runs again on a fresh one (``stale_session``) and
        this server's transfers wait for the passive reply from then on
        (``ServerQuirks.pipelined_passive``).
        """
        passive = build_command("EPSV" if self.quirks.epsv else "PASV")
        verb = protocol.verb_of(passive)
        batch = [passive]
        if size_of is not None and "SIZE" in self.features:
            batch.insert(0, self._build("SIZE", size_of))
        replies = await self._exchange_all(batch, then=command)
        size = self._size_of(replies[0]) if len(replies) == 2 else None
        reply = replies[-1]
        address = self._usable_address(reply, verb)
        transfer = protocol.verb_of(command)
        if address is not None:
            try:
                with _FailAfter(self.config.timeouts.connect):
                    tcp = await _connect(*address)
            except (OSError, trio.TooSlowError) as exc:
                await self._refused_before_connect(transfer, exc)
            return tcp, self._data_stream(tcp), size, True
        with self._guard(transfer), _FailAfter(self.config.timeouts.reply):
            answer = await self._read_answer(transfer)
        if answer.is_preliminary or answer.is_success:
            self.quirks.pipelined_passive = False
            self.broken = True
            error = FTPError(
                ErrorCode.PROTOCOL_ERROR,
                f"{transfer}: answered {answer} after an unusable {verb} reply {reply}",
            )
            self._mark(error)
            error.stale_session = True
            raise error
        host, port = await self._passive_after(reply, verb)
        tcp, data = await self._connect_data(host, port)
        return tcp, data, size, False

    async def _refused_before_connect(self, transfer: str, exc: BaseException) -> NoReturn:
        """The data connection to a passive address failed, with ``transfer`` sent already.

        A server that refused the transfer command closes its listener at once,
        so our connect may come too late: its reply, not the refused connect,
        says what went wrong (``553 Prohibited file name``, to which the engine
        answers with another name). Waits for it at most the reply timeout.

        Raises:
            FTPError: The refusal (the session stays usable), else CONNECTION_ERROR
                (or TIMEOUT) for the connect, the session broken.
        """
        answer: Reply | None = None
        with self._guard(transfer), trio.move_on_after(self.config.timeouts.reply):
            answer = await self._read_answer(transfer)
        if answer is not None and not answer.is_preliminary and not answer.is_success:
            self._refused(transfer, answer)
        with self._guard("data connection"):
            raise exc

    def _usable_address(self, reply: Reply, verb: str) -> tuple[str, int] | None:
        """The data address a passive reply gives, or ``None`` (refused, unreadable)."""
        try:
            if reply.code == 229 or (verb == "EPSV" and reply.is_success and reply.code != 227):
                return self._peer_host, protocol.parse_epsv(reply)
            if not reply.is_success:
                return None
            host, port = protocol.parse_pasv(reply)
        except FTPError:
            return None
        if self.config.pasv_use_reply_address and _routable(host):
            return host, port
        return self._peer_host, port

    async def _connect_data(
        self, host: str, port: int
    ) -> tuple[trio.SocketStream, trio.abc.Stream]:
        """The data connection to a passive address: TCP, and the stream to move bytes on."""
        with self._guard("data connection"), _FailAfter(self.config.timeouts.connect):
            tcp = await _connect(host, port)
        return tcp, self._data_stream(tcp)

    def _data_stream(self, tcp: trio.SocketStream) -> trio.abc.Stream:
        """The stream to move a data connection's bytes on: ``tcp``, or TLS over it."""
        if self.config.tls is TLSMode.NONE:
            return tcp
        assert self._ssl_context is not None and isinstance(self._stream, trio.SSLStream)
        tls = trio.SSLStream(
            _HalfClosingStream(tcp), self._ssl_context, server_hostname=self.config.host
        )
        tls.session = self._stream.session
        return tls

    async def _start_transfer(
        self, data: trio.abc.Stream, verb: str, command: bytes, *, sent: bool = False
    ) -> Reply:
        """Send the transfer command (unless ``sent`` with the EPSV) and wait for its 1xx,
        doing the data TLS handshake alongside.

        Servers differ on whether they send 150 before or after the data
        connection's TLS handshake, so both run at once.
        """
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
            if not sent:
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
        self.transfer_began = True
        return reply

    async def _read_answer(self, verb: str) -> Reply:
        """The next reply that can answer ``verb``; replies it cannot are dropped as unasked."""
        reply = await self._read_reply()
        while protocol.is_unsolicited(verb, reply):
            self._drop_unasked(verb, reply)
            reply = await self._read_reply()
        return reply

    async def _transfer(
        self,
        verb: str,
        path: str,
        move: Callable[[trio.abc.Stream, int | None], Awaitable[int]],
        *,
        size_first: bool = False,
        after_data: tuple[bytes, ...] = (),
    ) -> tuple[int, Reply, int | None, tuple[Reply, ...] | None]:
        """Run one data transfer; ``move`` moves the bytes and returns how many (its second
        argument: the most bytes the server announced, :func:`protocol.most_announced`).

        The final reply is read while the data moves: a server may send 226
        before or after the end of the data, and an early 426/451 stops the
        transfer at once. Returns the byte count, the 1xx reply, the
        file's SIZE when ``size_first`` and it was asked with the EPSV
        (pipelining on; else ``None``), and the answers to ``after_data``.

        ``after_data`` (commands) are written as soon as the data ended, when
        the final reply has not come yet; the replies are paired by
        :class:`~ftp_pooler.ftp.pipeline.TransferEndMatcher`. Their answers are
        ``None`` when they were not sent (the final reply came first) or cannot
        be trusted: the server answered them before the transfer's end, or not
        at all (logged; :attr:`ServerQuirks.early_check` cleared).

        A passive address asked with the last RNTO (:meth:`_rnto`) is used when
        fresh, and no SIZE is to go with the EPSV; if it cannot be connected to,
        a fresh EPSV is asked; if the transfer command is refused with a 425 (no
        listener of ours behind it), so is one, or, when the data already went
        (below), the error says ``stale_session``: the task runs again without
        spending an attempt. Either turns the step off for the server.

        Pipelined, an upload on plain TCP sends its data without waiting for
        the 1xx (the connection is up; the server reads the bytes once it
        accepts it, which it does only for a transfer it agreed to). A server
        that refused the transfer instead resets the connection or leaves it
        unread: its refusal is what is raised.
        """
        command = self._build(verb, path)  # refused before anything is sent
        size_of = path if size_first else None
        quirks = self.quirks
        pipelined = self.pipelining  # decided now: another session may turn it off meanwhile
        spare, self._spare = self._spare, None
        opened = None
        if spare is not None and (size_of is None or "SIZE" not in self.features):
            opened = await self._connect_spare(*spare)
        size: int | None = None
        sent = False
        if opened is not None:
            tcp, data = opened
        elif pipelined and quirks.pipelined_passive and quirks.passive_verified:
            tcp, data, size, sent = await self._open_data_with(command, size_of)
        else:
            tcp, data, size = await self._open_data(size_of)
        self._ragged_eof = False
        self._no_data_tls = False
        # Pipelined, an upload's bytes go out without waiting for the 1xx (plain TCP)
        early_data = verb == "STOR" and data is tcp and pipelined
        preliminary: Reply | None = None
        try:
            if early_data:
                if not sent:
                    with self._guard(verb), _FailAfter(self.config.timeouts.reply):
                        await self._send(command)
            else:
                try:
                    preliminary = await self._start_transfer(data, verb, command, sent=sent)
                except FTPError as exc:
                    if opened is None or exc.reply is None or exc.reply.code != 425:
                        raise
                    if self.broken:
                        raise
                    tcp.socket.close()
                    self._spare_refused(verb, exc)
                    tcp, data, size = await self._open_data(size_of)
                    preliminary = await self._start_transfer(data, verb, command)
            limit = protocol.most_announced(size, preliminary, path)
            end = TransferEndMatcher(verb)
            early_sent = False
            began = trio.Event()
            ended = trio.Event()
            moved = 0
            with self._guard(verb):
                async with trio.open_nursery() as nursery:

                    async def watch_reply() -> None:
                        nonlocal preliminary
                        if preliminary is None:
                            preliminary = await self._start_transfer(data, verb, command, sent=True)
                        began.set()
                        while not end.done:
                            reply = await self._read_reply()
                            if end.feed(reply):
                                self._drop_unasked(verb, reply)
                        ended.set()
                        final = end.result().final
                        if not early_sent and final is not None and not final.is_success:
                            nursery.cancel_scope.cancel()

                    nursery.start_soon(watch_reply)
                    try:
                        moved = await move(data, limit)
                        # ending the data (shutdown, TLS close) may meet the same reset
                        await _end_of_data(tcp, data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        # A server that refused the transfer (before the 1xx) or stopped
                        # it (after: 452/552 on a full disk, vsftpd and proftpd) closed the
                        # connection; its reply, not the reset, says why (watch_reply
                        # cancels this wait at a failure reply, raised below). Without
                        # a reply within the reply timeout, the reset is the error.
                        with trio.move_on_after(self.config.timeouts.reply):
                            await began.wait()
                            await ended.wait()
                            # watch_reply cancels after setting ``ended``: let that land
                            await trio.lowlevel.checkpoint()
                        raise
                    if after_data:
                        await began.wait()  # never before the 1xx: a refusal ends the replies
                    if after_data and not end.done:
                        # recorded before the write: a final reply read meanwhile is still
                        # the first of the replies the matcher waits for
                        end.sent(*(protocol.verb_of(line) for line in after_data))
                        early_sent = True
                        await self._send(b"".join(after_data), drain=False)
                    nursery.cancel_scope.deadline = trio.current_time() + self.config.timeouts.reply
                result = end.result()
                final = result.final
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
            assert preliminary is not None  # else watch_reply raised
            if result.anomaly is not None:
                what = protocol.scrub(result.anomaly, self._secrets)
                quirks.step_anomaly(self._server, "early_check", what)
                if not end.done:  # a dropped command; its answer may yet come, as unasked
                    quirks.pipeline_anomaly(self._server, what)
            self.last_used = trio.current_time()
            return moved, preliminary, size, result.early
        except FTPError as exc:
            refused = exc.reply is not None and exc.reply.code == 425 and preliminary is None
            if early_data and opened is not None and refused and not self.broken:
                # No listener of ours behind the address, and the source is partly read:
                # the task runs again (on this session: it is in step), no attempt spent.
                self._spare_refused(verb, exc)
                exc.stale_session = True
            raise
        finally:
            tcp.socket.close()  # nothing waits on it any more; aclose would cost two checkpoints

    def _spare_refused(self, verb: str, exc: FTPError) -> None:
        """The transfer command was refused on the address asked with RNTO: step off."""
        what = f"{verb} refused on the EPSV address sent with RNTO: {exc.message}"
        self.quirks.step_anomaly(self._server, "spare_passive", protocol.scrub(what, self._secrets))

    async def _connect_spare(
        self, host: str, port: int, when: float
    ) -> tuple[trio.SocketStream, trio.abc.Stream] | None:
        """The data connection to a passive address asked with RNTO, or ``None``: too
        old (:data:`SPARE_PASSIVE_SECONDS`), or the connect failed (the step is turned
        off for the server; the session stays usable)."""
        if trio.current_time() - when > SPARE_PASSIVE_SECONDS:
            return None
        try:
            with _FailAfter(self.config.timeouts.connect):
                tcp = await _connect(host, port)
        except (OSError, trio.TooSlowError) as exc:
            what = f"connect to the EPSV address sent with RNTO: {exc or type(exc).__name__}"
            self.quirks.step_anomaly(self._server, "spare_passive", what)
            return None
        return tcp, self._data_stream(tcp)

    async def _receive(
        self, verb: str, data: trio.abc.Stream, sink: Sink, limit: int | None = None
    ) -> int:
        """Move a data connection's bytes to ``sink`` until EOF.

        Plain TCP is read into one reused buffer: a fresh 256 KiB ``bytes``
        per read costs an mmap, page faults and a munmap each time.

        Raises:
            FTPError: SIZE_MISMATCH as soon as more than ``limit`` bytes arrived
                (:func:`protocol.most_announced`), before they reach ``sink``:
                a server streaming past the size it announced is not read to
                its end (the session is then closed); TIMEOUT on a stall.
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
                    _within(verb, total, limit)
                    await sink(view[:count])
                    scope.deadline = trio.current_time() + stall
            else:
                try:
                    while chunk := await data.receive_some(CHUNK_SIZE):
                        total += len(chunk)
                        _within(verb, total, limit)
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
        received, preliminary, size, _ = await self._transfer(
            "RETR",
            path,
            lambda data, limit: self._receive("RETR", data, sink, limit),
            size_first=True,
        )
        announced = protocol.announced_size(preliminary, path)
        if size is not None and announced != received:
            announced = size  # none in the 150, or one misread from its text: SIZE's word
        if self._ragged_eof:
            expected = announced
            if expected != received and "SIZE" in self.features:
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

    async def store(
        self, path: str, source: AsyncIterable[bytes | memoryview], *, check: bool = False
    ) -> int:
        """Upload ``source`` to ``path``; returns the byte count.

        ``check``: the caller will :meth:`rename` ``path`` next with a size
        check. Pipelined, ``SIZE path`` is then written as soon as the data
        ended, before the 226 came, and its answer kept for that rename,
        which sends RNFR and RNTO together: one round trip less per upload.
        Safe because a server answers commands in the order it runs them:
        a SIZE answered after the 226 saw the whole file
        (:class:`~ftp_pooler.ftp.pipeline.TransferEndMatcher`). Servers that
        read commands during a transfer break that order and are caught:
        proftpd and pyftpdlib answer SIZE before the 226 (pyftpdlib with
        the bytes so far), pure-ftpd may read the line as a would-be ABOR and
        answer ``500 Unknown command``. Such an answer, a refusal, or none
        is not used: the rename asks again after the 226, and the server is
        not asked this way again (:attr:`ServerQuirks.early_check`).

        Raises:
            FTPError: PERMISSION_DENIED, TIMEOUT when the server takes no byte for
                ``timeouts.data_stall`` seconds, TRANSIENT on 426/451/452...
        """
        stall = self.config.timeouts.data_stall

        async def move(data: trio.abc.Stream, _limit: int | None) -> int:
            total = 0
            with trio.CancelScope(deadline=trio.current_time() + stall) as scope:
                async for chunk in source:
                    await data.send_all(chunk)
                    total += len(chunk)
                    scope.deadline = trio.current_time() + stall
            if scope.cancelled_caught:
                raise FTPError(ErrorCode.TIMEOUT, f"STOR: data stalled for {stall:g} s")
            return total

        quirks = self.quirks
        after: tuple[bytes, ...] = ()
        if check and self.pipelining and quirks.early_check and "SIZE" in self.features:
            after = (self._build("SIZE", path),)
        sent, _, _, early = await self._transfer("STOR", path, move, after_data=after)
        if early is not None:
            (size,) = early
            if self._ends_session(size):
                self._refused("SIZE", size)
            if size.is_success and self._size_of(size) is not None:
                self._checked = _CheckedUpload(path, size)
            else:
                what = protocol.scrub(f"SIZE sent before the 226: {size}", self._secrets)
                quirks.step_anomaly(self._server, "early_check", what)
        return sent

    async def _read_listing(self, verb: str, path: str) -> list[str]:
        """The lines of a listing, each decoded on its own (one odd name spoils no other).

        Raises:
            FTPError: PROTOCOL_ERROR once the listing passed :data:`MAX_LISTING_BYTES`
                (a server streaming without end is not read into memory to its end).
        """
        chunks: list[bytes] = []
        held = 0

        async def sink(chunk: memoryview | bytes | bytearray) -> None:
            nonlocal held
            held += len(chunk)
            if held > MAX_LISTING_BYTES:
                raise FTPError(
                    ErrorCode.PROTOCOL_ERROR,
                    f"{verb}: listing larger than {MAX_LISTING_BYTES} bytes; stopped reading",
                )
            chunks.append(bytes(chunk))

        await self._transfer(verb, path, lambda data, _: self._receive(verb, data, sink))
        lines = b"".join(chunks).split(b"\n")
        return [
            protocol.decode_text(line.removesuffix(b"\r"), self._charset)
            for line in lines
            if line.strip(b"\r")
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


def aside_name(source: str, target: str) -> str:
    """Where :meth:`FTPSession.rename_over` moves ``target`` aside while ``source`` takes
    its place: beside ``target``, ``source``'s file name with ``.aside`` added.

    ``source`` is an upload's temporary name (``.name.<hex>.part``, or
    ``name.<hex>.part`` on a server refusing dot-files: pure-ftpd ``-x``
    answers ``553`` to any hidden name), so the aside name is hidden or
    visible as it is, unique per upload, and known from the temporary name
    alone (the clean-up after a lost session looks for it).
    """
    head, slash, _ = target.rpartition("/")
    return f"{head}{slash}{source.rpartition('/')[2]}.aside"


def _within(verb: str, received: int, limit: int | None) -> None:
    """Raise SIZE_MISMATCH once ``received`` passed ``limit`` (``None``: no limit)."""
    if limit is not None and received > limit:
        raise FTPError(
            ErrorCode.SIZE_MISMATCH,
            f"{verb}: more than the {limit} bytes the server announced arrived; stopped reading",
        )


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
            if exc.reply is None or session._ends_session(exc.reply):
                session.broken = True
            session._mark(exc, what)
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
            session._mark(error, what)
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
