"""structlog set-up: JSON lines or human lines on stderr, ours and libraries' alike."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

from ftp_pooler.contract import one_line

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


LIBRARY_REPEAT_SECONDS = 30.0
"""How often one library message may repeat (see :class:`RepeatLimiter`)."""


class RepeatLimiter(logging.Filter):
    """Lets one record per logger and message template through every ``interval`` seconds.

    While a broker is down kafka-python logs the same few lines (connection
    refused, node not ready, metadata failed) several times a second for as
    long as the outage lasts; nothing new is said after the first. This filter
    keys a record on its logger name and its *unformatted* message (``%s``
    template), so lines that differ only in a broker address or an attempt
    count are one key. The first record of a key passes; later ones are
    dropped until ``interval`` seconds have passed, and the next one that
    passes carries ``suppressed``: how many were dropped since.

    Our own structlog lines do not go through it (they do not go through
    ``logging``); their rates are bounded where they are logged.

    Args:
        interval: Seconds between two records of one key, > 0.
        clock: Monotonic seconds (default ``time.monotonic``; a fake one in tests).
    """

    def __init__(
        self,
        interval: float = LIBRARY_REPEAT_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock or time.monotonic
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """True to write ``record`` (with ``record.suppressed`` set when some were dropped)."""
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        if len(self._last) >= 1024:  # bounded: templates are few; forget the oldest
            oldest = min(self._last, key=self._last.__getitem__)
            del self._last[oldest]
            self._dropped.pop(oldest, None)
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.suppressed = dropped
        return True


def _add_suppressed(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event.get("_record")
    suppressed = getattr(record, "suppressed", None)
    if suppressed:
        event["suppressed"] = suppressed
    return event


def _escape_control(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Escape control characters (ESC, BEL, CR, ...) as ``\\x1b`` in a human line's
    message, which the console renderer prints as it is (a library's message can quote
    a server); the other values it prints with ``repr``. A traceback keeps its lines."""
    message = event.get("event")
    if isinstance(message, str) and not message.isprintable():
        event["event"] = one_line(message, sys.maxsize)
    trace = event.get("exception")
    if isinstance(trace, str) and not trace.isprintable():
        event["exception"] = "\n".join(one_line(line, sys.maxsize) for line in trace.split("\n"))
    return event


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library's logging (kafka-python, Hypercorn) to stderr.

    Library records go through the same renderer, so a log pipeline sees one
    format. Libraries log at WARNING and above unless ``level`` is stricter,
    and a library line that repeats is written at most once every
    :data:`LIBRARY_REPEAT_SECONDS` (:class:`RepeatLimiter`).

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
    # JSON escapes control characters itself; human lines get them escaped here, so
    # that a server's text (a reply, a file name) cannot drive the terminal.
    escape: list[structlog.typing.Processor] = [] if fmt == "json" else [_escape_control]
    stderr = _Stderr()
    structlog.configure(
        processors=[*_SHARED, structlog.processors.format_exc_info, *escape, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stderr),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name, _add_suppressed],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                *escape,
                renderer,
            ],
        )
    )
    handler.addFilter(RepeatLimiter())
    global debug_enabled
    debug_enabled = numeric <= logging.DEBUG
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
