"""What the FTP client needs to know to reach one server: values, no behaviour."""

from __future__ import annotations

import ssl
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ftp_pooler.ftp.protocol import AUTO_CHARSET, charset_codec, encodable


class TLSMode(StrEnum):
    """How the control and data connections are protected."""

    NONE = "none"
    EXPLICIT = "explicit"
    """``AUTH TLS`` on the plain control connection, then ``PBSZ 0`` and ``PROT P``."""
    IMPLICIT = "implicit"
    """TLS from the first byte (usually port 990)."""


class Pipelining(StrEnum):
    """Whether commands whose replies are not needed before the next one go out together."""

    AUTO = "auto"
    """Find out: log in one command at a time, then send two harmless commands
    together (``FEAT`` and ``TYPE I``); pipeline if both are answered in order,
    and stop for good (for this server, in this process) at the first anomaly."""
    ON = "on"
    """Pipeline from the first login, without the check; an anomaly is handled for
    the command it hit (redone alone) but does not turn pipelining off."""
    OFF = "off"
    """Wait for each reply before sending the next command."""


class Timeouts(BaseModel):
    """Seconds allowed for each kind of wait; each is a Trio cancel scope."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect: float = Field(15.0, gt=0, description="TCP connect plus greeting plus TLS handshake.")
    reply: float = Field(30.0, gt=0, description="Each reply to a command.")
    data_stall: float = Field(60.0, gt=0, description="No byte moved on a data connection.")


class UploadTemp(StrEnum):
    """Where an upload's bytes go before they are complete (docs/configuration.md)."""

    HIDDEN = "hidden"
    """``.name.<hex>.part`` beside the target, renamed into place when complete:
    atomic, and hidden from ``ls`` and most pollers. A server that refuses the name
    with a permission 55x gets the visible form instead (remembered per server)."""
    VISIBLE = "visible"
    """``name.<hex>.part``: as atomic, for servers that refuse dot-files; a poller
    picking up every file sees the temporary name until the rename."""
    NONE = "none"
    """STOR the final name directly, no rename: not atomic. A reader may see a
    partial file while it is written; a failed upload's partial file is deleted
    once STOR began (never a file STOR did not touch), as a temporary one is."""


class FTPConfig(BaseModel):
    """One FTP server and how to talk to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(21, ge=1, le=65535)
    user: str = "anonymous"
    password: SecretStr = SecretStr("")
    tls: TLSMode = TLSMode.NONE
    verify: bool = True
    """Verify the server certificate and host name (on by default)."""
    ca_file: Path | None = None
    """PEM bundle of trusted CAs instead of the system store."""
    ca_digest: str | None = None
    """SHA-256 (hex) of ``ca_file``'s bytes when it was read: a bundle replaced under
    the same path (a rotated Kubernetes Secret) makes another config, so a live
    reload builds a new TLS context for it."""
    passive: bool = True
    """Only passive mode is implemented; ``False`` is refused."""
    epsv: bool = True
    """Try EPSV before PASV (PASV is still used when the server refuses EPSV)."""
    pasv_use_reply_address: bool = False
    """Connect to the address a 227 reply names, instead of the control peer.

    Off by default, as in rclone and lftp: servers behind NAT often name an
    unreachable address, and trusting it lets a server aim us at another host.
    """
    pipelining: Pipelining = Pipelining.AUTO
    """Send commands together where the replies allow it (docs/ftp-client.md, "Pipelining")."""
    timeouts: Timeouts = Timeouts()
    max_sessions: int | None = Field(None, ge=1)
    """This server's own session cap, instead of the pool's per-connection default
    (never above the pod's cap)."""
    upload_temp: UploadTemp = UploadTemp.HIDDEN
    """The temporary name uploads are written under (:class:`UploadTemp`)."""
    charset: str = AUTO_CHARSET
    """How names are written on the control connection and in listings (lftp's
    ``ftp:charset``): ``auto`` (UTF-8, ``OPTS UTF8 ON`` when FEAT lists ``UTF8``;
    replies that are not UTF-8 read as Latin-1), or a Python codec name stored as
    its canonical name (``latin-1`` -> ``iso8859-1``): every path argument is
    encoded with it and every reply and listing decoded with it
    (:func:`~ftp_pooler.ftp.protocol.charset_codec` says which codecs are taken).
    ``utf-8`` sends ``OPTS UTF8 ON`` even when FEAT does not list ``UTF8``; any
    other charset never sends it."""

    @field_validator("passive")
    @classmethod
    def _passive_only(cls, value: bool) -> bool:
        if not value:
            raise ValueError("active mode is not supported; use passive = true")
        return value

    @field_validator("upload_temp", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("charset")
    @classmethod
    def _known_charset(cls, value: str) -> str:
        return charset_codec(value)

    @model_validator(mode="after")
    def _login_encodable(self) -> FTPConfig:
        """The user name and password must be sendable in the charset (checked here,
        at load time, not at the first login; the message never shows either)."""
        codec = self.wire_charset
        if not encodable(self.user, codec):
            raise ValueError(f"user has characters the charset {self.charset} cannot encode")
        if not encodable(self.password.get_secret_value(), codec):
            raise ValueError(f"password has characters the charset {self.charset} cannot encode")
        return self

    @property
    def wire_charset(self) -> str | None:
        """The codec names are sent and read in; ``None`` for ``auto`` (UTF-8, replies
        falling back to Latin-1: :func:`~ftp_pooler.ftp.protocol.decode_text`)."""
        return None if self.charset == AUTO_CHARSET else self.charset

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context for this server (build once and reuse: it loads the CA store)."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
