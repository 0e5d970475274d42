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
    parse_257,
    parse_epsv,
    parse_feat,
    parse_mdtm,
    parse_pasv,
    parse_size,
    parse_time_val,
    verb_of,
)


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


def reply(line: str) -> Reply:
    return Reply(int(line[:3]), (line,))


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
        "200 another code with a space",
        "200-another code with a hyphen",
        "200",
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
    return line[:3] == str(code) and line[3:4] in ("", " ")


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
    last = f"{code} {draw(line_text)}" if draw(st.booleans()) else str(code)
    return Reply(code, (first, *middle, last))


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
    try:
        feed_chunks(split_at(data, [c % (len(data) + 1) for c in cuts]))
    except FTPProtocolError:
        pass


@settings(max_examples=20)
@given(st.binary(max_size=16), st.integers(min_value=0, max_value=255), st.binary(max_size=16))
def test_any_long_bytes_raise_only_protocol_errors(head: bytes, filler: int, tail: bytes) -> None:
    try:
        parse_all(head + bytes([filler]) * MAX_LINE_BYTES + tail)
    except FTPProtocolError:
        pass


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
        "229 Entering Extended Passive Mode |||6446|",
        "229 Entering Extended Passive Mode (||||)",
        "229 Entering Extended Passive Mode",
    ],
)
def test_parse_epsv_refuses(line: str) -> None:
    with pytest.raises(FTPProtocolError):
        parse_epsv(reply(line))


# --- 213 SIZE, MDTM and time values -----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "size"),
    [("213 0", 0), ("213 1234", 1234), ("213 4294967297", 4294967297), ("213 1234 ", 1234)],
)
def test_parse_size(line: str, size: int) -> None:
    assert parse_size(reply(line)) == size


@pytest.mark.parametrize(
    "line", ["213 ", "213", "213 12a", "213 -1", "213 1.5", "213 1 234", "213 ¹²³", "213 １２"]
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
    ],
)
def test_parse_257(line: str, path: str) -> None:
    assert parse_257(reply(line)) == path


@pytest.mark.parametrize(
    "line",
    ["257 /home/alice is the current directory", "257", '257 "/home', '257 "/a""'],
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
        (parse_pasv, "229 Entering Extended Passive Mode (|||6446|)"),
        (parse_pasv, "500 PASV not understood"),
        (parse_epsv, "227 Entering Passive Mode (10,0,0,1,4,1)"),
        (parse_epsv, "502 EPSV not implemented"),
        (parse_size, "550 /a: No such file or directory"),
        (parse_size, "212 1234"),
        (parse_mdtm, "550 /a: No such file or directory"),
        (parse_mdtm, "211 20240315123456"),
        (parse_257, '250 "/a" is current directory'),
        (parse_257, "550 Create directory operation failed."),
        (parse_feat, "500 Unknown command."),
        (parse_feat, "214 Help OK."),
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
