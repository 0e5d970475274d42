"""Shared fixtures: real FTP servers (pyftpdlib, vsftpd, pure-ftpd, proftpd) and a Kafka broker.

FTP fixtures yield a frozen :class:`servers.FTPServer`::

    FTPServer(kind, host, port, user, password, root, tls, ca_file,
              tls_control_required, tls_data_required, passive_ports,
              max_cons, max_cons_per_ip, log_file, counter, impl)

with ``connection_count()``, ``peak_connections()``, ``reset_peak()``,
``track_connections()`` and ``wait_connections(n)`` for the server-side count
of control connections (exact hooks for pyftpdlib; the kernel's socket table,
sampled, for the real servers -- ``with servers.counted(server) as s:`` puts a
counting accept in front of one when a test asserts a peak).

``launch_ftp_server`` starts a server for a wider scope (a module's matrix).

Fixtures for Debian servers skip when the server is missing -- unless ``CI``
is set, then they fail: CI never silently skips a server.

All servers listen on 127.0.0.1 only and are stopped (processes killed,
threads joined) in teardown, also when the test failed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from servers import FTPServer, ServerUnavailable
from servers.certs import TLSCerts, make_certs
from servers.kafka import KafkaBroker, TansuBroker
from servers.kafka_tls import TLSKafkaBroker, TLSTansuBroker
from servers.proftpd import ProFTPD
from servers.pureftpd import PureFTPd

with warnings.catch_warnings():  # pyftpdlib imports asyncore/asynchat (deprecated in 3.11)
    warnings.filterwarnings("ignore", "The asyn(core|chat) module", DeprecationWarning)
    from servers.pyftpd import PyFTPD
from servers.vsftpd import Vsftpd

FTP_KINDS = ("pyftpdlib", "vsftpd", "pure-ftpd", "proftpd")


def pytest_configure(config: pytest.Config) -> None:
    # Deprecation noise from third-party test dependencies on Python 3.11
    # (pyftpdlib imports asyncore/asynchat; kafka-python uses legacy
    # importlib.resources calls).  Our own code keeps the default filters.
    for line in (
        "ignore:The asyncore module is deprecated:DeprecationWarning",
        "ignore:The asynchat module is deprecated:DeprecationWarning",
        "ignore:read_text is deprecated:DeprecationWarning:kafka",
        "ignore:open_text is deprecated:DeprecationWarning",
    ):
        config.addinivalue_line("filterwarnings", line)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def unavailable(reason: str) -> None:
    """Skip locally; fail under CI so a missing server is never silently skipped."""
    if in_ci():
        pytest.fail(f"{reason} [CI is set, so this is a failure, not a skip]", pytrace=False)
    pytest.skip(reason)


def _scratch_base() -> str | None:
    """Where FTP roots go: tmpfs if available (file creation on ext4 is ~1 ms here)."""
    env = os.environ.get("FTP_POOLER_TEST_TMPDIR")
    if env:
        return env
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return None


def _make_scratch_dir(prefix: str) -> Path:
    # Not under pytest's tmp_path: that sits below a 0700 directory, which the
    # unprivileged FTP server processes cannot traverse.
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=_scratch_base()))
    os.chmod(path, 0o755)
    return path


# --------------------------------------------------------------------------
# TLS material and directories
# --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tls_certs() -> Iterator[TLSCerts]:
    """trustme CA + server certificate for 127.0.0.1/localhost, as PEM files."""
    directory = _make_scratch_dir("ftp-pooler-certs-")
    try:
        yield make_certs(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def ftp_root() -> Iterator[Path]:
    """Empty directory served as the FTP user's "/" (world-traversable, on tmpfs if possible).

    Files put here before a vsftpd/pure-ftpd server starts are chowned to the
    test user at start; files created later as root are readable but not
    writable over FTP.
    """
    path = _make_scratch_dir("ftp-pooler-root-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class _Servers:
    """Starts servers for one test and stops all of them at teardown."""

    def __init__(self) -> None:
        self._running: list[Any] = []

    def start(self, server: Any) -> FTPServer:
        reason = None
        try:
            server.start()
        except ServerUnavailable as exc:
            reason = str(exc)
        if reason is not None:
            unavailable(reason)
        self._running.append(server)
        info: FTPServer = server.info()
        return info

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        while self._running:
            server = self._running.pop()
            try:
                server.stop()
            except BaseException as exc:  # noqa: BLE001 -- keep stopping the others
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def _ftp_servers(ftp_root: Path) -> Iterator[_Servers]:
    # depends on ftp_root so servers always stop before their root is removed
    servers = _Servers()
    try:
        yield servers
    finally:
        servers.stop_all()


def _tls_kwargs(kwargs: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    if kwargs.get("tls") and kwargs.get("certs") is None:
        kwargs["certs"] = request.getfixturevalue("tls_certs")
    return kwargs


# --------------------------------------------------------------------------
# pyftpdlib (in-process)
# --------------------------------------------------------------------------
@pytest.fixture
def make_pyftpd(
    request: pytest.FixtureRequest, ftp_root: Path, _ftp_servers: _Servers
) -> Callable[..., FTPServer]:
    """Factory: ``make_pyftpd(tls=True, tls_data_required=True, max_cons=4,
    max_cons_per_ip=2, passive_ports=(lo, hi) or count, handler_class=...,
    handler_attrs={...}, root=..., user=..., password=...)``."""

    def make(**kwargs: Any) -> FTPServer:
        root = Path(kwargs.pop("root", ftp_root))
        return _ftp_servers.start(PyFTPD(root, **_tls_kwargs(kwargs, request)))

    return make


@pytest.fixture
def pyftpd_server(make_pyftpd: Callable[..., FTPServer]) -> FTPServer:
    """Plain-FTP pyftpdlib server on ``ftp_root``."""
    return make_pyftpd()


# --------------------------------------------------------------------------
# vsftpd (Debian binary)
# --------------------------------------------------------------------------
@pytest.fixture
def make_vsftpd(
    request: pytest.FixtureRequest,
    ftp_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
    _ftp_servers: _Servers,
) -> Callable[..., FTPServer]:
    """Factory: ``make_vsftpd(tls=True, tls_control_required=..., tls_data_required=...,
    require_ssl_reuse=True, max_per_ip=3, max_clients=..., passive_ports=...,
    log_protocol=True, extra_config={...}, root=...)``."""

    def make(**kwargs: Any) -> FTPServer:
        root = Path(kwargs.pop("root", ftp_root))
        workdir = tmp_path_factory.mktemp("vsftpd")
        return _ftp_servers.start(Vsftpd(root, workdir, **_tls_kwargs(kwargs, request)))

    return make


@pytest.fixture
def vsftpd_server(make_vsftpd: Callable[..., FTPServer]) -> FTPServer:
    """Plain-FTP vsftpd on ``ftp_root`` (no per-IP cap)."""
    return make_vsftpd()


# --------------------------------------------------------------------------
# pure-ftpd (unpacked Debian .deb)
# --------------------------------------------------------------------------
@pytest.fixture
def make_pureftpd(
    request: pytest.FixtureRequest,
    ftp_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
    _ftp_servers: _Servers,
) -> Callable[..., FTPServer]:
    """Factory: ``make_pureftpd(tls=True, tls_control_required=..., tls_data_required=...,
    max_clients=100, max_per_ip=..., passive_ports=..., extra_args=[...], root=...)``."""

    def make(**kwargs: Any) -> FTPServer:
        root = Path(kwargs.pop("root", ftp_root))
        workdir = tmp_path_factory.mktemp("pureftpd")
        return _ftp_servers.start(PureFTPd(root, workdir, **_tls_kwargs(kwargs, request)))

    return make


@pytest.fixture
def pureftpd_server(make_pureftpd: Callable[..., FTPServer]) -> FTPServer:
    """Plain-FTP pure-ftpd on ``ftp_root``."""
    return make_pureftpd()


# --------------------------------------------------------------------------
# proftpd (unpacked Debian .debs)
# --------------------------------------------------------------------------
@pytest.fixture
def make_proftpd(
    request: pytest.FixtureRequest,
    ftp_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
    _ftp_servers: _Servers,
) -> Callable[..., FTPServer]:
    """Factory: ``make_proftpd(tls=True, tls_control_required=..., tls_data_required=...,
    max_clients=..., max_per_ip=..., passive_ports=..., extra_config=[...], root=...)``."""

    def make(**kwargs: Any) -> FTPServer:
        root = Path(kwargs.pop("root", ftp_root))
        workdir = tmp_path_factory.mktemp("proftpd")
        return _ftp_servers.start(ProFTPD(root, workdir, **_tls_kwargs(kwargs, request)))

    return make


@pytest.fixture
def proftpd_server(make_proftpd: Callable[..., FTPServer]) -> FTPServer:
    """Plain-FTP proftpd on ``ftp_root``."""
    return make_proftpd()


# --------------------------------------------------------------------------
# any of them
# --------------------------------------------------------------------------
@pytest.fixture
def make_ftp_server(
    make_pyftpd: Callable[..., FTPServer],
    make_vsftpd: Callable[..., FTPServer],
    make_pureftpd: Callable[..., FTPServer],
    make_proftpd: Callable[..., FTPServer],
) -> Callable[..., FTPServer]:
    """``make_ftp_server(kind, **options)`` with kind in FTP_KINDS.

    Options common to all kinds: ``tls``, ``tls_control_required``,
    ``tls_data_required``, ``passive_ports``, ``root``.  Session caps are
    named per server (pyftpdlib: max_cons/max_cons_per_ip, vsftpd:
    max_clients/max_per_ip, pure-ftpd: max_clients/max_per_ip, proftpd:
    max_clients/max_per_ip).
    """
    factories = {
        "pyftpdlib": make_pyftpd,
        "vsftpd": make_vsftpd,
        "pure-ftpd": make_pureftpd,
        "proftpd": make_proftpd,
    }

    def make(kind: str, **kwargs: Any) -> FTPServer:
        try:
            factory = factories[kind]
        except KeyError:
            raise ValueError(f"unknown FTP server kind {kind!r}; one of {FTP_KINDS}") from None
        return factory(**kwargs)

    return make


@pytest.fixture(scope="session")
def launch_ftp_server(
    tls_certs: TLSCerts, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., AbstractContextManager[FTPServer]]:
    """For servers shared by a module: ``with launch_ftp_server(kind, tls=..., **options) as s:``.

    ``kind`` is one of FTP_KINDS; the server gets a fresh scratch root
    (``s.root``, removed after the block) and is stopped when the block ends.
    Missing servers skip locally and fail under CI, as with the fixtures above.
    """
    launchers: dict[str, Callable[..., Any]] = {
        "pyftpdlib": lambda root, workdir, **kw: PyFTPD(root, **kw),
        "vsftpd": Vsftpd,
        "pure-ftpd": PureFTPd,
        "proftpd": ProFTPD,
    }

    @contextmanager
    def launch(kind: str, **kwargs: Any) -> Iterator[FTPServer]:
        if kwargs.get("tls") and kwargs.get("certs") is None:
            kwargs["certs"] = tls_certs
        root = _make_scratch_dir(f"ftp-pooler-{kind}-root-")
        try:
            servers = _Servers()
            try:
                yield servers.start(launchers[kind](root, tmp_path_factory.mktemp(kind), **kwargs))
            finally:
                servers.stop_all()
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return launch


# --------------------------------------------------------------------------
# Kafka (Tansu)
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A Tansu broker (memory storage) for the test module; use unique topic/group names."""
    broker = TansuBroker(tmp_path_factory.mktemp("tansu"))
    reason = None
    try:
        broker.start()
    except ServerUnavailable as exc:
        reason = str(exc)
    if reason is not None:
        unavailable(reason)
    try:
        yield broker.info()
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def kafka_tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSKafkaBroker]:
    """A Tansu broker reachable only over TLS that demands a client certificate (stunnel in
    front, see servers/kafka_tls.py); ``client_config()`` and ``settings_env()`` connect to it."""
    broker = TLSTansuBroker(tmp_path_factory.mktemp("tansu-tls"), require_client_cert=True)
    reason = None
    try:
        broker.start()
    except ServerUnavailable as exc:
        reason = str(exc)
    if reason is not None:
        unavailable(reason)
    try:
        yield broker.info()
    finally:
        broker.stop()


# --------------------------------------------------------------------------
# A scripted server (tests/scripted_server.py): partner-server behaviours as tests
# --------------------------------------------------------------------------
@pytest.fixture
def make_scripted_ftp(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Factory: ``make_scripted_ftp(files={...}, rules=[Rule(...)], tls=True, ...)`` -> a
    started :class:`scripted_server.ScriptedFTPServer` (options in its module docstring),
    stopped at teardown."""
    from scripted_server import ScriptedFTPServer

    started: list[ScriptedFTPServer] = []

    def make(*, tls: bool = False, **kwargs: Any) -> ScriptedFTPServer:
        certs = request.getfixturevalue("tls_certs") if tls else None
        server = ScriptedFTPServer(certs=certs, **kwargs).start()
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
