"""OAUTHBEARER tokens for kafka-python, read from a file that is replaced as tokens rotate.

Kubernetes projected service-account tokens, Vault agents and token sidecars
keep a short-lived token in a file and replace it before it expires. The
kubelet replaces a mounted file by writing a new directory and swapping a
``..data`` symlink to it, so the path keeps its name but leads to a new file
(new inode); sidecars usually write and rename (new inode) or rewrite in place
(new mtime and size). kafka-python asks for a token at every SASL
authentication (each new connection, and each re-authentication when the
broker sets a session lifetime, KIP-368), so :meth:`TokenFile.token` checks
the file's identity then and reads it again only when it changed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import NamedTuple

from kafka.net.sasl.oauth import AbstractTokenProvider


class TokenFileError(OSError):
    """The token file cannot be read, or holds no token."""


class FileIdentity(NamedTuple):
    """What tells one version of a file from the next: ``os.stat`` of the path (links followed)."""

    device: int
    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileIdentity:
        return cls(stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


def parse_token(text: str) -> str:
    """The token in a token file's text: the text without surrounding white space.

    Raises:
        ValueError: The file holds no token, or more than one line
            (RFC 7628 section 3.1: the bearer token is a single b64token).
    """
    token = text.strip()
    if not token:
        raise ValueError("is empty")
    if any(character.isspace() for character in token):
        raise ValueError("holds more than one word; expected one token")
    return token


class TokenFile(AbstractTokenProvider):  # type: ignore[misc]
    """``sasl_oauth_token_provider`` for kafka-python: the token in ``path``, re-read on change.

    Thread-safe (each Kafka client calls it from its own network thread). The
    token never appears in the repr.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._lock = threading.Lock()
        self._identity: FileIdentity | None = None
        self._token: str | None = None

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"

    def token(self) -> str:
        """The current token.

        Raises:
            TokenFileError: The file is missing, unreadable or holds no token.
                kafka-python then fails this connection attempt and retries.
        """
        with self._lock:
            try:
                identity = FileIdentity.of(os.stat(self.path))
                if identity != self._identity or self._token is None:
                    text = self.path.read_text(encoding="utf-8")
                    self._token = parse_token(text)
                    self._identity = identity
            except (OSError, UnicodeError, ValueError) as error:
                raise TokenFileError(f"{self.path}: {_reason(error)}") from None
            return self._token


def _reason(error: Exception) -> str:
    if isinstance(error, UnicodeError):
        return "not UTF-8 text"
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return str(error)
