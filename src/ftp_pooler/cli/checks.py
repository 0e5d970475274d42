"""Checks that move no file: ``copy --dry-run`` and ``check-connection``.

:func:`check_task_lines` parses every line of a task file and plans each
task as a run would (connections, paths), without a session: it says which
lines would fail before any transfer (with their line numbers) and which FTP
connections the others use. :func:`try_login` and :func:`probe_connection`
then talk to the servers: log in; or log in, read FEAT and list a directory,
for setting up a partner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ftp_pooler.cli.batch import Line
from ftp_pooler.config import FTPConnection
from ftp_pooler.contract import InvalidTaskError, Operation, Result, Task, parse_task
from ftp_pooler.transfer import localfs
from ftp_pooler.transfer.engine import Transfer
from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.ftp.session import SessionFactory

LISTED_ENTRIES = 20
"""``check-connection`` prints at most this many entries of the directory it lists."""


@dataclass
class TaskCheck:
    """What :func:`check_task_lines` found.

    Attributes:
        tasks: Non-blank lines.
        problems: ``line N: CODE: ...`` for each line that would fail before any transfer.
        ftp_connections: The FTP connection ids the other tasks use, in order of first use.
    """

    tasks: int = 0
    problems: list[str] = field(default_factory=list)
    ftp_connections: list[str] = field(default_factory=list)


def check_task_lines(
    lines: Iterable[Line], prepare: Callable[[Task], Transfer | Result]
) -> TaskCheck:
    """Parse every line as a task and plan it with ``prepare``
    (:meth:`TransferEngine.prepare <ftp_pooler.transfer.engine.TransferEngine.prepare>`:
    unknown connections, two of one kind, paths refused: ``..``, outside
    ``base_path``, a symlink leading out, CR/LF in a remote path), then its local
    side (:func:`local_problem`: an upload's missing source). Blank lines
    are skipped but counted for line numbers, which start at 1."""
    check = TaskCheck()
    used: dict[str, None] = {}
    for number, line in enumerate(lines, start=1):
        if line.size == len(line.head) and not line.head.strip():
            continue
        check.tasks += 1
        try:
            task = parse_task(line.head, size=line.size)
        except InvalidTaskError as exc:
            check.problems.append(f"line {number}: {exc.code.value}: {exc.message}")
            continue
        planned = prepare(task)
        if isinstance(planned, Result):
            code = planned.error_code.value if planned.error_code is not None else "?"
            check.problems.append(f"line {number}: {code}: {planned.error_message}")
        elif (problem := local_problem(planned)) is not None:
            check.problems.append(f"line {number}: {problem.code.value}: {problem.message}")
        else:
            used.setdefault(planned.connection, None)
    check.ftp_connections = list(used)
    return check


def local_problem(transfer: Transfer) -> PoolerError | None:
    """What the local side of a planned task would fail with at its first attempt, or None.

    An upload's source must be a regular file (FILE_NOT_FOUND, PERMISSION_DENIED,
    PATH_NOT_ALLOWED for a directory, as :func:`~ftp_pooler.transfer.localfs.stat` says);
    a download's ``base_path`` must exist, as it is never created (TRANSIENT).
    """
    plan = transfer.plan
    if plan.operation is Operation.UPLOAD:
        try:
            localfs.stat(plan.local_path)
        except PoolerError as exc:
            return exc
        return None
    base = plan.local_root.base
    if not base.is_dir():
        message = f"the local base path {localfs.quoted(base)} does not exist (not mounted?)"
        return PoolerError(ErrorCode.TRANSIENT, message)
    return None


async def try_login(factory: SessionFactory) -> str | None:
    """Log in and out again; ``None`` when that worked, else ``CODE: message``."""
    try:
        session = await factory.open()
    except PoolerError as exc:
        return f"{exc.code.value}: {exc.message}"
    await session.aclose()
    return None


async def probe_connection(
    connection: FTPConnection, path: str | None, emit: Callable[[str], None]
) -> None:
    """Log in, read the features, list ``path`` (default: the connection's base_path,
    else the login directory), and ``emit`` what was seen, one line each, as each
    step succeeds: when a step fails, the lines of those before it are out.

    Raises:
        FTPError: The first step that failed (CONNECTION_ERROR, AUTH_FAILED,
            TLS_ERROR, FILE_NOT_FOUND, ...).
    """
    ftp = connection.ftp
    session = await SessionFactory(ftp).open()
    try:
        emit(f"logged in to {ftp.host}:{ftp.port} as {ftp.user} (tls: {ftp.tls.value})")
        emit("features: " + (" ".join(sorted(session.features)) or "(none: no FEAT)"))
        where = path or connection.base_path or await session.pwd()
        entries = await session.list_dir(where)
        emit(f"listed {where}: {len(entries)} entries")
        for entry in entries[:LISTED_ENTRIES]:
            size = "" if entry.size is None else f" {entry.size}"
            emit(f"  {entry.type} {entry.name}{size}")
        if len(entries) > LISTED_ENTRIES:
            emit(f"  ... and {len(entries) - LISTED_ENTRIES} more")
    finally:
        await session.aclose()
