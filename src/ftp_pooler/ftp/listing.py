"""Directory listings with no I/O: one line of MLSD, LIST or NLST output in, one entry out.

MLSD (RFC 3659 section 7) is the only listing with a defined format; use it when
the server offers it. LIST output is whatever ``ls -l`` prints on the server:
:func:`parse_list_line` reads the Unix form that vsftpd, pure-ftpd, proftpd and
pyftpdlib send, and the MS-DOS form of IIS (its default listing style; IIS
offers no MLSD before version 10). Its times are the server's local time, to
the minute, and are labelled UTC because the server's zone is unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from ftp_pooler.errors import FTPProtocolError
from ftp_pooler.ftp.protocol import parse_time_val

EntryType = Literal["file", "dir", "link", "other"]


@dataclass(frozen=True, slots=True)
class ListingEntry:
    """One entry of a directory listing.

    Attributes:
        name: The name as listed; for a LIST symlink, without ``-> target``.
        type: What the entry is. MLSD ``cdir``/``pdir`` entries are ``"dir"``.
        size: Bytes, when the listing says.
        modified: Last modification in UTC, when the listing says.
        facts: MLSD facts, names lower-cased, values as sent. For a LIST symlink,
            ``{"target": ...}``.
    """

    name: str
    type: EntryType
    size: int | None = None
    modified: datetime | None = None
    facts: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def is_self_or_parent(self) -> bool:
        """The listed directory itself or its parent (MLSD ``cdir``/``pdir``, ``.``, ``..``)."""
        return self.name in (".", "..") or self.facts.get("type", "").lower() in ("cdir", "pdir")


def _mlsd_type(value: str) -> EntryType:
    kind = value.lower()
    if kind == "file":
        return "file"
    if kind in ("dir", "cdir", "pdir"):
        return "dir"
    if kind.startswith(("os.unix=slink", "os.unix=symlink")):
        return "link"
    return "other"


def parse_mlsd_line(line: str) -> ListingEntry:
    """One line of MLSD output: ``fact=value;...; name``, or `` name`` with no facts.

    Fact names are case-insensitive. Values hold no ``;``, so the facts end at
    the first ``"; "`` and the name may contain anything after it. (The entry
    line of an MLST reply starts with one more space: strip it first.)

    Raises:
        FTPProtocolError: The line is not an MLSD entry, or its size or modify fact is malformed.
    """
    text = line.rstrip("\r\n")
    if text.startswith(" "):
        fact_items: list[str] = []
        name = text[1:]
    else:
        facts_text, separator, name = text.partition("; ")
        if not separator:
            raise FTPProtocolError(f"not an MLSD entry: {line!r}")
        fact_items = facts_text.split(";")
    if not name:
        raise FTPProtocolError(f"no name in MLSD entry: {line!r}")
    facts: dict[str, str] = {}
    for fact in fact_items:
        fact_name, equals, value = fact.partition("=")
        if not equals or not fact_name:
            raise FTPProtocolError(f"bad fact {fact!r} in MLSD entry: {line!r}")
        facts[fact_name.lower()] = value
    size = facts.get("size")
    if size is not None and not (size.isascii() and size.isdigit()):
        raise FTPProtocolError(f"bad size in MLSD entry: {line!r}")
    modify = facts.get("modify")
    return ListingEntry(
        name=name,
        type=_mlsd_type(facts.get("type", "")),
        size=None if size is None else int(size),
        modified=None if modify is None else parse_time_val(modify),
        facts=facts,
    )


_LIST_LINE = re.compile(
    r"(?P<mode>[-bcdlpsD][-rwxsStTlL]{9})[.+@]?\s+"
    r"\d+\s+"
    r"(?:\S+\s+){1,2}"
    r"(?P<size>\d+|\d+,\s*\d+)\s+"
    r"(?P<month>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+"
    r"(?:(?P<hour>\d{1,2}):(?P<minute>\d{2})|(?P<year>\d{4})) "
    r"(?P<name>.+)",
    re.ASCII,
)
_DOS_LINE = re.compile(
    r"(?P<month>\d{2})-(?P<day>\d{2})-(?P<year>\d{2}|\d{4})\s+"
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<half>[AaPp][Mm])?\s+"
    r"(?:(?P<dir><DIR>)|(?P<size>\d+))\s+"
    r"(?P<name>.+)",
    re.ASCII,
)
"""IIS's MS-DOS listing style: ``01-05-24  12:34PM       <DIR>          archive``,
``01-05-2024  14:34            1234 report.csv`` (four-digit years and a 24-hour
clock are IIS options)."""
_TOTAL_LINE = re.compile(r"total \d+", re.ASCII)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_LIST_TYPES: dict[str, EntryType] = {"-": "file", "d": "dir", "l": "link"}
_LEAP_CYCLE_YEARS = 8
"""Most years between two 29 Februaries (1896 -> 1904)."""


def _recent_moment(month: int, day: int, hour: int, minute: int, now: datetime) -> datetime | None:
    """The latest ``month day hour:minute`` not after ``now`` plus one day of clock skew."""
    latest = now.astimezone(UTC) + timedelta(days=1)
    for year in range(latest.year, latest.year - _LEAP_CYCLE_YEARS - 1, -1):
        try:
            moment = datetime(year, month, day, hour, minute, tzinfo=UTC)
        except ValueError:
            continue
        if moment <= latest:
            return moment
    return None


def parse_list_line(line: str, now: datetime) -> ListingEntry | None:
    """One line of LIST output, or ``None`` for a ``total N`` or blank line.

    Unix ``ls -l`` lines: ``Mon DD HH:MM`` dates carry no year: it is the year
    that puts the date latest without passing ``now`` plus one day (the
    server's clock and zone may be ahead). ``Mon DD YYYY`` dates are midnight.
    MS-DOS lines (IIS, :data:`_DOS_LINE`): ``MM-DD-YY`` (``70``-``99`` are
    19xx, as Windows reads them) or ``MM-DD-YYYY``, 12- or 24-hour time.

    Args:
        line: The line, with or without its line ending.
        now: The present, timezone-aware.

    Raises:
        FTPProtocolError: The line is not a Unix ``ls -l`` line or its date does not exist.
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("naive datetime: give a timezone")
    text = line.rstrip("\r\n")
    if not text.strip() or _TOTAL_LINE.fullmatch(text.strip()):
        return None
    match = _LIST_LINE.fullmatch(text)
    if match is None:
        dos = _DOS_LINE.fullmatch(text)
        if dos is None:
            raise FTPProtocolError(f"not a Unix or MS-DOS LIST line: {line!r}")
        return _dos_entry(dos, line)
    month = _MONTHS.get(match["month"].lower())
    if month is None:
        raise FTPProtocolError(f"unknown month in LIST line: {line!r}")
    day = int(match["day"])
    modified: datetime | None
    if match["year"] is not None:
        try:
            modified = datetime(int(match["year"]), month, day, tzinfo=UTC)
        except ValueError:
            modified = None
    else:
        modified = _recent_moment(month, day, int(match["hour"]), int(match["minute"]), now)
    if modified is None:
        raise FTPProtocolError(f"no such date in LIST line: {line!r}")
    kind = _LIST_TYPES.get(match["mode"][0], "other")
    name = match["name"]
    facts: dict[str, str] = {}
    if kind == "link" and " -> " in name:
        name, _, facts["target"] = name.partition(" -> ")
    size = match["size"]
    return ListingEntry(
        name=name,
        type=kind,
        size=int(size) if size.isdigit() else None,
        modified=modified,
        facts=facts,
    )


def _dos_entry(match: re.Match[str], line: str) -> ListingEntry:
    """A :data:`_DOS_LINE` match as an entry.

    Raises:
        FTPProtocolError: The date or time does not exist.
    """
    year = int(match["year"])
    if len(match["year"]) == 2:
        year += 1900 if year >= 70 else 2000
    hour = int(match["hour"])
    half = (match["half"] or "").upper()
    if half and not 1 <= hour <= 12:
        raise FTPProtocolError(f"no such time in LIST line: {line!r}")
    if half:
        hour = hour % 12 + (12 if half == "PM" else 0)
    try:
        modified = datetime(
            year, int(match["month"]), int(match["day"]), hour, int(match["minute"]), tzinfo=UTC
        )
    except ValueError:
        raise FTPProtocolError(f"no such date in LIST line: {line!r}") from None
    is_dir = match["dir"] is not None
    return ListingEntry(
        name=match["name"],
        type="dir" if is_dir else "file",
        size=None if is_dir else int(match["size"]),
        modified=modified,
    )


def parse_nlst_line(line: str) -> str | None:
    """The name in one line of NLST output, or ``None`` for a blank line.

    Given a directory, some servers send ``dir/name`` (proftpd by default),
    others ``name``; the directory part is dropped either way.
    """
    path = line.rstrip("\r\n").rstrip("/")
    return path.rsplit("/", 1)[-1] or None
