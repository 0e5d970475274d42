"""Settings (YAML plus environment overrides) and connections (rclone-style INI)."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from ftp_pooler import config
from ftp_pooler.config import (
    ConfigError,
    Connections,
    FTPConnection,
    LocalConnection,
    Settings,
    load_connections,
    load_settings,
)
from ftp_pooler.errors import ErrorCode
from ftp_pooler.ftp.config import FTPConfig, Timeouts, TLSMode, UploadTemp

ETC = Path(__file__).resolve().parent.parent / "etc"
SECRET = "s3cr3t-Pa55w0rd"


@pytest.fixture(autouse=True)
def no_system_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read /etc/ftp-pooler, whatever the machine has there."""
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent" / "config.yaml")
    monkeypatch.setattr(config, "DEFAULT_CONNECTIONS_PATH", tmp_path / "absent" / "connections.ini")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(call: Callable[..., object], *args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        call(*args, **kwargs)
    assert caught.value.code is ErrorCode.INVALID_CONFIG
    return caught.value.message


# -- settings ----------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings(environ={"POD_NAME": "pod-1"})
    assert settings.kafka.bootstrap_servers == ["localhost:9092"]
    assert (settings.kafka.consumer_group, settings.kafka.input_topic) == (
        "ftp-pooler",
        "ftp-tasks",
    )
    assert (settings.kafka.result_topic, settings.kafka.fail_topic) == (
        "ftp-results",
        "ftp-failures",
    )
    assert settings.kafka.max_message_bytes == 1_048_576
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.pool.max_sessions_per_pod == 64
    assert settings.pool.max_sessions_per_connection == 8
    assert settings.worker.max_inflight == 64
    assert settings.worker.name == "pod-1"
    assert settings.transfer.temp_suffix == ".part"
    assert (settings.api.host, settings.api.port) == ("0.0.0.0", 8080)
    assert (settings.logging.level, settings.logging.format) == ("INFO", "json")
    assert settings.group_instance_id is None


def test_sample_file_holds_the_defaults() -> None:
    environ = {"POD_NAME": "pod-1"}
    assert load_settings(ETC / "config.yaml", environ) == load_settings(environ=environ)


def test_sample_file_names_every_key() -> None:
    text = (ETC / "config.yaml").read_text(encoding="utf-8")
    for section, field in Settings.model_fields.items():
        assert f"\n{section}:\n" in text
        assert field.annotation is not None
        for key in field.annotation.model_fields:
            assert f"\n  {key}:" in text, f"{section}.{key} missing from etc/config.yaml"


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"POD_NAME": "pod-1", "HOSTNAME": "host-1"}, "pod-1"),
        ({"POD_NAME": "", "HOSTNAME": "host-1"}, "host-1"),
        ({}, "from-socket"),
    ],
)
def test_worker_name_default(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], name: str
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "from-socket")
    assert load_settings(environ=environ).worker.name == name


def test_worker_name_from_file_wins(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "worker:\n  name: explicit\n")
    assert load_settings(path, {"POD_NAME": "pod-1"}).worker.name == "explicit"


def test_yaml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        "kafka:\n  bootstrap_servers: [a:9092, b:9092]\n  input_topic: jobs\n"
        "pool:\n  max_sessions_per_pod: 16\n"
        "logging:\n  level: debug\n  format: console\n"
        "api:\n",
    )
    settings = load_settings(path, {})
    assert settings.kafka.bootstrap_servers == ["a:9092", "b:9092"]
    assert settings.kafka.input_topic == "jobs"
    assert settings.pool.max_sessions_per_pod == 16
    assert settings.pool.max_sessions_per_connection == 8
    assert (settings.logging.level, settings.logging.format) == ("DEBUG", "console")
    assert settings.api.port == 8080


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path / "c.yaml", "# nothing\n"), {}) == load_settings(environ={})


def test_comma_separated_servers_in_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "kafka:\n  bootstrap_servers: 'a:9092, b:9092,'\n")
    assert load_settings(path, {}).kafka.bootstrap_servers == ["a:9092", "b:9092"]


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml", "pool:\n  max_sessions_per_pod: 16\n  noop_after_seconds: 5\n"
    )
    settings = load_settings(
        path,
        {
            "FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": "a:9092,b:9092",
            "FTP_POOLER__POOL__MAX_SESSIONS_PER_POD": "32",
            "FTP_POOLER__TRANSFER__JITTER": "0.5",
            "FTP_POOLER__KAFKA__STATIC_MEMBERSHIP_FROM_POD_NAME": "true",
            "FTP_POOLER__worker__name": "pod-9",
            "FTP_POOLER_CONFIG_UNRELATED": "x",
        },
    )
    assert settings.kafka.bootstrap_servers == ["a:9092", "b:9092"]
    assert settings.pool.max_sessions_per_pod == 32
    assert settings.pool.noop_after_seconds == 5
    assert settings.transfer.jitter == 0.5
    assert settings.worker.name == "pod-9"
    assert settings.group_instance_id == "pod-9"


def test_explicit_group_instance_id_wins() -> None:
    settings = load_settings(
        environ={
            "FTP_POOLER__KAFKA__GROUP_INSTANCE_ID": "member-3",
            "FTP_POOLER__KAFKA__STATIC_MEMBERSHIP_FROM_POD_NAME": "1",
            "POD_NAME": "pod-1",
        }
    )
    assert settings.group_instance_id == "member-3"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "api:\n  port: 9000\n")
    assert load_settings(environ={"FTP_POOLER_CONFIG": str(path)}).api.port == 9000


def test_default_config_path_is_read_when_present(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        config, "DEFAULT_CONFIG_PATH", write(tmp_path / "c.yaml", "api:\n  port: 9001\n")
    )
    assert load_settings(environ={}).api.port == 9001


def test_missing_config_file_named_by_environment_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = config_error(load_settings, environ={"FTP_POOLER_CONFIG": str(path)})
    assert str(path) in message and "No such file" in message


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("kafka:\n  bootstrap_server: x\n", "kafka.bootstrap_server: unknown key"),
        ("kafak:\n  input_topic: x\n", "kafak: unknown key"),
        (
            "pool:\n  max_sessions_per_pod: lots\n",
            "pool.max_sessions_per_pod: Input should be a valid integer",
        ),
        (
            "pool:\n  max_sessions_per_pod: 0\n",
            "pool.max_sessions_per_pod: Input should be greater",
        ),
        (
            "kafka:\n  bootstrap_servers: []\n",
            "kafka.bootstrap_servers: List should have at least 1",
        ),
        ("kafka: 5\n", "kafka: Input should be a valid dictionary"),
        ("logging:\n  level: LOUD\n", "logging.level: Input should be"),
        ("logging:\n  format: xml\n", "logging.format: Input should be 'json' or 'console'"),
        ("transfer:\n  temp_suffix: a/b\n", "transfer.temp_suffix: String should match pattern"),
        (
            "transfer:\n  max_backoff_seconds: 0.1\n",
            "transfer: max_backoff_seconds must be at least",
        ),
        ("kafka:\n  heartbeat_interval_ms: 10000\n", "kafka: heartbeat_interval_ms must be below"),
        (
            "kafka:\n  security_protocol: SASL_SSL\n",
            "kafka: security_protocol SASL_SSL needs sasl_mechanism",
        ),
        ("api:\n  port: 70000\n", "api.port: Input should be less than or equal to 65535"),
        ("- kafka\n", "expected a mapping of sections"),
        ("kafka: [\n", "not valid YAML: line 2"),
    ],
)
def test_settings_errors_name_file_and_key(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = write(tmp_path / "c.yaml", yaml_text)
    message = config_error(load_settings, path, {})
    assert message.startswith(f"{path}: ")
    assert expected in message


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ("kafka:9092", None),
        ("k-1.kafka.svc.cluster.local:9093", None),
        ("10.0.0.1:9092", None),
        ("[::1]:9092", None),
        ("[fe80::1%eth0]:9092", None),
        ("127.0.0.1:abc", "the port must be a number from 1 to 65535"),
        ("h:99999", "the port must be a number from 1 to 65535"),
        ("h:0", "the port must be a number from 1 to 65535"),
        ("h:", "the port must be a number from 1 to 65535"),
        ("h:\u0669", "the port must be a number from 1 to 65535"),  # an Arabic-Indic 9
        ("nohostport", "expected host:port (e.g. kafka:9092)"),
        ("[a:1", "expected host:port, the host a name or an IP address"),
        (":9092", "expected host:port, the host a name or an IP address"),
        ("my host:9092", "expected host:port, the host a name or an IP address"),
        ("::1:9092", "an IPv6 address goes in brackets: [address]:port"),
        ("[nope]:9092", "not an IPv6 address between the brackets"),
        (
            "PLAINTEXT://k:9092",
            "expected host:port, not a URL (security_protocol says SSL or SASL)",
        ),
    ],
)
def test_bootstrap_server_problem(server: str, problem: str | None) -> None:
    assert config.bootstrap_server_problem(server) == problem


def test_a_bad_bootstrap_server_is_named_in_the_error() -> None:
    message = config_error(
        load_settings, environ={"FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": "k:9092,[a:1,b:2]"}
    )
    assert message.startswith(
        "settings: kafka.bootstrap_servers (from FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS): "
    ), message
    assert "'[a:1': expected host:port" in message


def test_bad_override_names_the_variable(tmp_path: Path) -> None:
    message = config_error(load_settings, environ={"FTP_POOLER__POOL__MAX_SESSIONS_PER_POD": "x"})
    assert "pool.max_sessions_per_pod (from FTP_POOLER__POOL__MAX_SESSIONS_PER_POD)" in message


@pytest.mark.parametrize(
    "variable",
    [
        "FTP_POOLER__POOL__NO_SUCH_KEY",
        "FTP_POOLER__NOPE__PORT",
        "FTP_POOLER__POOL",
        "FTP_POOLER__API__PORT__X",
    ],
)
def test_override_of_unknown_setting_is_an_error(variable: str) -> None:
    assert config_error(load_settings, environ={variable: "1"}).startswith(
        f"{variable}: no such setting"
    )


def test_yaml_error_does_not_quote_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", f"kafka:\n  sasl_password: {SECRET}: {{\n")
    assert SECRET not in config_error(load_settings, path, {})


def test_kafka_password_is_secret() -> None:
    settings = load_settings(
        environ={
            "FTP_POOLER__KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "FTP_POOLER__KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "FTP_POOLER__KAFKA__SASL_USERNAME": "pooler",
            "FTP_POOLER__KAFKA__SASL_PASSWORD": SECRET,
        }
    )
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == SECRET
    for text in (repr(settings), str(settings), json.dumps(settings.model_dump(mode="json"))):
        assert SECRET not in text


# -- connections -------------------------------------------------------------------


def connections(tmp_path: Path, ini: str, environ: dict[str, str] | None = None) -> Connections:
    return load_connections(write(tmp_path / "connections.ini", ini), environ or {})


def test_ftp_connection_with_every_key(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    conns = connections(
        tmp_path,
        f"""
[partner]
type = ftp
host = ftp.example
port = 2121
user = transfer
pass = {SECRET}
tls = explicit
ca_file = {ca_file}
verify = false
passive = true
epsv = false
pasv_use_reply_address = yes
connect_timeout = 5
timeout = 7.5
data_stall_timeout = 90
max_sessions = 3
upload_temp = visible
base_path = /outgoing
""",
    )
    assert conns["partner"] == FTPConnection(
        id="partner",
        ftp=FTPConfig(
            host="ftp.example",
            port=2121,
            user="transfer",
            password=SECRET,
            tls=TLSMode.EXPLICIT,
            ca_file=ca_file,
            ca_digest=hashlib.sha256(ca_file.read_bytes()).hexdigest(),
            verify=False,
            epsv=False,
            pasv_use_reply_address=True,
            timeouts=Timeouts(connect=5, reply=7.5, data_stall=90),
            max_sessions=3,
            upload_temp=UploadTemp.VISIBLE,
        ),
        base_path="/outgoing",
    )


@pytest.mark.parametrize("value", ["hidden", "visible", "none", "Visible"])
def test_upload_temp(tmp_path: Path, value: str) -> None:
    conn = connections(tmp_path, f"[a]\ntype = ftp\nhost = h\nupload_temp = {value}\n")["a"]
    assert isinstance(conn, FTPConnection)
    assert conn.ftp.upload_temp is UploadTemp(value.lower())


def test_ftp_defaults(tmp_path: Path) -> None:
    conn = connections(tmp_path, "[a]\ntype = ftp\nhost = h\n")["a"]
    assert conn == FTPConnection(id="a", ftp=FTPConfig(host="h"), base_path="")


def test_local_connection_and_mapping(tmp_path: Path) -> None:
    conns = connections(
        tmp_path, "[local]\ntype = local\nbase_path = /data/storage\n\n[b]\ntype = FTP\nhost = h\n"
    )
    assert conns["local"] == LocalConnection(id="local", base_path=Path("/data/storage"))
    assert list(conns) == ["local", "b"]
    assert len(conns) == 2 and "b" in conns and "c" not in conns
    assert isinstance(conns["b"], FTPConnection)


@pytest.mark.parametrize("ini", ["", "# none yet\n; nor here\n", "\n\n"])
def test_a_file_without_any_connection_is_invalid_config(tmp_path: Path, ini: str) -> None:
    message = config_error(connections, tmp_path, ini)
    assert message.endswith(": no connection defined (a [name] section per connection)")


def test_connections_ini_with_a_utf8_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "connections.ini"
    path.write_bytes(b"\xef\xbb\xbf[local]\ntype = local\nbase_path = /d\n")
    assert list(load_connections(path, {})) == ["local"]


@pytest.mark.parametrize(
    ("ini", "expected"),
    [
        (f"[p]\ntype = ftp\nhost = h\nuser = transfer\n  pass = {SECRET}\n", "[p] user:"),
        (f"[p]\ntype = ftp\nhost = h\npass = x\n\t{SECRET}\n", "[p] pass:"),
        (f"[p]\ntype = ftp\nhost = h\nuser = u\n\n   {SECRET}\n", "[p] user:"),
    ],
)
def test_a_connection_value_with_a_line_break_is_invalid_config(
    tmp_path: Path, ini: str, expected: str
) -> None:
    """An indented line continues the value above it (INI): refused, value never shown."""
    message = config_error(connections, tmp_path, ini)
    assert expected in message and "several lines" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("ini", "expected"),
    [
        ("[ a ]\ntype = local\nbase_path = /d\n", "[ a ]: spaces around the connection name"),
        (f"[{'n' * 257}]\ntype = local\nbase_path = /d\n", "over 256 characters"),
        ("[a]\ntype = ftp\nhost = h:21\n", "[a] host: a host name or address only: the port"),
        ("[a]\ntype = ftp\nhost = ftp://h\n", "[a] host: a host name or address, not a URL"),
        ("[a]\ntype = ftp\nhost = [::1]\n", "[a] host: write the IPv6 address without"),
        ("[a]\ntype = ftp\nhost = my host\n", "[a] host: a host name or address holds no"),
    ],
)
def test_connection_names_and_hosts_a_user_gets_wrong_are_invalid_config(
    tmp_path: Path, ini: str, expected: str
) -> None:
    assert expected in config_error(connections, tmp_path, ini)


@pytest.mark.parametrize("host", ["::1", "fe80::1%eth0", "10.0.0.1", "ftp.example.com"])
def test_ftp_host_may_be_a_bare_ipv6_address(tmp_path: Path, host: str) -> None:
    conn = connections(tmp_path, f"[a]\ntype = ftp\nhost = {host}\n")["a"]
    assert isinstance(conn, FTPConnection) and conn.ftp.host == host


def test_default_section_is_an_ordinary_connection(tmp_path: Path) -> None:
    conns = connections(
        tmp_path, "[DEFAULT]\ntype = local\nbase_path = /d\n\n[b]\ntype = ftp\nhost = h\n"
    )
    assert list(conns) == ["DEFAULT", "b"]


@pytest.mark.parametrize(
    ("keys", "field", "value"),
    [
        ("tls = true", "tls", TLSMode.IMPLICIT),
        ("tls = false", "tls", TLSMode.NONE),
        ("tls = Implicit", "tls", TLSMode.IMPLICIT),
        ("explicit_tls = true", "tls", TLSMode.EXPLICIT),
        ("tls = false\nexplicit_tls = true", "tls", TLSMode.EXPLICIT),
        ("explicit_tls = false", "tls", TLSMode.NONE),
        ("no_check_certificate = true", "verify", False),
        ("no_check_certificate = false", "verify", True),
        ("disable_epsv = true", "epsv", False),
        ("disable_epsv = off", "epsv", True),
    ],
)
def test_rclone_spellings(tmp_path: Path, keys: str, field: str, value: object) -> None:
    conn = connections(tmp_path, f"[a]\ntype = ftp\nhost = h\n{keys}\n")["a"]
    assert isinstance(conn, FTPConnection)
    assert getattr(conn.ftp, field) == value


@pytest.mark.parametrize("key", ["pass", "password"])
def test_password_spellings(tmp_path: Path, key: str) -> None:
    conn = connections(tmp_path, f"[a]\ntype = ftp\nhost = h\n{key} = {SECRET}\n")["a"]
    assert isinstance(conn, FTPConnection)
    assert conn.ftp.password.get_secret_value() == SECRET


def test_password_keeps_special_characters(tmp_path: Path) -> None:
    password = "p%a;s#s=w:o rd"
    conn = connections(tmp_path, f"[a]\ntype = ftp\nhost = h\npass = {password}\n")["a"]
    assert isinstance(conn, FTPConnection)
    assert conn.ftp.password.get_secret_value() == password


@pytest.mark.parametrize("relative", [True, False])
def test_pass_file(tmp_path: Path, relative: bool) -> None:
    secret = write(tmp_path / "password", f"{SECRET}\n")
    name = "password" if relative else str(secret)
    conn = connections(tmp_path, f"[a]\ntype = ftp\nhost = h\npass_file = {name}\n")["a"]
    assert isinstance(conn, FTPConnection)
    assert conn.ftp.password.get_secret_value() == SECRET


def test_pass_env(tmp_path: Path) -> None:
    conn = connections(
        tmp_path, "[a]\ntype = ftp\nhost = h\npass_env = A_PASSWORD\n", {"A_PASSWORD": SECRET}
    )["a"]
    assert isinstance(conn, FTPConnection)
    assert conn.ftp.password.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("host = h", "[a] type: missing"),
        ("type = sftp\nhost = h", "[a] type: unknown type 'sftp'"),
        ("type = ftp", "[a] host: Field required"),
        ("type = ftp\nhost =", "[a] host: String should have at least 1 character"),
        ("type = ftp\nhost = h\nport = twenty-one", "[a] port: Input should be a valid integer"),
        ("type = ftp\nhost = h\nport = 0", "[a] port: Input should be greater than or equal to 1"),
        ("type = ftp\nhost = h\nport = 65536", "[a] port: Input should be less than or equal"),
        ("type = ftp\nhost = h\nhostname = x", "[a] hostname: unknown key"),
        ("type = ftp\nhost = h\nshell_type = unix", "[a] shell_type: unknown key"),
        ("type = ftp\nhost = h\npass_file = missing", "[a] pass_file: cannot read"),
        (
            "type = ftp\nhost = h\npass_env = NOT_SET",
            "[a] pass_env: environment variable NOT_SET is not set",
        ),
        (
            f"type = ftp\nhost = h\npass = {SECRET}\npass_file = x",
            "[a] pass_file: give only one of",
        ),
        ("type = ftp\nhost = h\nverify = maybe", "[a] verify: Input should be a valid boolean"),
        (
            "type = ftp\nhost = h\nverify = true\nno_check_certificate = true",
            "[a] no_check_certificate: give verify",
        ),
        (
            "type = ftp\nhost = h\ndisable_epsv = sometimes",
            "[a] disable_epsv: expected true or false",
        ),
        ("type = ftp\nhost = h\ntls = ssl", "[a] tls: expected none, explicit or implicit"),
        (
            "type = ftp\nhost = h\ntls = implicit\nexplicit_tls = true",
            "[a] explicit_tls: conflicts",
        ),
        ("type = ftp\nhost = h\nca_file = nowhere.pem", "[a] ca_file: no such file"),
        ("type = ftp\nhost = h\nca_file = connections.ini", "not a PEM bundle of CA certificates"),
        ("type = ftp\nhost = h\npassive = false", "[a] passive: active mode is not supported"),
        ("type = ftp\nhost = h\nmax_sessions = 0", "[a] max_sessions: Input should be greater"),
        (
            "type = ftp\nhost = h\nupload_temp = dot",
            "[a] upload_temp: Input should be 'hidden', 'visible' or 'none'",
        ),
        ("type = ftp\nhost = h\ntimeout = -1", "[a] timeout: Input should be greater than 0"),
        (
            "type = ftp\nhost = h\nconnect_timeout = soon",
            "[a] connect_timeout: Input should be a valid number",
        ),
        (
            "type = ftp\nhost = h\ndata_stall_timeout = 0",
            "[a] data_stall_timeout: Input should be greater",
        ),
        ("type = local", "[a] base_path: Field required"),
        ("type = local\nbase_path = data", "[a] base_path: must be an absolute path"),
        ("type = local\nbase_path = /d\nhost = h", "[a] host: unknown key"),
    ],
)
def test_connection_errors_name_section_and_key(tmp_path: Path, body: str, expected: str) -> None:
    path = write(
        tmp_path / "connections.ini", f"[ok]\ntype = local\nbase_path = /d\n\n[a]\n{body}\n"
    )
    message = config_error(load_connections, path, {})
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("ini", "expected"),
    [
        (f"[a]\ntype = ftp\npass = x\npass = {SECRET}\n", "[a] pass: given twice (line 4)"),
        ("[a]\ntype = local\n[a]\ntype = ftp\n", "[a]: section given twice (line 3)"),
        (f"pass = {SECRET}\n[a]\n", "line 1: a key before the first [section]"),
        (f"[a]\ntype = ftp\n{SECRET}\n", "not 'key = value' on line 3"),
    ],
)
def test_ini_syntax_errors_give_lines_not_content(tmp_path: Path, ini: str, expected: str) -> None:
    path = write(tmp_path / "connections.ini", ini)
    message = config_error(load_connections, path, {})
    assert message == f"{path}: {expected}"


def test_unreadable_pass_file_error_does_not_leak_content(tmp_path: Path) -> None:
    (tmp_path / "password").write_bytes(b"\xff" + SECRET.encode())
    message = config_error(
        connections, tmp_path, "[a]\ntype = ftp\nhost = h\npass_file = password\n"
    )
    assert "[a] pass_file: cannot read" in message and "not UTF-8" in message
    assert SECRET not in message


def test_connections_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere.ini", "[l]\ntype = local\nbase_path = /d\n")
    assert list(load_connections(environ={"FTP_POOLER_CONNECTIONS": str(path)})) == ["l"]


def test_missing_connections_file_is_an_error(tmp_path: Path) -> None:
    message = config_error(load_connections, environ={})
    assert str(tmp_path / "absent" / "connections.ini") in message


def test_password_never_shown(tmp_path: Path) -> None:
    write(tmp_path / "pw", SECRET)
    conns = connections(
        tmp_path,
        f"[a]\ntype = ftp\nhost = h\npass = {SECRET}\n\n"
        "[b]\ntype = ftp\nhost = h\npass_file = pw\n",
    )
    conn = conns["a"]
    assert isinstance(conn, FTPConnection)
    described = conns.describe()
    for text in (
        repr(conns),
        str(conns),
        repr(conn),
        str(conn),
        repr(conn.ftp),
        str(conn.ftp),
        json.dumps(described),
        json.dumps(conn.model_dump(mode="json")),
    ):
        assert SECRET not in text


def test_describe(tmp_path: Path) -> None:
    conns = connections(
        tmp_path,
        f"[a]\ntype = ftp\nhost = h\nuser = u\npass = {SECRET}\ntls = explicit\nbase_path = /out\n"
        "\n[b]\ntype = ftp\nhost = h2\ndisable_epsv = true\n"
        "\n[local]\ntype = local\nbase_path = /data/storage\n",
    )
    described = conns.describe()
    assert described["a"] == {
        "type": "ftp",
        "host": "h",
        "port": 21,
        "user": "u",
        "password": "***",
        "tls": "explicit",
        "verify": True,
        "ca_file": None,
        "passive": True,
        "epsv": True,
        "pasv_use_reply_address": False,
        "pipelining": "auto",
        "connect_timeout": 15.0,
        "timeout": 30.0,
        "data_stall_timeout": 60.0,
        "max_sessions": None,
        "upload_temp": "hidden",
        "charset": "auto",
        "base_path": "/out",
    }
    assert (described["b"]["password"], described["b"]["epsv"]) == ("(not set)", False)
    assert described["local"] == {"type": "local", "base_path": "/data/storage"}


def test_sample_connections_file(tmp_path: Path) -> None:
    text = (ETC / "connections.ini").read_text(encoding="utf-8")
    secret = write(tmp_path / "partner-a-password", SECRET)
    text = text.replace("/var/run/secrets/ftp-pooler/partner-a-password", str(secret))
    environ = {"PARTNER_B_PASSWORD": "b-password", "PARTNER_C_PASSWORD": "c-password"}
    conns = connections(tmp_path, text, environ)
    assert list(conns) == ["partner-a", "partner-b", "partner-c", "local"]
    partner_a, partner_b, partner_c = conns["partner-a"], conns["partner-b"], conns["partner-c"]
    assert isinstance(partner_a, FTPConnection) and isinstance(partner_b, FTPConnection)
    assert partner_a.ftp.password.get_secret_value() == SECRET
    assert partner_b.ftp.tls is TLSMode.EXPLICIT
    assert isinstance(partner_c, FTPConnection) and partner_c.ftp.charset == "cp1252"
    assert conns["local"] == LocalConnection(id="local", base_path=Path("/data/storage"))


def test_pass_env_loses_a_trailing_newline_like_pass_file(tmp_path: Path) -> None:
    text = "[a]\ntype = ftp\nhost = h\npass_env = A_PASSWORD\n"
    conn = connections(tmp_path, text, {"A_PASSWORD": SECRET + "\n"})["a"]
    assert isinstance(conn, FTPConnection)
    assert conn.ftp.password.get_secret_value() == SECRET
