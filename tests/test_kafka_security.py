"""Secured Kafka: settings, the OAUTHBEARER token file, TLS files, and the worker over mTLS.

The broker tests run against Tansu behind stunnel, which demands a client
certificate of the test CA (servers/kafka_tls.py says why not Tansu's own TLS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import trustme
from kafka.net.sasl.oauth import SaslMechanismOAuth

from ftp_pooler.config import ConfigError, KafkaSettings, Settings, load_settings
from ftp_pooler.kafka.clients import consumer_config, producer_config
from ftp_pooler.kafka.oauth import TokenFile, TokenFileError
from ftp_pooler.kafka.security import ProbeFailure, check_kafka_security, judge, tls_context
from servers import FTPServer
from servers.kafka_tls import CertFiles, TLSKafkaBroker, TLSTansuBroker, issue_cert
from test_worker import Worker

SECRET = "key-password-3f1c9a"


def settings(**kafka: Any) -> Settings:
    return Settings(kafka=KafkaSettings(**kafka))


# -- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"SSL_CERTFILE": "c.pem"}, "ssl_certfile is only used with security_protocol SSL"),
        ({"SSL_CAFILE": "ca.pem"}, "ssl_cafile is only used with security_protocol SSL"),
        ({"SSL_CHECK_HOSTNAME": "false"}, "ssl_check_hostname is only used with"),
        ({"SASL_MECHANISM": "PLAIN"}, "sasl_mechanism is only used with security_protocol SASL_"),
        (
            {"SECURITY_PROTOCOL": "SSL", "SSL_CERTFILE": "c.pem"},
            "ssl_certfile needs ssl_keyfile",
        ),
        ({"SECURITY_PROTOCOL": "SSL", "SSL_KEYFILE": "k.pem"}, "ssl_keyfile needs ssl_certfile"),
        ({"SECURITY_PROTOCOL": "SSL", "SSL_PASSWORD": SECRET}, "ssl_password needs ssl_keyfile"),
        (
            {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "OAUTHBEARER"},
            "sasl_mechanism OAUTHBEARER needs sasl_oauth_token_file",
        ),
        (
            {
                "SECURITY_PROTOCOL": "SASL_SSL",
                "SASL_MECHANISM": "OAUTHBEARER",
                "SASL_OAUTH_TOKEN_FILE": "t",
                "SASL_USERNAME": "u",
            },
            "sasl_username is not used with sasl_mechanism OAUTHBEARER",
        ),
        (
            {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "PLAIN", "SASL_USERNAME": "u"},
            "sasl_mechanism PLAIN needs sasl_password",
        ),
        (
            {
                "SECURITY_PROTOCOL": "SASL_SSL",
                "SASL_MECHANISM": "SCRAM-SHA-512",
                "SASL_USERNAME": "u",
                "SASL_PASSWORD": SECRET,
                "SASL_OAUTH_TOKEN_FILE": "t",
            },
            "sasl_oauth_token_file is only used with sasl_mechanism OAUTHBEARER",
        ),
    ],
)
def test_inconsistent_security_settings_are_one_line_naming_the_setting(
    environ: dict[str, str], expected: str
) -> None:
    variables = {f"FTP_POOLER__KAFKA__{key}": value for key, value in environ.items()}
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=variables)
    message = caught.value.message
    assert message.startswith(f"settings: kafka: {expected}"), message
    assert SECRET not in message


def test_tls_settings_map_to_kafka_python_keywords_and_the_password_stays_hidden() -> None:
    tls = settings(
        security_protocol="SSL",
        ssl_cafile="/run/ca.crt",
        ssl_certfile="/run/user.crt",
        ssl_keyfile="/run/user.key",
        ssl_password=SECRET,
        ssl_check_hostname=False,
    )
    expected = {
        "security_protocol": "SSL",
        "ssl_check_hostname": False,
        "ssl_cafile": "/run/ca.crt",
        "ssl_certfile": "/run/user.crt",
        "ssl_keyfile": "/run/user.key",
        "ssl_password": SECRET,
    }
    for config in (consumer_config(tls), producer_config(tls)):
        assert {key: config[key] for key in expected} == expected
    for text in (repr(tls), str(tls), json.dumps(tls.model_dump(mode="json"))):
        assert SECRET not in text
    plain = consumer_config(settings())
    assert not any(key.startswith(("ssl_", "sasl_")) for key in plain)


def test_oauthbearer_maps_to_a_token_file_provider(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    oauth = settings(
        security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_oauth_token_file=token_file
    )
    config = producer_config(oauth)
    assert config["sasl_mechanism"] == "OAUTHBEARER"
    provider = config["sasl_oauth_token_provider"]
    assert isinstance(provider, TokenFile) and provider.path == token_file
    assert "sasl_plain_username" not in config and "sasl_plain_password" not in config


# -- the token file -------------------------------------------------------------------


def auth_bytes(provider: TokenFile) -> bytes:
    """What kafka-python's OAUTHBEARER mechanism sends (RFC 7628 client initial response)."""
    return bytes(SaslMechanismOAuth(sasl_oauth_token_provider=provider).auth_bytes())


def test_token_is_read_again_when_the_file_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("token-one\n")
    provider = TokenFile(path)
    assert auth_bytes(provider) == b"n,,\x01auth=Bearer token-one\x01\x01"
    # Same inode, same size, mtime put back: the file looks unchanged, so the cached token stays.
    before = path.stat()
    path.write_text("token-two\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert provider.token() == "token-one"
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert provider.token() == "token-two"


def test_token_follows_a_kubernetes_symlink_swap(tmp_path: Path) -> None:
    """The kubelet's atomic writer: files in ``..<timestamp>/``, ``..data`` -> it, renamed over."""
    mount = tmp_path / "tokens"
    mount.mkdir()
    for version, token in (("..v1", "first.jwt"), ("..v2", "second.jwt")):
        (mount / version).mkdir()
        (mount / version / "token").write_text(token)
    (mount / "..data").symlink_to("..v1")
    (mount / "token").symlink_to("..data/token")
    provider = TokenFile(mount / "token")
    assert provider.token() == "first.jwt"
    (mount / "..data_tmp").symlink_to("..v2")
    os.rename(mount / "..data_tmp", mount / "..data")
    assert provider.token() == "second.jwt"
    assert "jwt" not in repr(provider)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "No such file"), ("\n", "is empty"), ("two tokens\n", "more than one word")],
)
def test_unusable_token_file_is_an_error(tmp_path: Path, content: str | None, reason: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TokenFileError, match=reason):
        TokenFile(path).token()


def test_an_unreadable_token_file_stops_the_start_naming_the_setting(tmp_path: Path) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauth_token_file=tmp_path / "token",
    )
    with pytest.raises(ConfigError) as caught:
        check_kafka_security(kafka)
    assert caught.value.message == (
        f"kafka.sasl_oauth_token_file: {tmp_path / 'token'}: No such file or directory"
    )
    (tmp_path / "token").write_text("header.payload.signature\n")
    check_kafka_security(kafka)


# -- TLS files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    directory = tmp_path_factory.mktemp("ca")
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(directory / "ca.crt"))
    return authority, directory


def tls(ca_file: Path, client: CertFiles | None = None, **extra: Any) -> KafkaSettings:
    files = {"ssl_certfile": client.cert_file, "ssl_keyfile": client.key_file} if client else {}
    return KafkaSettings(security_protocol="SSL", ssl_cafile=ca_file, **files, **extra)


def test_tls_files_that_load_give_a_context(ca: tuple[trustme.CA, Path]) -> None:
    authority, directory = ca
    plain = issue_cert(authority, directory, "plain-client")
    locked = issue_cert(authority, directory, "locked-client", password=SECRET.encode())
    assert tls_context(tls(directory / "ca.crt", plain)).verify_mode.name == "CERT_REQUIRED"
    tls_context(tls(directory / "ca.crt", locked, ssl_password=SECRET))


def test_tls_file_problems_name_the_setting(ca: tuple[trustme.CA, Path], tmp_path: Path) -> None:
    authority, directory = ca
    ca_file = directory / "ca.crt"
    good = issue_cert(authority, directory, "good")
    other = issue_cert(authority, directory, "other")
    locked = issue_cert(authority, directory, "locked", password=SECRET.encode())
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not pem\n")
    cases: list[tuple[KafkaSettings, str]] = [
        (tls(tmp_path / "none.crt"), f"kafka.ssl_cafile: no such file: {tmp_path / 'none.crt'}"),
        (tls(garbage), "kafka.ssl_cafile: no PEM CA certificate in"),
        (tls(ca_file, CertFiles(garbage, good.key_file)), "kafka.ssl_certfile: no PEM certificate"),
        (tls(ca_file, CertFiles(good.cert_file, garbage)), "kafka.ssl_keyfile: no PEM private key"),
        (
            tls(ca_file, CertFiles(good.cert_file, other.key_file)),
            f"kafka.ssl_keyfile: {other.key_file} is not the key of ssl_certfile's certificate",
        ),
        (tls(ca_file, locked), f"kafka.ssl_password: not set, and {locked.key_file} is encrypted"),
        (
            tls(ca_file, locked, ssl_password="wrong"),
            f"kafka.ssl_password: does not decrypt {locked.key_file}",
        ),
    ]
    for kafka, expected in cases:
        with pytest.raises(ConfigError) as caught:
            tls_context(kafka)
        assert caught.value.message.startswith(expected), (expected, caught.value.message)


def test_unreachable_brokers_are_not_blamed_on_the_settings(tmp_path: Path) -> None:
    kafka = KafkaSettings(security_protocol="SSL")
    for stage, error in (
        ("connect", ConnectionRefusedError(111, "Connection refused")),
        ("handshake", TimeoutError("timed out")),
        ("session", TimeoutError("timed out")),
    ):
        assert judge(ProbeFailure("127.0.0.1:9093", stage, error), kafka) is None


# -- against the broker over mTLS -------------------------------------------------------


def run_cli(*args: str, env: dict[str, str], stdin: bytes = b"", timeout: float = 60) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "ftp_pooler.cli", *args],
        env=env, input=stdin, capture_output=True, timeout=timeout, check=False,
    )  # fmt: skip


def base_env(tmp_path: Path, broker: TLSKafkaBroker, **kafka: str) -> dict[str, str]:
    """The worker's environment: this broker over TLS, a local-only connections file."""
    connections = tmp_path / "connections.ini"
    if not connections.exists():
        connections.write_text(f"[local]\ntype = local\nbase_path = {tmp_path}\n")
    return {
        **os.environ,
        "FTP_POOLER_CONNECTIONS": str(connections),
        "FTP_POOLER_CONFIG": "",
        **broker.settings_env(),
        "FTP_POOLER__KAFKA__SESSION_TIMEOUT_MS": "2000",
        "FTP_POOLER__KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "FTP_POOLER__KAFKA__COMMIT_INTERVAL_SECONDS": "0.5",
        "FTP_POOLER__API__HOST": "127.0.0.1",
        "FTP_POOLER__API__PORT": "0",
        "FTP_POOLER__LOGGING__LEVEL": "WARNING",
        **{f"FTP_POOLER__KAFKA__{key.upper()}": value for key, value in kafka.items()},
    }


def test_worker_and_submit_over_mtls_with_an_encrypted_key(
    kafka_tls_broker: TLSKafkaBroker, pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "input_topic": kafka_tls_broker.create_topic(f"tasks-{suffix}", 2),
        "result_topic": kafka_tls_broker.create_topic(f"results-{suffix}"),
        "fail_topic": kafka_tls_broker.create_topic(f"failures-{suffix}"),
        "consumer_group": f"workers-{suffix}",
    }
    client = issue_cert(
        kafka_tls_broker.process.ca, tmp_path, "worker-locked", password=SECRET.encode()
    )
    env = base_env(
        tmp_path, kafka_tls_broker, **topics, ssl_certfile=str(client.cert_file),
        ssl_keyfile=str(client.key_file), ssl_password=SECRET,
    )  # fmt: skip
    local = tmp_path / "local"
    local.mkdir()
    (tmp_path / "connections.ini").write_text(
        f"[ftp]\ntype = ftp\nhost = {pyftpd_server.host}\nport = {pyftpd_server.port}\n"
        f"user = {pyftpd_server.user}\npass = {pyftpd_server.password}\n\n"
        f"[local]\ntype = local\nbase_path = {local}\n"
    )
    (ftp_root / "src").mkdir()
    names = [f"f{index}.bin" for index in range(10)]
    for name in names:
        (ftp_root / "src" / name).write_bytes(name.encode() * 100)
    tasks = b"".join(
        json.dumps({"task_id": name, "src_id": "ftp", "src_path": f"/src/{name}",
                    "dst_id": "local", "dst_path": name}).encode() + b"\n"
        for name in names
    )  # fmt: skip
    worker = Worker(tmp_path, env, "worker")
    try:
        worker.wait_ready()
        done = run_cli("submit", "-", "--results", "--timeout", "60", env=env, stdin=tasks)
        assert done.returncode == 0, done.stderr.decode()
        assert b"submitted 10 tasks; 10 results, 0 failed" in done.stderr
        results = [json.loads(line) for line in done.stdout.splitlines()]
        assert sorted(r["task_id"] for r in results) == names
        for name in names:
            assert (local / name).read_bytes() == name.encode() * 100
        assert worker.stop() == 0
    finally:
        worker.kill()
    assert SECRET not in (tmp_path / "worker.log").read_text()


def one_line_error(done: Any, started: float) -> str:
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2, done.stderr.decode()
    assert len(lines) == 1, lines
    assert time.monotonic() - started < 15  # not kafka-python's 30 s bootstrap timeout
    return str(lines[0])


@pytest.mark.parametrize("command", [["worker"], ["submit", "-"]])
def test_a_wrong_ca_is_one_line_naming_ssl_cafile(
    kafka_tls_broker: TLSKafkaBroker, tmp_path: Path, command: list[str]
) -> None:
    other_ca = tmp_path / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    env = base_env(tmp_path, kafka_tls_broker, ssl_cafile=str(other_ca))
    started = time.monotonic()
    line = one_line_error(run_cli(*command, env=env, stdin=b'{"task_id": "x"}\n'), started)
    assert line == (
        f"ftp-pooler: INVALID_CONFIG: kafka.ssl_cafile: the CAs in {other_ca} do not verify the"
        f" certificate of the broker at {kafka_tls_broker.bootstrap_servers}:"
        " self-signed certificate in certificate chain"
    )


def test_a_missing_client_certificate_is_one_line_naming_ssl_certfile(
    kafka_tls_broker: TLSKafkaBroker, tmp_path: Path
) -> None:
    env = base_env(tmp_path, kafka_tls_broker)
    del env["FTP_POOLER__KAFKA__SSL_CERTFILE"], env["FTP_POOLER__KAFKA__SSL_KEYFILE"]
    started = time.monotonic()
    line = one_line_error(run_cli("worker", env=env), started)
    assert line.startswith(
        "ftp-pooler: INVALID_CONFIG: kafka.ssl_certfile: the broker at"
        f" {kafka_tls_broker.bootstrap_servers} refused the TLS session ("
    ), line
    assert line.endswith("it got no client certificate (ssl_certfile is not set)")


def test_a_client_certificate_of_another_ca_is_one_line_naming_ssl_certfile(
    kafka_tls_broker: TLSKafkaBroker, tmp_path: Path
) -> None:
    stranger = issue_cert(trustme.CA(), tmp_path, "stranger")
    env = base_env(
        tmp_path, kafka_tls_broker,
        ssl_certfile=str(stranger.cert_file), ssl_keyfile=str(stranger.key_file),
    )  # fmt: skip
    started = time.monotonic()
    line = one_line_error(run_cli("worker", env=env), started)
    # Under TLS 1.3 the alert (TLSV1_ALERT_UNKNOWN_CA) can lose the race with the close.
    assert line.startswith(
        "ftp-pooler: INVALID_CONFIG: kafka.ssl_certfile: the broker at"
        f" {kafka_tls_broker.bootstrap_servers} refused the TLS session ("
    ), line
    assert line.endswith(f"); it got the client certificate in {stranger.cert_file}"), line


def test_a_wrong_key_password_is_one_line_naming_ssl_password(
    kafka_tls_broker: TLSKafkaBroker, tmp_path: Path
) -> None:
    locked = issue_cert(kafka_tls_broker.process.ca, tmp_path, "locked", password=b"right")
    env = base_env(
        tmp_path, kafka_tls_broker, ssl_certfile=str(locked.cert_file),
        ssl_keyfile=str(locked.key_file), ssl_password=SECRET,
    )  # fmt: skip
    started = time.monotonic()
    line = one_line_error(run_cli("submit", "-", env=env), started)
    assert line == (
        f"ftp-pooler: INVALID_CONFIG: kafka.ssl_password: does not decrypt {locked.key_file}"
    )
    checked = run_cli("check-config", env=env)
    assert checked.returncode == 0, checked.stderr.decode()
    assert SECRET not in checked.stdout.decode()
    assert json.loads(checked.stdout)["settings"]["kafka"]["ssl_password"] == "**********"


def test_a_certificate_for_another_host_is_one_line_naming_ssl_check_hostname(
    kafka_tls_broker: TLSKafkaBroker, tmp_path: Path
) -> None:
    by_name = f"localhost:{kafka_tls_broker.port}"  # the broker's certificate names 127.0.0.1
    env = base_env(tmp_path, kafka_tls_broker, bootstrap_servers=by_name)
    started = time.monotonic()
    line = one_line_error(run_cli("worker", env=env), started)
    assert line.startswith(
        "ftp-pooler: INVALID_CONFIG: kafka.ssl_check_hostname: the certificate of the broker at"
        f" {by_name} is not for that host ("
    ), line


def test_a_refused_client_certificate_under_tls_1_2_names_ssl_certfile(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """TLS 1.2 refuses a client certificate within the handshake (an alert), not after it."""
    with TLSTansuBroker(
        tmp_path_factory.mktemp("tansu-tls12"), require_client_cert=True, tls12_only=True
    ) as tls12:
        broker = tls12.info()
        stranger = issue_cert(trustme.CA(), tmp_path, "stranger")
        kafka = KafkaSettings(
            bootstrap_servers=[broker.bootstrap_servers], security_protocol="SSL",
            ssl_cafile=broker.ca_file, ssl_certfile=stranger.cert_file,
            ssl_keyfile=stranger.key_file,
        )  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            check_kafka_security(kafka)
        assert caught.value.message.startswith(
            f"kafka.ssl_certfile: the broker at {broker.bootstrap_servers} refused the TLS"
            " session (TLSV1_ALERT_UNKNOWN_CA)"
        ), caught.value.message
        assert broker.client is not None
        check_kafka_security(
            kafka.model_copy(
                update={"ssl_certfile": broker.client.cert_file,
                        "ssl_keyfile": broker.client.key_file}
            )
        )  # fmt: skip
