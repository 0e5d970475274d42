"""The per-message boundary: any message in, exactly one result out, safe to publish.

Both the worker (:class:`~ftp_pooler.worker.Dispatcher`) and ``ftp-pooler
copy`` (:func:`~ftp_pooler.batch.copy_tasks`) hand every message to
:func:`result_for_message` and nothing else, so what a hostile message, a bug
in the engine or an unencodable result can do is decided here, once: it ends
as one failure result for that message, never as a dead process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

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


async def result_for_message(
    raw: bytes,
    run: Callable[[Task], Awaitable[Result]],
    *,
    worker: str,
    max_bytes: int = MAX_MESSAGE_BYTES,
    partition: int | None = None,
    offset: int | None = None,
    line: int | None = None,
) -> Result:
    """Parse ``raw``, run it as a task, return its one result; never raises (but Cancelled).

    Args:
        raw: The message, as read (any bytes).
        run: Carries out a valid task (:meth:`TransferEngine.run`).
        worker: Name put into results made here.
        max_bytes: Larger messages are refused unread.
        partition, offset: Where the message was read (Kafka), for the
            ``input`` of a result that carries the message back.
        line: Where the message was read (a line of ``copy``'s tasks file,
            from 1): an ``INVALID_MESSAGE`` error then starts with ``line N:``.

    Returns:
        ``INVALID_MESSAGE`` (with ``input``) for a message that is not a valid
        task; ``run``'s result for one that is; ``UNKNOWN_ERROR`` (with
        ``input``, logged once with its traceback as ``task.crashed``) when
        parsing, ``run``, or building or encoding the result raised anything
        else. The result returned has been encoded once, with its Kafka key, so
        publishing it cannot fail on its content.
    """
    task: Task | None = None
    try:
        try:
            task = parse_task(raw, max_bytes=max_bytes)
        except InvalidTaskError as exc:
            if line is not None:
                exc = InvalidTaskError(f"line {line}: {exc.message}", task_id=exc.task_id)
            log.warning("task.invalid", partition=partition, offset=offset, error=exc.message)
            result = Result.invalid(exc, raw, worker=worker, partition=partition, offset=offset)
        else:
            result = await run(task)
        _encode(result)
    except Exception as exc:
        task_id = task.task_id if task is not None else None
        log.exception("task.crashed", task_id=task_id, partition=partition, offset=offset)
        return Result.crashed(
            unexpected_error(exc),
            raw,
            task_id=task_id,
            worker=worker,
            partition=partition,
            offset=offset,
        )
    return result


def _encode(result: Result) -> None:
    """Encode ``result`` as the publisher will: its JSON, and its task id as the Kafka key."""
    result.to_json()
    if result.task_id is not None:
        result.task_id.encode()
