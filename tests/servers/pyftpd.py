"""In-process pyftpdlib server on a background thread.

Quick to start (a few ms) and easy to bend: pass ``handler_class`` to inject
faults.  It is single-threaded Python, so never benchmark against it.

Fault injection
---------------
``handler_class`` is any ``pyftpdlib.handlers.FTPHandler`` subclass.  The
server builds a fresh subclass of it per server instance (class attributes
such as ``authorizer``, ``passive_ports`` and the TLS context are per class in
pyftpdlib, so nothing leaks between tests) and mixes in connection counting.
With ``tls=True`` a plain ``FTPHandler`` subclass is combined with
``TLS_FTPHandler`` automatically.  To change the data channel, set a
``dtp_mixin`` class attribute on the handler: it is put in front of
``DTPHandler`` or ``TLS_DTPHandler`` as appropriate.  Extra class attributes
can be passed as ``handler_attrs``.  Ready-made faults:

* :class:`DropControlMidTransferHandler` -- closes the control connection
  (and with it the data connection) after ``drop_after_bytes`` bytes of a
  RETR/STOR/LIST payload; ``drop_with_reset=True`` sends an RST instead of a FIN.
* :class:`StallDataHandler` -- stops moving data after ``stall_after_bytes``
  bytes but keeps both connections open (the client must time out).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Self

from pyftpdlib.authorizers import DummyAuthorizer  # type: ignore[import-untyped]
from pyftpdlib.handlers import DTPHandler, FTPHandler  # type: ignore[import-untyped]
from pyftpdlib.ioloop import IOLoop  # type: ignore[import-untyped]
from pyftpdlib.servers import FTPServer as _PyFTPServer  # type: ignore[import-untyped]

from . import FTPLauncher, FTPServer
from .certs import TLSCerts
from .netutil import HookConnectionCounter, passive_range

__all__ = [
    "DropControlMidTransferHandler",
    "HookConnectionCounter",
    "PyFTPD",
    "StallDataHandler",
    "start_pyftpd",
]

# pyftpdlib configures a stderr logger on first use if nothing else is set up;
# keep it quiet unless a test asks for its logs (caplog / log_level).
_logger = logging.getLogger("pyftpdlib")
if not _logger.handlers:
    _logger.addHandler(logging.NullHandler())


# --------------------------------------------------------------------------
# Connection counting (HookConnectionCounter lives in netutil)
# --------------------------------------------------------------------------
class _CountingMixin:
    """Counts sessions from on_connect (before the 220) to close."""

    _pooler_counter: HookConnectionCounter
    _pooler_counted = False

    def on_connect(self) -> None:
        self._pooler_counted = True
        self._pooler_counter._connected()
        super().on_connect()  # type: ignore[misc]

    def on_disconnect(self) -> None:
        # close() schedules on_disconnect for every handler, including the ones
        # refused with 421 that never reached on_connect.
        if self._pooler_counted:
            self._pooler_counted = False
            self._pooler_counter._disconnected()
        super().on_disconnect()  # type: ignore[misc]

    def handle_max_cons(self) -> None:
        self._pooler_counter._refused_one()
        super().handle_max_cons()  # type: ignore[misc]

    def handle_max_cons_per_ip(self) -> None:
        self._pooler_counter._refused_one()
        super().handle_max_cons_per_ip()  # type: ignore[misc]


# --------------------------------------------------------------------------
# Ready-made faults
# --------------------------------------------------------------------------
def _abort_socket(sock: socket.socket | None) -> None:
    """Make the next close() send an RST."""
    if sock is None:
        return
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _DropDTPMixin:
    cmd_channel: Any
    tot_bytes_sent: int
    tot_bytes_received: int
    _pooler_dropping = False

    def _pooler_maybe_drop(self) -> None:
        ch = self.cmd_channel
        moved = self.tot_bytes_sent + self.tot_bytes_received
        if self._pooler_dropping or moved < ch.drop_after_bytes:
            return
        if ch.pooler_last_cmd not in ch.fault_commands:
            return
        self._pooler_dropping = True
        type(ch).pooler_dropped += 1

        def drop() -> None:
            if ch.drop_with_reset:
                _abort_socket(getattr(ch, "socket", None))
                _abort_socket(getattr(self, "socket", None))
            ch.close()

        ch.ioloop.call_later(0, drop, _errback=ch.handle_error)

    def send(self, data: bytes) -> int:
        n: int = super().send(data)  # type: ignore[misc]
        self._pooler_maybe_drop()
        return n

    # The IO loop calls handle_read_event, which DTPHandler aliases to its own
    # handle_read at class creation: overriding handle_read would be bypassed.
    def handle_read_event(self) -> None:
        super().handle_read_event()  # type: ignore[misc]
        self._pooler_maybe_drop()


class _FaultHandlerBase(FTPHandler):  # type: ignore[misc]
    """Remembers the command that opened the current transfer."""

    fault_commands: tuple[str, ...] = ("RETR", "STOR", "APPE", "STOU")
    pooler_last_cmd = ""

    _data_cmds = frozenset({"RETR", "STOR", "APPE", "STOU", "LIST", "NLST", "MLSD"})

    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        if cmd in self._data_cmds:
            self.pooler_last_cmd = cmd
        super().process_command(cmd, *args, **kwargs)


class DropControlMidTransferHandler(_FaultHandlerBase):
    """Closes the control connection once a transfer moved ``drop_after_bytes``.

    Only transfers started by a command in ``fault_commands`` are affected
    (default RETR/STOR/APPE/STOU, so listings still work).
    """

    drop_after_bytes = 64 * 1024
    drop_with_reset = False
    use_sendfile = False  # sendfile() bypasses DTPHandler.send
    dtp_mixin = _DropDTPMixin
    pooler_dropped = 0  # per-class count of drops, for assertions


class _StallDTPMixin:
    cmd_channel: Any
    tot_bytes_sent: int
    tot_bytes_received: int
    receive: bool
    ioloop: Any
    _pooler_stalled = False

    def _pooler_applies(self) -> bool:
        return bool(self.cmd_channel.pooler_last_cmd in self.cmd_channel.fault_commands)

    def _pooler_stall(self) -> None:
        if not self._pooler_stalled:
            self._pooler_stalled = True
            type(self.cmd_channel).pooler_stalled += 1
        # No more READ/WRITE events: the socket stays open and silent.
        self._wanted_io_events = 0
        self.modify_ioloop_events(0)  # type: ignore[attr-defined]

    def send(self, data: bytes) -> int:
        if not self._pooler_applies():
            n0: int = super().send(data)  # type: ignore[misc]
            return n0
        remaining = self.cmd_channel.stall_after_bytes - self.tot_bytes_sent
        if remaining <= 0:
            self._pooler_stall()
            return 0
        n: int = super().send(data[:remaining])  # type: ignore[misc]
        return n

    def initiate_send(self) -> None:
        if self._pooler_stalled:
            self._pooler_stall()
            return
        super().initiate_send()  # type: ignore[misc]

    def handle_read_event(self) -> None:  # see _DropDTPMixin.handle_read_event
        if self._pooler_stalled or (
            self.receive
            and self._pooler_applies()
            and self.tot_bytes_received >= self.cmd_channel.stall_after_bytes
        ):
            self._pooler_stall()
            return
        super().handle_read_event()  # type: ignore[misc]


class StallDataHandler(_FaultHandlerBase):
    """Stops the data connection after ``stall_after_bytes`` (0 = before any byte).

    Only transfers started by a command in ``fault_commands`` are affected.

    Both connections stay open; pyftpdlib's own data timeout (``dtp_timeout``
    seconds without progress) eventually answers 421 and closes.
    """

    stall_after_bytes = 0
    dtp_timeout = 60
    use_sendfile = False
    dtp_mixin = _StallDTPMixin
    pooler_stalled = 0


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------
def _build_handler(
    base: type[FTPHandler] | None,
    *,
    tls: bool,
    attrs: dict[str, Any],
) -> type[FTPHandler]:
    base = base or FTPHandler
    if not issubclass(base, FTPHandler):
        raise TypeError(f"handler_class must subclass FTPHandler, got {base!r}")
    bases: tuple[type, ...]
    dtp_base: type = DTPHandler
    if tls:
        from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler

        dtp_base = TLS_DTPHandler
        if issubclass(base, TLS_FTPHandler):
            bases = (_CountingMixin, base)
        elif base is FTPHandler:
            bases = (_CountingMixin, TLS_FTPHandler)
        else:
            bases = (_CountingMixin, base, TLS_FTPHandler)
    else:
        bases = (_CountingMixin, base)
    dtp_mixin = getattr(base, "dtp_mixin", None)
    ns = dict(attrs)
    if dtp_mixin is not None:
        dtp_attrs: dict[str, Any] = {}
        if "dtp_timeout" in attrs or hasattr(base, "dtp_timeout"):
            dtp_attrs["timeout"] = attrs.get("dtp_timeout", getattr(base, "dtp_timeout", None))
        ns["dtp_handler"] = type(f"Pooler{dtp_mixin.__name__}DTP", (dtp_mixin, dtp_base), dtp_attrs)
    cls: type[FTPHandler] = type(f"Pooler{base.__name__}", bases, ns)
    if tls:
        from pyftpdlib.handlers import TLS_DTPHandler

        if not issubclass(cls.dtp_handler, TLS_DTPHandler):
            raise TypeError(
                "handler_class sets a non-TLS dtp_handler; use a dtp_mixin attribute instead"
            )
    # counters on fault handlers are per server
    for name in ("pooler_dropped", "pooler_stalled"):
        if hasattr(cls, name):
            setattr(cls, name, 0)
    return cls


class PyFTPD(FTPLauncher):
    """pyftpdlib server in a daemon thread; use ``start()``/``stop()`` or ``with``.

    Caps: ``max_cons_per_ip`` is a plain session cap (421 "Too many connections
    from the same IP address.").  ``max_cons`` counts every socket of the IO
    loop -- the listener, passive listeners and data connections included --
    so ``max_cons=N`` allows at most N-1 idle sessions (421 "Too many
    connections. Service temporarily unavailable.").
    """

    kind = "pyftpdlib"

    def __init__(
        self,
        root: Path,
        user: str = "pooler",
        password: str = "pooler-secret",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        certs: TLSCerts | None = None,
        tls_control_required: bool = False,
        tls_data_required: bool = False,
        passive_ports: tuple[int, int] | int | None = 128,
        max_cons: int = 512,
        max_cons_per_ip: int = 0,
        handler_class: type[FTPHandler] | None = None,
        handler_attrs: dict[str, Any] | None = None,
        perm: str = "elradfmwMT",
        timeout: float = 300,
        auth_failed_timeout: float = 0.1,
    ) -> None:
        if tls and certs is None:
            raise ValueError("tls=True needs certs")
        if passive_ports is not None:
            passive_ports = passive_range(passive_ports, host)
        self.root = Path(root)
        self.user = user
        self.password = password
        self.host = host
        self._port = port
        self.tls = tls
        self.certs = certs
        self.tls_control_required = tls_control_required
        self.tls_data_required = tls_data_required
        self.passive_ports = passive_ports
        self.max_cons = max_cons
        self.max_cons_per_ip = max_cons_per_ip
        self.counter = HookConnectionCounter()

        authorizer = DummyAuthorizer()
        authorizer.add_user(user, password, str(self.root), perm=perm)
        attrs: dict[str, Any] = {
            "authorizer": authorizer,
            "passive_ports": (
                range(passive_ports[0], passive_ports[1] + 1) if passive_ports else None
            ),
            "timeout": timeout,
            "auth_failed_timeout": auth_failed_timeout,
            "banner": "ftp-pooler test pyftpdlib ready.",
            "_pooler_counter": self.counter,
        }
        if tls:
            assert certs is not None
            attrs.update(
                certfile=str(certs.cert_file),
                keyfile=str(certs.key_file),
                ssl_context=None,  # pyftpdlib caches the context per class
                tls_control_required=tls_control_required,
                tls_data_required=tls_data_required,
            )
        attrs.update(handler_attrs or {})
        self.handler = _build_handler(handler_class, tls=tls, attrs=attrs)

        self._ioloop: IOLoop | None = None
        self._server: _PyFTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None

    @property  # type: ignore[override]  # FTPLauncher.port: set once started
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.address[1])

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("already started")
        if self.tls:
            self.handler.get_ssl_context()  # fail now on bad cert files, not per client
        self._ioloop = IOLoop()  # never the process-wide IOLoop.instance()
        try:
            self._server = _PyFTPServer((self.host, self._port), self.handler, ioloop=self._ioloop)
        except BaseException:
            self._ioloop.close()
            raise
        self._server.max_cons = self.max_cons
        self._server.max_cons_per_ip = self.max_cons_per_ip
        self._thread = threading.Thread(target=self._run, name=f"pyftpd:{self.port}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._ioloop is not None and self._server is not None
        soonest: float | None = None
        try:
            while not self._stop.is_set():
                timeout = 0.05 if soonest is None else max(0.0, min(0.05, soonest))
                soonest = self._ioloop.loop(timeout, blocking=False)
        except BaseException as exc:  # noqa: BLE001 -- reported by stop()
            self._error = exc
        finally:
            try:
                self._server.close_all()  # closes listener, sessions, data channels
            except BaseException as exc:  # noqa: BLE001
                self._error = self._error or exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, drop every connection and join the thread (bounded)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"pyftpdlib thread did not stop within {timeout}s")
        elif self._ioloop is not None:
            self._ioloop.close()
        if self._error is not None:
            raise RuntimeError("pyftpdlib server loop crashed") from self._error

    def _session_caps(self) -> tuple[int, int]:
        return self.max_cons, self.max_cons_per_ip


@contextmanager
def start_pyftpd(root: Path, **kwargs: Any) -> Iterator[tuple[FTPServer, PyFTPD]]:
    """``with start_pyftpd(root, tls=...) as (info, server): ...``"""
    server = PyFTPD(root, **kwargs)
    server.start()
    try:
        yield server.info(), server
    finally:
        server.stop()
