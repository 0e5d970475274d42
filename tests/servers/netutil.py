"""Small network helpers for the test servers (loopback only).

* :func:`free_port` / :func:`free_port_range` hand out ports that are bindable
  right now on 127.0.0.1.  They pick from below the kernel's ephemeral range so
  a server port never collides with the source port of an outgoing client
  connection, and do not hand out a port again while it may still be about to
  be bound (the last 8000 ports handed out in this process are remembered).
  :func:`passive_range` turns a port count into such a range (inclusive).
* :func:`wait_for_port` polls until something accepts TCP connections.
* :func:`listening_ports` names the ports a child process listens on: start a
  child on port 0 and read its port back, instead of choosing a port for it
  (which another process can take between the choice and the child's bind).
* :func:`count_established` counts the *server side* of ESTABLISHED TCP
  connections on a local port by reading ``/proc/net/tcp`` and ``tcp6``.
* :class:`ConnectionSampler` runs :func:`count_established` in a background
  thread and remembers the maximum it saw while active (it can miss a short
  peak).
* :class:`HookConnectionCounter` counts exactly, from hooks at accept and
  close; :class:`CountingProxy` is a counting TCP accept in front of a
  server's port that feeds one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self

__all__ = [
    "ConnectionSampler",
    "CountingProxy",
    "HookConnectionCounter",
    "TCPConnectionCounter",
    "count_established",
    "count_established_proc",
    "free_port",
    "free_port_range",
    "is_listening",
    "is_port_bindable",
    "listening_ports",
    "passive_range",
    "wait_for_listen",
    "wait_for_port",
]

LOCALHOST = "127.0.0.1"

# TCP state codes in /proc/net/tcp{,6} (include/net/tcp_states.h)
_TCP_ESTABLISHED = "01"
_TCP_LISTEN = "0A"

_alloc_lock = threading.Lock()
# Ports handed out recently (insertion-ordered, bounded): not handed out again
# while the server they were meant for may still be binding them.
_handed_out: dict[int, None] = {}
_HANDED_OUT_MAX = 8000


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _candidate_band() -> tuple[int, int]:
    """Ports to hand out: below the ephemeral range if there is room, else above."""
    low, high = _ephemeral_range()
    if low - 1 - 10000 >= 2000:
        return 10000, low - 1
    if 65535 - (high + 1) >= 2000:
        return high + 1, 65535
    return 1024, 65535  # odd kernel config: accept some collision risk


def is_port_bindable(port: int, host: str = LOCALHOST) -> bool:
    """True if a listening socket could bind ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Same flag the servers use, so TIME_WAIT leftovers don't count as busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port bindable on ``host`` that this process has not handed out recently."""
    return free_port_range(1, host)[0]


def free_port_range(count: int, host: str = LOCALHOST, *, attempts: int = 200) -> list[int]:
    """Return ``count`` consecutive bindable ports (e.g. for a passive port range)."""
    if count < 1:
        raise ValueError("count must be >= 1")
    band_lo, band_hi = _candidate_band()
    rng = random.Random()
    for _ in range(attempts):
        start = rng.randint(band_lo, band_hi - count + 1)
        ports = list(range(start, start + count))
        with _alloc_lock:
            if any(p in _handed_out for p in ports):
                continue
            # Free on every local address, not only ``host``: a listener elsewhere on
            # the port (a proxy on 127.0.0.2, a server on 0.0.0.0) shows it in use.
            if all(is_port_bindable(p, host) and is_port_bindable(p, "0.0.0.0") for p in ports):
                for p in ports:
                    _handed_out[p] = None
                while len(_handed_out) > _HANDED_OUT_MAX:
                    del _handed_out[next(iter(_handed_out))]
                return ports
    raise RuntimeError(f"could not find {count} free consecutive ports on {host}")


def passive_range(ports: tuple[int, int] | int, host: str = LOCALHOST) -> tuple[int, int]:
    """An inclusive port range: ``ports`` itself, or that many free consecutive ports."""
    if isinstance(ports, int):
        found = free_port_range(ports, host)
        return (found[0], found[-1])
    return ports


def wait_for_port(
    port: int,
    host: str = LOCALHOST,
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until ``host:port`` accepts a TCP connection.

    ``alive`` is polled between attempts; if it returns False (e.g. the server
    process exited) this fails immediately instead of waiting out the timeout.
    Raises ``TimeoutError`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last_exc: OSError | None = None
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.05, min(1.0, timeout))):
                return
        except OSError as exc:
            last_exc = exc
        if alive is not None and not alive():
            raise RuntimeError(f"server for {host}:{port} died before it accepted connections")
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"nothing accepted connections on {host}:{port} within {timeout}s"
            ) from last_exc
        time.sleep(interval)


def _iter_proc_lines(paths: Iterable[str]) -> Iterable[str]:
    for path in paths:
        try:
            with open(path) as f:
                next(f, None)  # header
                yield from f
        except FileNotFoundError:
            continue


def count_established_proc(
    port: int, *, paths: Iterable[str] = ("/proc/net/tcp", "/proc/net/tcp6")
) -> int:
    """:func:`count_established` by parsing ``/proc/net/tcp`` and ``tcp6``.

    Correct but slow on these machines: the kernel walks its whole established
    hash table (262,144 buckets) for every read, ~4 ms per file.
    """
    suffix = f":{port:04X}"
    n = 0
    for line in _iter_proc_lines(paths):
        fields = line.split(None, 4)
        if len(fields) < 4:
            continue
        local, state = fields[1], fields[3]
        if state == _TCP_ESTABLISHED and local.endswith(suffix):
            n += 1
    return n


# NETLINK_SOCK_DIAG (linux/sock_diag.h, linux/inet_diag.h)
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLMSG_HDR = struct.Struct("=LHHLL")  # len, type, flags, seq, pid
_netlink_broken = False


def _count_netlink(port: int, family: int, state: int) -> int:
    """Dump TCP sockets of ``family`` in ``state`` via sock_diag; count local port ``port``."""
    # inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid (48 bytes)
    req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << state) + bytes(48)
    hdr = _NLMSG_HDR.pack(
        _NLMSG_HDR.size + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0
    )
    n = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as s:
        s.settimeout(5.0)
        s.send(hdr + req)
        while True:
            data = s.recv(1 << 16)
            if not data:
                raise OSError("sock_diag: empty netlink reply")
            off = 0
            while off + _NLMSG_HDR.size <= len(data):
                length, typ, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, off)
                if typ == _NLMSG_DONE:
                    return n
                if typ == _NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + _NLMSG_HDR.size)[0]
                    raise OSError(err, f"sock_diag: {os.strerror(err)}")
                if typ == _SOCK_DIAG_BY_FAMILY:
                    # inet_diag_msg: family, state, timer, retrans, then id.sport (big endian)
                    (sport,) = struct.unpack_from(">H", data, off + _NLMSG_HDR.size + 4)
                    if sport == port:
                        n += 1
                if length < _NLMSG_HDR.size:
                    raise OSError("sock_diag: malformed netlink message")
                off += (length + 3) & ~3


def count_established(port: int, host: str = LOCALHOST) -> int:
    """Number of ESTABLISHED TCP connections whose *local* port is ``port``.

    For a server listening on ``host:port`` this is the number of accepted (or
    still queued for accept) client connections, seen from the server side.
    The client ends of loopback connections have ``port`` as their *remote*
    port and are not counted.  Connections the client has closed but the
    server has not yet (CLOSE_WAIT) are not counted either.

    Uses a netlink sock_diag dump of ``host``'s address family (~0.2 ms here)
    and falls back to :func:`count_established_proc` (~8 ms) if netlink is
    unavailable.
    """
    n = _try_netlink(port, host, int(_TCP_ESTABLISHED, 16))
    return count_established_proc(port) if n is None else n


def _try_netlink(port: int, host: str, state: int) -> int | None:
    global _netlink_broken
    if _netlink_broken:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return _count_netlink(port, family, state)
    except OSError:
        _netlink_broken = True
        return None


def is_listening(port: int, host: str = LOCALHOST) -> bool:
    """True if some socket of ``host``'s address family is in LISTEN state on ``port``."""
    n = _try_netlink(port, host, int(_TCP_LISTEN, 16))
    if n is not None:
        return n > 0
    paths = ("/proc/net/tcp", "/proc/net/tcp6")
    suffix = f":{port:04X}"
    for line in _iter_proc_lines(paths):
        fields = line.split(None, 4)
        if len(fields) >= 4 and fields[3] == _TCP_LISTEN and fields[1].endswith(suffix):
            return True
    return False


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on now (any address, IPv4 and IPv6).

    Matches the socket inodes among ``/proc/<pid>/fd`` with the LISTEN lines
    of ``/proc/<pid>/net/tcp{,6}``. Empty if the process is gone.
    """
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    except OSError:
        return set()
    ports = set()
    for line in _iter_proc_lines((f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6")):
        fields = line.split()
        if len(fields) >= 10 and fields[3] == _TCP_LISTEN and fields[9] in inodes:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_for_listen(
    port: int,
    host: str = LOCALHOST,
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Like :func:`wait_for_port` but without connecting (reads /proc/net/tcp).

    A probe connection would start a server session (a vsftpd/pure-ftpd child
    process) that briefly counts against per-IP limits; this does not.
    """
    deadline = time.monotonic() + timeout
    while not is_listening(port, host):
        if alive is not None and not alive():
            raise RuntimeError(f"server for port {port} died before it listened")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listened on port {port} within {timeout}s")
        time.sleep(interval)


class ConnectionSampler:
    """Background sampler of a connection count; remembers the maximum seen.

    By default samples :func:`count_established` for ``port``; pass ``counter``
    to sample any other zero-argument callable.  Use as a context manager::

        with ConnectionSampler(port) as s:
            run_load()
        assert s.peak <= 8

    The sampler only sees what exists at sampling instants (every ``interval``
    seconds, later when a sample costs more than ``max_duty`` of a core, and
    later still when the machine is loaded), so a short-lived spike can be
    missed: to assert a peak, count exactly (:class:`HookConnectionCounter`,
    :class:`CountingProxy`) or wait for the count you expect.  The sampling thread
    is a daemon thread and is always joined by :meth:`stop` (bounded wait).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = LOCALHOST,
        interval: float = 0.005,
        counter: Callable[[], int] | None = None,
        max_duty: float = 0.25,
    ) -> None:
        if counter is None:
            if port is None:
                raise ValueError("need a port or a counter")
            counter = functools.partial(count_established, port, host)
        self._counter = counter
        self.port = port
        self.interval = interval
        # A sample costs ~0.2 ms (netlink) to ~8 ms (/proc fallback) of kernel
        # time; never spend more than this fraction of one core sampling.
        self.max_duty = max_duty
        self._lock = threading.Lock()
        self._peak = 0
        self._last = 0
        self._samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- results -------------------------------------------------------------
    @property
    def peak(self) -> int:
        with self._lock:
            return self._peak

    @property
    def last(self) -> int:
        with self._lock:
            return self._last

    @property
    def samples(self) -> int:
        with self._lock:
            return self._samples

    def reset(self) -> None:
        with self._lock:
            self._peak = 0

    # -- lifecycle -------------------------------------------------------------
    def sample_once(self) -> int:
        n = self._counter()
        self.observe(n)
        return n

    def observe(self, n: int) -> None:
        """Count ``n``, a value some other reader just got from the same counter."""
        with self._lock:
            self._last = n
            self._samples += 1
            self._peak = max(self._peak, n)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                # The duty limit is about CPU, so it is measured in this
                # thread's CPU time: wall time also holds every wait for the
                # GIL and the cores, and one sample that waited 1 s under
                # load used to put the next one 3 s later -- past a whole
                # test, whose peak the sampler then never saw.
                t0 = time.thread_time()
                self.sample_once()
                spent = time.thread_time() - t0
                self._stop.wait(max(self.interval, spent * (1.0 / self.max_duty - 1.0)))
        except BaseException as exc:  # noqa: BLE001 -- surfaced by stop()
            self._error = exc

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        self.sample_once()
        self._thread = threading.Thread(
            target=self._run, name=f"conn-sampler:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> int:
        """Stop sampling (takes one last sample) and return the peak."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("connection sampler thread did not stop")
        if self._error is not None:
            raise RuntimeError("connection sampler failed") from self._error
        self.sample_once()
        return self.peak

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class TCPConnectionCounter:
    """Server-side control-connection count of an external server process.

    ``current()`` asks the kernel on demand (exact at that instant; see
    :func:`count_established`).  ``peak()`` is the maximum seen by a
    background :class:`ConnectionSampler` running from :meth:`start` to
    :meth:`stop` (every ``interval`` s, 10 ms by default), so a spike
    shorter than that can be missed -- ``peak()`` also samples once itself.
    ``track()`` gives a dedicated 5 ms sampler for a ``with`` block.  Every
    count read through this object (``current()``, so also
    ``FTPServer.wait_connections``) is fed to the background sampler and to
    every open tracker: a count a test waited for is in their peaks whatever
    the sampling threads saw.  For a peak nobody waits for, put a
    :class:`CountingProxy` in front of the server.
    """

    def __init__(self, port: int, host: str = LOCALHOST, *, interval: float = 0.01) -> None:
        self.port = port
        self.host = host
        self.interval = interval
        self._sampler = ConnectionSampler(port, host=host, interval=interval)
        self._lock = threading.Lock()
        self._trackers: list[ConnectionSampler] = []

    def start(self) -> Self:
        self._sampler.start()
        return self

    def stop(self) -> None:
        self._sampler.stop()

    def current(self) -> int:
        n = count_established(self.port, self.host)
        with self._lock:
            for sampler in (self._sampler, *self._trackers):
                sampler.observe(n)
        return n

    def peak(self) -> int:
        return max(self._sampler.peak, self.current())

    def reset_peak(self) -> None:
        self._sampler.reset()
        self.current()

    def track(self) -> _TrackedSampler:
        return _TrackedSampler(self)


class _TrackedSampler(ConnectionSampler):
    """A 5 ms :class:`ConnectionSampler` that also gets every count its counter reads."""

    def __init__(self, owner: TCPConnectionCounter) -> None:
        super().__init__(owner.port, host=owner.host, interval=0.005)
        self._owner = owner

    def start(self) -> Self:
        with self._owner._lock:
            self._owner._trackers.append(self)
        return super().start()

    def stop(self, timeout: float = 5.0) -> int:
        try:
            return super().stop(timeout)
        finally:
            with self._owner._lock:
                self._owner._trackers.remove(self)


# --------------------------------------------------------------------------
# Exact counts: hooks at accept and close
# --------------------------------------------------------------------------
class _Tracker:
    def __init__(self, counter: HookConnectionCounter) -> None:
        self._counter = counter
        self._peak = 0

    @property
    def peak(self) -> int:
        return self._peak

    def _update(self, n: int) -> None:
        self._peak = max(self._peak, n)

    def __enter__(self) -> Self:
        with self._counter._lock:
            self._peak = self._counter._current
            self._counter._trackers.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._counter._lock:
            self._counter._trackers.remove(self)


class HookConnectionCounter:
    """Exact, thread-safe count of connections, kept by hooks at accept and at close.

    Fed by pyftpdlib's handler hooks (``servers.pyftpd``) and by
    :class:`CountingProxy`.  Nothing is sampled, so no peak can be missed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = 0
        self._peak = 0
        self._total = 0
        self._refused = 0
        self._trackers: list[_Tracker] = []

    def _connected(self) -> None:
        with self._lock:
            self._current += 1
            self._total += 1
            self._peak = max(self._peak, self._current)
            for t in self._trackers:
                t._update(self._current)

    def _disconnected(self) -> None:
        with self._lock:
            self._current -= 1

    def _refused_one(self) -> None:
        with self._lock:
            self._refused += 1

    # ConnectionCounter protocol
    def current(self) -> int:
        with self._lock:
            return self._current

    def peak(self) -> int:
        with self._lock:
            return self._peak

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = self._current

    def track(self) -> _Tracker:
        return _Tracker(self)

    # extras
    def total(self) -> int:
        """Sessions accepted since start (not counting 421 refusals)."""
        with self._lock:
            return self._total

    def refused(self) -> int:
        """Connections answered with 421 because of max_cons / max_cons_per_ip."""
        with self._lock:
            return self._refused


class CountingProxy:
    """A counting TCP accept in front of a server: exact counts of client connections.

    Listens on ``host`` (a free port, :attr:`port`), connects every accepted
    client to ``upstream`` and relays bytes both ways, opaque (TLS passes
    through).  :attr:`counter` counts each client connection from its accept
    until either side ends it (both sockets are then closed), so its peak
    cannot miss a short spike the way a sampled kernel count can.

    Meant for an FTP *control* port: passive data connections go to the
    server directly (its PASV address and EPSV port are its own), so the
    server sees control and data from the same loopback address.  One relay
    thread; small control traffic only (a relay write waits at most 5 s).
    """

    def __init__(self, upstream: tuple[str, int], host: str = LOCALHOST) -> None:
        self.upstream = upstream
        self.host = host
        self.counter = HookConnectionCounter()
        self._listener = socket.create_server((host, 0), backlog=128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._peers: dict[socket.socket, socket.socket] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> Self:
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(
            target=self._run, name=f"counting-proxy:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        self.counter._connected()
        try:
            server = socket.create_connection(self.upstream, timeout=5.0)
        except OSError:
            client.close()
            self.counter._disconnected()
            return
        for sock, peer in ((client, server), (server, client)):
            # Relay each reply as it comes: with Nagle, a second small write
            # (226 after 150) waits for the peer's delayed ACK, 40 ms here.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(5.0)  # bounds a relay write to a peer that does not read
            self._peers[sock] = peer
            self._selector.register(sock, selectors.EVENT_READ)

    def _close_pair(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock)
        del self._peers[peer]
        for s in (sock, peer):
            self._selector.unregister(s)
            s.close()
        self.counter._disconnected()

    def _relay(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
            if data:
                self._peers[sock].sendall(data)
                return
        except OSError:
            pass
        self._close_pair(sock)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(timeout=1.0):
                    sock = key.fileobj
                    if sock is self._listener:
                        self._accept()
                    elif sock is self._wake_r:
                        self._wake_r.recv(64)
                    elif sock in self._peers:  # not closed earlier in this round
                        self._relay(sock)
        except BaseException as exc:  # noqa: BLE001 -- reported by stop()
            self._error = exc
        finally:
            for sock in list(self._peers):
                if sock in self._peers:
                    self._close_pair(sock)
            self._selector.close()
            self._listener.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every relayed connection; join the relay thread (bounded)."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        try:
            if self._thread is not None:
                self._thread.join(timeout)
                if self._thread.is_alive():
                    raise RuntimeError("counting proxy thread did not stop")
            else:
                self._selector.close()
                self._listener.close()
        finally:
            self._wake_r.close()
            self._wake_w.close()
        if self._error is not None:
            raise RuntimeError("counting proxy failed") from self._error

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
