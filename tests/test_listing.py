"""Directory listings: one line of MLSD, LIST or NLST output in, one entry out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftp_pooler.errors import FTPProtocolError
from ftp_pooler.ftp.listing import (
    EntryType,
    ListingEntry,
    parse_list_line,
    parse_mlsd_line,
    parse_nlst_line,
)
from ftp_pooler.ftp.protocol import format_time_val

NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


# --- MLSD -------------------------------------------------------------------------------------


def test_mlsd_pyftpdlib_file() -> None:
    entry = parse_mlsd_line(
        "modify=20261123103915;perm=radfwMT;size=5;type=file;unique=fe00g20c0c8; a file.txt"
    )
    assert entry == ListingEntry(
        name="a file.txt",
        type="file",
        size=5,
        modified=at(2026, 11, 23, 10, 39, 15),
        facts={
            "modify": "20261123103915",
            "perm": "radfwMT",
            "size": "5",
            "type": "file",
            "unique": "fe00g20c0c8",
        },
    )
    assert not entry.is_self_or_parent


def test_mlsd_pyftpdlib_dir() -> None:
    entry = parse_mlsd_line(
        "modify=20261123103915;perm=eldfmMTcp;size=4096;type=dir;unique=fe00g20c0c9; sub dir\r\n"
    )
    assert (entry.name, entry.type, entry.size) == ("sub dir", "dir", 4096)


def test_mlsd_pure_ftpd() -> None:
    lines = [
        (
            "type=cdir;sizd=4096;modify=20240301101500;UNIX.mode=0755;UNIX.uid=1000;UNIX.gid=1000;"
            "unique=803g2a1e; ."
        ),
        (
            "type=pdir;sizd=4096;modify=20240101000000;UNIX.mode=0755;UNIX.uid=0;UNIX.gid=0;"
            "unique=803g2; .."
        ),
        (
            "type=file;size=104857600;modify=20240314235959;UNIX.mode=0644;UNIX.uid=1000;"
            "UNIX.gid=1000;unique=803g2a1f; big.bin"
        ),
        (
            "type=dir;sizd=4096;modify=20240301101500;UNIX.mode=0755;UNIX.uid=1000;UNIX.gid=1000;"
            "unique=803g2a20; incoming"
        ),
        (
            "type=OS.unix=slink:/srv/ftp/big.bin;size=9;modify=20240301101500;UNIX.mode=0777;"
            "UNIX.uid=1000;UNIX.gid=1000;unique=803g2a21; latest"
        ),
    ]
    cdir, pdir, file, directory, link = (parse_mlsd_line(line) for line in lines)
    assert (cdir.type, cdir.is_self_or_parent, cdir.size) == ("dir", True, None)
    assert (pdir.type, pdir.is_self_or_parent) == ("dir", True)
    assert (file.name, file.type, file.size) == ("big.bin", "file", 104857600)
    assert file.modified == at(2024, 3, 14, 23, 59, 59)
    assert file.facts["unix.mode"] == "0644"
    assert (directory.type, directory.facts["sizd"]) == ("dir", "4096")
    assert not directory.is_self_or_parent
    assert (link.name, link.type) == ("latest", "link")
    assert link.facts["type"] == "OS.unix=slink:/srv/ftp/big.bin"


def test_mlsd_proftpd() -> None:
    entry = parse_mlsd_line(
        "modify=20240314101112.123;perm=adfrw;size=1234;type=file;unique=FD00U2A1F;"
        "UNIX.group=1000;UNIX.groupname=ftp;UNIX.mode=0644;UNIX.owner=1000;UNIX.ownername=ftp;"
        " report 2024.csv"
    )
    assert entry.name == "report 2024.csv"
    assert entry.modified == at(2024, 3, 14, 10, 11, 12, 123000)
    assert entry.facts["unix.ownername"] == "ftp"
    link = parse_mlsd_line(
        "modify=20240314101112;perm=adfrw;type=OS.unix=symlink;unique=FD00U2A20; current"
    )
    assert link.type == "link"


@pytest.mark.parametrize(
    ("type_fact", "expected", "self_or_parent"),
    [
        ("file", "file", False),
        ("File", "file", False),
        ("dir", "dir", False),
        ("DIR", "dir", False),
        ("cdir", "dir", True),
        ("CDir", "dir", True),
        ("pdir", "dir", True),
        ("OS.unix=slink:/target with spaces", "link", False),
        ("os.unix=symlink", "link", False),
        ("OS.unix=chr-1/3", "other", False),
        ("OS.unix=blk-8/0", "other", False),
        ("", "other", False),
    ],
)
def test_mlsd_types(type_fact: str, expected: EntryType, self_or_parent: bool) -> None:
    entry = parse_mlsd_line(f"type={type_fact};size=0; x")
    assert entry.type == expected
    assert entry.is_self_or_parent is self_or_parent


def test_mlsd_fact_names_are_case_insensitive() -> None:
    entry = parse_mlsd_line("Type=file;SIZE=42;Modify=20240101000000;Perm=r; File.TXT")
    assert entry.facts == {"type": "file", "size": "42", "modify": "20240101000000", "perm": "r"}
    assert (entry.type, entry.size, entry.modified) == ("file", 42, at(2024, 1, 1))
    assert entry.name == "File.TXT"


def test_mlsd_without_size_or_modify() -> None:
    entry = parse_mlsd_line("type=dir;perm=el; pub")
    assert (entry.size, entry.modified) == (None, None)


def test_mlsd_without_facts() -> None:
    assert parse_mlsd_line(" only a name") == ListingEntry(name="only a name", type="other")


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("type=file;size=1;  leading space", " leading space"),
        ("type=file;size=1; trailing space ", "trailing space "),
        ("type=file;size=1; semi; colon", "semi; colon"),
        ("type=file;size=1; a=b;c=d", "a=b;c=d"),
        ("type=file;size=1; données ファイル.txt", "données ファイル.txt"),
        ("type=file;size=1; .", "."),
    ],
)
def test_mlsd_names(line: str, name: str) -> None:
    assert parse_mlsd_line(line).name == name


@pytest.mark.parametrize(
    "line",
    [
        "",
        "a.txt",
        "type=file;size=1;a.txt",
        "type=file;size=1;",
        "type=file;size=1; ",
        " ",
        "type=file;noequals; a.txt",
        "type=file;;size=1; a.txt",
        "=file;size=1; a.txt",
        "; a.txt",
        "type=file;size=12a; a.txt",
        "type=file;size=-1; a.txt",
        "type=file;size=; a.txt",
        "type=file;modify=20241301000000; a.txt",
        "type=file;modify=yesterday; a.txt",
    ],
)
def test_mlsd_malformed(line: str) -> None:
    with pytest.raises(FTPProtocolError):
        parse_mlsd_line(line)


def test_entries_are_hashable_values() -> None:
    first = parse_mlsd_line("type=file;size=1; a")
    second = parse_mlsd_line("type=file;size=1; a")
    assert first == second
    assert len({first, second}) == 1


fact_names = st.from_regex(r"[a-z][a-z0-9.\-]{0,10}", fullmatch=True).filter(
    lambda name: name not in ("type", "size", "modify")
)
fact_values = st.text(st.characters(codec="utf-8", exclude_characters=";\r\n"), max_size=12)
entry_names = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n"),
    min_size=1,
    max_size=20,
)
type_facts: st.SearchStrategy[tuple[str, EntryType]] = st.sampled_from(
    [
        ("file", "file"),
        ("dir", "dir"),
        ("cdir", "dir"),
        ("OS.unix=slink:/t", "link"),
        ("x", "other"),
    ]
)


@st.composite
def mlsd_lines(draw: st.DrawFn) -> tuple[str, ListingEntry]:
    type_fact, kind = draw(type_facts)
    size = draw(st.none() | st.integers(min_value=0, max_value=2**64))
    modified = draw(
        st.none()
        | st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)).map(
            lambda moment: moment.replace(microsecond=0, tzinfo=UTC)
        )
    )
    facts = {"type": type_fact}
    if size is not None:
        facts["size"] = str(size)
    if modified is not None:
        facts["modify"] = format_time_val(modified)
    facts |= draw(st.dictionaries(fact_names, fact_values, max_size=4))
    name = draw(entry_names)
    sent = {
        (fact.upper() if draw(st.booleans()) else fact): value
        for fact, value in draw(st.permutations(list(facts.items())))
    }
    line = "".join(f"{fact}={value};" for fact, value in sent.items()) + f" {name}"
    return line, ListingEntry(name, kind, size, modified, facts)


@given(mlsd_lines(), st.sampled_from(["", "\r\n", "\n"]))
def test_mlsd_round_trip(line_and_entry: tuple[str, ListingEntry], ending: str) -> None:
    line, entry = line_and_entry
    assert parse_mlsd_line(line + ending) == entry


# --- LIST -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # vsftpd: numeric ids, zero-padded day.
        (
            "-rw-r--r--    1 1000     1000         1234 Jan 05 12:34 report.csv",
            ListingEntry("report.csv", "file", 1234, at(2024, 1, 5, 12, 34)),
        ),
        (
            "drwxr-xr-x    2 1000     1000         4096 Mar 01  2021 archive",
            ListingEntry("archive", "dir", 4096, at(2021, 3, 1)),
        ),
        (
            "lrwxrwxrwx    1 0        0               9 Mar 10 08:00 latest -> report.csv",
            ListingEntry("latest", "link", 9, at(2024, 3, 10, 8), {"target": "report.csv"}),
        ),
        # pure-ftpd: names, space-padded day.
        (
            "-rw-r--r--    1 alice      staff            42 Jan  5 12:34 file with spaces.txt",
            ListingEntry("file with spaces.txt", "file", 42, at(2024, 1, 5, 12, 34)),
        ),
        (
            "drwxr-xr-x    3 alice      staff          4096 Dec 31  2019 old dir",
            ListingEntry("old dir", "dir", 4096, at(2019, 12, 31)),
        ),
        (
            "drwxr-xr-x    3 alice      staff          4096 Mar 15 11:00 .",
            ListingEntry(".", "dir", 4096, at(2024, 3, 15, 11)),
        ),
        # proftpd.
        (
            "-rw-r--r--   1 ftp      ftp      104857600 Feb 29 10:00 big.bin",
            ListingEntry("big.bin", "file", 104857600, at(2024, 2, 29, 10)),
        ),
        (
            "drwxr-xr-x   2 ftp      ftp          4096 Jul  4 09:15 incoming",
            ListingEntry("incoming", "dir", 4096, at(2023, 7, 4, 9, 15)),
        ),
        # pyftpdlib.
        (
            "-rw-r--r--   1 root     root            5 Nov 23 10:39 a file.txt\r\n",
            ListingEntry("a file.txt", "file", 5, at(2023, 11, 23, 10, 39)),
        ),
        (
            "lrwxrwxrwx   1 root     root           10 Nov 23 10:39 link -> a file.txt",
            ListingEntry("link", "link", 10, at(2023, 11, 23, 10, 39), {"target": "a file.txt"}),
        ),
        (
            "-rw-rw-rw-   1 owner   group    7045120 Sep 02  3:47 music.mp3",
            ListingEntry("music.mp3", "file", 7045120, at(2023, 9, 2, 3, 47)),
        ),
        # Other shapes seen in the wild.
        (
            "crw-rw-rw-   1 root     root       1,   3 Jan  1  2020 null",
            ListingEntry("null", "other", None, at(2020, 1, 1)),
        ),
        (
            "prw-r--r--   1 root     root          0 Jan  1  2020 fifo",
            ListingEntry("fifo", "other", 0, at(2020, 1, 1)),
        ),
        (
            "-rw-r--r--+  1 alice    staff         5 Jan  1  2020 acl.txt",
            ListingEntry("acl.txt", "file", 5, at(2020, 1, 1)),
        ),
        (
            "-rwsr-sr-t   1 alice    staff         5 Jan  1  2020 modes",
            ListingEntry("modes", "file", 5, at(2020, 1, 1)),
        ),
        (
            "-rw-r--r--   1 alice               5 Jan  1  2020 no group",
            ListingEntry("no group", "file", 5, at(2020, 1, 1)),
        ),
        (
            "-rw-r--r--   1 alice    staff         5 jan  1  2020 lower-case month",
            ListingEntry("lower-case month", "file", 5, at(2020, 1, 1)),
        ),
        (
            "-rw-r--r--   1 alice    staff         5 Jan  1 12:00  leading space",
            ListingEntry(" leading space", "file", 5, at(2024, 1, 1, 12)),
        ),
        (
            "-rw-r--r--   1 alice    staff         5 Jan  1 12:00 données ファイル.txt",
            ListingEntry("données ファイル.txt", "file", 5, at(2024, 1, 1, 12)),
        ),
        (
            "-rw-r--r--   1 alice    staff         5 Jan  1 12:00 a -> b.txt",
            ListingEntry("a -> b.txt", "file", 5, at(2024, 1, 1, 12)),
        ),
        (
            "-rw-r--r--   1 alice    staff         5 Jan  1 12:00 Jan  1 12:00 x",
            ListingEntry("Jan  1 12:00 x", "file", 5, at(2024, 1, 1, 12)),
        ),
    ],
)
def test_list_lines(line: str, expected: ListingEntry) -> None:
    assert parse_list_line(line, NOW) == expected


@pytest.mark.parametrize("line", ["total 0", "total 1234", "total 1234\r\n", "", "  ", "\r\n"])
def test_list_lines_without_entries(line: str) -> None:
    assert parse_list_line(line, NOW) is None


@pytest.mark.parametrize(
    ("when", "now", "expected"),
    [
        ("Mar 15 12:00", NOW, at(2024, 3, 15, 12)),
        ("Jan 05 12:34", NOW, at(2024, 1, 5, 12, 34)),
        ("Mar 16 10:00", NOW, at(2024, 3, 16, 10)),
        ("Mar 16 12:00", NOW, at(2024, 3, 16, 12)),
        ("Mar 16 12:01", NOW, at(2023, 3, 16, 12, 1)),
        ("Mar 17 10:00", NOW, at(2023, 3, 17, 10)),
        ("Dec 31 23:59", NOW, at(2023, 12, 31, 23, 59)),
        ("Jan 01 05:00", at(2023, 12, 31, 22), at(2024, 1, 1, 5)),
        ("Dec 31 23:00", at(2024, 1, 1, 1), at(2023, 12, 31, 23)),
        ("Feb 29 12:00", at(2025, 3, 1), at(2024, 2, 29, 12)),
        ("Feb 29 12:00", at(2024, 2, 28, 13), at(2024, 2, 29, 12)),
        ("Feb 29 12:00", at(2024, 2, 27), at(2020, 2, 29, 12)),
        ("Mar 15 12:00", datetime(2024, 3, 15, 9, tzinfo=timezone(timedelta(hours=-3))), NOW),
    ],
)
def test_list_year_inference(when: str, now: datetime, expected: datetime) -> None:
    entry = parse_list_line(f"-rw-r--r--   1 ftp      ftp        5 {when} f", now)
    assert entry is not None
    assert entry.modified == expected


@given(
    st.datetimes(min_value=datetime(1902, 1, 1), max_value=datetime(9000, 1, 1)),
    st.integers(min_value=-362 * 24 * 60, max_value=24 * 60),
)
def test_list_recent_dates_round_trip(now: datetime, offset_minutes: int) -> None:
    now = now.replace(tzinfo=UTC)
    moment = (now + timedelta(minutes=offset_minutes)).replace(second=0, microsecond=0)
    line = f"-rw-r--r--   1 ftp      ftp        5 {moment:%b %d %H:%M} f"
    entry = parse_list_line(line, now)
    assert entry is not None
    assert entry.modified == moment


@pytest.mark.parametrize(
    "line",
    [
        "-rw-r--r--   1 ftp      ftp        5 Feb 30 12:00 f",
        "-rw-r--r--   1 ftp      ftp        5 Feb 30  2020 f",
        "-rw-r--r--   1 ftp      ftp        5 Feb 29  2023 f",
        "-rw-r--r--   1 ftp      ftp        5 Jan 32  2020 f",
        "-rw-r--r--   1 ftp      ftp        5 Jan 01 24:00 f",
        "-rw-r--r--   1 ftp      ftp        5 Jan 01 12:60 f",
        "-rw-r--r--   1 ftp      ftp        5 Foo 01  2020 f",
        "-rw-r--r--   1 ftp      ftp        5 Mär 01  2020 f",
        "-rw-r--r--   1 ftp      ftp        5 Jan 01  2020",
        "-rw-r--r--   1 ftp      ftp        5 Jan 01 2020f",
        "-rw-r--r--   1 ftp      ftp        x Jan 01  2020 f",
        "-rw-r--r-- ftp ftp 5 Jan 01  2020 f",
        "-rw-r--r   1 ftp      ftp        5 Jan 01  2020 f",
        "13-05-24  12:34PM                 1234 report.csv",
        "01-05-24  13:34PM                 1234 report.csv",
        "01-05-24  00:34AM                 1234 report.csv",
        "02-30-24  12:34PM       <DIR>          archive",
        "01-05-24  12:34PM       <DIR>",
        "01-05-24  12:34PM       1,234          report.csv",
        "type=file;size=5; f",
        "total",
        "f",
    ],
)
def test_list_malformed(line: str) -> None:
    with pytest.raises(FTPProtocolError):
        parse_list_line(line, NOW)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "01-05-24  12:34PM                 1234 report 2024.csv",
            ListingEntry("report 2024.csv", "file", 1234, datetime(2024, 1, 5, 12, 34, tzinfo=UTC)),
        ),
        (
            "01-05-24  12:34AM       <DIR>          archive",
            ListingEntry("archive", "dir", None, datetime(2024, 1, 5, 0, 34, tzinfo=UTC)),
        ),
        (
            "12-31-99  11:59PM                    0 old.txt",
            ListingEntry("old.txt", "file", 0, datetime(1999, 12, 31, 23, 59, tzinfo=UTC)),
        ),
        (
            "01-05-2024  14:34                 7 r\u00e9sum\u00e9.txt",
            ListingEntry(
                "r\u00e9sum\u00e9.txt", "file", 7, datetime(2024, 1, 5, 14, 34, tzinfo=UTC)
            ),
        ),
    ],
)
def test_list_ms_dos_lines_of_iis(line: str, expected: ListingEntry) -> None:
    assert parse_list_line(line, NOW) == expected


def test_list_refuses_naive_now() -> None:
    with pytest.raises(ValueError, match="naive"):
        parse_list_line("-rw-r--r--   1 ftp      ftp        5 Jan 01 12:00 f", datetime(2024, 1, 1))


# --- NLST -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("report.csv", "report.csv"),
        ("report.csv\r\n", "report.csv"),
        ("file with spaces.txt\n", "file with spaces.txt"),
        (" leading", " leading"),
        ("incoming/report.csv", "report.csv"),
        ("/pub/incoming/report.csv", "report.csv"),
        ("incoming/sub dir/", "sub dir"),
        ("données/ファイル.txt", "ファイル.txt"),
        ("", None),
        ("\r\n", None),
        ("/", None),
    ],
)
def test_nlst_lines(line: str, name: str | None) -> None:
    assert parse_nlst_line(line) == name
