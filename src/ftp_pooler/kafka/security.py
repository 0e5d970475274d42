"""Kafka client security checked at start-up: the TLS files, the brokers' TLS, the token file.

kafka-python reports a CA that does not sign the broker's certificate, a
client certificate the broker refuses or an unreadable key only as a log line
per attempt and, after its 30 s bootstrap timeout, ``Unable to bootstrap``.
``worker`` and ``submit`` therefore check first, and fail with one line that
names the setting to fix (INVALID_CONFIG, exit status 2):

1. :func:`tls_context`: the CA, certificate and key files load, the password
   decrypts the key, the key belongs to the certificate. The context is built
   the way kafka-python builds its own (``kafka/net/transport.py``,
   ``KafkaSSLTransport._build_ssl_context``: TLS 1.2 or later, the CA file or
   else the system's CAs, ``check_hostname``), from the same files; the
   clients still get the file names, not this context, so they load the files
   again on each connection and pick up renewed certificates.
2. :func:`probe_tls`: a TLS handshake with the first bootstrap server that
   answers, then one ApiVersions request (which Kafka answers before any SASL
   step, KIP-35), because a broker refuses a client certificate only after the
   client's side of the TLS 1.3 handshake is done. :func:`judge` turns what
   went wrong into the setting to blame. A broker that cannot be reached says
   nothing about the settings: the Kafka clients then wait and report it as
   they always do.
3. The OAUTHBEARER token file is read once (:class:`~ftp_pooler.kafka.oauth.TokenFile`).
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ftp_pooler.config import ConfigError

if TYPE_CHECKING:
    from ftp_pooler.config import KafkaSettings

PROBE_TIMEOUT_SECONDS = 5.0
"""Connect, handshake and ApiVersions round trip, per bootstrap server."""

_HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH (OpenSSL x509_vfy.h)
_PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
_PEM_ENCRYPTED_KEY = ("-----BEGIN ENCRYPTED PRIVATE KEY-----", "Proc-Type: 4,ENCRYPTED")


def _error(setting: str, message: str) -> ConfigError:
    return ConfigError(f"kafka.{setting}: {message}")


def _pem_text(setting: str, path: Path) -> str:
    """The text of a PEM file, for telling what it holds (never quoted in errors).

    Latin-1 decodes any byte: PEM markers are ASCII, and a CA bundle's comments may not be.
    """
    try:
        return path.read_text(encoding="latin-1")
    except FileNotFoundError:
        raise _error(setting, f"no such file: {path}") from None
    except OSError as exc:
        raise _error(setting, f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def tls_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """The client TLS context of ``kafka`` (SSL and SASL_SSL), as kafka-python would build it.

    Raises:
        ConfigError: A file is missing or unreadable, holds no certificate or
            key, the key is encrypted and ``ssl_password`` does not decrypt it,
            or the key does not belong to the certificate; the message names
            the setting (``kafka.ssl_cafile: ...``).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_cafile is None:
        context.load_default_certs()
    else:
        _pem_text("ssl_cafile", kafka.ssl_cafile)
        try:
            context.load_verify_locations(cafile=str(kafka.ssl_cafile))
        except ssl.SSLError:
            raise _error("ssl_cafile", f"no PEM CA certificate in {kafka.ssl_cafile}") from None
    if kafka.ssl_certfile is None or kafka.ssl_keyfile is None:
        return context
    if _PEM_CERTIFICATE not in _pem_text("ssl_certfile", kafka.ssl_certfile):
        raise _error("ssl_certfile", f"no PEM certificate in {kafka.ssl_certfile}")
    key_text = _pem_text("ssl_keyfile", kafka.ssl_keyfile)
    if "PRIVATE KEY-----" not in key_text:
        raise _error("ssl_keyfile", f"no PEM private key in {kafka.ssl_keyfile}")
    encrypted = any(marker in key_text for marker in _PEM_ENCRYPTED_KEY)
    if encrypted and kafka.ssl_password is None:
        raise _error("ssl_password", f"not set, and {kafka.ssl_keyfile} is encrypted")
    password = kafka.ssl_password.get_secret_value() if kafka.ssl_password else None
    try:
        context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile), password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise _error(
                "ssl_keyfile", f"{kafka.ssl_keyfile} is not the key of ssl_certfile's certificate"
            ) from None
        if encrypted:
            raise _error("ssl_password", f"does not decrypt {kafka.ssl_keyfile}") from None
        raise _error(
            "ssl_certfile", f"cannot load {kafka.ssl_certfile} with its key: {exc.reason or exc}"
        ) from None
    return context


@dataclass(frozen=True)
class ProbeFailure:
    """How a probe of one broker went wrong: ``error`` during ``stage``."""

    server: str
    """``host:port`` as in ``bootstrap_servers``."""
    stage: str
    """``"connect"``, ``"handshake"`` or ``"session"`` (after the handshake)."""
    error: BaseException


def judge(failure: ProbeFailure, kafka: KafkaSettings) -> ConfigError | None:
    """The setting to blame for a failed probe, or None when it says nothing about the settings.

    - certificate verification failed in the handshake: ``ssl_cafile`` (or
      ``ssl_check_hostname`` for a name mismatch, OpenSSL's error 62);
    - a TLS alert about our certificate (in the handshake with TLS 1.2, after
      it with TLS 1.3), or the broker closing right after the handshake: it
      refused the client certificate (or its absence), ``ssl_certfile``. An
      ApiVersions request is valid for every broker, so nothing else makes a
      broker close there;
    - a plaintext answer to the ClientHello: ``security_protocol``;
    - a refused or timed-out connection, or a timeout in the handshake (as when
      a Kafka listener is not TLS at all: it waits for the rest of a "request"
      the size of a ClientHello): None.
    """
    error, where = failure.error, f"the broker at {failure.server}"
    if failure.stage == "handshake" and isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message
        if error.verify_code == _HOSTNAME_MISMATCH:
            return _error(
                "ssl_check_hostname",
                f"the certificate of {where} is not for that host ({reason}); connect by a name"
                " the certificate holds (bootstrap_servers, the broker's advertised listeners)",
            )
        trusted = f"the CAs in {kafka.ssl_cafile}" if kafka.ssl_cafile else "the system's CAs"
        return _error("ssl_cafile", f"{trusted} do not verify the certificate of {where}: {reason}")
    refused = failure.stage == "session" and isinstance(error, (OSError, EOFError))
    if isinstance(error, ssl.SSLError) and failure.stage in ("handshake", "session"):
        # TLS 1.2 brokers refuse a client certificate within the handshake, TLS 1.3 ones after.
        refused = refused or _refuses_client_certificate(error.reason)
        if not refused and error.reason == "WRONG_VERSION_NUMBER":
            return _error("security_protocol", f"{where} does not speak TLS on that port")
    if refused and not isinstance(error, TimeoutError):
        reason = getattr(error, "reason", None) or "closed the connection"
        presented = (
            f"the client certificate in {kafka.ssl_certfile}"
            if kafka.ssl_certfile
            else "no client certificate (ssl_certfile is not set)"
        )
        return _error(
            "ssl_certfile", f"{where} refused the TLS session ({reason}); it got {presented}"
        )
    return None


def _refuses_client_certificate(reason: str | None) -> bool:
    """Whether an OpenSSL alert reason is a peer's verdict on our certificate (RFC 8446 6.2)."""
    if not reason or "ALERT" not in reason:
        return False
    return "CERTIFICATE" in reason or "UNKNOWN_CA" in reason


def _api_versions_request() -> bytes:
    """ApiVersions v0 with request header v1 and client id ``ftp-pooler-probe`` (Kafka protocol)."""
    client_id = b"ftp-pooler-probe"
    header = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    return struct.pack(">i", len(header)) + header


def _split_server(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)


def probe_tls(
    server: str, context: ssl.SSLContext, timeout: float = PROBE_TIMEOUT_SECONDS
) -> ProbeFailure | None:
    """One TLS session with ``server`` (``host:port``) and one ApiVersions round trip.

    Returns:
        None when the broker answered, else where and how it failed.
    """
    stage = "connect"
    try:
        host, port = _split_server(server)
        with socket.create_connection((host, port), timeout=timeout) as raw:
            stage = "handshake"
            with context.wrap_socket(raw, server_hostname=host) as tls:
                stage = "session"
                tls.sendall(_api_versions_request())
                if len(tls.recv(4)) == 0:
                    raise EOFError("closed the connection")
    except (OSError, ValueError, EOFError) as error:
        return ProbeFailure(server, stage, error)
    return None


def check_kafka_security(kafka: KafkaSettings, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Everything above, for ``worker`` and ``submit`` before they start their Kafka clients.

    Raises:
        ConfigError: A setting that cannot work, named in the message.
    """
    if kafka.sasl_oauth_token_file is not None:
        from ftp_pooler.kafka.oauth import TokenFile, TokenFileError

        try:
            TokenFile(kafka.sasl_oauth_token_file).token()
        except TokenFileError as exc:
            raise _error("sasl_oauth_token_file", str(exc)) from None
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return
    context = tls_context(kafka)
    for server in kafka.bootstrap_servers:
        failure = probe_tls(server, context, timeout)
        if failure is None:
            return
        verdict = judge(failure, kafka)
        if verdict is not None:
            raise verdict
