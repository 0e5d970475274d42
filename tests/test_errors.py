"""The error model: which FTP reply becomes which error code, and which codes are retryable."""

from __future__ import annotations

import pytest

from ftp_pooler.errors import (
    ErrorCode,
    FTPError,
    FTPProtocolError,
    PoolerError,
    error_for_reply,
)
from ftp_pooler.ftp.protocol import Reply


def reply(line: str) -> Reply:
    return Reply(int(line[:3]), (line,))


@pytest.mark.parametrize(
    ("line", "command", "expected"),
    [
        # The server is busy or going away.
        ("421 Service not available, closing control connection.", None, ErrorCode.SERVER_BUSY),
        ("421 Timeout.", "RETR", ErrorCode.SERVER_BUSY),
        (
            "421 There are too many connections from your internet address.",
            None,
            ErrorCode.SERVER_BUSY,
        ),
        ("421 Too many connections (8) from this IP", "USER", ErrorCode.SERVER_BUSY),
        ("450 Too many users, try again later", "RETR", ErrorCode.SERVER_BUSY),
        ("451 Maximum number of connections reached", "PASS", ErrorCode.SERVER_BUSY),
        (
            "530 Sorry, the maximum number of clients (5) for this user are already connected.",
            "PASS",
            ErrorCode.SERVER_BUSY,
        ),
        ("530 Sorry, too many users logged in for this account", "USER", ErrorCode.SERVER_BUSY),
        # Login refused.
        ("530 Login incorrect.", "PASS", ErrorCode.AUTH_FAILED),
        ("530 Please login with USER and PASS.", "RETR", ErrorCode.AUTH_FAILED),
        ("530 Not logged in.", None, ErrorCode.AUTH_FAILED),
        ("532 Need account for storing files.", "STOR", ErrorCode.AUTH_FAILED),
        ("501 Invalid user name", "USER", ErrorCode.AUTH_FAILED),
        (
            "500 OOPS: vsftpd: refusing to run with writable root inside chroot()",
            "PASS",
            ErrorCode.AUTH_FAILED,
        ),
        ("550 Permission denied.", "ACCT", ErrorCode.AUTH_FAILED),
        # Transient 4xx.
        ("425 Can't open data connection.", "RETR", ErrorCode.TRANSIENT),
        ("426 Connection closed; transfer aborted.", "STOR", ErrorCode.TRANSIENT),
        ("450 Requested file action not taken.", "DELE", ErrorCode.TRANSIENT),
        ("451 Requested action aborted: local error in processing.", "STOR", ErrorCode.TRANSIENT),
        ("452 Insufficient storage space in system.", "STOR", ErrorCode.TRANSIENT),
        # 550: denied, not found, or neither.
        ("550 /a/b: No such file or directory", "RETR", ErrorCode.FILE_NOT_FOUND),
        ("550 No such file or directory", "STOR", ErrorCode.FILE_NOT_FOUND),
        ("550 File not found", None, ErrorCode.FILE_NOT_FOUND),
        (
            "550 The system cannot find the file specified. Does not exist",
            "MKD",
            ErrorCode.FILE_NOT_FOUND,
        ),
        ("550 /etc/shadow: Permission denied", "RETR", ErrorCode.PERMISSION_DENIED),
        ("550 Permission denied.", "STOR", ErrorCode.PERMISSION_DENIED),
        ("550 Access is denied.", "DELE", ErrorCode.PERMISSION_DENIED),
        ("550 Operation not allowed", "RNFR", ErrorCode.PERMISSION_DENIED),
        ("550 Failed to open file.", "RETR", ErrorCode.FILE_NOT_FOUND),
        ("550 Could not get file size.", "SIZE", ErrorCode.FILE_NOT_FOUND),
        ("550 Could not get file modification time.", "mdtm", ErrorCode.FILE_NOT_FOUND),
        ("550 Failed to change directory.", "CWD", ErrorCode.FILE_NOT_FOUND),
        ("550 Delete operation failed.", "DELE", ErrorCode.FILE_NOT_FOUND),
        ("550 Remove directory operation failed.", "RMD", ErrorCode.FILE_NOT_FOUND),
        ("550 RNFR command failed.", "RNFR", ErrorCode.FILE_NOT_FOUND),
        ("550", "RETR", ErrorCode.FILE_NOT_FOUND),
        ("550 Create directory operation failed.", "MKD", ErrorCode.PERMANENT),
        ("550 Failure writing to local file.", "STOR", ErrorCode.PERMANENT),
        ("550 Rename failed.", "RNTO", ErrorCode.PERMANENT),
        ("550 Requested action not taken.", None, ErrorCode.PERMANENT),
        # Other 5xx.
        ("553 Could not create file.", "STOR", ErrorCode.PERMISSION_DENIED),
        (
            "553 Requested action not taken. File name not allowed.",
            "RNTO",
            ErrorCode.PERMISSION_DENIED,
        ),
        ("500 Unknown command.", "MLSD", ErrorCode.PERMANENT),
        ("501 Syntax error in parameters or arguments.", "PORT", ErrorCode.PERMANENT),
        ("502 Command not implemented.", "EPSV", ErrorCode.PERMANENT),
        ("504 Command not implemented for that parameter.", "TYPE", ErrorCode.PERMANENT),
        ("522 Network protocol not supported.", "EPRT", ErrorCode.PERMANENT),
        ("534 Request denied for policy reasons.", "AUTH", ErrorCode.PERMANENT),
        # Issue 12 kind D: rights refused in any 55x text (not only 550 "denied").
        ("550 1_0_7.image: Operation not permitted", "MDTM", ErrorCode.PERMISSION_DENIED),
        ("550 Access is denied.", "RETR", ErrorCode.PERMISSION_DENIED),
        ("551 Read access denied by policy.", "RETR", ErrorCode.PERMISSION_DENIED),
        ("552 Upload not permitted here.", "STOR", ErrorCode.PERMISSION_DENIED),
        ("550 Read-only file system", "STOR", ErrorCode.PERMISSION_DENIED),
        ("550 Insufficient privileges.", "DELE", ErrorCode.PERMISSION_DENIED),
        ("551 Requested action aborted: page type unknown.", "RETR", ErrorCode.PERMANENT),
        (
            "552 Requested file action aborted. Exceeded storage allocation.",
            "STOR",
            ErrorCode.PERMANENT,
        ),
        # Replies that mean success or "go on", where the command expected something else.
        ("200 OK", "RETR", ErrorCode.PROTOCOL_ERROR),
        ("226 Transfer complete.", "PASV", ErrorCode.PROTOCOL_ERROR),
        ("150 Opening BINARY mode data connection.", "SIZE", ErrorCode.PROTOCOL_ERROR),
        ("331 Password required.", "PASS", ErrorCode.PROTOCOL_ERROR),
        ("350 Ready for RNTO.", None, ErrorCode.PROTOCOL_ERROR),
    ],
)
def test_error_for_reply(line: str, command: str | None, expected: ErrorCode) -> None:
    error = error_for_reply(reply(line), command)
    assert error.code is expected
    assert type(error) is FTPError


def test_error_keeps_the_reply_and_names_the_command() -> None:
    sent = reply("550 /a b: No such file or directory")
    error = error_for_reply(sent, "retr")
    assert error.reply is sent
    assert error.message == "RETR: 550 /a b: No such file or directory"
    assert str(error) == error.message
    assert repr(error) == "FTPError(FILE_NOT_FOUND, 'RETR: 550 /a b: No such file or directory')"


def test_error_without_command() -> None:
    error = error_for_reply(reply("421 Timeout."))
    assert error.message == "421 Timeout."


def test_multi_line_reply_text_is_searched() -> None:
    sent = Reply(550, ("550-Cannot open /a:", " Permission denied", "550 End"))
    assert error_for_reply(sent, "STOR").code is ErrorCode.PERMISSION_DENIED


RETRYABLE = {
    ErrorCode.CONNECTION_ERROR,
    ErrorCode.TIMEOUT,
    ErrorCode.SERVER_BUSY,
    ErrorCode.TRANSIENT,
    ErrorCode.PROTOCOL_ERROR,
    ErrorCode.SIZE_MISMATCH,
}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_retryable(code: ErrorCode) -> None:
    assert code.retryable is (code in RETRYABLE)
    assert PoolerError(code, "x").retryable is code.retryable
    assert FTPError(code, "x").retryable is code.retryable


def test_error_code_values_are_their_names() -> None:
    assert all(code.value == code.name for code in ErrorCode)


def test_protocol_error() -> None:
    error = FTPProtocolError("not an FTP reply: 'SSH-2.0'")
    assert isinstance(error, FTPError)
    assert isinstance(error, PoolerError)
    assert error.code is ErrorCode.PROTOCOL_ERROR
    assert error.retryable
    assert error.reply is None


def test_430_invalid_credentials_is_auth_failed() -> None:
    error = error_for_reply(Reply(430, ("430 Invalid username or password",)), "PASS")
    assert error.code is ErrorCode.AUTH_FAILED
    assert not error.retryable


def test_retryable_can_be_overridden_per_error() -> None:
    """A protocol error that repeated on a fresh session is final (issue 12)."""
    assert PoolerError(ErrorCode.PROTOCOL_ERROR, "x").retryable is True
    final = PoolerError(ErrorCode.PROTOCOL_ERROR, "x", retryable=False)
    assert final.retryable is False and final.code is ErrorCode.PROTOCOL_ERROR


def test_retryable_can_be_set_after_the_fact() -> None:
    """A 530 after the login is AUTH_FAILED yet worth another try (the session sets it)."""
    from ftp_pooler.errors import FTPError

    error = FTPError(ErrorCode.AUTH_FAILED, "RETR: 530 Please log in again.")
    assert error.retryable is False
    error.retryable = True
    assert error.retryable is True and error.code is ErrorCode.AUTH_FAILED
