"""One error model for the whole worker.

Every failure that can reach a result carries an :class:`ErrorCode` and a
``retryable`` flag. Whether a code is retryable is decided here, once, and
nowhere else; the FTP reply -> code mapping lives in :func:`error_for_reply`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftp_pooler.ftp.protocol import Reply


class ErrorCode(StrEnum):
    """What went wrong, as published in failure results and metrics."""

    # Input and configuration.
    INVALID_MESSAGE = "INVALID_MESSAGE"
    INVALID_CONFIG = "INVALID_CONFIG"
    PATH_NOT_ALLOWED = "PATH_NOT_ALLOWED"
    # Files.
    FILE_NOT_FOUND = "FILE_NOT_FOUND"
    FILE_EXISTS = "FILE_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    SIZE_MISMATCH = "SIZE_MISMATCH"
    IO_ERROR = "IO_ERROR"
    # Connections and servers.
    AUTH_FAILED = "AUTH_FAILED"
    CONNECTION_ERROR = "CONNECTION_ERROR"
    TIMEOUT = "TIMEOUT"
    TLS_ERROR = "TLS_ERROR"
    SERVER_BUSY = "SERVER_BUSY"
    TRANSIENT = "TRANSIENT"
    PERMANENT = "PERMANENT"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    UNKNOWN_ERROR = "UNKNOWN_ERROR"

    @property
    def retryable(self) -> bool:
        """Whether trying the same thing again, later, may succeed."""
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {
        ErrorCode.CONNECTION_ERROR,
        ErrorCode.TIMEOUT,
        ErrorCode.SERVER_BUSY,
        ErrorCode.TRANSIENT,
        ErrorCode.PROTOCOL_ERROR,
        ErrorCode.SIZE_MISMATCH,
    }
)


class PoolerError(Exception):
    """Base of every error the worker reports in a result.

    Args:
        code: What went wrong.
        message: Human-readable detail. Never contains credentials.
        retryable: Overrides the code's own flag, for a failure known not to
            change on another try (a protocol error that repeated on a fresh
            session).
    """

    def __init__(self, code: ErrorCode, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self._retryable = retryable

    @property
    def retryable(self) -> bool:
        return self.code.retryable if self._retryable is None else self._retryable

    @retryable.setter
    def retryable(self, value: bool) -> None:
        """Override the code's own flag after the fact (a 530 after the login is
        AUTH_FAILED, yet the login worked: another try on a new session may too)."""
        self._retryable = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value}, {self.message!r})"


class FTPError(PoolerError):
    """An error raised by the FTP client; ``reply`` is set when a server reply caused it,
    ``command`` to the verb that reply answered (``"RNTO"``), when known.

    ``stale_session`` is set when the session turned out to be dead before
    any transfer of the task began (no 1xx to RETR/STOR yet): a session taken
    from the pool that the server had closed (EOF, 421), or any session whose
    login the server dropped (530 after the login). The task did not really
    start, so it may run again on a fresh session without spending an attempt.
    """

    def __init__(self, code: ErrorCode, message: str, reply: Reply | None = None) -> None:
        super().__init__(code, message)
        self.reply = reply
        self.command: str | None = None
        self.stale_session = False

    def set_message(self, message: str) -> None:
        """Replace the message (the session scrubs secrets from it before it leaves)."""
        self.message = message
        self.args = (message,)


class FTPProtocolError(FTPError):
    """The server sent something that is not FTP, or not what the command allows."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.PROTOCOL_ERROR, message)


_NOT_FOUND_WORDS = ("no such file", "not found", "does not exist", "doesn't exist", "not exist")
_DENIED_WORDS = (
    "denied",
    "not allowed",
    "forbidden",
    "not permitted",
    "permission",
    "insufficient privilege",
    "read-only",
    "read only",
)
"""Texts of a refusal for lack of rights, in any 55x (file system) reply (550 ``Operation not
permitted``: vsftpd and Linux strerror(EPERM); ``Access is denied.``: IIS; 553 ``...:
Permission denied``: pure-ftpd, proftpd)."""
_BUSY_WORDS = ("too many", "try again later", "maximum number", "max connections")
_PATH_COMMANDS = frozenset(
    {"RETR", "SIZE", "MDTM", "RNFR", "DELE", "CWD", "MLST", "MLSD", "LIST", "NLST", "RMD"}
)


def error_for_reply(reply: Reply, command: str | None = None) -> FTPError:
    """Map an unexpected server reply to an :class:`FTPError` with the right code.

    Args:
        reply: The reply the server sent.
        command: The verb it answered (``"RETR"``, ``"PASS"``...), when known;
            a bare 550 means "not found" only for commands that name an existing path.
    """
    code = reply.code
    text = reply.text.lower()
    verb = (command or "").upper()
    detail = f"{verb + ': ' if verb else ''}{reply.code} {reply.text}"
    if code == 421 or ((code // 100 == 4 or code == 530) and any(w in text for w in _BUSY_WORDS)):
        error = ErrorCode.SERVER_BUSY
    elif code in (430, 530, 532) or (verb in ("USER", "PASS", "ACCT") and code // 100 == 5):
        error = ErrorCode.AUTH_FAILED
    elif code // 100 == 4:
        error = ErrorCode.TRANSIENT
    elif code // 10 == 55 and any(w in text for w in _DENIED_WORDS):
        error = ErrorCode.PERMISSION_DENIED
    elif code == 550 and (verb in _PATH_COMMANDS or any(w in text for w in _NOT_FOUND_WORDS)):
        error = ErrorCode.FILE_NOT_FOUND
    elif code == 553:
        error = ErrorCode.PERMISSION_DENIED
    elif code // 100 == 5:
        error = ErrorCode.PERMANENT
    else:
        error = ErrorCode.PROTOCOL_ERROR
    exc = FTPError(error, detail, reply)
    exc.command = verb or None
    return exc
