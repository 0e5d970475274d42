"""Checks that move no file: ``copy --dry-run`` and ``check-connection``.

:func:`check_task_lines` is pure: it parses every line of a task file and
says which are invalid (with their line numbers), which name an unknown
connection or two of one kind, and which FTP connections the valid ones use.
:func:`try_login` and :func:`probe_connection` then talk to the servers:
log in; or log in, read FEAT and list a directory, for setting up a partner.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.contract import InvalidTaskError, parse_task
from ftp_pooler.errors import PoolerError
from ftp_pooler.ftp.session import SessionFactory

LISTED_ENTRIES = 20
"""``check-connection`` prints at most this many entries of the directory it lists."""


@dataclass
class TaskCheck:
    """What :func:`check_task_lines` found.

    Attributes:
        tasks: Non-blank lines.
        problems: ``line N: ...`` for each line that would fail before any transfer.
        ftp_connections: The FTP connection ids the valid tasks use, in order of first use.
    """

    tasks: int = 0
    problems: list[str] = field(default_factory=list)
    ftp_connections: list[str] = field(default_factory=list)


def check_task_lines(lines: Iterable[bytes], connections: Connections) -> TaskCheck:
    """Parse every line as a task and check its connections exist and pair one local
    side with one FTP side (as the transfer engine's planning does). Blank lines are
    skipped but counted for line numbers, which start at 1."""
    check = TaskCheck()
    used: dict[str, None] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        check.tasks += 1
        try:
            task = parse_task(raw)
        except InvalidTaskError as exc:
            check.problems.append(f"line {number}: {exc.code.value}: {exc.message}")
            continue
        kinds = []
        for endpoint in (task.source, task.destination):
            connection = connections.get(endpoint.connection_id)
            if connection is None:
                check.problems.append(
                    f"line {number}: INVALID_CONFIG: unknown connection id"
                    f" {endpoint.connection_id!r}"
                )
                break
            kinds.append(connection)
        else:
            ftp = [c for c in kinds if isinstance(c, FTPConnection)]
            local = [c for c in kinds if isinstance(c, LocalConnection)]
            if len(ftp) != 1 or len(local) != 1:
                check.problems.append(
                    f"line {number}: INVALID_CONFIG: one side must be local and the other FTP"
                )
            else:
                used.setdefault(ftp[0].id, None)
    check.ftp_connections = list(used)
    return check


async def try_login(factory: SessionFactory) -> str | None:
    """Log in and out again; ``None`` when that worked, else ``CODE: message``."""
    try:
        session = await factory.open()
    except PoolerError as exc:
        return f"{exc.code.value}: {exc.message}"
    await session.aclose()
    return None


async def probe_connection(connection: FTPConnection, path: str | None) -> list[str]:
    """Log in, read the features, list ``path`` (default: the connection's base_path,
    else the login directory) and return what was seen, one line each.

    Raises:
        FTPError: The first step that failed (CONNECTION_ERROR, AUTH_FAILED,
            TLS_ERROR, FILE_NOT_FOUND, ...).
    """
    ftp = connection.ftp
    session = await SessionFactory(ftp).open()
    try:
        lines = [
            f"logged in to {ftp.host}:{ftp.port} as {ftp.user} (tls: {ftp.tls.value})",
            "features: " + (" ".join(sorted(session.features)) or "(none: no FEAT)"),
        ]
        where = path or connection.base_path or await session.pwd()
        entries = await session.list_dir(where)
        lines.append(f"listed {where}: {len(entries)} entries")
        for entry in entries[:LISTED_ENTRIES]:
            size = "" if entry.size is None else f" {entry.size}"
            lines.append(f"  {entry.type} {entry.name}{size}")
        if len(entries) > LISTED_ENTRIES:
            lines.append(f"  ... and {len(entries) - LISTED_ENTRIES} more")
        return lines
    finally:
        await session.aclose()
