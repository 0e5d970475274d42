"""Boundary: whatever a message holds or its task raises, exactly one encodable result.

The engine is a stand-in here (pure logic), run between the boundary's two
steps as the scheduled transfers run it; the real engine, server and broker
are in test_fuzz.py, test_copy.py, test_transfers.py and test_worker.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from ftp_pooler.transfer.boundary import Boundary, Message
from ftp_pooler.contract import Result, Task
from ftp_pooler.errors import ErrorCode

VALID = json.dumps(
    {
        "task_id": "t-1",
        "source": {"connection_id": "remote", "path": "/a"},
        "destination": {"connection_id": "local", "path": "a"},
    }
).encode()


def completed(task: Task) -> Result:
    return Result.completed(task, worker="w", bytes_transferred=1, duration_ms=1, attempts=1)


async def finishes(task: Task) -> Result:
    return completed(task)


def raising(exc: BaseException) -> Callable[[Task], Awaitable[Result]]:
    async def run(task: Task) -> Result:
        await trio.lowlevel.checkpoint()
        raise exc

    return run


async def settle(raw: bytes, run: Callable[[Task], Awaitable[Result]]) -> tuple[Result, list[Any]]:
    """admit, run, then settle (or crashed when run raised), as ScheduledTransfers does."""
    boundary = Boundary(worker="w")
    message = Message(raw, partition=2, offset=7)
    with capture_logs() as logs:
        admitted = boundary.admit(message)
        if isinstance(admitted, Result):
            result = admitted
        else:
            try:
                result = boundary.settle(await run(admitted), message, admitted)
            except Exception as exc:
                result = boundary.crashed(exc, message, admitted.task_id)
    body = json.loads(result.to_json())
    assert body["worker"] == "w"
    if result.task_id is not None:
        result.task_id.encode()
    return result, logs


async def test_a_valid_task_is_run_and_its_result_returned() -> None:
    result, logs = await settle(VALID, finishes)
    assert (result.task_id, result.status, result.input) == ("t-1", "completed", None)
    assert logs == []


async def test_an_invalid_message_is_not_run() -> None:
    ran: list[Task] = []

    async def run(task: Task) -> Result:
        ran.append(task)
        return completed(task)

    result, logs = await settle(b"[" * 100_000, run)
    assert ran == []
    assert (result.error_code, result.task_id) == (ErrorCode.INVALID_MESSAGE, None)
    assert result.input is not None and (result.input.partition, result.input.offset) == (2, 7)
    assert [entry["event"] for entry in logs] == ["task.invalid"]


async def test_the_issues_surrogate_message_gets_one_result_with_an_escaped_id() -> None:
    result, _ = await settle(b'{"task_id": "\\ud800"}', finishes)
    assert result.error_code is ErrorCode.INVALID_MESSAGE
    assert result.task_id == "\\ud800"
    assert json.loads(result.to_json())["task_id"] == "\\ud800"


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad\nvalue"),
        RecursionError("maximum recursion depth exceeded"),
        ExceptionGroup("nursery", [OSError(28, "No space left on device")]),
        MemoryError(),
        KeyError("\ud800"),
    ],
    ids=lambda exc: type(exc).__name__,
)
async def test_whatever_the_engine_raises_is_one_unknown_error_logged_once(
    exc: Exception,
) -> None:
    result, logs = await settle(VALID, raising(exc))
    assert (result.task_id, result.status, result.error_code) == (
        "t-1",
        "failed",
        ErrorCode.UNKNOWN_ERROR,
    )
    assert result.error_message is not None and result.error_message.startswith(type(exc).__name__)
    assert "\n" not in result.error_message
    assert result.input is not None
    assert base64.b64decode(result.input.payload_base64) == VALID
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [("task.crashed", "error")]


async def test_a_result_that_cannot_be_encoded_becomes_one_that_can() -> None:
    async def unencodable(task: Task) -> Result:
        good = completed(task)
        return Result.model_construct(**{**dict(good), "worker": "w\ud800"})

    result, logs = await settle(VALID, unencodable)
    assert (result.task_id, result.error_code) == ("t-1", ErrorCode.UNKNOWN_ERROR)
    assert "PydanticSerializationError" in (result.error_message or "")
    assert [entry["event"] for entry in logs] == ["task.crashed"]


async def test_parsing_that_raises_something_unexpected_is_contained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_parse(raw: bytes, *, max_bytes: int, size: int | None) -> Task:
        raise AssertionError("a bug in the parser")

    monkeypatch.setattr("ftp_pooler.transfer.boundary.parse_task", broken_parse)
    result, logs = await settle(VALID, finishes)
    assert (result.task_id, result.error_code) == (None, ErrorCode.UNKNOWN_ERROR)
    assert result.error_message == "AssertionError: a bug in the parser"
    assert [entry["event"] for entry in logs] == ["task.crashed"]
