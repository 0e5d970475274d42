"""``ftp-pooler``: the command line.

Subcommands: ``worker`` (the Kafka worker), ``copy`` (batch mode, no Kafka),
``submit`` (tasks from a file to Kafka) and ``check-config``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import trio

from ftp_pooler.batch import CopySummary, ProgressLine, copy_tasks
from ftp_pooler.config import Connections, Settings, load_connections, load_settings
from ftp_pooler.engine import TransferEngine
from ftp_pooler.errors import PoolerError
from ftp_pooler.ftp.pool import open_session_pool
from ftp_pooler.logs import configure_logging

EXIT_FAILED_TASKS = 1
EXIT_BAD_CONFIG = 2
EXIT_KAFKA_UNAVAILABLE = 3


async def _copy(
    settings: Settings,
    connections: Connections,
    source: BinaryIO,
    results: BinaryIO,
    concurrency: int,
    progress: ProgressLine | None,
) -> CopySummary:
    async with open_session_pool(connections.session_factories(), settings.pool.limits()) as pool:
        engine = TransferEngine(
            connections,
            pool,
            retry=settings.transfer.retry_policy(),
            worker=settings.worker.name,
            temp_suffix=settings.transfer.temp_suffix,
            durable=settings.transfer.durability == "fsync",
        )
        return await copy_tasks(
            source,
            results,
            engine,
            concurrency=concurrency,
            worker=settings.worker.name,
            on_result=progress,
        )


def _open_tasks(name: str, stack: ExitStack) -> BinaryIO:
    """A task file, or stdin for ``-``."""
    return sys.stdin.buffer if name == "-" else stack.enter_context(open(name, "rb"))


def _cmd_copy(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    connections = load_connections(args.connections)
    configure_logging(settings.logging.level, settings.logging.format)
    concurrency = args.concurrency or settings.pool.max_sessions_per_pod
    progress = ProgressLine() if sys.stderr.isatty() else None
    with ExitStack() as stack:
        source = _open_tasks(args.tasks, stack)
        results = (
            sys.stdout.buffer
            if args.output in (None, "-")
            else stack.enter_context(open(args.output, "wb"))
        )
        summary = trio.run(_copy, settings, connections, source, results, concurrency, progress)
    if progress is not None:
        progress.finish()
    print(summary.line(), file=sys.stderr)
    return EXIT_FAILED_TASKS if summary.failed else 0


# The Kafka, Quart and Hypercorn imports behind ``worker`` and ``submit`` cost ``copy``
# a good part of a second at start-up, so those two import them when they run.


def _cmd_worker(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from ftp_pooler.worker import run_worker

    settings = load_settings(args.config)
    connections = load_connections(args.connections)
    configure_logging(settings.logging.level, settings.logging.format)
    try:
        trio.run(run_worker, settings, connections)
    except KafkaError as exc:
        servers = ",".join(settings.kafka.bootstrap_servers)
        print(f"ftp-pooler: cannot use Kafka at {servers}: {exc}", file=sys.stderr)
        return EXIT_KAFKA_UNAVAILABLE
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from ftp_pooler.submit import submit_tasks

    settings = load_settings(args.config)
    configure_logging(settings.logging.level, settings.logging.format)
    with ExitStack() as stack:
        source = _open_tasks(args.tasks, stack)
        report = submit_tasks(
            settings,
            source,
            sys.stdout.buffer,
            wait_for_results=args.results,
            timeout=args.timeout,
        )
    print(report.line(), file=sys.stderr)
    return 0 if report.complete else EXIT_FAILED_TASKS


def _cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    connections = load_connections(args.connections)
    report = {"settings": settings.model_dump(mode="json"), "connections": connections.describe()}
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftp-pooler", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def files(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", type=Path, help="settings YAML (default: $FTP_POOLER_CONFIG)")
        sub.add_argument(
            "--connections", type=Path, help="connections INI (default: $FTP_POOLER_CONNECTIONS)"
        )

    copy = commands.add_parser("copy", help="run the tasks of a JSON-lines file, no Kafka")
    copy.add_argument("tasks", help="task file, one JSON task per line; - for stdin")
    copy.add_argument("--output", "-o", help="result file (default: stdout)")
    copy.add_argument(
        "--concurrency", "-j", type=int, help="tasks at once (default: pool.max_sessions_per_pod)"
    )
    files(copy)
    copy.set_defaults(run=_cmd_copy)

    worker = commands.add_parser("worker", help="consume tasks from Kafka until SIGTERM")
    files(worker)
    worker.set_defaults(run=_cmd_worker)

    submit = commands.add_parser("submit", help="produce tasks from a JSON-lines file to Kafka")
    submit.add_argument("tasks", help="task file, one JSON task per line; - for stdin")
    submit.add_argument("--config", type=Path, help="settings YAML (default: $FTP_POOLER_CONFIG)")
    submit.add_argument(
        "--results", action="store_true", help="wait for the tasks' results and print them"
    )
    submit.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for results (default 600)"
    )
    submit.set_defaults(run=_cmd_submit)

    check = commands.add_parser("check-config", help="validate the settings and connections")
    files(check)
    check.set_defaults(run=_cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except PoolerError as exc:
        print(f"ftp-pooler: {exc.code.value}: {exc.message}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
