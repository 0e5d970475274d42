"""The FTP control-channel protocol: bytes in, replies out; commands out as bytes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftp_pooler.errors import ErrorCode, FTPError, FTPProtocolError
from ftp_pooler.ftp.protocol import (
    MAX_LINE_BYTES,
    MAX_REPLY_LINES,
    Reply,
    ReplyParser,
    UnsafeArgumentError,
    announced_size,
    build_command,
    format_time_val,
    may_refuse_existing_target,
    most_announced,
    parse_257,
    parse_epsv,
    parse_feat,
    parse_mdtm,
    parse_pasv,
    parse_size,
    parse_time_val,
    verb_of,
)
import contextlib


def feed_chunks(chunks: Iterable[bytes]) -> list[Reply]:
    parser = ReplyParser()
    replies = []
    for chunk in chunks:
        parser.feed(chunk)
        while (reply := parser.next_reply()) is not None:
            replies.append(reply)
    return replies


def parse_all(data: bytes) -> list[Reply]:
    return feed_chunks([data])


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def reply(text: str) -> Reply:
    """A reply from its lines as sent (joined by newlines); the code is the last line's."""
    lines = tuple(text.split("\n"))
    return Reply(int(lines[-1][:3]), lines)


# --- ReplyParser: single-line replies ---------------------------------------------------------


def test_single_line() -> None:
    assert parse_all(b"220 Service ready\r\n") == [Reply(220, ("220 Service ready",))]


def test_bare_lf_line_ending() -> None:
    assert parse_all(b"220 Service ready\n") == [Reply(220, ("220 Service ready",))]


def test_bare_code_line() -> None:
    [parsed] = parse_all(b"200\r\n")
    assert parsed == Reply(200, ("200",))
    assert parsed.text == ""


def test_code_and_space_only() -> None:
    [parsed] = parse_all(b"200 \r\n")
    assert parsed.code == 200
    assert parsed.text == ""


def test_no_reply_until_line_ends() -> None:
    parser = ReplyParser()
    parser.feed(b"200 OK")
    assert parser.next_reply() is None
    assert parser.has_partial_data
    parser.feed(b"\r")
    assert parser.next_reply() is None
    parser.feed(b"\n")
    assert parser.next_reply() == Reply(200, ("200 OK",))
    assert not parser.has_partial_data
    assert parser.next_reply() is None


def test_empty_parser_has_no_partial_data() -> None:
    parser = ReplyParser()
    assert not parser.has_partial_data
    assert parser.next_reply() is None


def test_several_replies_in_one_chunk() -> None:
    data = b"150 Opening BINARY mode data connection\r\n226 Transfer complete\r\n"
    assert parse_all(data) == [
        Reply(150, ("150 Opening BINARY mode data connection",)),
        Reply(226, ("226 Transfer complete",)),
    ]


def test_several_replies_with_mixed_line_endings_and_a_multi_line_one() -> None:
    data = b"331 Password required\n230-Welcome\r\n230-  to the archive\n230 Logged in\r\n200 OK\n"
    assert parse_all(data) == [
        Reply(331, ("331 Password required",)),
        Reply(230, ("230-Welcome", "230-  to the archive", "230 Logged in")),
        Reply(200, ("200 OK",)),
    ]


def test_partial_reply_left_after_complete_one() -> None:
    parser = ReplyParser()
    parser.feed(b"200 OK\r\n211-Feat")
    assert parser.next_reply() == Reply(200, ("200 OK",))
    assert parser.next_reply() is None
    assert parser.has_partial_data


def test_partial_multi_line_reply_is_partial_data() -> None:
    parser = ReplyParser()
    parser.feed(b"211-Features:\r\n")
    assert parser.next_reply() is None
    assert parser.has_partial_data


def test_only_one_cr_is_stripped() -> None:
    [parsed] = parse_all(b"200 OK\r\r\n")
    assert parsed.lines == ("200 OK\r",)


# --- ReplyParser: multi-line replies (RFC 959 section 4.2) ------------------------------------

RFC_959_EXAMPLE = (
    b"123-First line\r\nSecond line\r\n  234 A line beginning with numbers\r\n123 The last line\r\n"
)


def test_rfc_959_example() -> None:
    [parsed] = parse_all(RFC_959_EXAMPLE)
    assert parsed.code == 123
    assert parsed.lines == (
        "123-First line",
        "Second line",
        "  234 A line beginning with numbers",
        "123 The last line",
    )
    assert parsed.text == (
        "First line\nSecond line\n  234 A line beginning with numbers\nThe last line"
    )


@pytest.mark.parametrize(
    "middle",
    [
        "2024 was a good year",
        "211-this is not the end",
        "200-another code with a hyphen",
        "2110 four digits",
        "211x not a separator",
        "21 two digits",
        "",
        " 211 indented",
    ],
)
def test_in_between_lines_do_not_end_the_reply(middle: str) -> None:
    data = f"211-Start\r\n{middle}\r\n211 End\r\n".encode()
    [parsed] = parse_all(data)
    assert parsed.lines == ("211-Start", middle, "211 End")


@pytest.mark.parametrize("closing", ["200 another code with a space", "200", "211 End"])
def test_any_code_and_space_ends_a_multi_line_reply(closing: str) -> None:
    """RFC 959 4.2 wants the same code; servers close with another and mean it (case B2)."""
    [parsed] = parse_all(f"211-Start\r\n 1\r\n{closing}\r\n".encode())
    assert parsed.lines == ("211-Start", " 1", closing)
    assert parsed.code == int(closing[:3])


def test_553_block_closed_by_a_150_is_a_150() -> None:
    """Case B2: the reply to STOR is the 150 that ends the block, then the 226 follows."""
    data = (
        b"553-\r\n553- Directory excluded (precheck).\r\n"
        b"150 Opening BINARY mode data connection for .up.bin.1234.part.\r\n"
        b"226 Transfer complete.\r\n"
    )
    first, second = parse_all(data)
    assert first.code == 150 and first.is_preliminary
    assert first.lines[0] == "553-"
    assert second == Reply(226, ("226 Transfer complete.",))


def test_bare_code_ends_a_multi_line_reply() -> None:
    assert parse_all(b"211-Start\r\n 1\r\n211\r\n200 OK\r\n") == [
        Reply(211, ("211-Start", " 1", "211")),
        Reply(200, ("200 OK",)),
    ]


def test_multi_line_with_bare_lf() -> None:
    [parsed] = parse_all(b"220-Hello\n220-there\n220 ready\n")
    assert parsed.lines == ("220-Hello", "220-there", "220 ready")
    assert parsed.text == "Hello\n220-there\nready"


def test_multi_line_with_empty_first_text() -> None:
    [parsed] = parse_all(b"230-\r\n230 Logged in\r\n")
    assert parsed.lines == ("230-", "230 Logged in")


SAMPLE_STREAM = (
    b"220-ProFTPD Server\r\n"
    b"220-Be nice\n"
    b"220 ready\r\n"
    + RFC_959_EXAMPLE
    + b"200\r\n"
    + '257 "/d\u00e9j\u00e0 vu" is the current directory\r\n'.encode()
)


def test_split_at_every_byte_boundary() -> None:
    expected = parse_all(SAMPLE_STREAM)
    assert len(expected) == 4
    for cut in range(len(SAMPLE_STREAM) + 1):
        assert feed_chunks(split_at(SAMPLE_STREAM, [cut])) == expected


def test_split_at_every_pair_of_boundaries() -> None:
    data = RFC_959_EXAMPLE + b"200 OK\r\n"
    expected = parse_all(data)
    for first in range(len(data) + 1):
        for second in range(first, len(data) + 1):
            assert feed_chunks(split_at(data, [first, second])) == expected


def test_one_byte_at_a_time() -> None:
    chunks = [SAMPLE_STREAM[i : i + 1] for i in range(len(SAMPLE_STREAM))]
    assert feed_chunks(chunks) == parse_all(SAMPLE_STREAM)


# --- ReplyParser: decoding --------------------------------------------------------------------


def test_utf8_text() -> None:
    [parsed] = parse_all("550 /données/ファイル.txt: No such file\r\n".encode())
    assert parsed.text == "/données/ファイル.txt: No such file"


def test_undecodable_bytes_fall_back_to_latin1() -> None:
    [parsed] = parse_all(b"550 /donn\xe9es: No such file\r\n")
    assert parsed.text == "/donn\xe9es: No such file"


def test_utf8_split_inside_a_character() -> None:
    data = "200 é\r\n".encode()
    assert feed_chunks([data[:5], data[5:]]) == [Reply(200, ("200 é",))]


# --- ReplyParser: hostile and broken input ----------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"hello\r\n",
        b"\r\n",
        b"\n",
        b"20 OK\r\n",
        b"2000 OK\r\n",
        b"200x OK\r\n",
        b"200\tOK\r\n",
        b"600 Out of range\r\n",
        b"099 Out of range\r\n",
        b" 200 Indented\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 400 Bad Request\r\n",
        b"\xff\xfe\xfd\r\n",
    ],
)
def test_garbage_first_line(data: bytes) -> None:
    with pytest.raises(FTPProtocolError) as info:
        parse_all(data)
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_garbage_after_a_good_reply() -> None:
    parser = ReplyParser()
    parser.feed(b"200 OK\r\nnonsense\r\n")
    assert parser.next_reply() == Reply(200, ("200 OK",))
    with pytest.raises(FTPProtocolError):
        parser.next_reply()


def test_longest_line_accepted() -> None:
    line = b"200 " + b"x" * (MAX_LINE_BYTES - 5) + b"\r"
    assert len(line) == MAX_LINE_BYTES
    [parsed] = parse_all(line + b"\n")
    assert len(parsed.lines[0]) == MAX_LINE_BYTES - 1


def test_overlong_line_with_ending() -> None:
    with pytest.raises(FTPProtocolError, match="longer"):
        parse_all(b"200 " + b"x" * MAX_LINE_BYTES + b"\r\n")


def test_overlong_line_without_ending_is_refused_before_it_ends() -> None:
    parser = ReplyParser()
    parser.feed(b"200 " + b"x" * 1000)
    assert parser.next_reply() is None
    parser.feed(b"x" * MAX_LINE_BYTES)
    with pytest.raises(FTPProtocolError, match="longer"):
        parser.next_reply()


def test_overlong_in_between_line() -> None:
    with pytest.raises(FTPProtocolError, match="longer"):
        parse_all(b"211-Start\r\n " + b"x" * MAX_LINE_BYTES + b"\r\n211 End\r\n")


def multi_line(total_lines: int) -> bytes:
    return b"211-Start\r\n" + b" x\r\n" * (total_lines - 2) + b"211 End\r\n"


def test_longest_multi_line_reply_accepted() -> None:
    [parsed] = parse_all(multi_line(MAX_REPLY_LINES))
    assert len(parsed.lines) == MAX_REPLY_LINES


def test_one_line_too_many() -> None:
    with pytest.raises(FTPProtocolError, match="lines"):
        parse_all(multi_line(MAX_REPLY_LINES + 1))


def test_endless_multi_line_reply() -> None:
    parser = ReplyParser()
    parser.feed(b"211-Start\r\n")
    with pytest.raises(FTPProtocolError, match="lines"):
        for _ in range(MAX_REPLY_LINES):
            parser.feed(b" x\r\n")
            assert parser.next_reply() is None


# --- Reply ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "preliminary", "success", "intermediate"),
    [
        (150, True, False, False),
        (226, False, True, False),
        (331, False, False, True),
        (421, False, False, False),
        (550, False, False, False),
    ],
)
def test_reply_classes(code: int, preliminary: bool, success: bool, intermediate: bool) -> None:
    parsed = Reply(code, (f"{code} text",))
    assert parsed.is_preliminary is preliminary
    assert parsed.is_success is success
    assert parsed.is_intermediate is intermediate


def test_reply_str() -> None:
    assert str(Reply(211, ("211-a", " b", "211 c"))) == "211 a\n b\nc"


# --- Property tests on the parser -------------------------------------------------------------

line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20)
codes = st.integers(min_value=100, max_value=599)


def ends_reply(line: str, code: int) -> bool:
    """Whether ``line`` closes a multi-line reply: three digits and a space (or nothing).

    ``code`` is not compared: any code closes the reply (case B2).
    """
    return len(line) >= 3 and line[:3].isdigit() and line[0] in "12345" and line[3:4] in ("", " ")


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    code = draw(codes)
    if draw(st.booleans()):
        text = draw(line_text)
        single = f"{code} {text}" if text or draw(st.booleans()) else str(code)
        return Reply(code, (single,))
    code_like = st.builds(
        lambda other, sep, text: f"{other}{sep}{text}",
        st.one_of(codes, st.just(code)),
        st.sampled_from(["", " ", "-", "0", "x"]),
        line_text,
    )
    middle = draw(
        st.lists(
            st.one_of(line_text, code_like).filter(lambda m: not ends_reply(m, code)), max_size=4
        )
    )
    first = f"{code}-{draw(line_text)}"
    closing = draw(st.one_of(st.just(code), codes))
    last = f"{closing} {draw(line_text)}" if draw(st.booleans()) else str(closing)
    return Reply(closing, (first, *middle, last))


@st.composite
def wire(draw: st.DrawFn) -> tuple[list[Reply], bytes]:
    sent = draw(st.lists(replies(), max_size=5))
    data = b"".join(
        line.encode() + draw(st.sampled_from([b"\r\n", b"\n"])) for r in sent for line in r.lines
    )
    return sent, data


@given(wire(), st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_chunking_never_changes_the_replies(
    sent_and_data: tuple[list[Reply], bytes], cuts: list[int]
) -> None:
    sent, data = sent_and_data
    chunks = split_at(data, [c % (len(data) + 1) for c in cuts])
    assert parse_all(data) == sent
    assert feed_chunks(chunks) == sent


fragments = st.one_of(
    st.binary(max_size=24),
    st.sampled_from([b"211-", b"211 ", b"211", b"200 ", b"\r\n", b"\n", b"\r", b"\xff", b" x"]),
)


@given(st.lists(fragments, max_size=30), st.lists(st.integers(min_value=0, max_value=1000)))
def test_any_bytes_raise_only_protocol_errors(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    with contextlib.suppress(FTPProtocolError):
        feed_chunks(split_at(data, [c % (len(data) + 1) for c in cuts]))


@settings(max_examples=20)
@given(st.binary(max_size=16), st.integers(min_value=0, max_value=255), st.binary(max_size=16))
def test_any_long_bytes_raise_only_protocol_errors(head: bytes, filler: int, tail: bytes) -> None:
    with contextlib.suppress(FTPProtocolError):
        parse_all(head + bytes([filler]) * MAX_LINE_BYTES + tail)


# --- build_command, verb_of --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "args", "expected"),
    [
        ("PASV", (), b"PASV\r\n"),
        ("USER", ("alice",), b"USER alice\r\n"),
        ("RETR", ("/dir with spaces/file name.txt",), b"RETR /dir with spaces/file name.txt\r\n"),
        ("STOR", ("/données/ファイル.txt",), "STOR /données/ファイル.txt\r\n".encode()),
        ("CWD", (" leading and trailing ",), b"CWD  leading and trailing \r\n"),
        ("MFMT", ("20240315123456", "/a b"), b"MFMT 20240315123456 /a b\r\n"),
        ("TYPE", ("I",), b"TYPE I\r\n"),
    ],
)
def test_build_command(verb: str, args: tuple[str, ...], expected: bytes) -> None:
    assert build_command(verb, *args) == expected


@pytest.mark.parametrize("bad", ["\r", "\n", "\x00", "\r\n", "\udc0a"])
@pytest.mark.parametrize("where", ["start", "middle", "end", "second argument"])
def test_unsafe_argument_refused(bad: str, where: str) -> None:
    args = {
        "start": (f"{bad}DELE /etc",),
        "middle": (f"/a{bad}DELE /etc",),
        "end": (f"/a{bad}",),
        "second argument": ("20240101000000", f"/a{bad}b"),
    }[where]
    with pytest.raises(UnsafeArgumentError) as info:
        build_command("STOR", *args)
    assert isinstance(info.value, FTPError)
    assert info.value.code is ErrorCode.PATH_NOT_ALLOWED
    assert not info.value.retryable


@pytest.mark.parametrize(
    "verb",
    [
        "",
        "US",
        "user",
        "User",
        "USERS",
        "RE TR",
        "RETR ",
        " RETR",
        "RETR\r\n",
        "RÉTR",
        "R3TR",
        "PA\x00S",
    ],
)
def test_bad_verb(verb: str) -> None:
    with pytest.raises(ValueError, match="verb"):
        build_command(verb, "x")


ftp_verbs = st.sampled_from(["USER", "PASS", "RETR", "STOR", "CWD", "MKD", "SITE", "MFMT"])


UNSAFE = "\r\n\x00\ud800\udc0a\udfff"
arguments = st.text(st.characters() | st.sampled_from(UNSAFE), max_size=20)


@given(ftp_verbs, st.lists(arguments, max_size=4))
def test_build_command_sends_exactly_one_line(verb: str, args: list[str]) -> None:
    try:
        command = build_command(verb, *args)
    except UnsafeArgumentError:
        assert any(c in "\r\n\x00" or 0xD800 <= ord(c) <= 0xDFFF for arg in args for c in arg)
        return
    assert command.endswith(b"\r\n")
    assert command.count(b"\r\n") == command.count(b"\n") == command.count(b"\r") == 1
    assert b"\x00" not in command
    assert command[:-2].decode() == " ".join((verb, *args))


@pytest.mark.parametrize(
    ("verb", "args"),
    [("USER", ("alice",)), ("RETR", ("/a b/é",)), ("PASV", ())],
)
def test_verb_of(verb: str, args: tuple[str, ...]) -> None:
    assert verb_of(build_command(verb, *args)) == verb


# --- 227 / 229 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("227 Entering Passive Mode (192,168,1,10,195,80).", ("192.168.1.10", 50000)),
        ("227 Entering passive mode (127,0,0,1,180,131).", ("127.0.0.1", 46211)),
        ("227 Entering Passive Mode 10,0,0,1,4,1", ("10.0.0.1", 1025)),
        ("227 =10,0,0,1,0,21", ("10.0.0.1", 21)),
        ("227 Entering Passive Mode (0,0,0,0,255,255)", ("0.0.0.0", 65535)),
        ("227 Entering Passive Mode (127,0,0,1,00188,00137)", ("127.0.0.1", 48265)),
        ("227 Entering Passive Mode (00127,0000,0,01,0,00021)", ("127.0.0.1", 21)),
    ],
)
def test_parse_pasv(line: str, expected: tuple[str, int]) -> None:
    assert parse_pasv(reply(line)) == expected


@pytest.mark.parametrize(
    "line",
    [
        "227 Entering Passive Mode (256,0,0,1,4,1)",
        "227 Entering Passive Mode (10,0,0,1,256,1)",
        "227 Entering Passive Mode (10,0,0,1,4,300)",
        "227 Entering Passive Mode (1234,0,0,1,4,1)",
        "227 Entering Passive Mode (10,0,0,1,4,1000)",
        "227 Entering Passive Mode (10,0,0,1,4)",
        "227 Entering Passive Mode",
        "227 Entering Passive Mode (a,b,c,d,e,f)",
        "227 Entering Passive Mode (127,0,0,1,0,0)",
        "227 Entering Passive Mode (127,0,0,1,000,0000)",
        "227 Entering Passive Mode (127,0,0,1,00256,00001)",
    ],
)
def test_parse_pasv_refuses(line: str) -> None:
    with pytest.raises(FTPProtocolError):
        parse_pasv(reply(line))


@pytest.mark.parametrize(
    ("line", "port"),
    [
        ("229 Entering Extended Passive Mode (|||6446|)", 6446),
        ("229 Entering Extended Passive Mode (|||6446|).", 6446),
        ("229 Entering Extended Passive Mode (!!!6446!)", 6446),
        ("229 EPSV ok (###21#)", 21),
        ("229 Entering Extended Passive Mode (|||1|)", 1),
        ("229 Entering Extended Passive Mode (|||65535|)", 65535),
    ],
)
def test_parse_epsv(line: str, port: int) -> None:
    assert parse_epsv(reply(line)) == port


@pytest.mark.parametrize(
    "line",
    [
        "229 Entering Extended Passive Mode (|!|6446|)",
        "229 Entering Extended Passive Mode (|||6446!)",
        "229 Entering Extended Passive Mode (!||6446|)",
        "229 Entering Extended Passive Mode (|||0|)",
        "229 Entering Extended Passive Mode (|||00000|)",
        "229 Entering Extended Passive Mode (|||65536|)",
        "229 Entering Extended Passive Mode (|||99999|)",
        "229 Entering Extended Passive Mode (|||123456|)",
        "229 Entering Extended Passive Mode (|||port|)",
        "229 Entering Extended Passive Mode (||38835|)",
        "229 Entering Extended Passive Mode (||||)",
        "229 Entering Passive Mode (10,0,0,1,4,1)",
        "229 Entering Extended Passive Mode",
    ],
)
def test_parse_epsv_refuses(line: str) -> None:
    with pytest.raises(FTPProtocolError):
        parse_epsv(reply(line))


# --- 213 SIZE, MDTM and time values -----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "size"),
    [
        ("213 0", 0),
        ("213 1234", 1234),
        ("213 4294967297", 4294967297),
        ("213 1234 ", 1234),
        ("213 120000 bytes", 120000),
        ("213 120000 Bytes.", 120000),
        ("213-Size follows\n213 120000", 120000),
        ("213-120000\n213 End", 120000),
        ("213-File status:\n 120000\n213 End of status", 120000),
    ],
)
def test_parse_size(line: str, size: int) -> None:
    """RFC 3659's bare number, or a number then words, on the first line that has one."""
    assert parse_size(reply(line)) == size


@pytest.mark.parametrize(
    "line",
    [
        "213 ",
        "213",
        "213 12a",
        "213 -1",
        "213 1.5",
        "213 1 234",
        "213 1,234 bytes",
        "213 ¹²³",
        "213 １２",
        "213 garbage",
        "213 size 1234",
        "213-Size follows\n213 unknown",
    ],
)
def test_parse_size_refuses(line: str) -> None:
    with pytest.raises(FTPProtocolError):
        parse_size(reply(line))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("213 20240315123456", datetime(2024, 3, 15, 12, 34, 56, tzinfo=UTC)),
        ("213 20240315123456.789", datetime(2024, 3, 15, 12, 34, 56, 789000, tzinfo=UTC)),
        ("213 20240315123456.5", datetime(2024, 3, 15, 12, 34, 56, 500000, tzinfo=UTC)),
        ("213 20240315123456.123456", datetime(2024, 3, 15, 12, 34, 56, 123456, tzinfo=UTC)),
        ("213 20240315123456.123456789", datetime(2024, 3, 15, 12, 34, 56, 123456, tzinfo=UTC)),
        ("213 20240229000000", datetime(2024, 2, 29, tzinfo=UTC)),
        ("213 20161231235960", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("213 20240315123456 /file name.txt", datetime(2024, 3, 15, 12, 34, 56, tzinfo=UTC)),
    ],
)
def test_parse_mdtm(line: str, expected: datetime) -> None:
    assert parse_mdtm(reply(line)) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "2024031512345",
        "202403151234567",
        "20241315123456",
        "20240230123456",
        "20230229123456",
        "20240315243456",
        "20240315126056",
        "20240315123461",
        "20240315123499",
        "00000101000000",
        "20240315123456.",
        "20240315123456.abc",
        "2024-03-15T12:34:56",
        "191240315123456",
    ],
)
def test_parse_time_val_refuses(value: str) -> None:
    with pytest.raises(FTPProtocolError):
        parse_time_val(value)


@pytest.mark.parametrize("line", ["213 ", "213 not a date"])
def test_parse_mdtm_refuses(line: str) -> None:
    with pytest.raises(FTPProtocolError):
        parse_mdtm(reply(line))


@pytest.mark.parametrize(
    ("moment", "value"),
    [
        (datetime(2024, 3, 15, 12, 34, 56, tzinfo=UTC), "20240315123456"),
        (datetime(2024, 3, 15, 12, 34, 56, 999999, tzinfo=UTC), "20240315123456"),
        (datetime(2024, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))), "20231231230000"),
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "09990102030405"),
    ],
)
def test_format_time_val(moment: datetime, value: str) -> None:
    assert format_time_val(moment) == value


def test_format_time_val_refuses_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_time_val(datetime(2024, 3, 15, 12, 34, 56))


offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)), offsets)
def test_time_val_round_trip(local: datetime, zone: timezone) -> None:
    moment = local.replace(microsecond=0, tzinfo=zone)
    assert parse_time_val(format_time_val(moment)) == moment


# --- 257 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "path"),
    [
        ('257 "/home/alice" is the current directory', "/home/alice"),
        ('257 "/" is current directory.', "/"),
        ('257 "/a ""quoted"" dir" created', '/a "quoted" dir'),
        ('257 """"', '"'),
        ('257 ""', ""),
        ('257 "/données/ファイル" created', "/données/ファイル"),
        ('257 MKD command successful: "/new dir" created', "/new dir"),
        ('257 "/first" and "/second"', "/first"),
        ("257 /home/alice is the current directory", "/home/alice"),  # unquoted: embedded servers
        ("257 Current directory is /srv/ftp/in.", "/srv/ftp/in."),
        ("257 /", "/"),
    ],
)
def test_parse_257(line: str, path: str) -> None:
    assert parse_257(reply(line)) == path


@pytest.mark.parametrize(
    "line",
    ["257 MKD command successful.", "257", '257 "/home', '257 "/a""', "257 home/alice"],
)
def test_parse_257_refuses(line: str) -> None:
    with pytest.raises(FTPProtocolError):
        parse_257(reply(line))


# --- FEAT -------------------------------------------------------------------------------------

VSFTPD_FEAT = (
    b"211-Features:\r\n AUTH SSL\r\n AUTH TLS\r\n EPRT\r\n EPSV\r\n MDTM\r\n PASV\r\n PBSZ\r\n"
    b" PROT\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End\r\n"
)
PURE_FTPD_FEAT = (
    b"211-Extensions supported:\r\n EPRT\r\n IDLE\r\n MDTM\r\n SIZE\r\n MFMT\r\n REST STREAM\r\n"
    b" MLST type*;size*;sizd*;modify*;UNIX.mode*;UNIX.uid*;UNIX.gid*;unique*;\r\n MLSD\r\n"
    b" AUTH TLS\r\n PBSZ\r\n PROT\r\n UTF8\r\n TVFS\r\n ESTA\r\n PASV\r\n EPSV\r\n SPSV\r\n"
    b" ESTP\r\n211 End.\r\n"
)
PROFTPD_FEAT = (
    b"211-Features:\r\n AUTH TLS\r\n CCC\r\n CLNT\r\n EPRT\r\n EPSV\r\n HOST\r\n"
    b" LANG en-US.UTF-8*;en-US\r\n MDTM\r\n MFF modify;UNIX.group;UNIX.mode;\r\n MFMT\r\n"
    b" MLST modify*;perm*;size*;type*;unique*;UNIX.group*;UNIX.groupname*;UNIX.mode*;"
    b"UNIX.owner*;UNIX.ownername*;\r\n PBSZ\r\n PROT\r\n RANG STREAM\r\n REST STREAM\r\n SIZE\r\n"
    b" SSCN\r\n TVFS\r\n UTF8\r\n211 End\r\n"
)
PYFTPDLIB_FEAT = (
    b"211-Features supported:\r\n EPRT\r\n EPSV\r\n MDTM\r\n MFMT\r\n"
    b" MLST type*;perm*;size*;modify*;unique*;unix.mode;unix.uid;unix.gid;\r\n REST STREAM\r\n"
    b" SIZE\r\n TVFS\r\n UTF8\r\n211 End FEAT.\r\n"
)


def feat(data: bytes) -> dict[str, str]:
    [parsed] = parse_all(data)
    return parse_feat(parsed)


def test_feat_vsftpd() -> None:
    assert feat(VSFTPD_FEAT) == {
        "AUTH": "SSL TLS",
        "EPRT": "",
        "EPSV": "",
        "MDTM": "",
        "PASV": "",
        "PBSZ": "",
        "PROT": "",
        "REST": "STREAM",
        "SIZE": "",
        "TVFS": "",
        "UTF8": "",
    }


def test_feat_pure_ftpd() -> None:
    features = feat(PURE_FTPD_FEAT)
    assert features["MLST"] == "type*;size*;sizd*;modify*;UNIX.mode*;UNIX.uid*;UNIX.gid*;unique*;"
    assert features["AUTH"] == "TLS"
    assert {"MLSD", "MFMT", "EPSV", "SIZE", "UTF8", "ESTP"} <= features.keys()
    assert len(features) == 18


def test_feat_proftpd() -> None:
    features = feat(PROFTPD_FEAT)
    assert features["LANG"] == "en-US.UTF-8*;en-US"
    assert features["MFF"] == "modify;UNIX.group;UNIX.mode;"
    assert features["MLST"].startswith("modify*;perm*;size*;type*;")
    assert features["REST"] == "STREAM"
    assert features["RANG"] == "STREAM"
    assert "MLSD" not in features
    assert len(features) == 19


def test_feat_pyftpdlib() -> None:
    assert feat(PYFTPDLIB_FEAT) == {
        "EPRT": "",
        "EPSV": "",
        "MDTM": "",
        "MFMT": "",
        "MLST": "type*;perm*;size*;modify*;unique*;unix.mode;unix.uid;unix.gid;",
        "REST": "STREAM",
        "SIZE": "",
        "TVFS": "",
        "UTF8": "",
    }


def test_feat_names_are_upper_cased() -> None:
    assert feat(b"211-Features\r\n mdtm\r\n  size \r\n\r\n211 End\r\n") == {"MDTM": "", "SIZE": ""}


def test_feat_single_line_means_none() -> None:
    assert feat(b"211 no features\r\n") == {}


# --- Every parser checks the reply code -------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "line"),
    [
        (parse_pasv, "500 PASV not understood"),
        (parse_pasv, "150 Entering Passive Mode (10,0,0,1,4,1)"),
        (parse_epsv, "502 EPSV not implemented"),
        (parse_epsv, "350 Entering Extended Passive Mode (|||6446|)"),
        (parse_size, "550 /a: No such file or directory"),
        (parse_size, "350 1234"),
        (parse_mdtm, "550 /a: No such file or directory"),
        (parse_257, "550 Create directory operation failed."),
        (parse_feat, "500 Unknown command."),
    ],
)
def test_wrong_reply_code(parse: object, line: str) -> None:
    assert callable(parse)
    with pytest.raises(FTPProtocolError, match="expected reply"):
        parse(reply(line))


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("150 Opening BINARY mode data connection for /f0.bin (4096 bytes).", 4096),
        ("150 Opening BINARY mode data connection for a (1 byte)", 1),
        ("150 File status okay. About to open data connection.", None),
        ("150 4.0 kbytes to download", None),
    ],
)
def test_announced_size(text: str, size: int | None) -> None:
    assert announced_size(Reply(150, (text,))) == size


def test_unsafe_argument_error_never_quotes_the_argument() -> None:
    with pytest.raises(UnsafeArgumentError) as caught:
        build_command("PASS", "hunter2\r\n")
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(caught.value)
    assert caught.value.message.startswith("PASS:")


# --- Interop: formats servers really send (issue 12, kinds A, B, C, G) -------------------------


def test_parsers_accept_any_2xx_whose_content_parses() -> None:
    """Kind C: success is the class; the content is what matters."""
    assert parse_pasv(reply("200 =10,0,0,1,4,1")) == ("10.0.0.1", 1025)
    assert parse_epsv(reply("200 EPSV ok (|||6446|)")) == 6446
    assert parse_size(reply("250 1234")) == 1234
    assert parse_mdtm(reply("211 20240315123456")) == datetime(2024, 3, 15, 12, 34, 56, tzinfo=UTC)
    assert parse_257(reply('250 "/a" is current directory')) == "/a"
    assert parse_feat(Reply(214, ("214-Features", " SIZE", "214 End"))) == {"SIZE": ""}


@pytest.mark.parametrize(
    ("line", "port"),
    [
        ("229 Entering Extended Passive Mode |||6446|", 6446),
        ("229 Entering Extended Passive Mode ( |||6446| )", 6446),
        ("229 Entering Extended Passive Mode (||| 6446 |)", 6446),
        ("229 Entering Extended Passive Mode (|1|127.0.0.1|6446|)", 6446),
        ("229 Entering Extended Passive Mode (|2|::1|6446|)", 6446),
        ("229 Entering Passive Mode. Really. (|||6446|).", 6446),
        ("229 Entering Passive Mode. (|2|127.0.0.1|6446|)", 6446),
        ("229 v1.2.3 ready: |1|10.0.0.1|6446|", 6446),
    ],
)
def test_parse_epsv_lenient_forms(line: str, port: int) -> None:
    assert parse_epsv(reply(line)) == port


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("227 Entering Passive Mode (127, 0, 0, 1, 210, 65).", ("127.0.0.1", 53825)),
        ("227 Entering Passive Mode (127,0,0,1,210,65", ("127.0.0.1", 53825)),
        ("227 Entering Passive Mode [127,0,0,1,210,65]", ("127.0.0.1", 53825)),
        ("227 Entering Passive Mode <127,000,000,001,210,065>", ("127.0.0.1", 53825)),
        ("227 Passive mode on 127,0,0,1,210,65 (2 of 4 ports)", ("127.0.0.1", 53825)),
    ],
)
def test_parse_pasv_formats_seen(line: str, expected: tuple[str, int]) -> None:
    assert parse_pasv(reply(line)) == expected


# Text around the numbers: anything without digits next to them or commas between them.
around = st.text(st.characters(codec="ascii", exclude_characters="\r\n0123456789,"), max_size=30)
spaces = st.text(" \t", max_size=2)
octet = st.integers(min_value=0, max_value=255)


@given(
    st.lists(octet, min_size=4, max_size=4),
    st.integers(min_value=1, max_value=65535),
    around,
    around,
    st.sampled_from(["()", "[]", "<>", "", "(", "=", "{}"]),
    spaces,
    spaces,
    st.sampled_from([227, 200, 229]),
    st.integers(min_value=0, max_value=6),
)
def test_parse_pasv_finds_the_address_in_any_text(
    host: list[int],
    port: int,
    before: str,
    after: str,
    brackets: str,
    space_before: str,
    space_after: str,
    code: int,
    zero_pad: int,
) -> None:
    numbers = [*host, port // 256, port % 256]
    shown = [f"{n:0{zero_pad}d}" if zero_pad else str(n) for n in numbers]
    inner = f"{space_before},{space_after}".join(shown)
    opening, closing = (brackets + "  ")[0].strip(), (brackets + "  ")[1].strip()
    line = f"{code} {before}{opening}{inner}{closing}{after}"
    assert parse_pasv(reply(line)) == (".".join(map(str, host)), port)


# RFC 2428 allows any printable delimiter; a bracket as delimiter is ambiguous with the
# brackets around the field, and a comma is kept for PASV-style text.
delimiters = st.characters(min_codepoint=33, max_codepoint=126).filter(
    lambda c: not c.isdigit() and c not in ",()"
)


@given(
    delimiters,
    st.integers(min_value=1, max_value=65535),
    around,
    around,
    st.booleans(),
    spaces,
    st.sampled_from(["", "1", "2"]),
    st.sampled_from(["", "127.0.0.1", "::1"]),
)
def test_parse_epsv_finds_the_port_in_any_text(
    delimiter: str,
    port: int,
    before: str,
    after: str,
    bracketed: bool,
    space: str,
    protocol: str,
    address: str,
) -> None:
    d = delimiter
    address = address if d not in address else ""
    body = f"{d}{protocol}{d}{address}{d}{space}{port}{space}{d}"
    text = f"({body})" if bracketed else body
    # Text next to the body must not hold the delimiter itself (it would be read as a field).
    before, after = before.replace(d, ""), after.replace(d, "")
    assert parse_epsv(reply(f"229 {before}{text}{after}")) == port


@given(delimiters, st.integers(min_value=1, max_value=65535), around)
def test_epsv_with_a_delimiter_missing_is_refused(delimiter: str, port: int, text: str) -> None:
    """Case A2: ``(||38835|)`` has no port we can trust; the session falls back to PASV."""
    d = delimiter
    text = text.replace(d, "")
    with pytest.raises(FTPProtocolError):
        parse_epsv(reply(f"229 {text}({d}{d}{port}{d})"))


FEAT_NAMES = st.sampled_from(["EPSV", "MDTM", "MFMT", "REST STREAM", "SIZE", "UTF8", "MLST type*;"])


@given(
    st.lists(FEAT_NAMES, min_size=1, max_size=6, unique=True),
    st.sampled_from(["211-", " ", "", "  ", "211-  "]),
    st.sampled_from(["\r\n", "\n"]),
)
def test_feat_lines_with_code_prefix_or_no_indent(names: list[str], prefix: str, eol: str) -> None:
    """Kind B: ``211-SIZE`` (ProFTPD's option), `` SIZE`` (RFC 2389) and ``SIZE`` read alike."""
    data = f"211-Features:{eol}" + "".join(f"{prefix}{n}{eol}" for n in names) + f"211 End{eol}"
    features = feat(data.encode())
    assert features == {n.split(" ", 1)[0]: (n.split(" ", 1) + [""])[1] for n in names}


def test_feat_case_b1() -> None:
    data = (
        b"211-Features:\r\n211-EPSV\r\n211-MDTM\r\n211-MFMT\r\n211-REST STREAM\r\n"
        b"211-SIZE\r\n211-UTF8\r\n211 End\r\n"
    )
    assert feat(data) == {
        "EPSV": "", "MDTM": "", "MFMT": "", "REST": "STREAM", "SIZE": "", "UTF8": ""
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("150 Opening BINARY mode data connection for /data/invoice (5 bytes).csv (200000 bytes).",
         200000),
        ("150 Opening BINARY mode data connection for (1 bytes) (2 bytes) (3 bytes)", 3),
        ("150 Opening BINARY mode data connection for a (12 Bytes).", 12),
        ("150 Opening data connection for (7 bytes).txt", 7),
    ],
)  # fmt: skip
def test_announced_size_is_the_last_one(text: str, size: int) -> None:
    """Kind G: vsftpd puts the name first, and a name may hold ``(N bytes)`` itself."""
    assert announced_size(Reply(150, (text,))) == size


@given(
    st.lists(st.tuples(st.text(max_size=8), st.integers(0, 10**12)), max_size=3),
    st.integers(0, 10**12),
)
def test_announced_size_property(names: list[tuple[str, int]], size: int) -> None:
    name = "".join(f"{text} ({n} bytes)" for text, n in names)
    assert announced_size(Reply(150, (f"150 Opening for {name} ({size} bytes).",))) == size


# --- Unasked replies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "line", "unasked"),
    [
        ("FEAT", "230 Login successful.", True),
        ("TYPE", "230 Already logged in.", True),
        ("MDTM", "226 Transfer complete.", True),
        ("SIZE", "226 Transfer complete.", True),
        ("EPSV", "226 Transfer complete.", True),
        ("CWD", "227 Entering Passive Mode (1,2,3,4,5,6)", True),
        ("PASS", "230 Login successful.", False),
        ("RETR", "226 Transfer complete.", False),
        ("EPSV", "227 Entering Passive Mode (1,2,3,4,5,6)", False),
        ("PASV", "229 Entering Extended Passive Mode (|||6446|)", False),
        ("SIZE", "229 Entering Extended Passive Mode (|||6446|)", True),
        ("MDTM", "213 20240101000000", False),
        ("MDTM", "550 Operation not permitted", False),
        ("TYPE", "200 Switching to Binary mode.", False),
        ("AUTH", "200 AUTH command ok", False),
        ("SIZE", "421 Timeout.", False),
    ],
)
def test_is_unsolicited(verb: str, line: str, unasked: bool) -> None:
    from ftp_pooler.ftp.protocol import is_unsolicited

    assert is_unsolicited(verb, reply(line)) is unasked


ANSWERS = {
    "USER": "331 Please specify the password.",
    "PASS": "230 Login successful.",
    "FEAT": "211 No features",
    "TYPE": "200 Switching to Binary mode.",
    "EPSV": "229 Entering Extended Passive Mode (|||6446|)",
    "PASV": "227 Entering Passive Mode (127,0,0,1,4,1)",
    "SIZE": "213 1234",
    "MDTM": "213 20240101000000",
    "CWD": "250 Directory successfully changed.",
    "MKD": '257 "/a" created',
    "DELE": "550 No such file",
    "RNFR": "350 Ready for RNTO.",
    "RNTO": "250 Rename successful.",
}
UNASKED = ["226 Transfer complete.", "230 Login successful.", "225 Data connection open."]


@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(ANSWERS)), st.lists(st.sampled_from(UNASKED), max_size=2)),
        max_size=10,
    )
)
def test_unasked_replies_never_shift_the_answers(
    dialogue: list[tuple[str, list[str]]],
) -> None:
    """A reader that drops replies :func:`is_unsolicited` names gets each command's own answer.

    The unasked replies are interleaved before the answer, except where the
    code belongs to the command (a 230 before PASS's answer would be taken as
    the answer, and rightly: nothing tells them apart).
    """
    from ftp_pooler.ftp.protocol import is_unsolicited

    wire: list[tuple[str, Reply]] = []
    for verb, extras in dialogue:
        for extra in extras:
            if is_unsolicited(verb, reply(extra)):
                wire.append(("unasked", reply(extra)))
        wire.append((verb, reply(ANSWERS[verb])))
    stream = iter(wire)
    for verb, _ in dialogue:
        origin, got = next(stream)
        while is_unsolicited(verb, got):
            origin, got = next(stream)
        assert origin == verb and got == reply(ANSWERS[verb])


# --- Secrets and command lengths ---------------------------------------------------------------


def test_scrub_replaces_every_secret() -> None:
    from ftp_pooler.ftp.protocol import scrub, scrub_reply

    assert scrub("530 Login incorrect for hunter2 (hunter2)", ("hunter2",)) == (
        "530 Login incorrect for *** (***)"
    )
    assert scrub("nothing here", ("", "x" * 5)) == "nothing here"
    sent = Reply(530, ("530-user alice pass hunter2", "530 denied"))
    assert "hunter2" not in str(scrub_reply(sent, ("hunter2",)))
    unchanged = Reply(200, ("200 OK",))
    assert scrub_reply(unchanged, ("hunter2",)) is unchanged


@pytest.mark.parametrize(
    ("secret", "echo"),
    [
        ("s3cr3t pw/\u00fc!", "s3cr3t%20pw%2F%C3%BC%21"),  # quote(safe="")
        ("s3cr3t pw/\u00fc!", "s3cr3t%20pw/%C3%BC%21"),  # quote()
        ("s3cr3t pw/\u00fc!", "s3cr3t+pw%2F%C3%BC%21"),  # quote_plus
        ("s3cr3t pw/\u00fc!", "s3cr3t%20pw%2f%c3%bc%21"),  # lower-case hex
        ("s3cr3t pw/\u00fc!", "s3cr3t pw/\u00c3\u00bc!"),  # UTF-8 bytes read as Latin-1
        ("hunter2secret", "HUNTER2SECRET"),
        ("Hunter2Secret", "hunter2secret"),
        ("Stra\u00dfe-pw", "STRASSE-PW"),
        ("p@ss.*(w)rd[1]+$^|{2}", "p@ss.*(w)rd[1]+$^|{2}"),
    ],
)
def test_scrub_finds_the_password_in_other_spellings(secret: str, echo: str) -> None:
    """M1: servers echo the password percent-encoded or case-folded."""
    from ftp_pooler.ftp.protocol import scrub

    assert scrub(f"530 Login incorrect for {echo}.", (secret,)) == "530 Login incorrect for ***."


@pytest.mark.parametrize("secret", ["5", "a", "ab", "abc", "550"])
def test_scrub_leaves_text_alone_for_a_password_too_short_to_find(secret: str) -> None:
    """M2: a 1-3 character password would be found inside codes and words and spelled
    out by the masking (``******0``); replies to USER/PASS lose their text instead."""
    from ftp_pooler.ftp.protocol import scrub, withholds_text

    text = "550 /data/banana.bin: Failed to open file."
    assert scrub(text, (secret,)) == text
    assert withholds_text("PASS", secret) and withholds_text("USER", secret)
    assert not withholds_text("RETR", secret)


def test_text_of_replies_to_pass_is_never_kept() -> None:
    from ftp_pooler.ftp.protocol import withheld, withholds_text

    assert withholds_text("PASS", "long-enough-secret")
    assert withholds_text("acct", "long-enough-secret")
    assert not withholds_text("USER", "long-enough-secret")  # long: scrubbed instead
    assert not withholds_text("USER", "")  # no password at all: nothing to echo
    assert not withholds_text(None, "abc")
    kept = withheld(Reply(530, ("530-Login incorrect for hunter2", "530 Bye hunter2")))
    assert kept.code == 530 and "hunter2" not in str(kept)
    assert str(kept).startswith("530 login refused")


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        (500, True),
        (501, True),
        (502, True),
        (504, True),
        (522, True),
        (425, True),
        (450, True),
        (451, True),
        (534, True),
        (550, True),
        (553, True),
        (530, False),
        (421, False),
        (229, False),
        (150, False),
        (350, False),
    ],
)
def test_any_error_but_session_gone_refuses_epsv(code: int, refused: bool) -> None:
    """RFC 959 4.2 (500/501/502/504), RFC 2428 (522) and what NAT'd or misconfigured
    servers send (550, 534, 425, 451) mean "PASV instead"; a 530 says the session is no
    longer logged in, a 421 that it is closing: nothing about EPSV."""
    from ftp_pooler.ftp.protocol import NOT_UNDERSTOOD, refuses_epsv

    assert refuses_epsv(Reply(code, (f"{code} no",))) is refused
    # Over IPv6 PASV has no address to give: only "not implemented" switches.
    not_implemented = code in NOT_UNDERSTOOD or code == 522
    assert refuses_epsv(Reply(code, (f"{code} no",)), ipv6=True) is not_implemented


def test_command_longer_than_servers_accept_is_refused_before_sending() -> None:
    from ftp_pooler.ftp.protocol import MAX_COMMAND_BYTES, CommandTooLongError

    fits = "/" + "a" * (MAX_COMMAND_BYTES - len("RETR /\r\n"))
    assert len(build_command("RETR", fits)) == MAX_COMMAND_BYTES
    with pytest.raises(CommandTooLongError) as caught:
        build_command("RETR", fits + "a")
    assert caught.value.code is ErrorCode.PATH_NOT_ALLOWED
    assert "aaaa" not in caught.value.message


def test_path_fits_counts_utf8_bytes() -> None:
    from ftp_pooler.ftp.protocol import MAX_PATH_BYTES, path_fits

    assert path_fits("/" + "a" * (MAX_PATH_BYTES - 1))
    assert not path_fits("/" + "a" * MAX_PATH_BYTES)
    assert not path_fits("é" * (MAX_PATH_BYTES // 2 + 1))


@pytest.mark.parametrize(
    "data",
    [
        b"211-EPSV\r\n211-SIZE\r\n211 End\r\n",
        b"211-EPSV\r\n SIZE\r\n211 END\r\n",
    ],
)
def test_feat_without_a_header_line(data: bytes) -> None:
    assert feat(data) == {"EPSV": "", "SIZE": ""}


@pytest.mark.parametrize("header", ["Features:", "Extensions supported", "Features supported:", ""])
def test_feat_header_lines_are_not_features(header: str) -> None:
    data = f"211-{header}\r\n MDTM\r\n211 End\r\n".encode()
    assert feat(data) == {"MDTM": ""}


@pytest.mark.parametrize(
    ("size", "preliminary", "expected"),
    [
        (1000, "150 Opening BINARY mode data connection for a.bin (1000 bytes).", 1000),
        (1000, "150 Opening BINARY mode data connection for a.bin (2000 bytes).", 2000),
        (3000, "150 Opening BINARY mode data connection for a.bin (2000 bytes).", 3000),
        (1000, "150 Accepted data connection", 1000),
        (None, "150 Opening BINARY mode data connection for a.bin (1000 bytes).", None),
        (1000, None, 1000),
    ],
)
def test_most_announced_trusts_size_and_never_a_150_alone(
    size: int | None, preliminary: str | None, expected: int | None
) -> None:
    first = None if preliminary is None else reply(preliminary)
    assert most_announced(size, first, "a.bin") == expected


@pytest.mark.parametrize(
    ("command", "text", "expected"),
    [
        ("RNTO", "550 b.txt: Rename permission denied", True),  # proftpd AllowOverwrite off
        ("RNTO", "553 File exists.", True),
        ("RNTO", "451 Rename failed, try later.", False),
        ("RNTO", "502 Not implemented.", False),
        ("RNFR", "550 No such file.", False),
        ("RNFR", "502 Not implemented.", False),
        (None, "550 Rename permission denied", False),
    ],
)
def test_only_a_permanent_rnto_refusal_may_mean_the_target_exists(
    command: str | None, text: str, expected: bool
) -> None:
    assert may_refuse_existing_target(command, reply(text)) is expected
