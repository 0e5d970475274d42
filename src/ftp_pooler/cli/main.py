"""``ftp-pooler``: the command line (:data:`DESCRIPTION` is what ``--help`` shows).

Until :func:`main` runs, SIGINT and SIGTERM end the process at once and
quietly with 130 and 143: importing the modules below takes a few hundred
milliseconds, and a Ctrl-C in that time would otherwise print a
``KeyboardInterrupt`` traceback. So the handlers are installed before those
imports.
"""

from __future__ import annotations

import os
import signal
from types import FrameType


def _exit_at_once(signum: int, frame: FrameType | None) -> None:
    """Exit with 128 + ``signum`` now, as SIG_DFL does for any process but PID 1.

    As PID 1 (a container without an init) the kernel ignores SIGTERM unless
    the process handles it. ``copy`` and ``worker`` replace this handler with
    their own draining while they run; before and after, and in the other
    commands, there is nothing to drain.
    """
    os._exit(128 + signum)


signal.signal(signal.SIGINT, _exit_at_once)
signal.signal(signal.SIGTERM, _exit_at_once)

# ruff: noqa: E402 (the imports below come after the signal handlers, on purpose)
import argparse
import errno
import io
import json
import stat
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import trio

from ftp_pooler import package_version
from ftp_pooler.cli.batch import BatchCopy, CopySummary, count_task_lines
from ftp_pooler.config import (
    MAX_CONCURRENCY,
    Connections,
    FTPConnection,
    Settings,
    connections_path,
    load_connections,
    load_settings,
)
from ftp_pooler.contract import Result, one_line
from ftp_pooler.transfer.engine import Transfer, TransferEngine
from ftp_pooler.errors import PoolerError
from ftp_pooler.ftp.pool import open_session_pool
from ftp_pooler.logs import configure_logging, default_format, shifted_level
from ftp_pooler.cli.progress import CopyProgress, LiveDisplay, StatsLines, show_progress

DESCRIPTION = """\
ftp-pooler: copy files between FTP/FTPS servers and local disk.

Commands: worker (the Kafka worker), copy (tasks from a JSON-lines file, no
Kafka), submit (tasks from a file to Kafka), check-config and check-connection.

Exit status: 0 done (the worker: also after a clean drain on SIGTERM or
SIGINT); 1 a task failed (or would, with --dry-run; or a connection check
failed); 2 a usage or configuration error, reported in one line; 3 Kafka
unreachable; 4 copy could not write its results (full disk, ...); 130 and 143
copy stopped by SIGINT and SIGTERM (the worker before it reached Kafka; any
command, by a second signal); 141 copy's results went to a pipe that was
closed (| head).
"""

EXIT_FAILED_TASKS = 1
EXIT_USAGE = 2
EXIT_BAD_CONFIG = EXIT_USAGE
EXIT_KAFKA_UNAVAILABLE = 3
EXIT_RESULTS_UNWRITABLE = 4
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
"""What a shell reports for a process killed by SIGPIPE, as ``cat`` is by ``| head``."""

LIVE_REFRESH_SECONDS = 0.25
"""How often the live display on a terminal is redrawn."""


class UsageError(Exception):
    """A problem with the command line or the files it names; exit 2 with this one line."""


# -- copy ---------------------------------------------------------------------------


class _CountingEngine(TransferEngine):
    """The engine, counting the attempts running now for the progress display."""

    def __init__(self, *args: Any, progress: CopyProgress, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._progress = progress

    async def attempt(self, transfer: Transfer) -> Result | float:
        self._progress.in_flight += 1
        try:
            return await super().attempt(transfer)
        finally:
            self._progress.in_flight -= 1


@dataclass
class _CopyRun:
    """What a copy did: its summary, the signal that stopped it, a results write error."""

    summary: CopySummary = field(default_factory=CopySummary)
    signal: int | None = None
    write_error: OSError | None = None


async def _watch_signals(
    stop: Callable[[str], None],
    scope: trio.CancelScope,
    run: _CopyRun,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """First SIGINT/SIGTERM: ``stop``; second: cancel ``scope`` now."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if run.signal is None:
                run.signal = signum
                stop(name)
            else:
                print(f"ftp-pooler: {name} again: stopping now", file=sys.stderr, flush=True)
                scope.cancel()


async def _copy(
    settings: Settings,
    connections: Connections,
    source: BinaryIO,
    results: BinaryIO,
    *,
    output_name: str,
    concurrency: int,
    drain_seconds: float,
    display: LiveDisplay | StatsLines | None,
    interval: float,
    count_path: Path | None,
) -> _CopyRun:
    run = _CopyRun()
    progress = CopyProgress()
    async with open_session_pool(connections.session_factories(), settings.pool.limits()) as pool:
        engine = _CountingEngine(
            connections,
            pool,
            retry=settings.transfer.retry_policy(),
            worker=settings.worker.name,
            temp_suffix=settings.transfer.temp_suffix,
            observer=progress if display is not None else None,
            progress=progress,
            durable=settings.transfer.durability == "fsync",
        )
        copying = trio.CancelScope()

        def stop(reason: str) -> None:
            """Take no more tasks; let running ones finish until the deadline, then cancel
            them (their temporary files are removed)."""
            if not copy.stopping:
                print(
                    f"ftp-pooler: {reason}: taking no more tasks; letting {progress.in_flight}"
                    f" running ones finish (up to {drain_seconds:g} s); a signal again stops"
                    " at once",
                    file=sys.stderr,
                    flush=True,
                )
            copy.stop()
            copying.deadline = min(copying.deadline, trio.current_time() + drain_seconds)

        def write_failed(exc: OSError) -> None:
            run.write_error = exc
            if exc.errno == errno.EPIPE:
                stop("results pipe closed")
            else:
                reason = exc.strerror or type(exc).__name__
                print(f"ftp-pooler: cannot write results to {output_name}: {reason}",
                      file=sys.stderr, flush=True)  # fmt: skip
                stop("results unwritable")

        copy = BatchCopy(
            source,
            results,
            engine,
            concurrency=concurrency,
            worker=settings.worker.name,
            on_result=progress.task_finished,
            on_write_error=write_failed,
            max_buffered=settings.worker.max_buffered_tasks,
            total_lines=None if count_path is None else lambda: _count_task_lines(count_path),
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(_watch_signals, stop, copying, run)
            if display is not None:
                display.start()
                nursery.start_soon(show_progress, progress, display, interval)
            if count_path is not None:
                nursery.start_soon(_set_total, progress, count_path)
            try:
                with copying:
                    await copy.run()
            finally:
                if display is not None:
                    display.stop()
            nursery.cancel_scope.cancel()
    run.summary = copy.summary
    return run


def _count_task_lines(path: Path) -> int:
    """Non-blank lines of a task file (a second, cheap read: page-cached, no parsing)."""
    with open(path, "rb") as f:
        return count_task_lines(f)


async def _set_total(progress: CopyProgress, path: Path) -> None:
    progress.total = await trio.to_thread.run_sync(_count_task_lines, path, abandon_on_cancel=True)


def _open_tasks(name: str, stack: ExitStack) -> tuple[BinaryIO, Path | None]:
    """A task file (and its path, when it is a regular file), or stdin for ``-``."""
    if name == "-":
        return sys.stdin.buffer, None
    try:
        source = stack.enter_context(Path(name).open("rb"))  # noqa: SIM115 (the stack closes it)
    except OSError as exc:
        raise UsageError(f"cannot read the tasks file {name}: {exc.strerror}") from None
    regular = stat.S_ISREG(os.fstat(source.fileno()).st_mode)
    return source, Path(name) if regular else None


def _open_output(name: str | None, stack: ExitStack, source: BinaryIO) -> BinaryIO:
    """The results stream, unbuffered: stdout, or a file closed by ``stack`` (quietly).

    Raises:
        UsageError: The output file is the tasks file ``source`` (by its device and
            inode: through a symlink or a hard link too), which opening it for
            writing would empty before a line of it was read.
    """
    if name in (None, "-"):
        return getattr(sys.stdout.buffer, "raw", sys.stdout.buffer)
    if _same_file(name, source):
        raise UsageError(f"the output file {name} is the tasks file: it would be emptied")
    try:
        # unbuffered: a line that fails part-way can be cut off again (write_whole_line)
        output = Path(name).open("wb", buffering=0)  # noqa: SIM115 (closed by the stack)
    except OSError as exc:
        raise UsageError(f"cannot write the output file {name}: {exc.strerror}") from None
    stack.callback(_close_quietly, output)
    return output


def _same_file(name: str, source: BinaryIO) -> bool:
    """Whether the file at ``name`` is the regular file ``source`` reads (stdin included)."""
    try:
        output = os.stat(name)
        tasks = os.fstat(source.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
    same = (output.st_dev, output.st_ino) == (tasks.st_dev, tasks.st_ino)
    return same and stat.S_ISREG(tasks.st_mode)


def _close_quietly(stream: BinaryIO) -> None:
    with suppress(OSError):
        stream.close()


def _forget_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's flush at exit of bytes a
    closed pipe or a full disk refused raises nothing (Python's advice for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _display(args: argparse.Namespace) -> tuple[LiveDisplay | StatsLines | None, float]:
    """A live line when stderr is a terminal and results do not go to that terminal
    too; else plain stats lines every ``--stats`` seconds; nothing with -q."""
    if args.quiet:
        return None, 0.0
    to_terminal = args.output in (None, "-") and sys.stdout.isatty()
    if sys.stderr.isatty() and not to_terminal:
        return LiveDisplay(), LIVE_REFRESH_SECONDS
    if args.stats > 0:
        return StatsLines(), args.stats
    return None, 0.0


def _cmd_copy(args: argparse.Namespace) -> int:
    settings, connections = _load(args, need_connections=True)
    assert connections is not None
    concurrency = args.concurrency or settings.pool.max_sessions_per_pod
    to_stdout = args.output in (None, "-")
    with ExitStack() as stack:
        source, path = _open_tasks(args.tasks, stack)
        if args.dry_run:
            return _dry_run(source, connections, settings)
        results = _open_output(args.output, stack, source)
        display, interval = _display(args)
        run = trio.run(
            lambda: _copy(
                settings,
                connections,
                source,
                results,
                output_name="stdout" if to_stdout else args.output,
                concurrency=concurrency,
                drain_seconds=args.drain_seconds,
                display=display,
                interval=interval,
                count_path=path,
            )
        )
    print(run.summary.line(), file=sys.stderr)
    if run.write_error is not None:
        if to_stdout:
            _forget_stdout()
        if run.write_error.errno == errno.EPIPE:
            return EXIT_BROKEN_PIPE
        return EXIT_RESULTS_UNWRITABLE
    if run.signal is not None:
        return 128 + run.signal
    return EXIT_FAILED_TASKS if run.summary.failed else 0


def _dry_run(source: BinaryIO, connections: Connections, settings: Settings) -> int:
    from ftp_pooler.cli.batch import read_lines
    from ftp_pooler.cli.checks import check_task_lines, try_login
    from ftp_pooler.ftp.pool import SessionPool

    factories = connections.session_factories()

    async def check() -> tuple[Any, list[tuple[str, str | None]]]:
        # Planning (paths, connections) needs no session: the pool is never used.
        engine = TransferEngine(connections, SessionPool(factories), worker=settings.worker.name)
        found = check_task_lines(read_lines(source), engine.prepare)
        outcomes: list[tuple[str, str | None]] = []
        for conn_id in found.ftp_connections:
            outcomes.append((conn_id, await try_login(factories[conn_id])))
        return found, outcomes

    found, outcomes = trio.run(check)
    for problem in found.problems:
        print(f"ftp-pooler: {problem}", file=sys.stderr)
    for conn_id, error in outcomes:
        state = "logged in" if error is None else f"cannot log in: {one_line(error)}"
        print(f"ftp-pooler: connection {conn_id}: {state}", file=sys.stderr)
    failed_logins = sum(error is not None for _, error in outcomes)
    print(
        f"dry run: {found.tasks} tasks, {len(found.problems)} would fail before any transfer;"
        f" {len(outcomes)} FTP connections, {failed_logins} failed to log in; nothing moved",
        file=sys.stderr,
    )
    return EXIT_FAILED_TASKS if found.problems or failed_logins else 0


# -- the other commands ---------------------------------------------------------------
#
# The Kafka, Quart and Hypercorn imports behind ``worker`` and ``submit`` cost ``copy``
# a good part of a second at start-up, so those two import them when they run.


def _load(
    args: argparse.Namespace, *, need_connections: bool
) -> tuple[Settings, Connections | None]:
    """Settings (and connections), then logging as the settings and flags say."""
    settings = load_settings(args.config)
    connections = load_connections(args.connections) if need_connections else None
    level = shifted_level(settings.logging.level, args.verbose - args.quiet)
    fmt = args.log_format
    if fmt is None:
        explicit = "format" in settings.logging.model_fields_set
        fmt = settings.logging.format if explicit else default_format()
    configure_logging(level, fmt)
    return settings, connections


def _cmd_worker(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from ftp_pooler.kafka.security import check_kafka_security
    from ftp_pooler.service.worker import run_worker

    settings, connections = _load(args, need_connections=True)
    assert connections is not None
    check_kafka_security(settings.kafka)
    # Until the worker watches the signals itself (it drains then), SIGINT ends it at
    # once, as SIGTERM does: a KeyboardInterrupt would wait for the thread that waits
    # for the first broker (up to kafka.request_timeout_ms).
    signal.signal(signal.SIGINT, _exit_at_once)
    try:
        path = connections_path(args.connections)
        trio.run(partial(run_worker, connections_path=path), settings, connections)
    except KafkaError as exc:
        servers = ",".join(settings.kafka.bootstrap_servers)
        print(f"ftp-pooler: cannot use Kafka at {servers}: {exc}", file=sys.stderr)
        return EXIT_KAFKA_UNAVAILABLE
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    import logging

    from kafka.errors import KafkaError

    from ftp_pooler.kafka.security import check_kafka_security
    from ftp_pooler.cli.submit import submit_tasks

    settings, _ = _load(args, need_connections=False)
    if not args.verbose:
        # kafka-python logs every failed bootstrap attempt; the one line below says it all.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    check_kafka_security(settings.kafka)
    with ExitStack() as stack:
        source, _ = _open_tasks(args.tasks, stack)
        try:
            report = submit_tasks(
                settings,
                source,
                sys.stdout.buffer,
                wait_for_results=args.results,
                timeout=args.timeout,
                connect_timeout=args.kafka_timeout,
            )
        except KafkaError as exc:
            servers = ",".join(settings.kafka.bootstrap_servers)
            print(f"ftp-pooler: cannot use Kafka at {servers}: {exc}", file=sys.stderr)
            return EXIT_KAFKA_UNAVAILABLE
    print(report.line(), file=sys.stderr)
    return 0 if report.complete else EXIT_FAILED_TASKS


def _cmd_check_config(args: argparse.Namespace) -> int:
    settings, connections = _load(args, need_connections=True)
    assert connections is not None
    report = {"settings": settings.model_dump(mode="json"), "connections": connections.describe()}
    print(json.dumps(report, indent=2, sort_keys=True))
    for connection_id, base_path in connections.missing_base_paths().items():
        print(
            f"ftp-pooler: warning: [{connection_id}] base_path {base_path} does not exist:"
            " its tasks fail TRANSIENT until it does (a volume not mounted?)",
            file=sys.stderr,
        )
    return 0


def _cmd_check_connection(args: argparse.Namespace) -> int:
    from ftp_pooler.cli.checks import probe_connection

    _, connections = _load(args, need_connections=True)
    assert connections is not None
    connection = connections.get(args.connection)
    if connection is None:
        known = ", ".join(connections) or "none"
        raise UsageError(f"no connection {args.connection!r} (known: {known})")
    if not isinstance(connection, FTPConnection):
        raise UsageError(f"connection {args.connection!r} is local: nothing to log in to")
    try:
        trio.run(probe_connection, connection, args.path, _print_now)
    except PoolerError as exc:
        message = one_line(exc.message)
        print(f"ftp-pooler: {args.connection}: {exc.code.value}: {message}", file=sys.stderr)
        return EXIT_FAILED_TASKS
    return 0


def _print_now(line: str) -> None:
    """Print a line of ``check-connection`` now, its control characters escaped
    (:func:`~ftp_pooler.contract.one_line`, as in results): it holds the server's text
    (features, file names), whose escape sequences must not drive the user's terminal
    (retitle it, clear the screen, fake output)."""
    print(one_line(line), flush=True)


# -- arguments ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2), not the usage text."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _concurrency(text: str) -> int:
    """``--concurrency``: a whole number from 1 to :data:`~ftp_pooler.config.MAX_CONCURRENCY`."""
    value = _positive_int(text)
    if value > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_CONCURRENCY}, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log lines (repeat for more)"
    )
    common.add_argument(
        "-q", "--quiet", action="count", default=0, help="fewer log lines, no progress"
    )
    common.add_argument(
        "--log-format",
        choices=("json", "console"),
        help="log lines as JSON or for people (default: console on a terminal, else JSON,"
        " unless logging.format is set)",
    )
    common.add_argument("--config", type=Path, help="settings YAML (default: $FTP_POOLER_CONFIG)")

    def connections_file(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--connections", type=Path, help="connections INI (default: $FTP_POOLER_CONNECTIONS)"
        )

    parser = _Parser(
        prog="ftp-pooler",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ftp-pooler {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    copy = commands.add_parser(
        "copy", parents=[common], help="run the tasks of a JSON-lines file, no Kafka"
    )
    copy.add_argument("tasks", help="task file, one JSON task per line; - for stdin")
    copy.add_argument("--output", "-o", help="result file (default: stdout)")
    copy.add_argument(
        "--concurrency",
        "-j",
        type=_concurrency,
        help=f"tasks at once, 1 to {MAX_CONCURRENCY} (default: pool.max_sessions_per_pod)",
    )
    copy.add_argument(
        "--drain-seconds",
        type=_seconds,
        default=30.0,
        help="on SIGINT/SIGTERM, how long running transfers may take to finish (default 30)",
    )
    copy.add_argument(
        "--stats",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="when stderr is not a terminal, a stats line this often; 0: none (default 10)",
    )
    copy.add_argument(
        "--dry-run",
        action="store_true",
        help="parse every task and log in to every FTP connection they use; move nothing",
    )
    connections_file(copy)
    copy.set_defaults(run=_cmd_copy)

    worker = commands.add_parser(
        "worker", parents=[common], help="consume tasks from Kafka until SIGTERM"
    )
    connections_file(worker)
    worker.set_defaults(run=_cmd_worker)

    submit = commands.add_parser(
        "submit", parents=[common], help="produce tasks from a JSON-lines file to Kafka"
    )
    submit.add_argument("tasks", help="task file, one JSON task per line; - for stdin")
    submit.add_argument(
        "--results", action="store_true", help="wait for the tasks' results and print them"
    )
    submit.add_argument(
        "--timeout", type=_seconds, default=600.0, help="seconds to wait for results (default 600)"
    )
    submit.add_argument(
        "--kafka-timeout",
        type=_seconds,
        default=30.0,
        help="seconds to wait for the first broker to answer (default 30)",
    )
    submit.set_defaults(run=_cmd_submit)

    check = commands.add_parser(
        "check-config", parents=[common], help="validate the settings and connections"
    )
    connections_file(check)
    check.set_defaults(run=_cmd_check_config)

    probe = commands.add_parser(
        "check-connection",
        parents=[common],
        help="log in to one FTP connection, show its features, list a directory",
    )
    probe.add_argument("connection", help="the connection's name ([section] of connections.ini)")
    probe.add_argument(
        "--path", help="directory to list (default: the connection's base_path, else the login one)"
    )
    connections_file(probe)
    probe.set_defaults(run=_cmd_check_connection)
    return parser


def _caught(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` is ``kind`` or an exception group holding one (Trio wraps them)."""
    if isinstance(exc, kind):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_caught(inner, kind) for inner in exc.exceptions)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status. Never shows a traceback for a usage
    error, a configuration error or a signal."""
    # The imports are done: Ctrl-C is a KeyboardInterrupt again (caught below) and
    # SIGTERM keeps exiting at once, until a command installs its own draining.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args))
    except UsageError as exc:
        print(f"ftp-pooler: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PoolerError as exc:
        print(f"ftp-pooler: {exc.code.value}: {exc.message}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except BaseException as exc:
        if _caught(exc, KeyboardInterrupt):
            return EXIT_SIGINT
        raise
