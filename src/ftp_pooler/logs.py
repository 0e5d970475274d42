"""structlog set-up: JSON lines or human lines on stderr, ours and libraries' alike."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

current_task_id: ContextVar[str | None] = ContextVar("ftp_pooler_task_id", default=None)
"""The task the current Trio task works on (set by ``TransferEngine.run``); log
lines carry it as ``task_id``.

One variable set per task is far cheaper than structlog's per-key
``bound_contextvars``, which costs more than a whole small download's worth
of bookkeeping at thousands of tasks per second.
"""


def _add_task_id(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    task_id = current_task_id.get()
    if task_id is not None:
        event.setdefault("task_id", task_id)
    return event


_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    _add_task_id,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


class _Stderr:
    """Whatever ``sys.stderr`` is at the moment of each write.

    A live progress display swaps ``sys.stderr`` for a proxy that prints
    above it; log lines must follow, not keep the stream of start-up.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

debug_enabled = False
"""Whether DEBUG lines are written (set by :func:`configure_logging`).

A hot path tests this module attribute (tens of nanoseconds) before building
a debug line; asking structlog's lazy logger whether DEBUG is on costs about
a microsecond, which every FTP command would pay."""


def shifted_level(level: str, shift: int) -> str:
    """``level`` made more verbose by ``shift`` steps (fewer when negative), within LEVELS.

    ``-v`` is a shift of 1, ``-q`` of -1: ``shifted_level("WARNING", 1) == "INFO"``.

    Raises:
        ValueError: ``level`` is not one of LEVELS.
    """
    index = LEVELS.index(level.upper()) - shift
    return LEVELS[min(max(index, 0), len(LEVELS) - 1)]


def default_format(stream: Any = None) -> str:
    """``console`` (human lines) when ``stream`` (default: stderr) is a terminal, else ``json``."""
    stream = sys.stderr if stream is None else stream
    return "console" if stream.isatty() else "json"


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library's logging (kafka-python, Hypercorn) to stderr.

    Library records go through the same renderer, so a log pipeline sees one
    format. Libraries log at WARNING and above unless ``level`` is stricter.

    Args:
        level: One of LEVELS (any case).
        fmt: ``json`` (one object a line) or ``console`` (human lines, in
            colour on a terminal).

    Raises:
        ValueError: An unknown level or format.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r}")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    stderr = _Stderr()
    structlog.configure(
        processors=[*_SHARED, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stderr),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    global debug_enabled
    debug_enabled = numeric <= logging.DEBUG
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
