"""Worker settings (YAML plus environment overrides) and connections (an rclone-style INI file).

Settings: every key has a default, unknown keys are errors, and
``FTP_POOLER__SECTION__KEY=value`` overrides the file. Connections: one
``[id]`` section per server or local directory, ``type = ftp`` or
``type = local``. Every mistake raises :class:`ConfigError` naming the file
and the key; passwords are :class:`~pydantic.SecretStr` and never appear in
an error, a repr or :meth:`Connections.describe`.
"""

from __future__ import annotations

import configparser
import hashlib
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ftp_pooler.contract import MAX_CONNECTION_ID_LENGTH, shown
from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.ftp.config import FTPConfig, TLSMode
from ftp_pooler.ftp.pool import PoolLimits
from ftp_pooler.ftp.protocol import encodable
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.transfer.retry import RetryPolicy
from ftp_pooler.validation import Location, describe_validation_error, dotted

CONFIG_ENV = "FTP_POOLER_CONFIG"
CONNECTIONS_ENV = "FTP_POOLER_CONNECTIONS"
OVERRIDE_PREFIX = "FTP_POOLER__"
DEFAULT_CONFIG_PATH = Path("/etc/ftp-pooler/config.yaml")
DEFAULT_CONNECTIONS_PATH = Path("/etc/ftp-pooler/connections.ini")


class ConfigError(PoolerError):
    """A settings or connections file (or an override) that cannot be used.

    Attributes:
        files: For a connections file, the other files its loading read or
            tried to read (``pass_file``, ``ca_file``, in order), the one it
            failed on included: a live reload watches them, so a version refused
            for a file not there yet is loaded again once it is.
    """

    def __init__(self, message: str, files: tuple[Path, ...] = ()) -> None:
        super().__init__(ErrorCode.INVALID_CONFIG, message)
        self.files = files


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["localhost:9092"], min_length=1
    )
    """``host:port`` list; a comma-separated string is accepted too."""
    consumer_group: str = Field("ftp-pooler", min_length=1)
    input_topic: str = Field("ftp-tasks", min_length=1)
    result_topic: str = Field("ftp-results", min_length=1)
    fail_topic: str = Field("ftp-failures", min_length=1)
    group_instance_id: str | None = None
    """Static group membership id; see :attr:`Settings.group_instance_id`."""
    static_membership_from_pod_name: bool = False
    """Use the worker name as ``group_instance_id`` when that is not set."""
    max_poll_records: int = Field(500, ge=1)
    session_timeout_ms: int = Field(10_000, ge=1)
    heartbeat_interval_ms: int = Field(3_000, ge=1)
    max_message_bytes: int = Field(1_048_576, ge=1)
    commit_interval_seconds: float = Field(5.0, gt=0)
    fetch_max_wait_ms: int = Field(500, ge=0, le=60_000)
    """How long the broker may hold a fetch that finds no new records."""
    result_linger_ms: int = Field(50, ge=0, le=10_000)
    """How long the producer holds results to batch them: fewer, larger requests."""
    request_timeout_ms: int = Field(30_000, ge=1)
    """Both clients: how long one request may wait for the broker's answer; also bounds a
    commit (kafka-python's default for both)."""
    delivery_timeout_ms: int = Field(120_000, ge=1)
    """How long the producer keeps trying to deliver a result before it reports it failed
    (kafka-python's ``delivery_timeout_ms``); at least ``result_linger_ms + request_timeout_ms``."""
    result_ack_timeout_seconds: float = Field(130.0, gt=0)
    """Longest a result may wait on one producer for its acknowledgement: then the producer
    is replaced and every unacknowledged result sent again; at least the delivery timeout."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    """SASL_* protocols only: PLAIN and SCRAM take a user and password, OAUTHBEARER a token file."""
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_oauth_token_file: Path | None = None
    """OAUTHBEARER: the file holding the token, read again whenever it changes (rotation)."""
    ssl_cafile: Path | None = None
    """SSL and SASL_SSL: PEM bundle of the CAs that sign the brokers' certificates."""
    ssl_certfile: Path | None = None
    """Client certificate (PEM) for brokers that authenticate clients by TLS (mTLS)."""
    ssl_keyfile: Path | None = None
    """The private key (PEM) of ``ssl_certfile``."""
    ssl_password: SecretStr | None = None
    """Decrypts ``ssl_keyfile`` when it is encrypted."""
    ssl_check_hostname: bool = True
    """Whether a broker's certificate must name the host the client connected to."""

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [server.strip() for server in value.split(",") if server.strip()]
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_and_port(cls, value: list[str]) -> list[str]:
        for server in value:
            if problem := bootstrap_server_problem(server):
                raise ValueError(f"{shown(server)}: {problem}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        if self.request_timeout_ms <= self.fetch_max_wait_ms:
            raise ValueError("request_timeout_ms must be above fetch_max_wait_ms")
        if self.delivery_timeout_ms < self.result_linger_ms + self.request_timeout_ms:
            raise ValueError(
                "delivery_timeout_ms must be at least result_linger_ms + request_timeout_ms"
            )
        if self.result_ack_timeout_seconds * 1000 < self.delivery_timeout_ms:
            raise ValueError("result_ack_timeout_seconds must be at least delivery_timeout_ms")
        if problem := _security_problem(self):
            raise ValueError(problem)
        return self


_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def bootstrap_server_problem(server: str) -> str | None:
    """Why ``server`` is no Kafka bootstrap address (pure); None if it is one.

    The form is ``host:port``, an IPv6 address in brackets (``[::1]:9092``,
    RFC 3986 3.2.2); the host a DNS name (letters, digits, ``-``, ``.``; ``_``
    too, as some internal names have) or an IP address; the port 1 to 65535.
    kafka-python would take a missing port as 9092, but a list written
    without ports is more often a mistake (a URL, a YAML list in a string);
    its own parser raises a bare ValueError (a traceback) on a port that is
    not a number.
    """
    if "://" in server:
        return "expected host:port, not a URL (security_protocol says SSL or SASL)"
    host, colon, port = server.rpartition(":")
    if not colon:
        return "expected host:port (e.g. kafka:9092)"
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        return "the port must be a number from 1 to 65535"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "not an IPv6 address between the brackets"
        return None
    if ":" in host:
        return "an IPv6 address goes in brackets: [address]:port"
    if not _HOST_NAME.fullmatch(host):
        return "expected host:port, the host a name or an IP address"
    return None


_SASL_KEYS = ("sasl_mechanism", "sasl_username", "sasl_password", "sasl_oauth_token_file")
_SSL_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")


def _security_problem(kafka: KafkaSettings) -> str | None:
    """What is inconsistent in the Kafka security settings, naming the setting; None if nothing.

    Settings another protocol or mechanism would use are refused rather than
    ignored: an ``ssl_cafile`` under PLAINTEXT most likely means a forgotten
    ``security_protocol: SSL``, which would otherwise send everything in clear.
    Files are checked at start-up (:mod:`ftp_pooler.kafka.security`), not here:
    they come from Secrets that exist only where the worker runs.
    """
    protocol = kafka.security_protocol
    given = {key for key in (*_SASL_KEYS, *_SSL_KEYS) if getattr(kafka, key) is not None}
    if not protocol.startswith("SASL_"):
        for key in _SASL_KEYS:
            if key in given:
                return f"{key} is only used with security_protocol SASL_PLAINTEXT or SASL_SSL"
    elif kafka.sasl_mechanism is None:
        return (
            f"security_protocol {protocol} needs sasl_mechanism"
            " (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)"
        )
    elif kafka.sasl_mechanism == "OAUTHBEARER":
        if "sasl_oauth_token_file" not in given:
            return "sasl_mechanism OAUTHBEARER needs sasl_oauth_token_file"
        for key in ("sasl_username", "sasl_password"):
            if key in given:
                return f"{key} is not used with sasl_mechanism OAUTHBEARER (the token is)"
    else:
        for key in ("sasl_username", "sasl_password"):
            if key not in given:
                return f"sasl_mechanism {kafka.sasl_mechanism} needs {key}"
        if "sasl_oauth_token_file" in given:
            return "sasl_oauth_token_file is only used with sasl_mechanism OAUTHBEARER"
    if protocol not in ("SSL", "SASL_SSL"):
        for key in _SSL_KEYS:
            if key in given:
                return f"{key} is only used with security_protocol SSL or SASL_SSL"
        if not kafka.ssl_check_hostname:
            return "ssl_check_hostname is only used with security_protocol SSL or SASL_SSL"
    if "ssl_keyfile" in given and "ssl_certfile" not in given:
        return "ssl_keyfile needs ssl_certfile (the client certificate it belongs to)"
    if "ssl_certfile" in given and "ssl_keyfile" not in given:
        return "ssl_certfile needs ssl_keyfile (its private key; may name the same file)"
    if "ssl_password" in given and "ssl_keyfile" not in given:
        return "ssl_password needs ssl_keyfile (the encrypted key it decrypts)"
    return None


MAX_CONCURRENCY = 10_000
"""The most sessions (``pool.max_sessions_per_pod``, ``max_sessions_per_connection``) and
runners (``worker.max_inflight``, ``copy --concurrency``) one process takes. Each runner
is a Trio task started up front (a few KB each) and each session a control connection
plus a data connection: ten thousand is far more than one process can keep busy, and
a typo's extra zeros (``-j 10000000``) would otherwise take gigabytes before the first
task ran."""


class PoolSettings(_Section):
    """Session pool limits; names and defaults from :class:`~ftp_pooler.ftp.pool.PoolLimits`."""

    max_sessions_per_pod: int = Field(PoolLimits.max_sessions_per_pod, ge=1, le=MAX_CONCURRENCY)
    max_sessions_per_connection: int = Field(
        PoolLimits.max_sessions_per_connection, ge=1, le=MAX_CONCURRENCY
    )
    session_timeout_seconds: float = Field(PoolLimits.session_timeout_seconds, gt=0)
    noop_after_seconds: float = Field(PoolLimits.noop_after_seconds, ge=0)
    cap_recovery_seconds: float = Field(PoolLimits.cap_recovery_seconds, gt=0)
    max_concurrent_opens: int = Field(PoolLimits.max_concurrent_opens, ge=1)
    breaker_failures: int = Field(PoolLimits.breaker_failures, ge=1)
    breaker_open_seconds: float = Field(PoolLimits.breaker_open_seconds, gt=0)
    breaker_max_open_seconds: float = Field(PoolLimits.breaker_max_open_seconds, gt=0)

    def limits(self) -> PoolLimits:
        return PoolLimits(**self.model_dump())

    @model_validator(mode="after")
    def _breaker_range(self) -> Self:
        if self.breaker_max_open_seconds < self.breaker_open_seconds:
            raise ValueError("breaker_max_open_seconds must be at least breaker_open_seconds")
        return self


def _default_worker_name(environ: Mapping[str, str]) -> str:
    return environ.get("POD_NAME") or environ.get("HOSTNAME") or socket.gethostname()


class WorkerSettings(_Section):
    max_inflight: int = Field(64, ge=1, le=MAX_CONCURRENCY)
    max_buffered_tasks: int = Field(10_000, ge=1)
    """Tasks taken in and not yet finished (queued per connection, running, being
    published); at this bound the worker stops fetching (``copy`` stops reading)."""
    max_buffered_bytes: int = Field(32 * 1024 * 1024, ge=1)
    """The same bound on the bytes of those tasks' messages (the worker only)."""
    drain_seconds: float = Field(25.0, ge=0)
    connections_reload_seconds: float = Field(5.0, ge=0)
    """How often the worker looks at the connections file for a new version; 0: never."""
    name: str = Field(default=None, min_length=1, validate_default=True)
    """Names this worker in results; null: ``$POD_NAME``, else ``$HOSTNAME``, else the host name."""

    @field_validator("name", mode="before")
    @classmethod
    def _name_from_environment(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            environ = (info.context or {}).get("environ", os.environ)
            return _default_worker_name(environ)
        return value


class TransferSettings(_Section):
    """Retry backoff (defaults from :class:`~ftp_pooler.transfer.retry.RetryPolicy`), temp names and
    durability."""

    initial_backoff_seconds: float = Field(RetryPolicy.initial_backoff, ge=0)
    max_backoff_seconds: float = Field(RetryPolicy.max_backoff, ge=0)
    backoff_multiplier: float = Field(RetryPolicy.multiplier, ge=1)
    jitter: float = Field(RetryPolicy.jitter, ge=0, le=1)
    """Each delay is scaled by a random factor in ``[1 - jitter, 1 + jitter]``."""
    temp_suffix: str = Field(".part", min_length=1, pattern=r"^[^/]+$")
    durability: Literal["fsync", "none"] = "fsync"
    """``fsync``: a download counts as done (result published, offset committable) only
    once its bytes and its name are on stable storage; ``none``: once renamed into place."""

    def retry_policy(self) -> RetryPolicy:
        """The backoff policy; each task's ``retry_count`` sets its number of retries."""
        return RetryPolicy(
            initial_backoff=self.initial_backoff_seconds,
            max_backoff=self.max_backoff_seconds,
            multiplier=self.backoff_multiplier,
            jitter=self.jitter,
        )

    @model_validator(mode="after")
    def _backoff_range(self) -> Self:
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise ValueError("max_backoff_seconds must be at least initial_backoff_seconds")
        return self


class ApiSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    liveness_stall_seconds: float = Field(300.0, gt=0)
    """``/health`` fails once results have waited this long with none acknowledged, or
    finished offsets with no commit succeeding; above ``kafka.result_ack_timeout_seconds``,
    so the publisher gets to replace its producer first."""


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["json", "console"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class Settings(BaseModel):
    """Everything the worker reads from its settings file; see ``etc/config.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    pool: PoolSettings = Field(default_factory=PoolSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    transfer: TransferSettings = Field(default_factory=TransferSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @model_validator(mode="after")
    def _liveness_after_recovery(self) -> Self:
        if self.api.liveness_stall_seconds <= self.kafka.result_ack_timeout_seconds:
            raise ValueError(
                "api.liveness_stall_seconds must be above kafka.result_ack_timeout_seconds"
            )
        return self

    @property
    def group_instance_id(self) -> str | None:
        """The Kafka static membership id: the configured one, else the worker
        name when ``static_membership_from_pod_name`` is on, else none."""
        if self.kafka.group_instance_id or not self.kafka.static_membership_from_pod_name:
            return self.kafka.group_instance_id
        return self.worker.name


def load_settings(path: Path | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Read the settings file, apply ``FTP_POOLER__SECTION__KEY`` overrides, validate.

    Args:
        path: The YAML file. Default: ``$FTP_POOLER_CONFIG``, else
            ``/etc/ftp-pooler/config.yaml`` if it exists, else no file (all defaults).
        environ: Where overrides and the default worker name come from.

    Raises:
        ConfigError: Unreadable file, bad YAML, unknown key or bad value; the
            message names the file (or the environment variable) and the key.
    """
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    elif path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    source = str(path) if path else "settings"
    data = _read_yaml(path) if path else {}
    for section in Settings.model_fields:
        if data.get(section) is None:
            data[section] = {}
    overridden = _apply_overrides(data, environ)

    def field_name(loc: Location) -> str:
        variable = overridden.get(loc[:2])
        return f"{dotted(loc)} (from {variable})" if variable else dotted(loc)

    try:
        return Settings.model_validate(data, context={"environ": environ})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, field_name)}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {_reason(exc)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        where = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
        raise ConfigError(f"{path}: not valid YAML: {where}{exc.problem}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (kafka, pool, ...)")
    return data


def _apply_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[Location, str]:
    """Put each ``FTP_POOLER__SECTION__KEY`` into ``data``; returns (section, key) -> variable."""
    overridden: dict[Location, str] = {}
    for variable, value in environ.items():
        if not variable.startswith(OVERRIDE_PREFIX):
            continue
        section, _, key = variable[len(OVERRIDE_PREFIX) :].lower().partition("__")
        field = Settings.model_fields.get(section)
        model = field.annotation if field else None
        if not (
            isinstance(model, type) and issubclass(model, BaseModel) and key in model.model_fields
        ):
            raise ConfigError(
                f"{variable}: no such setting (expected {OVERRIDE_PREFIX}<SECTION>__<KEY>,"
                f" e.g. {OVERRIDE_PREFIX}POOL__MAX_SESSIONS_PER_POD)"
            )
        if isinstance(data[section], dict):
            data[section][key] = value
            overridden[(section, key)] = variable
    return overridden


def _reason(error: Exception) -> str:
    """Why a file could not be read, without quoting any of its content."""
    if isinstance(error, UnicodeError):
        return "not UTF-8 text"
    return error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__


class FTPConnection(BaseModel):
    """An FTP server; task paths are relative to ``base_path`` on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    ftp: FTPConfig
    base_path: str = ""

    @model_validator(mode="after")
    def _base_path_encodable(self) -> Self:
        """``base_path`` is sent in front of every path: the charset must encode it."""
        if not encodable(self.base_path, self.ftp.wire_charset):
            raise ValueError(
                f"base_path has characters the charset {self.ftp.charset} cannot encode"
            )
        return self


class LocalConnection(BaseModel):
    """A directory of the worker's file system (a mounted volume); task paths are relative to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    base_path: Path

    @field_validator("base_path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"must be an absolute path, not {str(value)!r}")
        return value


Connection = FTPConnection | LocalConnection


class Connections(Mapping[str, Connection]):
    """Connections by id.

    Args:
        connections: The connections; their ids must differ.
        files: The files read for them besides the connections file (each
            ``pass_file`` and ``ca_file``, in order): a live reload watches them too.
    """

    def __init__(
        self, connections: Iterable[Connection] = (), files: tuple[Path, ...] = ()
    ) -> None:
        self.files = files
        self._by_id: dict[str, Connection] = {}
        for connection in connections:
            if connection.id in self._by_id:
                raise ValueError(f"two connections named {connection.id!r}")
            self._by_id[connection.id] = connection

    def __getitem__(self, connection_id: str) -> Connection:
        return self._by_id[connection_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"Connections({list(self._by_id.values())!r})"

    def session_factories(self) -> dict[str, SessionFactory]:
        """One session factory per FTP connection (each holds its TLS context)."""
        return {
            connection_id: SessionFactory(connection.ftp)
            for connection_id, connection in self._by_id.items()
            if isinstance(connection, FTPConnection)
        }

    def missing_base_paths(self) -> dict[str, Path]:
        """The local connections whose ``base_path`` is no directory now: id -> base_path.

        Not a configuration error: a volume may be mounted after the file is
        read. Downloads to such a connection fail TRANSIENT until it is there
        (:meth:`LocalRoot.make_parent <ftp_pooler.transfer.localfs.LocalRoot.make_parent>`);
        check-config warns, the worker logs it at start-up and at each reload.
        """
        return {
            connection_id: connection.base_path
            for connection_id, connection in self._by_id.items()
            if isinstance(connection, LocalConnection) and not connection.base_path.is_dir()
        }

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every connection in the INI file's spelling, JSON-ready, passwords masked."""
        described: dict[str, dict[str, Any]] = {}
        for connection_id, connection in self._by_id.items():
            if isinstance(connection, LocalConnection):
                described[connection_id] = {"type": "local", "base_path": str(connection.base_path)}
                continue
            ftp = connection.ftp
            described[connection_id] = {
                "type": "ftp",
                **ftp.model_dump(mode="json", exclude={"password", "timeouts", "ca_digest"}),
                "password": "***" if ftp.password.get_secret_value() else "(not set)",
                "connect_timeout": ftp.timeouts.connect,
                "timeout": ftp.timeouts.reply,
                "data_stall_timeout": ftp.timeouts.data_stall,
                "base_path": connection.base_path,
            }
        return described


def connections_path(path: Path | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """``path``, else ``$FTP_POOLER_CONNECTIONS``, else ``/etc/ftp-pooler/connections.ini``."""
    return path or Path(environ.get(CONNECTIONS_ENV) or DEFAULT_CONNECTIONS_PATH)


def load_connections(
    path: Path | None = None, environ: Mapping[str, str] = os.environ
) -> Connections:
    """Read the connections file.

    Args:
        path: The INI file. Default: ``$FTP_POOLER_CONNECTIONS``, else
            ``/etc/ftp-pooler/connections.ini``.
        environ: Where ``pass_env`` variables are read.

    Raises:
        ConfigError: Unreadable or malformed file, or a bad section; the
            message names the file, the ``[section]`` and the key.
    """
    path = connections_path(path, environ)
    try:
        # utf-8-sig: a byte order mark (Windows editors) is read, as in config.yaml
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {_reason(exc)}") from None
    # rclone has no [DEFAULT] inheritance; no section header can spell an empty name.
    parser = configparser.ConfigParser(interpolation=None, default_section="")
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise ConfigError(f"{path}: {_ini_problem(exc)}") from None
    if not parser.sections():
        raise ConfigError(f"{path}: no connection defined (a [name] section per connection)")
    sections = []
    for name in parser.sections():
        items = dict(parser.items(name))
        if problem := _section_problem(name, items):
            raise ConfigError(f"{path}: {problem}")
        sections.append(_IniSection(path, name, items))
    connections = []
    for section in sections:
        try:
            connections.append(section.connection(environ))
        except ConfigError as exc:
            exc.files = _files_read(sections)
            raise
    return Connections(connections, files=_files_read(sections))


def _files_read(sections: Iterable[_IniSection]) -> tuple[Path, ...]:
    """The files the sections read or tried to read, each once, in order."""
    return tuple(dict.fromkeys(path for section in sections for path in section.files))


def _section_problem(name: str, items: Mapping[str, str]) -> str | None:
    """What makes a section unusable before its keys are read (pure); None if nothing.

    A name with spaces around it (``[ a ]``) could never match the ``src_id``
    a task gives, nor could one longer than a task's connection id. A value
    holding a line break is an INI continuation: configparser joins an
    indented line to the value above it, so an indented ``pass = ...`` under
    ``user = ...`` would become part of the user (and be shown with it). The
    message names the section and key, never the value.
    """
    if name != name.strip():
        return f"[{name}]: spaces around the connection name (write [{name.strip()}])"
    if len(name) > MAX_CONNECTION_ID_LENGTH:
        return f"[{name[:32]}...]: connection name over {MAX_CONNECTION_ID_LENGTH} characters"
    for key, value in items.items():
        if "\n" in value:
            return (
                f"[{name}] {key}: the value goes on over several lines (an indented line"
                " continues the value above it); remove the indentation"
            )
    return None


def _ini_problem(error: configparser.Error) -> str:
    """What is wrong with the INI syntax, by line number: the offending line may hold a password."""
    if isinstance(error, configparser.DuplicateOptionError):
        return f"[{error.section}] {error.option}: given twice (line {error.lineno})"
    if isinstance(error, configparser.DuplicateSectionError):
        return f"[{error.section}]: section given twice (line {error.lineno})"
    if isinstance(error, configparser.MissingSectionHeaderError):
        return f"line {error.lineno}: a key before the first [section]"
    if isinstance(error, configparser.ParsingError):
        lines = ", ".join(str(lineno) for lineno, _ in error.errors)
        return f"not 'key = value' on line {lines}"
    return type(error).__name__


_BOOL: TypeAdapter[bool] = TypeAdapter(bool)
_PASSWORD_KEYS = ("pass", "password", "pass_file", "pass_env")
_FTP_FIELDS: dict[str, Location] = {
    "host": ("host",),
    "port": ("port",),
    "user": ("user",),
    "verify": ("verify",),
    "passive": ("passive",),
    "epsv": ("epsv",),
    "pasv_use_reply_address": ("pasv_use_reply_address",),
    "pipelining": ("pipelining",),
    "connect_timeout": ("timeouts", "connect"),
    "timeout": ("timeouts", "reply"),
    "data_stall_timeout": ("timeouts", "data_stall"),
    "max_sessions": ("max_sessions",),
    "upload_temp": ("upload_temp",),
    "charset": ("charset",),
}
_FTP_NEGATIONS: dict[str, Location] = {
    "no_check_certificate": ("verify",),
    "disable_epsv": ("epsv",),
}
_FTP_KEYS = frozenset(
    {*_FTP_FIELDS, *_FTP_NEGATIONS, *_PASSWORD_KEYS, "tls", "explicit_tls", "ca_file", "base_path"}
)
_LOCAL_KEYS = frozenset({"base_path"})
_Model = TypeVar("_Model", bound=BaseModel)


def _host_problem(host: str) -> str | None:
    """Why ``host`` is no host name or address for a socket (pure); None if it is one.

    What people write there by habit: ``h:21`` (the port has its own key), a URL,
    an IPv6 address in brackets (the brackets belong to URLs, RFC 3986 3.2.2).
    """
    if "://" in host:
        return "a host name or address, not a URL (the port goes in 'port', TLS in 'tls')"
    if host.startswith("[") and host.endswith("]"):
        return f"write the IPv6 address without brackets: {host[1:-1]}"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "a host name or address only: the port goes in 'port' (port = 21)"
    if any(c.isspace() for c in host):
        return "a host name or address holds no spaces"
    return None


class _IniSection:
    """One ``[id]`` of the connections file, on its way to a :data:`Connection`."""

    def __init__(self, path: Path, name: str, items: dict[str, str]) -> None:
        self.path = path
        self.name = name
        self._items = items
        self.files: list[Path] = []
        """Other files read, or tried, for this section (``pass_file``, ``ca_file``)."""

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: [{self.name}] {key}: {message}")

    def connection(self, environ: Mapping[str, str]) -> Connection:
        kind = self._items.pop("type", None)
        if kind is None:
            raise self.error("type", "missing (ftp or local)")
        if kind.lower() == "ftp":
            return self._ftp(environ)
        if kind.lower() == "local":
            self._refuse_unknown(_LOCAL_KEYS)
            return self._validate(
                LocalConnection, {"id": self.name, **self._items}, {("base_path",): "base_path"}
            )
        raise self.error("type", f"unknown type {kind!r} (ftp or local)")

    def _ftp(self, environ: Mapping[str, str]) -> FTPConnection:
        if "encoding" in self._items:  # rclone's key of that name is something else
            raise self.error(
                "encoding",
                "rclone's name-escaping flags are not supported; the server's character"
                " set is 'charset' (auto, utf-8, latin-1, cp1252, ...)",
            )
        self._refuse_unknown(_FTP_KEYS)
        if problem := _host_problem(self._items.get("host", "")):
            raise self.error("host", problem)
        given: dict[Location, tuple[str, object]] = {
            loc: (key, self._items[key]) for key, loc in _FTP_FIELDS.items() if key in self._items
        }
        for key, loc in _FTP_NEGATIONS.items():
            if key in self._items:
                if loc in given:
                    raise self.error(key, f"give {given[loc][0]} or {key}, not both")
                given[loc] = (key, not self._bool(key))
        if (password := self._password(environ)) is not None:
            given[("password",)] = password
        if (tls := self._tls()) is not None:
            given[("tls",)] = tls
        if (ca_file := self._file("ca_file")) is not None:
            self._check_ca_bundle(*ca_file)
            given[("ca_file",)] = ca_file
            given[("ca_digest",)] = ("ca_file", self._digest(*ca_file))
        ftp: dict[str, Any] = {}
        for loc, (_, value) in given.items():
            target = ftp
            for part in loc[:-1]:
                target = target.setdefault(str(part), {})
            target[str(loc[-1])] = value
        keys = {("ftp", *loc): key for key, loc in _FTP_FIELDS.items()}
        keys.update({("ftp", *loc): key for loc, (key, _) in given.items()})
        keys[()] = keys[("ftp",)] = "charset"  # the whole-model checks: names in the charset
        data = {"id": self.name, "ftp": ftp, "base_path": self._items.get("base_path", "")}
        return self._validate(FTPConnection, data, keys)

    def _refuse_unknown(self, known: frozenset[str]) -> None:
        for key in self._items:
            if key not in known:
                raise self.error(key, f"unknown key (known: {', '.join(sorted(known))})")

    def _validate(
        self, model: type[_Model], data: dict[str, Any], keys: dict[Location, str]
    ) -> _Model:
        try:
            return model.model_validate(data)
        except ValidationError as exc:

            def field_name(loc: Location) -> str:
                return f"[{self.name}] {keys.get(loc, dotted(loc))}"

            raise ConfigError(
                f"{self.path}: {describe_validation_error(exc, field_name)}"
            ) from None

    def _bool(self, key: str) -> bool:
        try:
            return _BOOL.validate_python(self._items[key])
        except ValidationError:
            raise self.error(key, f"expected true or false, not {self._items[key]!r}") from None

    def _file(self, key: str) -> tuple[str, Path] | None:
        """A file named by ``key``, relative to the connections file's directory."""
        if key not in self._items:
            return None
        path = self.path.parent / self._items[key]
        self.files.append(path)
        if not path.is_file():
            raise self.error(key, f"no such file: {path}")
        return key, path

    def _digest(self, key: str, path: Path) -> str:
        """SHA-256 (hex) of the file's bytes; the file is one this version was read from."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise self.error(key, f"cannot read {path}: {_reason(exc)}") from None
        return hashlib.sha256(data).hexdigest()

    def _check_ca_bundle(self, key: str, path: Path) -> None:
        """Load ``path`` as the TLS client does, so a file that is no CA bundle is a
        configuration error here, not a traceback when the first session opens."""
        try:
            ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
            message = f"{path}: not a PEM bundle of CA certificates ({reason})"
            raise self.error(key, message) from None

    def _password(self, environ: Mapping[str, str]) -> tuple[str, str] | None:
        given = [key for key in _PASSWORD_KEYS if key in self._items]
        if len(given) > 1:
            raise self.error(given[1], f"give only one of {', '.join(_PASSWORD_KEYS)}")
        if not given:
            return None
        key = given[0]
        value = self._items[key]
        if key == "pass_env":
            if value not in environ:
                raise self.error(key, f"environment variable {value} is not set")
            return key, environ[value].rstrip("\r\n")
        if key == "pass_file":
            path = self.path.parent / value
            self.files.append(path)
            try:
                password = path.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeError) as exc:
                raise self.error(key, f"cannot read {path}: {_reason(exc)}") from None
            return key, password
        return key, value

    def _tls(self) -> tuple[str, TLSMode] | None:
        """``tls`` (none, explicit, implicit; rclone's true is implicit) and ``explicit_tls``."""
        mode: TLSMode | None = None
        if "tls" in self._items:
            word = self._items["tls"].lower()
            if word in set(TLSMode):
                mode = TLSMode(word)
            else:
                try:
                    mode = TLSMode.IMPLICIT if _BOOL.validate_python(word) else TLSMode.NONE
                except ValidationError:
                    raise self.error(
                        "tls", f"expected none, explicit or implicit, not {word!r}"
                    ) from None
        if "explicit_tls" in self._items and self._bool("explicit_tls"):
            if mode is TLSMode.IMPLICIT:
                raise self.error("explicit_tls", "conflicts with implicit TLS (tls)")
            return "explicit_tls", TLSMode.EXPLICIT
        return ("tls", mode) if mode is not None else None
