"""A scripted FTP server on loopback: a server behaviour becomes a test in a few lines.

A small FTP server (threads, blocking sockets; plain or explicit FTPS with the
trustme certificates; passive data connections via EPSV and PASV) serves an
in-memory file tree. A case changes only what the partner server does
differently, as :class:`Rule` objects: a regular expression full-matched
(case-insensitively) against each command line, and the reply to send instead
of the built-in one::

    server = make_scripted_ftp(
        files={"/data/a.bin": payload},
        rules=[
            # EPSV answered with a 227 (case A1): a callable gets the session and the match
            Rule(r"EPSV", lambda s, m: s.pasv_reply()),
            # a static reply; lines split on "\\n", each sent with CRLF
            Rule(r"MDTM /data/.*", "550 a.bin: Operation not permitted"),
            # named groups fill {placeholders} (a server echoing the password)
            Rule(r"PASS (?P<pw>.*)", "530 Login incorrect for {pw}"),
            # the built-in answer, then a complete reply nobody asked for
            Rule(r"PASS .*", after="230 Already logged in."),
            # once only (per server, over all its sessions)
            Rule(r"RETR .*", "451 Try later.", times=1),
        ],
    )

A callable rule may send replies itself (``s.send(...)``) and return ``None``;
``s.start_tls(reply)`` sends the reply and does the TLS handshake (a custom
AUTH TLS); ``s.pasv_reply(fmt)`` / ``s.epsv_reply(fmt)`` open a passive
listener and return its reply text, formatted with ``{p1}``, ``{p2}`` and
``{port}``. ``after_delay`` sends the ``after`` reply that many seconds later
(a *late* unasked reply, arriving when the client has sent its next command).

Data-connection and session behaviour are server options:

- ``transfer_replies={"RETR": ("150 ... {path} ({size} bytes).", "226 Done.")}``
  rewords the 1xx and the final reply of a transfer verb (the 1xx may be
  multi-line; an empty final reply is not sent); ``Rule(..., delay=S)``
  answers S seconds late (a slow server);
- ``close_notify=False``: an FTPS download ends with a bare TCP FIN, no TLS
  ``close_notify``; ``empty_without_tls=True``: the data connection of an
  empty file is closed without any TLS; ``data_limit=N`` sends only the first
  N bytes of a file;
- ``idle_timeout=S``: after S seconds without a command, ``421 Timeout.`` and
  close (vsftpd's ``idle_session_timeout``; ``idle_timeout_reply=None``
  closes without a word); ``lazy_idle_timeout=S``: the
  first command after S idle seconds gets ``421 Timeout.`` and the session
  closes (the server only notices at the next command).

- ``pipelined="drop"``: a command that arrived in the same read as the one
  before it is thrown away unanswered, with everything after it in that
  read (a server that reads one line per packet); ``pipelined="reject"``:
  answered ``500 Commands sent together are refused.``;
  ``pipelined_verbs={"EPSV", ...}`` limits either to those verbs. Dropped
  lines are listed in ``server.dropped``.

- ``charset="latin-1"``: command lines are read and replies written in that
  charset (default UTF-8): a legacy server that stores names as the bytes
  it gets. Bytes the charset cannot read are kept as surrogate escapes, so a
  name sent in another charset is a different, missing name.
- ``list_style="dos"``: LIST lines in IIS's MS-DOS style
  (``01-02-21  03:04AM   5 name``) instead of Unix ``ls -l``.
- ``during_transfer="answer"``: on the first STOR, lines that arrive while
  the data moves (or up to 0.5 s after its end) are run before the file is
  stored and the 226 sent (a server that reads commands during a transfer:
  proftpd, pyftpdlib); ``"refuse"`` answers each ``503 Not during a
  transfer.`` instead; ``"eat"`` answers them all with one ``500 Unknown
  command`` and forgets them (pure-ftpd reading a would-be ABOR).
- ``stor_final_delay=S``: an upload's final reply comes S seconds after its
  data ended (a server that finishes writing slowly).

``server.commands`` lists every command line received (all sessions, in
order; the PASS argument as sent), ``server.sessions`` counts control
connections accepted; ``server.files`` is the file tree (uploads land there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Rule", "ScriptedFTPServer", "ScriptedSession"]

HOST = "127.0.0.1"
DATA_TIMEOUT = 10.0
"""Seconds the server waits for a data connection or its bytes before giving up."""

DEFAULT_MTIME = datetime(2021, 1, 2, 3, 4, 5, tzinfo=UTC)

Action = Callable[["ScriptedSession", "re.Match[str]"], "str | None"]


@dataclass
class Rule:
    """One scripted behaviour: when ``pattern`` full-matches a command line, do this.

    Attributes:
        pattern: Regular expression, matched case-insensitively against the
            whole command line (without CRLF).
        reply: Text to send (``{name}`` filled from named groups), a callable
            ``(session, match) -> text or None``, or ``None`` for the built-in
            behaviour.
        after: A complete reply sent after the answer, unasked.
        after_delay: Seconds to wait before sending ``after``.
        delay: Seconds to wait before answering at all (a slow server).
        times: Apply this many times, then fall through (``None``: always).
    """

    pattern: str
    reply: str | Action | None = None
    after: str | None = None
    after_delay: float = 0.0
    delay: float = 0.0
    times: int | None = None
    _regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._regex = re.compile(self.pattern, re.IGNORECASE | re.DOTALL)


class ScriptedFTPServer:
    """The server; see the module docstring. ``start()`` then ``stop()`` (or the fixture)."""

    def __init__(
        self,
        *,
        files: dict[str, bytes] | None = None,
        rules: list[Rule] | tuple[Rule, ...] = (),
        certs: Any = None,
        user: str = "user",
        password: str = "secret",
        greeting: str = "220 scripted FTP server ready.",
        feat: str | None = None,
        transfer_replies: dict[str, tuple[str, str]] | None = None,
        close_notify: bool = True,
        empty_without_tls: bool = False,
        data_limit: int | None = None,
        idle_timeout: float | None = None,
        idle_timeout_reply: str | None = "421 Timeout.",
        lazy_idle_timeout: float | None = None,
        mtime: datetime = DEFAULT_MTIME,
        pipelined: str = "ok",
        pipelined_verbs: set[str] | None = None,
        charset: str = "utf-8",
        list_style: str = "unix",
        during_transfer: str | None = None,
        stor_final_delay: float = 0.0,
    ) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.mtimes: dict[str, datetime] = dict.fromkeys(self.files, mtime)
        self.dirs: set[str] = {"/"}
        for path in self.files:
            self._add_parents(path)
        self.rules = [dataclasses.replace(rule) for rule in rules]  # own `times` counters
        self.user = user
        self.password = password
        self.greeting = greeting
        self.tls = certs is not None
        self.ca_file: Path | None = certs.ca_file if certs is not None else None
        self.feat = feat if feat is not None else _default_feat(self.tls)
        self.transfer_replies = dict(transfer_replies or {})
        self.close_notify = close_notify
        self.empty_without_tls = empty_without_tls
        self.data_limit = data_limit
        self.idle_timeout = idle_timeout
        self.idle_timeout_reply = idle_timeout_reply
        self.lazy_idle_timeout = lazy_idle_timeout
        self.pipelined = pipelined
        self.pipelined_verbs = pipelined_verbs
        self.charset = charset
        self.list_style = list_style
        self.during_transfer = during_transfer
        self.stor_final_delay = stor_final_delay
        self.dropped: list[str] = []
        self.commands: list[str] = []
        self.sessions = 0
        self.lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        if certs is not None:
            self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._context.load_cert_chain(str(certs.cert_file), str(certs.key_file))
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._open: set[ScriptedSession] = set()
        self._stopping = threading.Event()
        self.host = HOST
        self.port = 0

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> ScriptedFTPServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        with self.lock:
            sessions = list(self._open)
        for session in sessions:
            session.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.sessions += 1
                session = ScriptedSession(self, sock)
                self._open.add(session)
            self._spawn(session.run)

    def _forget(self, session: ScriptedSession) -> None:
        with self.lock:
            self._open.discard(session)

    # -- rules and the file tree -----------------------------------------------------

    def _rule_for(self, line: str) -> tuple[Rule, re.Match[str]] | None:
        with self.lock:
            for rule in self.rules:
                match = rule._regex.fullmatch(line)
                if match is None or rule.times == 0:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                return rule, match
        return None

    def _add_parents(self, path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            self.dirs.add("/" + "/".join(parts[:depth]))


def _default_feat(tls: bool) -> str:
    names = ["EPSV", "MDTM", "MFMT", "PASV", "REST STREAM", "SIZE", "UTF8"]
    if tls:
        names = ["AUTH TLS", "PBSZ", "PROT", *names]
    return "211-Features:\n" + "".join(f" {n}\n" for n in names) + "211 End"


def _path(arg: str, cwd: str = "/") -> str:
    joined = arg if arg.startswith("/") else f"{cwd.rstrip('/')}/{arg}"
    return "/" + "/".join(p for p in joined.split("/") if p)


class ScriptedSession:
    """One control connection (the ``s`` a callable rule gets)."""

    def __init__(self, server: ScriptedFTPServer, sock: socket.socket) -> None:
        self.server = server
        self.sock: socket.socket = sock
        self.buffer = b""
        self.logged_in = False
        self.user = ""
        self.prot_p = False
        self.rename_from: str | None = None
        self.passive: socket.socket | None = None
        self.last_command = time.monotonic()
        self.closed = False
        self.together = False
        """Whether the last line read came in the same read as the line before it."""

    # -- helpers for rules ----------------------------------------------------------

    def send(self, text: str) -> None:
        """Send reply text; lines split on newlines, each ends in CRLF."""
        text = "".join(f"{line}\r\n" for line in text.split("\n"))
        data = text.encode(self.server.charset, "surrogateescape")
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def start_tls(self, reply: str = "234 Proceed with negotiation.") -> None:
        """Send ``reply`` and do the server side of the TLS handshake on the control connection."""
        assert self.server._context is not None, "start the server with certs for TLS"
        self.send(reply)
        self.sock = self.server._context.wrap_socket(self.sock, server_side=True)

    def listen(self) -> int:
        """Open a passive listener for the next data connection; returns its port."""
        if self.passive is not None:
            self.passive.close()
        self.passive = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.passive.bind((HOST, 0))
        self.passive.listen(1)
        self.passive.settimeout(DATA_TIMEOUT)
        port: int = self.passive.getsockname()[1]
        return port

    def pasv_reply(self, fmt: str = "227 Entering Passive Mode (127,0,0,1,{p1},{p2}).") -> str:
        port = self.listen()
        return fmt.format(p1=port // 256, p2=port % 256, port=port)

    def epsv_reply(self, fmt: str = "229 Entering Extended Passive Mode (|||{port}|)") -> str:
        port = self.listen()
        return fmt.format(p1=port // 256, p2=port % 256, port=port)

    def close(self) -> None:
        self.closed = True
        for sock in (self.sock, self.passive):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    # -- the conversation -------------------------------------------------------------

    def run(self) -> None:
        try:
            self.send(self.server.greeting)
            while not self.closed and (line := self._read_line()) is not None:
                lazy = self.server.lazy_idle_timeout
                if lazy is not None and time.monotonic() - self.last_command > lazy:
                    self.send("421 Timeout.")
                    break
                self.last_command = time.monotonic()
                if self._refuse_pipelined(line):
                    continue
                with self.server.lock:
                    self.server.commands.append(line)
                if not self._handle(line):
                    break
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.close()
            self.server._forget(self)

    def _refuse_pipelined(self, line: str) -> bool:
        """Drop or reject a line sent together with the one before (``pipelined=``)."""
        server = self.server
        verbs = server.pipelined_verbs
        if server.pipelined == "ok" or not self.together:
            return False
        if verbs is not None and line.split(" ", 1)[0].upper() not in verbs:
            return False
        if server.pipelined == "drop":
            with server.lock:
                server.dropped.append(line)
            self.buffer = b""
        else:
            self.send("500 Commands sent together are refused.")
        return True

    def _read_line(self) -> str | None:
        idle = self.server.idle_timeout
        self.together = b"\n" in self.buffer
        while b"\n" not in self.buffer:
            self.sock.settimeout(idle if idle is not None else 0.5)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                if idle is not None:
                    if self.server.idle_timeout_reply is not None:
                        self.send(self.server.idle_timeout_reply)
                    return None
                if self.server._stopping.is_set():
                    return None
                continue
            if not chunk:
                return None
            self.buffer += chunk
        raw, _, self.buffer = self.buffer.partition(b"\n")
        return raw.rstrip(b"\r").decode(self.server.charset, "surrogateescape")

    def _handle(self, line: str) -> bool:
        """Answer one command; False ends the session."""
        found = self.server._rule_for(line)
        if found is not None and found[0].delay:
            time.sleep(found[0].delay)
        if found is not None and found[0].reply is not None:
            rule, match = found
            if callable(rule.reply):
                text = rule.reply(self, match)
            else:
                groups = match.groupdict()
                text = rule.reply.format(**groups) if groups else rule.reply
            if text is not None:
                self.send(text)
            keep = True
        else:
            keep = self._builtin(line)
        if found is not None and found[0].after is not None:
            rule = found[0]
            if rule.after_delay:
                time.sleep(rule.after_delay)
            assert rule.after is not None
            self.send(rule.after)
        return keep

    def _builtin(self, line: str) -> bool:
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        handler = getattr(self, f"_cmd_{verb}", None)
        if verb not in ("USER", "PASS", "AUTH", "QUIT", "FEAT") and not self.logged_in:
            self.send("530 Please login with USER and PASS.")
            return True
        if handler is None:
            self.send(f"502 {verb} not implemented.")
            return True
        result: bool | None = handler(arg)
        return result is not False

    # -- built-in commands --------------------------------------------------------------

    def _cmd_USER(self, arg: str) -> None:
        self.user = arg
        self.send("331 Please specify the password.")

    def _cmd_PASS(self, arg: str) -> None:
        if self.user == self.server.user and arg == self.server.password:
            self.logged_in = True
            self.send("230 Login successful.")
        else:
            self.send("530 Login incorrect.")

    def _cmd_AUTH(self, arg: str) -> None:
        if self.server._context is None or arg.upper() not in ("TLS", "SSL"):
            self.send("502 AUTH not available.")
            return
        self.start_tls()

    def _cmd_PBSZ(self, arg: str) -> None:
        self.send("200 PBSZ=0")

    def _cmd_PROT(self, arg: str) -> None:
        self.prot_p = arg.upper() == "P"
        self.send(f"200 PROT now {'Private' if self.prot_p else 'Clear'}.")

    def _cmd_FEAT(self, arg: str) -> None:
        self.send(self.server.feat)

    def _cmd_OPTS(self, arg: str) -> None:
        self.send("200 Always in UTF8 mode.")

    def _cmd_TYPE(self, arg: str) -> None:
        self.send("200 Switching to Binary mode.")

    def _cmd_NOOP(self, arg: str) -> None:
        self.send("200 NOOP ok.")

    def _cmd_PWD(self, arg: str) -> None:
        self.send('257 "/" is the current directory')

    def _cmd_CWD(self, arg: str) -> None:
        if _path(arg) in self.server.dirs:
            self.send("250 Directory successfully changed.")
        else:
            self.send("550 Failed to change directory.")

    def _cmd_MKD(self, arg: str) -> None:
        path = _path(arg)
        parent = path.rsplit("/", 1)[0] or "/"
        with self.server.lock:
            if path in self.server.dirs or parent not in self.server.dirs:
                self.send("550 Create directory operation failed.")
                return
            self.server.dirs.add(path)
        self.send(f'257 "{path}" created')

    def _cmd_QUIT(self, arg: str) -> bool:
        self.send("221 Goodbye.")
        return False

    def _cmd_EPSV(self, arg: str) -> None:
        self.send(self.epsv_reply())

    def _cmd_PASV(self, arg: str) -> None:
        self.send(self.pasv_reply())

    def _cmd_SIZE(self, arg: str) -> None:
        data = self.server.files.get(_path(arg))
        if data is None:
            self.send(f"550 {arg}: No such file or directory")
        else:
            self.send(f"213 {len(data)}")

    def _cmd_MDTM(self, arg: str) -> None:
        stamp, _, rest = arg.partition(" ")
        if rest and re.fullmatch(r"\d{14}", stamp):
            self._set_mtime(stamp, rest)
            return
        path = _path(arg)
        if path not in self.server.files:
            self.send(f"550 {arg}: No such file or directory")
            return
        self.send(f"213 {self.server.mtimes[path]:%Y%m%d%H%M%S}")

    def _cmd_MFMT(self, arg: str) -> None:
        stamp, _, path = arg.partition(" ")
        self._set_mtime(stamp, path)

    def _set_mtime(self, stamp: str, arg: str) -> None:
        path = _path(arg)
        if path not in self.server.files:
            self.send(f"550 {arg}: No such file or directory")
            return
        moment = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        self.server.mtimes[path] = moment
        self.send(f"213 Modify={stamp}; {arg}")

    def _cmd_DELE(self, arg: str) -> None:
        with self.server.lock:
            found = self.server.files.pop(_path(arg), None)
        self.send("250 Delete operation successful." if found is not None else "550 Delete failed.")

    def _cmd_RNFR(self, arg: str) -> None:
        if _path(arg) in self.server.files:
            self.rename_from = _path(arg)
            self.send("350 Ready for RNTO.")
        else:
            self.send("550 RNFR command failed.")

    def _cmd_RNTO(self, arg: str) -> None:
        source, self.rename_from = self.rename_from, None
        if source is None:
            self.send("503 RNFR required first.")
            return
        with self.server.lock:
            target = _path(arg)
            self.server.files[target] = self.server.files.pop(source)
            self.server.mtimes[target] = self.server.mtimes.pop(source, DEFAULT_MTIME)
        self.send("250 Rename successful.")

    def _cmd_RETR(self, arg: str) -> None:
        path = _path(arg)
        data = self.server.files.get(path)
        if data is None:
            self.send(f"550 {arg}: No such file or directory")
            return
        prelim, final = self.server.transfer_replies.get(
            "RETR",
            (
                "150 Opening BINARY mode data connection for {path} ({size} bytes).",
                "226 Transfer complete.",
            ),
        )
        skip_tls = self.server.empty_without_tls and not data
        conn = self._accept_data(prelim.format(path=arg, size=len(data)), skip_tls=skip_tls)
        if conn is None:
            return
        limit = self.server.data_limit
        try:
            conn.sendall(data if limit is None else data[:limit])
            self._end_download(conn)
        except (OSError, ssl.SSLError):
            conn.close()
            self.send("426 Connection closed; transfer aborted.")
            return
        if final:  # "" sends no final reply at all
            self.send(final.format(path=arg, size=len(data)))

    def _cmd_LIST(self, arg: str) -> None:
        if self.server.list_style == "dos":
            self._listing(arg, lambda name, size: f"01-02-21  03:04AM {size:>20} {name}")
            return
        self._listing(
            arg, lambda name, size: f"-rw-r--r--   1 ftp ftp {size:>8} Jan 02  2021 {name}"
        )

    def _cmd_NLST(self, arg: str) -> None:
        self._listing(arg, lambda name, size: name)

    def _listing(self, arg: str, line: Callable[[str, int], str]) -> None:
        """The files directly in a directory, one line each, in the server's charset."""
        directory = _path(arg).rstrip("/") + "/"
        with self.server.lock:
            names = sorted(
                (path[len(directory) :], len(data))
                for path, data in self.server.files.items()
                if path.startswith(directory) and "/" not in path[len(directory) :]
            )
        conn = self._accept_data("150 Here comes the directory listing.")
        if conn is None:
            return
        text = "".join(line(name, size) + "\r\n" for name, size in names)
        try:
            conn.sendall(text.encode(self.server.charset, "surrogateescape"))
            self._end_download(conn)
        except (OSError, ssl.SSLError):
            conn.close()
            self.send("426 Connection closed; transfer aborted.")
            return
        self.send("226 Directory send OK.")

    def _cmd_STOR(self, arg: str) -> None:
        path = _path(arg)
        prelim, final = self.server.transfer_replies.get(
            "STOR", ("150 Ok to send data.", "226 Transfer complete.")
        )
        conn = self._accept_data(prelim.format(path=arg, name=path.rsplit("/", 1)[-1], size=0))
        if conn is None:
            return
        chunks: list[bytes] = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except (OSError, ssl.SSLError):
            conn.close()
            self.send("426 Connection closed; transfer aborted.")
            return
        conn.close()
        self._commands_during_transfer()
        time.sleep(self.server.stor_final_delay)
        with self.server.lock:
            self.server.files[path] = b"".join(chunks)
            self.server.mtimes[path] = datetime.now(UTC).replace(microsecond=0)
        self.send(final.format(path=arg, size=len(b"".join(chunks))))

    def _commands_during_transfer(self) -> None:
        """``during_transfer=``: lines read before the transfer's end, once per server."""
        server = self.server
        with server.lock:
            mode, server.during_transfer = server.during_transfer, None
        if mode is None:
            return
        deadline = time.monotonic() + 0.5
        while b"\n" not in self.buffer and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                return
            self.buffer += chunk
        if mode == "eat" and b"\n" in self.buffer:
            self.send("500 Unknown command")
        while b"\n" in self.buffer:
            raw, _, self.buffer = self.buffer.partition(b"\n")
            line = raw.rstrip(b"\r").decode(server.charset, "surrogateescape")
            with server.lock:
                server.commands.append(line)
            if mode == "answer":
                self._handle(line)
            elif mode == "refuse":
                self.send("503 Not during a transfer.")

    def _accept_data(self, preliminary: str, *, skip_tls: bool = False) -> socket.socket | None:
        """Accept the passive data connection, send the 1xx, then the TLS handshake if PROT P."""
        if self.passive is None:
            self.send("425 Use PORT or PASV first.")
            return None
        listener, self.passive = self.passive, None
        try:
            conn, _ = listener.accept()
        except OSError:
            self.send("425 Failed to establish connection.")
            return None
        finally:
            listener.close()
        conn.settimeout(DATA_TIMEOUT)
        self.send(preliminary)
        if self.prot_p and not skip_tls:
            assert self.server._context is not None
            try:
                conn = self.server._context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                self.send("425 TLS handshake failed on the data connection.")
                return None
        return conn

    def _end_download(self, conn: socket.socket) -> None:
        """End a download: TLS close_notify then FIN, or (``close_notify=False``) a bare FIN."""
        if isinstance(conn, ssl.SSLSocket) and self.server.close_notify:
            with contextlib.suppress(OSError, ssl.SSLError):
                conn = conn.unwrap()
        with contextlib.suppress(OSError):
            socket.socket.shutdown(conn, socket.SHUT_WR)
            conn.settimeout(DATA_TIMEOUT)
            while socket.socket.recv(conn, 65536):  # until the client's FIN
                pass
        conn.close()
