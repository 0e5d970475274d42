"""The per-message boundary: any message in, exactly one result out, safe to publish.

Both the worker (:class:`~ftp_pooler.service.worker.Dispatcher`) and ``ftp-pooler
copy`` (:func:`~ftp_pooler.cli.batch.copy_tasks`) pass every message through
:class:`Boundary`, so what a hostile message, a bug in the engine or an
unencodable result can do is decided here, once: it ends as one failure
result for that message, never as a dead process. Tasks are scheduled
between the two steps (:mod:`ftp_pooler.scheduling`), so the boundary is two
synchronous steps around the run, not one call:

1. :meth:`Boundary.admit`: the task to run, or the message's result at once
   (``INVALID_MESSAGE``; ``UNKNOWN_ERROR`` if parsing raised);
2. :meth:`Boundary.settle`: the task's result as it will be published,
   encoded once; :meth:`Boundary.crashed` when running it raised.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from ftp_pooler.contract import (
    MAX_MESSAGE_BYTES,
    InvalidTaskError,
    Result,
    Task,
    parse_task,
    unexpected_error,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """A message as read, and where from (for the ``input`` of a result that carries it back).

    Attributes:
        raw: The message, any bytes.
        partition, offset: Where it was read (Kafka).
        line: Where it was read (a line of ``copy``'s tasks file, from 1): an
            ``INVALID_MESSAGE`` error then starts with ``line N:``.
        size: Bytes in the whole message when ``raw`` holds only its start
            (``copy`` keeps no more than the size limit + 1 of a line).
    """

    raw: bytes
    partition: int | None = None
    offset: int | None = None
    line: int | None = None
    size: int | None = None


class Boundary:
    """The two steps of the boundary for one worker.

    Args:
        worker: Name put into results made here.
        max_bytes: Larger messages are refused unread.
    """

    def __init__(self, *, worker: str, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._worker = worker
        self._max_bytes = max_bytes

    @property
    def max_bytes(self) -> int:
        """Messages larger than this are refused unread."""
        return self._max_bytes

    def admit(self, message: Message) -> Task | Result:
        """Parse ``message``: its task, or its one result now. Never raises.

        Returns:
            The :class:`Task` for a valid message; otherwise ``INVALID_MESSAGE``
            (with ``input``, logged as ``task.invalid``), or ``UNKNOWN_ERROR``
            (with ``input``, logged once with its traceback as ``task.crashed``)
            when parsing raised anything else; a result returned here is settled.
        """
        try:
            return parse_task(message.raw, max_bytes=self._max_bytes, size=message.size)
        except InvalidTaskError as exc:
            if message.line is not None:
                exc = InvalidTaskError(f"line {message.line}: {exc.message}", task_id=exc.task_id)
            log.warning(
                "task.invalid",
                partition=message.partition,
                offset=message.offset,
                error=exc.message,
            )
            try:
                result = Result.invalid(
                    exc,
                    message.raw,
                    worker=self._worker,
                    partition=message.partition,
                    offset=message.offset,
                    size=message.size,
                )
            except Exception as crash:
                return self.crashed(crash, message, None)
            return self.settle(result, message, None)
        except Exception as exc:
            return self.crashed(exc, message, None)

    def settle(self, result: Result, message: Message, task: Task | None) -> Result:
        """``result`` (of ``task``, if the message was one) as it will be published:
        encoded once, with its Kafka key, so publishing it cannot fail on its content;
        ``UNKNOWN_ERROR`` in its place if it cannot be encoded. Never raises."""
        try:
            result.to_json()
            if result.task_id is not None:
                result.task_id.encode()
        except Exception as exc:
            return self.crashed(exc, message, task.task_id if task is not None else None)
        return result

    def crashed(self, exc: BaseException, message: Message, task_id: str | None) -> Result:
        """``UNKNOWN_ERROR`` for ``message``, whose handling raised ``exc`` (a bug): logged
        once with its traceback as ``task.crashed``; the result carries the message back."""
        log.error(
            "task.crashed",
            task_id=task_id,
            partition=message.partition,
            offset=message.offset,
            exc_info=exc,
        )
        return Result.crashed(
            unexpected_error(exc),
            message.raw,
            task_id=task_id,
            worker=self._worker,
            partition=message.partition,
            offset=message.offset,
        )
