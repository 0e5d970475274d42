"""Smoke tests for the test servers themselves, using stdlib ftplib and kafka-python.

If these fail, fix the fixtures before trusting any integration test.
"""

from __future__ import annotations

import concurrent.futures
import ftplib
import io
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from servers import FTPServer, counted, wait_until
from servers.netutil import (
    ConnectionSampler,
    CountingProxy,
    count_established,
    count_established_proc,
)
from servers.pyftpd import DropControlMidTransferHandler, PyFTPD, StallDataHandler

ALL_KINDS = ["pyftpdlib", "vsftpd", "pure-ftpd", "proftpd"]
PAYLOAD = os.urandom(200_000)


class ReuseSessionFTP_TLS(ftplib.FTP_TLS):
    """``ftplib.FTP_TLS`` that resumes the control connection's TLS session on data connections.

    Stdlib ``FTP_TLS.ntransfercmd`` wraps the data socket without ``session=``,
    so it does NOT reuse the TLS session: vsftpd (``require_ssl_reuse=YES``, its
    default) answers ``522 SSL connection failed: session reuse required``
    (see test_vsftpd_tls_requires_session_reuse).  Passing the control
    socket's session works with vsftpd on TLS 1.3 and TLS 1.2.
    """

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            assert isinstance(self.sock, ssl.SSLSocket)
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session
            )
        return conn, size


def connect(
    server: FTPServer,
    *,
    tls: bool | None = None,
    login: bool = True,
    tls_max: ssl.TLSVersion | None = None,
) -> ftplib.FTP:
    """A logged-in ftplib client (FTPS with PROT P when ``tls``)."""
    use_tls = server.tls if tls is None else tls
    if use_tls:
        assert server.ca_file is not None
        ctx = ssl.create_default_context(cafile=str(server.ca_file))
        if tls_max is not None:
            ctx.maximum_version = tls_max
        ftp: ftplib.FTP = ReuseSessionFTP_TLS(context=ctx, timeout=10)
    else:
        ftp = ftplib.FTP(timeout=10)
    ftp.connect(server.host, server.port)
    if use_tls:
        assert isinstance(ftp, ftplib.FTP_TLS)
        ftp.auth()
    if login:
        ftp.login(server.user, server.password)
        if use_tls:
            assert isinstance(ftp, ftplib.FTP_TLS)
            ftp.prot_p()
    return ftp


def names(ftp: ftplib.FTP) -> set[str]:
    return {n.rsplit("/", 1)[-1] for n in ftp.nlst()} - {".", ".."}


def roundtrip(server: FTPServer, ftp: ftplib.FTP) -> None:
    """Upload, list, download, delete -- and check the bytes on the server's disk."""
    ftp.storbinary("STOR up.bin", io.BytesIO(PAYLOAD))
    assert (server.root / "up.bin").read_bytes() == PAYLOAD
    assert "up.bin" in names(ftp)
    lines: list[str] = []
    ftp.retrlines("LIST", lines.append)
    assert any("up.bin" in ln for ln in lines)
    buf = bytearray()
    ftp.retrbinary("RETR up.bin", buf.extend)
    assert bytes(buf) == PAYLOAD
    ftp.voidcmd("TYPE I")
    assert ftp.size("up.bin") == len(PAYLOAD)
    ftp.delete("up.bin")
    assert not (server.root / "up.bin").exists()


# --------------------------------------------------------------------------
# plain FTP and FTPS round trips on every server
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_plain_roundtrip(make_ftp_server: Callable[..., FTPServer], kind: str) -> None:
    server = make_ftp_server(kind)
    assert server.kind == kind and server.host == "127.0.0.1" and not server.tls
    ftp = connect(server)
    try:
        assert ftp.pwd() == "/"
        roundtrip(server, ftp)
    finally:
        ftp.quit()


def test_default_fixtures(
    pyftpd_server: FTPServer, vsftpd_server: FTPServer, pureftpd_server: FTPServer
) -> None:
    for server in (pyftpd_server, vsftpd_server, pureftpd_server):
        ftp = connect(server)
        try:
            assert names(ftp) == set()
        finally:
            ftp.quit()
    # all three serve the same ftp_root
    assert pyftpd_server.root == vsftpd_server.root == pureftpd_server.root


def test_bad_password_is_530(make_ftp_server: Callable[..., FTPServer]) -> None:
    # Failed logins are slow on the real servers: PAM's pam_unix delays ~2 s
    # (vsftpd's delay_failed_login=0 does not help), pure-ftpd sleeps a few
    # seconds on its own.  Check all three at once.
    servers = [make_ftp_server(kind) for kind in ALL_KINDS]

    def bad_login(server: FTPServer) -> str:
        ftp = connect(server, login=False)
        try:
            ftp.login(server.user, "wrong-password")
        except ftplib.error_perm as exc:
            return str(exc)
        finally:
            ftp.close()
        return "logged in?!"

    with concurrent.futures.ThreadPoolExecutor(len(servers)) as pool:
        replies = list(pool.map(bad_login, servers))
    assert all(r.startswith("530") for r in replies), replies


@pytest.mark.parametrize(
    "tls_max", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_tls_roundtrip(
    make_ftp_server: Callable[..., FTPServer], kind: str, tls_max: ssl.TLSVersion
) -> None:
    # vsftpd included: ReuseSessionFTP_TLS satisfies require_ssl_reuse=YES on 1.2 and 1.3
    server = make_ftp_server(kind, tls=True, tls_control_required=True, tls_data_required=True)
    assert server.tls and server.ca_file is not None and server.ca_file.is_file()
    ftp = connect(server, tls_max=tls_max)
    try:
        assert isinstance(ftp.sock, ssl.SSLSocket)
        expected = "TLSv1.3" if tls_max is ssl.TLSVersion.TLSv1_3 else "TLSv1.2"
        assert ftp.sock.version() == expected
        roundtrip(server, ftp)
    finally:
        ftp.quit()


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_tls_required_refuses_plain_login(
    make_ftp_server: Callable[..., FTPServer], kind: str
) -> None:
    server = make_ftp_server(kind, tls=True, tls_control_required=True)
    ftp = ftplib.FTP(timeout=10)
    try:
        try:
            ftp.connect(server.host, server.port)
        except ftplib.error_temp:  # pure-ftpd -Y 2 may refuse cleartext at once
            return
        with pytest.raises((ftplib.error_perm, ftplib.error_temp)) as exc:
            ftp.login(server.user, server.password)
        assert str(exc.value)[:3] in ("530", "550", "421", "534")
    finally:
        ftp.close()


def test_vsftpd_tls_login_prot_p_list(make_vsftpd: Callable[..., FTPServer]) -> None:
    server = make_vsftpd(tls=True, tls_control_required=True, tls_data_required=True)
    (server.root / "seed.txt").write_bytes(b"seed\n")  # root-owned but world-readable
    ftp = connect(server)  # AUTH TLS, login, PBSZ 0 + PROT P
    try:
        assert isinstance(ftp.sock, ssl.SSLSocket)
        lines: list[str] = []
        ftp.retrlines("LIST", lines.append)
        assert any("seed.txt" in ln for ln in lines)
        buf = bytearray()
        ftp.retrbinary("RETR seed.txt", buf.extend)
        assert bytes(buf) == b"seed\n"
    finally:
        ftp.quit()


def test_vsftpd_tls_requires_session_reuse(make_vsftpd: Callable[..., FTPServer]) -> None:
    """Stdlib FTP_TLS does not reuse the TLS session on data connections: vsftpd says 522."""
    server = make_vsftpd(tls=True)
    assert server.ca_file is not None
    ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=str(server.ca_file)), timeout=10)
    try:
        ftp.connect(server.host, server.port)
        ftp.auth()
        ftp.login(server.user, server.password)
        ftp.prot_p()
        with pytest.raises(ftplib.error_perm, match="^522.*session reuse required"):
            ftp.nlst()
    finally:
        ftp.close()


# --------------------------------------------------------------------------
# session caps answer 421
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("vsftpd", {"max_per_ip": 3}),
        ("pure-ftpd", {"max_per_ip": 3}),
        ("pyftpdlib", {"max_cons_per_ip": 3}),
    ],
)
def test_per_ip_cap_answers_421(
    make_ftp_server: Callable[..., FTPServer], kind: str, options: dict[str, int]
) -> None:
    server = make_ftp_server(kind, **options)
    assert server.max_cons_per_ip == 3
    clients = [connect(server) for _ in range(3)]
    try:
        assert server.wait_connections(3) == 3
        extra = ftplib.FTP(timeout=10)
        try:
            # vsftpd and pyftpdlib refuse in the greeting; pure-ftpd after USER/PASS
            with pytest.raises(ftplib.error_temp, match="^421"):
                extra.connect(server.host, server.port)
                extra.login(server.user, server.password)
        finally:
            extra.close()
        clients.pop().quit()
        assert server.wait_connections(2) == 2
        # a freed slot is usable again (the server notices the close asynchronously)
        assert wait_until(lambda: _can_login(server), timeout=5)
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("kind", ["vsftpd", "pure-ftpd"])
def test_more_than_50_sessions_from_one_ip(
    make_ftp_server: Callable[..., FTPServer], kind: str
) -> None:
    # vsftpd's compiled-in max_per_ip is 50 and pure-ftpd's -c/-C default to 50;
    # the fixtures lift both (vsftpd max_per_ip=0, pure-ftpd -c/-C 100).
    server = make_ftp_server(kind)
    clients: list[ftplib.FTP] = []
    try:
        for _ in range(60):
            clients.append(connect(server))
        assert server.wait_connections(60) == 60
    finally:
        for c in clients:
            c.close()
    assert server.wait_connections(0) == 0


def _can_login(server: FTPServer) -> bool:
    try:
        ftp = connect(server)
    except ftplib.error_temp:
        return False
    ftp.quit()
    return True


# --------------------------------------------------------------------------
# server-side connection counts
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_connection_count_and_peak(make_ftp_server: Callable[..., FTPServer], kind: str) -> None:
    server = make_ftp_server(kind)
    assert server.connection_count() == 0
    with server.track_connections() as tracker:
        clients = [connect(server) for _ in range(5)]
        try:
            assert server.wait_connections(5) == 5
            assert server.peak_connections() >= 5
            # the kernel's view agrees for every kind (netlink and /proc paths)
            assert count_established(server.port) == 5
            assert count_established_proc(server.port) == 5
        finally:
            for c in clients:
                c.quit()
        assert server.wait_connections(0) == 0
    assert tracker.peak == 5
    assert server.peak_connections() == 5
    server.reset_peak()
    assert server.peak_connections() == 0


def test_pyftpd_counter_is_exact(make_pyftpd: Callable[..., FTPServer]) -> None:
    server = make_pyftpd(max_cons_per_ip=2)
    counter = server.counter
    a, b = connect(server), connect(server)
    with pytest.raises(ftplib.error_temp, match="^421"):
        connect(server)
    a.quit()
    b.quit()
    assert server.wait_connections(0) == 0
    assert server.peak_connections() == 2
    assert counter.total() == 2  # type: ignore[union-attr]
    assert counter.refused() == 1  # type: ignore[union-attr]


def test_connection_sampler_sees_peak() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with ConnectionSampler(port, interval=0.002) as sampler:
            conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
            accepted = [listener.accept()[0] for _ in range(3)]
            assert wait_until(lambda: sampler.peak == 3, timeout=2)
            for s in conns + accepted:
                s.close()
            assert wait_until(lambda: sampler.last == 0, timeout=2)
        assert sampler.peak == 3
    assert not any(t.name.startswith("conn-sampler") for t in threading.enumerate())


def test_a_slow_sample_does_not_stretch_the_next_wait() -> None:
    """A sample that waited (for a core, the GIL) is not CPU spent: sampling goes on at once.

    Measured in wall time, one 0.3 s sample put the next 0.9 s later, so a
    count that lasted 0.6 s was never seen: how the 500-borrower pool test
    once saw a peak of 0.
    """
    value = 0
    calls = 0
    slow_done = threading.Event()

    def counter() -> int:
        nonlocal calls
        calls += 1
        result = value
        if calls == 2:  # the sampling thread's first sample (start() takes one itself)
            time.sleep(0.3)
            slow_done.set()
        return result

    with ConnectionSampler(counter=counter, interval=0.005) as sampler:
        assert slow_done.wait(5)
        value = 3
        seen = wait_until(lambda: sampler.peak == 3, timeout=0.6)
        value = 0
    assert seen


@pytest.mark.parametrize("kind", ["vsftpd", "pure-ftpd", "proftpd"])
def test_a_count_waited_for_is_in_every_tracker(
    make_ftp_server: Callable[..., FTPServer], kind: str
) -> None:
    """Whatever the sampling threads saw, the count ``wait_connections`` saw is in the peaks."""
    server = make_ftp_server(kind)
    with server.track_connections() as tracker:
        clients = [connect(server, login=False) for _ in range(3)]
        try:
            assert server.wait_connections(3) == 3
            assert tracker.peak >= 3  # fed by wait_connections, not by the sampling thread
        finally:
            for c in clients:
                c.close()
        assert server.wait_connections(0) == 0
    assert tracker.peak == 3


def test_counting_proxy_counts_every_connection(pyftpd_server: FTPServer) -> None:
    """Through the proxy a real session works, and even a connection of no time is counted."""
    with counted(pyftpd_server) as server:
        assert server.port != pyftpd_server.port
        with server.track_connections() as tracker:
            for _ in range(20):  # open and close at once: a sampler would see few of these
                socket.create_connection(server.address).close()
            ftp = connect(server)
            ftp.storbinary("STOR proxied.bin", io.BytesIO(PAYLOAD))
            got = io.BytesIO()
            ftp.retrbinary("RETR proxied.bin", got.write)
            assert got.getvalue() == PAYLOAD
            assert server.connection_count() == 1
            ftp.quit()
            assert server.wait_connections(0) == 0
        assert server.counter.total() == 21  # type: ignore[union-attr]
        assert 1 <= tracker.peak <= 2  # an instant connection may overlap the next one's accept
        # the server saw as many sessions as the proxy accepted
        assert pyftpd_server.wait_connections(0) == 0
        assert pyftpd_server.counter.total() == 21  # type: ignore[union-attr]
    assert not any(t.name.startswith("counting-proxy") for t in threading.enumerate())


def test_counting_proxy_peak_of_concurrent_connections() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as upstream,
        CountingProxy(upstream.getsockname()) as proxy,
    ):
        clients = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(5)]
        accepted = [upstream.accept()[0] for _ in range(5)]
        accepted[0].sendall(b"hello")
        assert clients[0].recv(5) == b"hello"
        assert proxy.counter.current() == 5
        for s in clients + accepted:
            s.close()
        assert wait_until(lambda: proxy.counter.current() == 0, timeout=5)
        assert (proxy.counter.peak(), proxy.counter.total()) == (5, 5)


# --------------------------------------------------------------------------
# pyftpdlib lifecycle and fault injection
# --------------------------------------------------------------------------
def test_pyftpd_stops_cleanly(ftp_root: Path, tls_certs) -> None:  # type: ignore[no-untyped-def]
    before = set(threading.enumerate())
    server = PyFTPD(ftp_root, tls=True, certs=tls_certs).start()
    info = server.info()
    ftp = connect(info)
    try:
        ftp.voidcmd("NOOP")
    finally:
        server.stop()  # with a client still connected
    assert set(threading.enumerate()) <= before
    with pytest.raises((EOFError, OSError)):
        ftp.voidcmd("NOOP")
    ftp.close()
    # the port is free again
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", info.port))


def _transfer(ftp: ftplib.FTP, direction: str, received: bytearray) -> None:
    """Download big.bin into ``received``, or upload 10 MB (more than socket buffers hold)."""
    if direction == "download":
        ftp.retrbinary("RETR big.bin", received.extend)
    else:
        ftp.storbinary("STOR new.bin", io.BytesIO(PAYLOAD * 50))


@pytest.mark.parametrize("direction", ["download", "upload"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_fault_drop_control_mid_transfer(
    make_pyftpd: Callable[..., FTPServer], tls: bool, direction: str
) -> None:
    server = make_pyftpd(
        tls=tls,
        handler_class=DropControlMidTransferHandler,
        handler_attrs={"drop_after_bytes": 32 * 1024},
    )
    (server.root / "big.bin").write_bytes(PAYLOAD)
    ftp = connect(server)
    try:
        assert "big.bin" in names(ftp)  # listings are not affected
        received = bytearray()
        with pytest.raises((EOFError, OSError, ftplib.Error)):
            _transfer(ftp, direction, received)
        assert len(received) < len(PAYLOAD)
    finally:
        ftp.close()
    assert server.impl.handler.pooler_dropped == 1  # type: ignore[attr-defined]
    assert server.wait_connections(0) == 0


@pytest.mark.parametrize("direction", ["download", "upload"])
def test_fault_stall_data(make_pyftpd: Callable[..., FTPServer], direction: str) -> None:
    server = make_pyftpd(
        handler_class=StallDataHandler, handler_attrs={"stall_after_bytes": 100_000}
    )
    (server.root / "big.bin").write_bytes(PAYLOAD)
    ftp = ftplib.FTP(timeout=0.5)
    ftp.connect(server.host, server.port)
    ftp.login(server.user, server.password)
    try:
        received = bytearray()
        with pytest.raises(TimeoutError):
            _transfer(ftp, direction, received)
        assert server.impl.handler.pooler_stalled == 1  # type: ignore[attr-defined]
        if direction == "download":
            assert len(received) == 100_000  # exactly stall_after_bytes were sent
        else:
            assert 100_000 <= (server.root / "new.bin").stat().st_size < 200_000
        assert server.connection_count() == 1  # the control connection is still open
    finally:
        ftp.close()


# --------------------------------------------------------------------------
# Kafka (Tansu)
# --------------------------------------------------------------------------
def test_kafka_broker_produce_consume(kafka_broker) -> None:  # type: ignore[no-untyped-def]
    from kafka import KafkaConsumer, KafkaProducer  # type: ignore[import-untyped]

    from servers.kafka import unique_name

    topic = kafka_broker.create_topic(unique_name("smoke"), partitions=4)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        for i in range(20):
            producer.send(topic, key=str(i).encode(), value=f"msg-{i}".encode())
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_broker.bootstrap_servers,
        group_id=unique_name("smoke-group"),
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        auto_offset_reset="earliest",
        consumer_timeout_ms=15_000,
    )
    try:
        seen: set[bytes] = set()
        for record in consumer:
            seen.add(record.value)
            if len(seen) == 20:
                break
        assert seen == {f"msg-{i}".encode() for i in range(20)}
        assert len(consumer.assignment()) == 4
    finally:
        consumer.close()
