"""FTP control-channel protocol with no I/O: bytes in, replies out; commands out as bytes.

Nothing here knows about sockets or Trio. :class:`ReplyParser` takes whatever
chunks the transport received and yields complete :class:`Reply` objects
(RFC 959 section 4.2, single- and multi-line). :func:`build_command` turns a
verb and arguments into the bytes to send, refusing anything that could
smuggle a second command onto the wire. The ``parse_*`` functions read the
payload of specific replies (227, 229, 213, 257, 211 FEAT); each accepts
any 2xx whose content parses, because servers differ on the exact code.
:func:`is_unsolicited` tells a reply that cannot answer a command (a late
226, a second 230) from one that can; :func:`scrub` takes secrets out of
reply text that is kept in errors.
"""

from __future__ import annotations

import codecs
import functools
import re
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime

from ftp_pooler.errors import ErrorCode, FTPError, FTPProtocolError

MAX_LINE_BYTES = 8192
"""Longest control line accepted; a server sending more is broken or hostile."""

MAX_REPLY_LINES = 10_000
"""Most lines one multi-line reply may have (FEAT and HELP stay far below)."""

MAX_COMMAND_BYTES = 2048
"""Longest command line sent, CRLF included.

pyftpdlib answers a longer line with ``500 Command too long.`` and then
answers its tail again (two replies to one command); vsftpd cuts lines at
4096 bytes. Refusing longer lines before sending keeps the session in step.
"""

MAX_PATH_BYTES = MAX_COMMAND_BYTES - 128
"""Longest remote path (in the connection's charset) a task may name: a command line
holds the path plus a verb, a timestamp (MFMT) and a temporary name's prefix and suffix."""

AUTO_CHARSET = "auto"
"""The connection setting for "UTF-8, as today's servers speak" (:func:`charset_codec`)."""


def charset_codec(name: str) -> str:
    """The Python codec a connection's ``charset`` setting names, by its canonical name;
    :data:`AUTO_CHARSET` (any case) is returned as it is.

    Only codecs that keep FTP's framing intact are accepted: ASCII is ASCII,
    and no other character's bytes include one below ``0x30`` (so no ``/``,
    ``"``, space, CR, LF or NUL hides inside a name): UTF-8, the 8-bit charsets of
    legacy servers (``latin-1``, ``cp1252``, ``iso8859-15``, ``cp850``,
    ``koi8-r``...) and the multi-byte ones whose trail bytes stay above it
    (``shift_jis``, ``gbk``, ``gb18030``, ``big5``, ``euc-jp``). Verbs, codes and CRLF are
    ASCII on the control connection (RFC 959 section 4.1.3, RFC 2640
    section 2.2). UTF-16, EBCDIC (``cp037``), ``utf-8-sig``, escape-based
    ``iso2022_jp`` and non-text codecs (``rot13``, ``base64``) are refused.

    Raises:
        ValueError: Not a codec, or one that breaks the framing.
    """
    word = name.strip().lower()
    if word == AUTO_CHARSET:
        return AUTO_CHARSET
    try:
        info = codecs.lookup(word)
    except LookupError:
        raise ValueError(
            f"unknown charset {name!r} (a Python codec name: utf-8, latin-1, cp1252, ...)"
        ) from None
    if not _keeps_framing(info.name):
        raise ValueError(
            f"charset {name!r} cannot carry FTP commands (ASCII must stay ASCII and no"
            " other character may use a byte below 0x30): use utf-8 or a charset such as"
            " latin-1, cp1252 or shift_jis"
        )
    return info.name


@functools.lru_cache(maxsize=16)
def _keeps_framing(codec: str) -> bool:
    """:func:`charset_codec`'s test, over ASCII and every character of the BMP."""
    if not getattr(codecs.lookup(codec), "_is_text_encoding", True):
        return False
    ascii_chars = bytes(range(128))
    try:
        if ascii_chars.decode("ascii").encode(codec) != ascii_chars:
            return False
        if ascii_chars.decode(codec) != ascii_chars.decode("ascii"):
            return False
    except (UnicodeError, ValueError, TypeError):
        return False
    encoder = codecs.getincrementalencoder(codec)()
    for point in range(128, 0x10000):
        if 0xD800 <= point < 0xE000:
            continue
        try:
            encoded = encoder.encode(chr(point), final=True)
        except UnicodeEncodeError:
            encoder.reset()
            continue
        if min(encoded, default=0x80) < 0x30:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete server reply.

    Attributes:
        code: The three-digit reply code.
        lines: Every line of the reply as sent, decoded, without the line ending.
    """

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The reply's text without the code prefixes, lines joined by newlines."""
        if len(self.lines) == 1:
            return self.lines[0][4:]
        middle = self.lines[1:-1]
        return "\n".join((self.lines[0][4:], *middle, self.lines[-1][4:]))

    @property
    def is_preliminary(self) -> bool:
        """1yz: the server will send another reply before taking the next command."""
        return 100 <= self.code < 200

    @property
    def is_success(self) -> bool:
        """2yz: positive completion."""
        return 200 <= self.code < 300

    @property
    def is_intermediate(self) -> bool:
        """3yz: the server waits for a further command (PASS after USER, RNTO after RNFR)."""
        return 300 <= self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def decode_text(line: bytes, charset: str | None = None) -> str:
    """Bytes from the server as text; never raises.

    ``charset`` ``None`` (``charset = auto``): UTF-8, or Latin-1 when that
    fails. Otherwise that codec (:func:`charset_codec`), an undecodable
    byte read as U+FFFD: a name in a reply or listing that the configured
    charset cannot read is shown damaged, never a crash.
    """
    if charset is not None:
        return line.decode(charset, "replace")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def _line_code(line: bytes) -> tuple[int, bytes] | None:
    """The code and separator of a line that starts a reply (``"227 "``, ``"211-"``, ``"200"``)."""
    if len(line) < 3 or not line[:3].isdigit() or line[0:1] not in b"12345":
        return None
    sep = line[3:4]
    if sep not in (b"", b" ", b"-"):
        return None
    return int(line[:3]), sep


class ReplyParser:
    """Incremental parser of server replies.

    Feed it received bytes with :meth:`feed`, then call :meth:`next_reply`
    until it returns ``None`` (it needs more data). Lines end in CRLF; a bare
    LF is tolerated. A multi-line reply ends at the first line of three digits
    followed by a space (or by nothing), whatever its code, and the reply takes
    that line's code: RFC 959 section 4.2 wants the opening code repeated, but
    servers close a ``553-`` block with ``150 ...`` and mean the 150 (seen in
    the field; lftp and curl read it the same way). Text is decoded with
    ``charset`` (:func:`decode_text`: ``None`` is UTF-8 with a Latin-1
    fallback), so no input makes it raise anything but :class:`FTPProtocolError`.
    """

    def __init__(self, charset: str | None = None) -> None:
        self._charset = charset
        self._buffer = bytearray()
        self._scan_from = 0
        self._pending_code: int | None = None
        self._pending_lines: list[str] = []

    def feed(self, data: bytes | bytearray) -> None:
        """Append received bytes."""
        self._buffer += data

    @property
    def has_partial_data(self) -> bool:
        """Whether bytes of an unfinished reply are buffered."""
        return bool(self._buffer) or self._pending_code is not None

    def next_reply(self) -> Reply | None:
        """The next complete reply, or ``None`` if more bytes are needed.

        Raises:
            FTPProtocolError: The bytes are not a valid FTP reply.
        """
        while (line := self._next_line()) is not None:
            reply = self._take_line(line)
            if reply is not None:
                return reply
        return None

    def _next_line(self) -> bytes | None:
        end = self._buffer.find(b"\n", self._scan_from)
        if end < 0:
            if len(self._buffer) > MAX_LINE_BYTES:
                raise FTPProtocolError(f"reply line longer than {MAX_LINE_BYTES} bytes")
            self._scan_from = len(self._buffer)
            return None
        if end > MAX_LINE_BYTES:
            raise FTPProtocolError(f"reply line longer than {MAX_LINE_BYTES} bytes")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scan_from = 0
        return line[:-1] if line.endswith(b"\r") else line

    def _take_line(self, line: bytes) -> Reply | None:
        head = _line_code(line)
        if self._pending_code is None:
            if head is None:
                raise FTPProtocolError(f"not an FTP reply: {decode_text(line[:80])!r}")
            code, sep = head
            if sep == b"-":
                self._pending_code = code
                self._pending_lines = [decode_text(line, self._charset)]
                return None
            return Reply(code, (decode_text(line, self._charset),))
        self._pending_lines.append(decode_text(line, self._charset))
        if len(self._pending_lines) > MAX_REPLY_LINES:
            raise FTPProtocolError(f"multi-line reply longer than {MAX_REPLY_LINES} lines")
        if head is not None and head[1] != b"-":
            reply = Reply(head[0], tuple(self._pending_lines))
            self._pending_code = None
            self._pending_lines = []
            return reply
        return None


_VERB = re.compile(r"[A-Z]{3,4}")
_FORBIDDEN = re.compile(r"[\r\n\x00\ud800-\udfff]")


class UnsafeArgumentError(FTPError):
    """An argument holds CR, LF, NUL (would inject a command) or a lone surrogate (has no
    UTF-8 form); nothing was sent.

    The message names the command, never the argument: it may be a password.
    """

    def __init__(self, verb: str) -> None:
        super().__init__(
            ErrorCode.PATH_NOT_ALLOWED,
            f"{verb}: refusing to send an argument with CR, LF, NUL or a lone surrogate",
        )


def is_safe_argument(text: str) -> bool:
    """Whether ``text`` can be sent as a command argument (no CR, LF, NUL, lone surrogate)."""
    return _FORBIDDEN.search(text) is None


class CommandTooLongError(FTPError):
    """A command line would exceed :data:`MAX_COMMAND_BYTES`; nothing was sent.

    The message names the command and the length, never the argument.
    """

    def __init__(self, verb: str, length: int) -> None:
        super().__init__(
            ErrorCode.PATH_NOT_ALLOWED,
            f"{verb}: command line of {length} bytes is longer than the "
            f"{MAX_COMMAND_BYTES} bytes servers accept",
        )


class UnencodableArgumentError(FTPError):
    """An argument has characters the connection's charset cannot encode; nothing was sent.

    Sending them some other way would create or look for a name the server
    stores differently (a garbled name). The message names the command and
    the charset, never the argument: it may be a password.
    """

    def __init__(self, verb: str, charset: str) -> None:
        super().__init__(
            ErrorCode.PATH_NOT_ALLOWED,
            f"{verb}: an argument has characters the connection's charset {charset} cannot encode",
        )


def build_command(verb: str, *args: str, charset: str | None = None) -> bytes:
    """Encode one command line, CRLF-terminated, arguments in ``charset`` (``None``: UTF-8).

    Raises:
        UnsafeArgumentError: An argument contains CR, LF, NUL or a lone surrogate.
        UnencodableArgumentError: An argument has characters ``charset`` cannot encode.
        CommandTooLongError: The line would exceed :data:`MAX_COMMAND_BYTES`.
        ValueError: ``verb`` is not an FTP verb.
    """
    if not _VERB.fullmatch(verb):
        raise ValueError(f"not an FTP verb: {verb!r}")
    for arg in args:
        if not is_safe_argument(arg):
            raise UnsafeArgumentError(verb)
    line = " ".join((verb, *args)) if args else verb
    try:
        encoded = line.encode(charset or "utf-8") + b"\r\n"
    except UnicodeEncodeError:
        raise UnencodableArgumentError(verb, charset or "utf-8") from None
    if len(encoded) > MAX_COMMAND_BYTES:
        raise CommandTooLongError(verb, len(encoded))
    return encoded


def encodable(text: str, charset: str | None = None) -> bool:
    """Whether ``text`` can be sent in ``charset`` (``None``: UTF-8, where only a lone
    surrogate cannot)."""
    try:
        text.encode(charset or "utf-8")
    except UnicodeEncodeError:
        return False
    return True


def path_fits(path: str, charset: str | None = None) -> bool:
    """Whether ``path`` is at most :data:`MAX_PATH_BYTES` in ``charset`` (``None``: UTF-8;
    lone surrogates count 3, characters the charset cannot encode 1)."""
    encoded = path.encode(charset or "utf-8", "surrogatepass" if charset is None else "replace")
    return len(encoded) <= MAX_PATH_BYTES


def verb_of(command: bytes) -> str:
    """The verb of an encoded command line (for error messages and logs)."""
    return command.split(b" ", 1)[0].strip().decode("ascii", "replace")


def _expect_success(reply: Reply, usual: int) -> None:
    """Any 2xx: servers answer with other codes of the class than the RFC's (``usual``)."""
    if not reply.is_success:
        raise FTPProtocolError(f"expected reply {usual} (or another 2xx), got {reply}")


_PASV_NUMBER = r"0*(\d{1,3})"
"""One of the six numbers, zero-padded to any width (``00188``: seen in the field)."""
_PASV = re.compile(
    rf"(?<!\d){_PASV_NUMBER}\s*,\s*{_PASV_NUMBER}\s*,\s*{_PASV_NUMBER}\s*,\s*{_PASV_NUMBER}"
    rf"\s*,\s*{_PASV_NUMBER}\s*,\s*{_PASV_NUMBER}(?!\d)"
)


def parse_pasv(reply: Reply) -> tuple[str, int]:
    """Host and port of a 227 reply (``227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)``).

    The six numbers are found anywhere in the text, with or without brackets
    and with spaces around the commas (RFC 959 section 4.1.2 leaves the text
    around them free; ``227 =h1,h2,...`` (Microsoft), ``(h1, h2, ...)`` and
    no brackets at all are all seen), each number zero-padded to any width
    (``00188``). Any 2xx code is read, so a 227 given in answer to EPSV works too.

    Raises:
        FTPProtocolError: Not a 2xx, no six numbers, a number above 255, or port 0
            (nothing can connect to it: as unreadable as no port at all).
    """
    _expect_success(reply, 227)
    match = _PASV.search(reply.text)
    if match is None:
        raise FTPProtocolError(f"no address in PASV reply: {reply}")
    numbers = [int(n) for n in match.groups()]
    if any(n > 255 for n in numbers):
        raise FTPProtocolError(f"bad address in PASV reply: {reply}")
    port = numbers[4] * 256 + numbers[5]
    if port == 0:
        raise FTPProtocolError(f"port 0 in PASV reply: {reply}")
    host = ".".join(str(n) for n in numbers[:4])
    return host, port


_EPSV_BODY = r"([!-+\--/:-~])(?:(?!\1).)*\1(?:(?!\1).)*\1\s*(\d{1,5})\s*\1"
_EPSV_BRACKETED = re.compile(r"\(\s*" + _EPSV_BODY + r"\s*\)")
_EPSV_ANYWHERE = re.compile(r"(?=" + _EPSV_BODY + ")")


def parse_epsv(reply: Reply) -> int:
    """Port of a 229 reply (``229 Entering Extended Passive Mode (|||6446|)``).

    RFC 2428 section 3 lets the server pick any printable delimiter, the same
    four times, with empty protocol and address fields (a comma is not taken
    as the delimiter, so a PASV-style text is not misread). Read leniently, as
    curl and lftp do: spaces around the port, brackets missing, and the two
    fields filled in (their content is ignored: the data connection goes to
    the control connection's peer). A bracketed field wins over one found
    elsewhere in the text; the first with a port in 1..65535 counts. Any 2xx
    code is read.

    Raises:
        FTPProtocolError: Not a 2xx, or no delimited port in 1..65535.
    """
    _expect_success(reply, 229)
    for candidates in (_EPSV_BRACKETED, _EPSV_ANYWHERE):
        for match in candidates.finditer(reply.text):
            port = int(match.group(2))
            if 0 < port < 65536:
                return port
    raise FTPProtocolError(f"no port in EPSV reply: {reply}")


_SIZE = re.compile(r"([0-9]+)(?:\s+[^\s0-9.,].*)?")
"""A byte count, alone or followed by words (``120000 bytes``); never a number
followed by more digits or a separator (``1 234``, ``1.5``), which could be misread."""


def parse_size(reply: Reply) -> int:
    """Byte count of a 213 reply to SIZE (RFC 3659 section 4); any 2xx is read.

    RFC 3659 wants the bare number; servers add a unit (``213 120000 bytes``)
    or send a multi-line reply (``213-Size follows`` / ``213 120000``): the
    first line whose text is a number, or a number then words, counts.

    Raises:
        FTPProtocolError: Not a 2xx, or no line reads as a byte count.
    """
    _expect_success(reply, 213)
    for line in reply.lines:
        text = line[4:] if _line_code(line.encode("utf-8", "replace")) else line
        match = _SIZE.fullmatch(text.strip())
        if match is not None:
            return int(match.group(1))
    raise FTPProtocolError(f"bad SIZE reply: {reply}")


_TIME_VAL = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d+))?")


def parse_time_val(value: str) -> datetime:
    """An RFC 3659 ``time-val`` (``YYYYMMDDHHMMSS[.sss]``, always UTC) as an aware datetime.

    A leap second (``60``) reads as ``59``; fractions finer than microseconds are cut.
    """
    match = _TIME_VAL.fullmatch(value.strip())
    if match is None:
        raise FTPProtocolError(f"bad time value: {value!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7) or ""
    micro = int(fraction[:6].ljust(6, "0")) if fraction else 0
    if second == 60:
        second = 59
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError as exc:
        raise FTPProtocolError(f"bad time value: {value!r}") from exc


def format_time_val(moment: datetime) -> str:
    """A datetime as an RFC 3659 ``time-val`` in UTC, whole seconds (MFMT, MDTM-write)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: give a timezone")
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}{utc:%m%d%H%M%S}"


def parse_mdtm(reply: Reply) -> datetime:
    """Modification time of a 213 reply to MDTM (RFC 3659 section 3), in UTC; any 2xx is read."""
    _expect_success(reply, 213)
    return parse_time_val(reply.text.strip().split()[0] if reply.text.strip() else "")


_UNQUOTED_PATH = re.compile(r"(?:^|\s)(/\S*)")


def parse_257(reply: Reply) -> str:
    """The path in a 257 reply (PWD, MKD): the first quoted string, ``""`` unescaped.

    RFC 959 appendix II wants the path quoted; embedded and old servers send
    it bare (``257 /home/user is current directory``): with no quote at all,
    the first word that starts with ``/`` counts (as libftp and wget read
    it). Any 2xx is read (the path is what matters).

    Raises:
        FTPProtocolError: Not a 2xx, no quoted path and no word starting with
            ``/``, or an unterminated quote.
    """
    _expect_success(reply, 257)
    text = reply.text
    start = text.find('"')
    if start < 0:
        bare = _UNQUOTED_PATH.search(text)
        if bare is None:
            raise FTPProtocolError(f"no path in 257 reply: {reply}")
        return bare.group(1)
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        if text[i] == '"':
            if text[i + 1 : i + 2] == '"':
                chars.append('"')
                i += 2
                continue
            return "".join(chars)
        chars.append(text[i])
        i += 1
    raise FTPProtocolError(f"unterminated path in 257 reply: {reply}")


_FEAT_PREFIX = re.compile(r"\d{3}[- ]")
_FEATURE_LIKE = re.compile(r"[A-Z][A-Z0-9]{2,3}(?: \S.*)?")
"""An upper-case feature name (``EPSV``, ``REST STREAM``), as opposed to a header
(``Features:``, ``Extensions supported``)."""


def parse_feat(reply: Reply) -> dict[str, str]:
    """Features of a 211 reply to FEAT (RFC 2389 section 3.2): upper-cased name -> parameters.

    ``AUTH TLS`` and ``AUTH SSL`` are kept apart as ``"AUTH"`` with joined
    parameters (``"TLS SSL"``). A single-line reply means no features. Lines
    may carry the code as a prefix (``211-MDTM``: ProFTPD with
    ``MultilineRFC2228``, some IIS versions) or lack the leading space; both
    read like an indented line. A first line that is a feature rather than a
    header (``211-EPSV``) counts too. Any 2xx is read.
    """
    _expect_success(reply, 211)
    features: dict[str, str] = {}
    first = reply.lines[0][4:].strip() if len(reply.lines) > 2 else ""
    lines = reply.lines[1:-1]
    if _FEATURE_LIKE.fullmatch(first):  # ``211-EPSV`` with no header line before it
        lines = (first, *lines)
    for line in lines:
        entry = line
        if _FEAT_PREFIX.match(entry):
            entry = entry[4:]
        entry = entry.strip()
        if not entry:
            continue
        name, _, params = entry.partition(" ")
        name = name.upper()
        params = params.strip()
        if name in features and params:
            features[name] = f"{features[name]} {params}".strip()
        else:
            features[name] = params
    return features


_ANNOUNCED_SIZE = re.compile(r"\((\d+) bytes?\)", re.IGNORECASE)


def announced_size(reply: Reply, path: str = "") -> int | None:
    """The size a 150/125 reply announces, as vsftpd and proftpd do: ``(4096 bytes)``.

    The file name is taken out of the text first (``path`` as sent, and its
    last component), then the LAST group counts: vsftpd puts the name first,
    and a name may hold ``(5 bytes)`` itself (``for /data/invoice (5
    bytes).csv (200000 bytes).``), with or without a size after it.
    """
    text = reply.text
    for name in (path, path.rsplit("/", 1)[-1]):
        if name:
            text = text.replace(name, " ")
    found = _ANNOUNCED_SIZE.findall(text)
    return int(found[-1]) if found else None


def most_announced(size: int | None, preliminary: Reply | None, path: str = "") -> int | None:
    """The most bytes a download may bring before it is known to be wrong, or ``None``.

    ``size``: the ``SIZE`` answer asked before the transfer (sent with the
    EPSV when pipelining); ``preliminary``: the transfer's 1xx. Only a size
    asked with SIZE sets a limit: a 150's text is read with a pattern
    (:func:`announced_size`) and may be misread, so today a 150 alone is
    never trusted to fail a download (SIZE has the last word after it). With
    both, the larger counts: a received count equal to either one is accepted
    after the transfer (``FTPSession.retrieve``). A file that grows while it
    is downloaded then fails ``SIZE_MISMATCH`` (retryable) instead of being
    read to its end: the next attempt asks its size again.
    """
    if size is None:
        return None
    said = None if preliminary is None else announced_size(preliminary, path)
    return size if said is None else max(size, said)


RENAME_OVER_REFUSALS = frozenset({550, 553})
"""RNTO replies that may mean "the target exists and I will not replace it": proftpd
with ``AllowOverwrite off`` answers ``550 NAME: Rename permission denied`` (checked
against proftpd 1.3.8); RFC 959 section 4.2 gives 553 for a name not allowed. vsftpd,
pure-ftpd, pyftpdlib and proftpd by default rename over an existing file (rename(2))."""


def may_refuse_existing_target(command: str | None, reply: Reply | None) -> bool:
    """Whether a refused rename may be a server that will not rename over an existing
    target, so that moving the target aside and renaming again is worth trying.

    Only when RNFR was accepted (the refusal is RNTO's: ``command``) and RNTO got a
    permanent :data:`RENAME_OVER_REFUSALS`. A refused RNFR says nothing of the target;
    a 4xx is transient (RFC 959 section 4.2: the same command may work later); a 500-504
    is about the command, not the file.
    """
    return command == "RNTO" and reply is not None and reply.code in RENAME_OVER_REFUSALS


_TRANSFER_VERBS = frozenset({"RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"})
_OWNED_CODES: dict[int, frozenset[str]] = {
    225: _TRANSFER_VERBS | {"ABOR"},
    226: _TRANSFER_VERBS | {"ABOR"},
    230: frozenset({"USER", "PASS", "ACCT", "REIN"}),
    232: frozenset({"USER", "PASS", "ACCT"}),
    227: frozenset({"PASV", "EPSV"}),
    229: frozenset({"EPSV", "PASV"}),
    331: frozenset({"USER"}),
    332: frozenset({"USER", "PASS"}),
    350: frozenset({"RNFR", "REST"}),
}
"""Completion codes that answer only these commands (RFC 959 section 4.2.2, RFC 2428).
A 229 answers PASV too: servers behind NAT64/CLAT do that (cpython gh-14187)."""


def is_unsolicited(verb: str, reply: Reply) -> bool:
    """Whether ``reply`` cannot be the answer to ``verb`` and must be an unasked reply.

    Servers send complete replies nobody asked for: a second ``230`` after
    login (some IIS and Serv-U setups), a late ``226`` after a transfer already
    answered (seen after ABOR races and on Windows servers). Read as the
    answer to the next command, every later reply would be shifted by one.
    Only codes that belong to specific commands are judged (transfer ends,
    login, passive, RNFR/REST); errors (4xx/5xx) and generic codes always
    count as answers.
    """
    owners = _OWNED_CODES.get(reply.code)
    return owners is not None and verb.upper() not in owners


NOT_UNDERSTOOD = frozenset({500, 501, 502, 504})
"""Codes that say the server does not know or does not implement a command, or
that argument of it (RFC 959 section 4.2: 500 command unrecognized, 501 syntax
error in parameters, 502 command not implemented, 504 not implemented for that
parameter; RFC 2228 section 4 uses 502 and 504 for an unknown AUTH mechanism)."""


SESSION_GONE = frozenset({421, 530})
"""Error codes about the session, not the command: 421 (the server is closing it) and
530 (not logged in: after the login, the server forgot it; RFC 959 section 4.2)."""


def refuses_epsv(reply: Reply, *, ipv6: bool = False) -> bool:
    """Whether a reply to EPSV means "use PASV with this server from now on".

    Any 4xx or 5xx but :data:`SESSION_GONE`: besides the RFC's "not
    implemented" (:data:`NOT_UNDERSTOOD`) and 522 (RFC 2428 section 3:
    network protocol not supported), servers behind NAT or misconfigured
    refuse EPSV with ``550 EPSV not allowed``, ``534 Policy requires PASV``,
    ``425 Can't open passive connection`` or ``451``, and PASV works.
    Other clients fall back on any error too: curl on any answer but 229
    (``lib/ftp.c`` ``ftp_epsv_disable``), rclone's jlaffaye/ftp on any EPSV
    error (``getDataConnPort``: ``skipEPSV`` for the connection's next
    transfers). Only a 421 or a 530 says the session is gone, nothing about
    EPSV.

    Over IPv6 (``ipv6``) PASV has no address to give (RFC 2428 section 1), so
    only "not implemented" (:data:`NOT_UNDERSTOOD`, 522) switches: a passing
    ``425`` must not leave an IPv6 server on PASV for good (curl never
    disables EPSV over IPv6).
    """
    if ipv6:
        return reply.code in NOT_UNDERSTOOD or reply.code == 522
    return reply.code // 100 in (4, 5) and reply.code not in SESSION_GONE


MIN_SCRUBBED_SECRET = 4
"""Shortest secret :func:`scrub` looks for in reply text. A shorter one would be
found inside reply codes, numbers and words (password ``5`` in ``550``, ``a`` in
every path) and the masking would spell it out; the replies that can echo it,
to USER and PASS, lose their text instead (:func:`withholds_text`)."""


@functools.lru_cache(maxsize=64)
def _spellings(secret: str) -> re.Pattern[str]:
    """Every form of ``secret`` a server may echo, case-insensitively: as sent,
    upper/lower/case-folded, percent-encoded (``%20``, ``%2F``, ``+`` for space), and
    its UTF-8 bytes read as Latin-1 (a reply decoded by :func:`decode_text`'s fallback)."""
    forms = {
        secret,
        secret.upper(),
        secret.lower(),
        secret.casefold(),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
        secret.encode("utf-8", "surrogatepass").decode("latin-1"),
    }
    alternatives = sorted(forms, key=len, reverse=True)  # the longest spelling wins
    return re.compile("|".join(re.escape(form) for form in alternatives), re.IGNORECASE)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with each secret of :data:`MIN_SCRUBBED_SECRET` characters or more,
    in any of its spellings (:func:`_spellings`), replaced by ``***``.

    Servers echo command arguments in replies (``530 Login incorrect for
    password hunter2``), percent-encoded or upper-cased by some; reply text
    kept in errors and logs goes through here.
    """
    for secret in secrets:
        if len(secret) >= MIN_SCRUBBED_SECRET:
            text = _spellings(secret).sub("***", text)
    return text


def scrub_reply(reply: Reply, secrets: tuple[str, ...]) -> Reply:
    """``reply`` with :func:`scrub` applied to each line (the same object if nothing changed)."""
    lines = tuple(scrub(line, secrets) for line in reply.lines)
    return reply if lines == reply.lines else Reply(reply.code, lines)


_ECHOING_VERBS = frozenset({"PASS", "ACCT"})
"""Commands whose reply text is never kept: the server has just read the password
(``530 Login incorrect for s3cr3t%20pw``); no scrubbing is sure to catch every form."""


def withholds_text(verb: str | None, secret: str) -> bool:
    """Whether the text of a reply to ``verb`` must not be kept (:func:`withheld`).

    Always for PASS and ACCT; for USER too when ``secret`` is too short to be
    scrubbed (under :data:`MIN_SCRUBBED_SECRET`): a user name equal to the
    password is echoed in USER's reply.
    """
    name = (verb or "").upper()
    return name in _ECHOING_VERBS or (name == "USER" and 0 < len(secret) < MIN_SCRUBBED_SECRET)


def withheld(reply: Reply) -> Reply:
    """``reply`` with its code and a fixed text instead of the server's."""
    return Reply(
        reply.code,
        (f"{reply.code} login refused (server text not kept: it may echo the password)",),
    )
