"""Real FTP servers and a Kafka-protocol broker for the test suite.

Everything here binds to 127.0.0.1 only.  ``tests/conftest.py`` wraps these
helpers in pytest fixtures; ``/work/shared/TESTING.md`` has the facts they are
built on.

Every FTP fixture yields an :class:`FTPServer`: a frozen description of a
running server plus read access to its server-side control-connection count.

The launchers (``PyFTPD``, ``Vsftpd``, ``PureFTPd``, ``ProFTPD``, ``TansuBroker``) share
their life cycle through the small base classes at the end of this module:
:class:`Launcher` (``start``/``stop``/``with``), :class:`ProcessLauncher` (one
:class:`ServerProcess`), :class:`FTPLauncher` (:meth:`FTPLauncher.info`) and
:class:`ExternalFTPLauncher` (vsftpd, pure-ftpd and proftpd).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Protocol, Self

from .netutil import (
    CountingProxy,
    TCPConnectionCounter,
    free_port,
    passive_range,
    wait_for_listen,
)

if TYPE_CHECKING:
    from .certs import TLSCerts

__all__ = [
    "ConnectionCounter",
    "ExternalFTPLauncher",
    "FTPLauncher",
    "FTPServer",
    "Launcher",
    "PeakTracker",
    "ProcessLauncher",
    "ServerProcess",
    "ServerUnavailable",
    "check_traversable",
    "counted",
    "wait_until",
]


class ServerUnavailable(RuntimeError):
    """A server cannot run here (binary missing, not root, ...).

    The fixtures turn this into a skip locally and a failure when ``CI`` is set.
    """


class PeakTracker(Protocol):
    """Peak of concurrent connections over a ``with`` block."""

    @property
    def peak(self) -> int: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ConnectionCounter(Protocol):
    """Server-side count of concurrent control connections."""

    def current(self) -> int: ...

    def peak(self) -> int: ...

    def reset_peak(self) -> None: ...

    def track(self) -> PeakTracker: ...


def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01
) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes; return whether it became so."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


@dataclass(frozen=True)
class FTPServer:
    """A running FTP server for a test (all addresses are loopback)."""

    kind: str  #: "pyftpdlib", "vsftpd", "pure-ftpd" or "proftpd"
    host: str
    port: int
    user: str
    password: str
    root: Path  #: directory the user sees as "/" (chrooted)
    tls: bool  #: explicit FTPS (AUTH TLS) available
    ca_file: Path | None  #: CA to verify the server certificate (None without TLS)
    tls_control_required: bool = False  #: plain USER/PASS refused
    tls_data_required: bool = False  #: PROT P required before data transfers
    passive_ports: tuple[int, int] | None = None  #: inclusive passive port range
    max_cons: int = 0  #: server-wide session cap (0 = unlimited)
    max_cons_per_ip: int = 0  #: per-client-IP session cap (0 = unlimited)
    log_file: Path | None = None  #: server log, if the server writes one
    counter: ConnectionCounter | None = field(default=None, repr=False, compare=False)
    #: the object running the server (PyFTPD, Vsftpd or PureFTPd), e.g. for
    #: ``server.impl.handler.pooler_dropped`` or ``server.impl.read_log()``
    impl: object = field(default=None, repr=False, compare=False)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def _require_counter(self) -> ConnectionCounter:
        if self.counter is None:
            raise RuntimeError(f"{self.kind} server has no connection counter")
        return self.counter

    def connection_count(self) -> int:
        """Concurrent control connections the server holds right now."""
        return self._require_counter().current()

    def peak_connections(self) -> int:
        """Highest concurrent control-connection count since start / :meth:`reset_peak`."""
        return self._require_counter().peak()

    def reset_peak(self) -> None:
        """Restart peak tracking from the current count."""
        self._require_counter().reset_peak()

    def track_connections(self) -> PeakTracker:
        """``with server.track_connections() as t: ...`` then ``t.peak``."""
        return self._require_counter().track()

    def wait_connections(self, n: int, timeout: float = 5.0) -> int:
        """Wait until exactly ``n`` control connections are open; return the final count."""
        wait_until(lambda: self.connection_count() == n, timeout)
        return self.connection_count()


@contextlib.contextmanager
def counted(server: FTPServer) -> Iterator[FTPServer]:
    """``server`` reached through a :class:`~.netutil.CountingProxy`: exact connection counts.

    Yields a copy of ``server`` whose ``port`` is the proxy's and whose
    ``counter`` counts every control connection from accept to close, so
    ``peak_connections()`` and ``track_connections()`` cannot miss a short
    peak (the kernel count of vsftpd/pure-ftpd/proftpd is sampled).  Data
    connections still go to the server directly.  Use inside the server's
    fixture scope: ``with counted(make_vsftpd()) as server: ...``.
    """
    with CountingProxy(server.address, server.host) as proxy:
        yield dataclasses.replace(server, port=proxy.port, counter=proxy.counter)


def check_traversable(path: Path) -> None:
    """Raise if a non-root server user could not reach ``path``.

    vsftpd silently ignores a ``local_root`` it cannot enter (the user then
    lands in the home directory), so fail loudly here instead.  pytest's
    ``tmp_path`` lives under a 0700 directory: use the ``ftp_root`` fixture.
    """
    path = Path(path).resolve()
    for parent in [path, *path.parents]:
        if parent == path:
            continue
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise ValueError(
                f"{path} is not reachable by the FTP user: {parent} has mode {mode & 0o777:o}"
            )


# --------------------------------------------------------------------------
# External server processes
# --------------------------------------------------------------------------
def _proc_cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


def _proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _live(pid: int) -> bool:
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


class ServerProcess:
    """A server subprocess in its own process group, stopped without leftovers.

    :meth:`stop` sends SIGTERM to the group, waits (bounded), SIGKILLs the
    group, and finally kills stragglers that left the group (vsftpd puts every
    session in its own ``setsid()`` session): processes whose command line is
    exactly this server's ``argv`` -- which always names a per-test config
    file or port, so it matches nothing else.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        output: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.output = Path(output)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Self:
        self._out = open(self.output, "ab")  # noqa: SIM115 -- lives until stop()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except BaseException:
            self._out.close()
            raise
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def read_output(self, limit: int = 4000) -> str:
        try:
            data = self.output.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode(errors="replace")

    def _matching_pids(self) -> list[int]:
        want = b"\0".join(a.encode() for a in self.argv) + b"\0"
        me = os.getpid()
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid != me and _proc_cmdline(pid) == want:
                pids.append(pid)
        return pids

    def _killpg(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the whole server; returns the main process' exit status."""
        if self.proc is None:
            return None
        try:
            if self.proc.returncode is None:
                self._killpg(signal.SIGTERM)
                deadline = time.monotonic() + timeout
                # Wait without reaping so the group id cannot be recycled
                # before the SIGKILL below.
                while time.monotonic() < deadline:
                    try:
                        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                    except ChildProcessError:
                        break
                    if info is not None:
                        break
                    time.sleep(0.01)
                self._killpg(signal.SIGKILL)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
            # sessions that escaped the process group
            stragglers = self._matching_pids()
            for pid in stragglers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while any(_live(p) for p in stragglers):
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"server processes survived SIGKILL: {stragglers}")
                time.sleep(0.01)
            return self.proc.returncode
        finally:
            if self._out is not None:
                self._out.close()
                self._out = None


# --------------------------------------------------------------------------
# Launchers: the life cycle PyFTPD, Vsftpd, PureFTPd and TansuBroker share
# --------------------------------------------------------------------------
class Launcher:
    """A test server with ``start()`` (returns self) and ``stop()``; ``with`` runs both."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProcessLauncher(Launcher):
    """A server that is one :class:`ServerProcess` (``self.process`` once started)."""

    process: ServerProcess | None = None

    def _start_process(
        self, what: str, process: ServerProcess, ready: Callable[[ServerProcess], object]
    ) -> None:
        """Start ``process`` and wait for it with ``ready(process)``.

        If waiting fails the process is stopped and ``RuntimeError("<what> did
        not start: ...")`` carries the end of its output.
        """
        self.process = process.start()
        try:
            ready(process)
        except BaseException as exc:
            out = process.read_output()
            process.stop()
            raise RuntimeError(f"{what} did not start: {exc}\n{out}") from exc

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)


class FTPLauncher(Launcher):
    """An FTP server launcher: :meth:`info` describes it from these attributes."""

    kind: str  #: :attr:`FTPServer.kind`
    host: str
    port: int
    user: str
    password: str
    root: Path
    tls: bool
    certs: TLSCerts | None
    tls_control_required: bool
    tls_data_required: bool
    passive_ports: tuple[int, int] | None
    counter: ConnectionCounter
    log_file: Path | None = None

    def _session_caps(self) -> tuple[int, int]:
        """``(max_cons, max_cons_per_ip)`` for :class:`FTPServer` (each server names them so)."""
        raise NotImplementedError

    def info(self) -> FTPServer:
        max_cons, max_cons_per_ip = self._session_caps()
        return FTPServer(
            kind=self.kind,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            root=self.root,
            tls=self.tls,
            ca_file=self.certs.ca_file if (self.tls and self.certs) else None,
            tls_control_required=self.tls_control_required,
            tls_data_required=self.tls_data_required,
            passive_ports=self.passive_ports,
            max_cons=max_cons,
            max_cons_per_ip=max_cons_per_ip,
            log_file=self.log_file,
            counter=self.counter,
            impl=self,
        )


class ExternalFTPLauncher(ProcessLauncher, FTPLauncher):
    """vsftpd / pure-ftpd: a server process on ``host:port`` in ``workdir``.

    Its sessions are counted from the kernel's socket table
    (:class:`~.netutil.TCPConnectionCounter`).  A subclass's ``start()``
    prepares its files and then calls :meth:`_start_server`.
    """

    passive_ports: tuple[int, int]
    counter: TCPConnectionCounter

    def __init__(
        self,
        root: Path,
        workdir: Path,
        *,
        host: str,
        port: int | None,
        user: str,
        password: str,
        tls: bool,
        certs: TLSCerts | None,
        tls_control_required: bool,
        tls_data_required: bool,
        passive_ports: tuple[int, int] | int,
        max_clients: int,
        max_per_ip: int,
        start_timeout: float,
    ) -> None:
        if tls and certs is None:
            raise ValueError("tls=True needs certs")
        self.root = Path(root)
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port(host)
        self.user = user
        self.password = password
        self.tls = tls
        self.certs = certs
        self.tls_control_required = tls and tls_control_required
        self.tls_data_required = tls and tls_data_required
        self.passive_ports = passive_range(passive_ports, host)
        self.max_clients = max_clients
        self.max_per_ip = max_per_ip
        self.start_timeout = start_timeout
        self.counter = TCPConnectionCounter(self.port, self.host)

    def _start_server(self, argv: Sequence[str], output: Path) -> None:
        """Run the server; return once it listens, with the connection counter running."""
        self._start_process(self.kind, ServerProcess(argv, output=output), self._wait_listening)
        self.counter.start()

    def _wait_listening(self, process: ServerProcess) -> None:
        wait_for_listen(self.port, self.host, timeout=self.start_timeout, alive=process.alive)

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.counter.stop()
        finally:
            super().stop(timeout)

    def _session_caps(self) -> tuple[int, int]:
        return self.max_clients, self.max_per_ip
