"""Our logs and libraries' logs come out as one JSON format on stderr."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
import trio
import trio.testing

from ftp_pooler.logs import RepeatLimiter, configure_logging, current_task_id


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_structlog_and_library_records_are_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    structlog.get_logger("ftp_pooler.test").info("task.finished", task_id="t-1")
    logging.getLogger("kafka.conn").warning("broker %s unreachable", "b1")
    logging.getLogger("kafka.conn").info("below the library threshold")
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        logging.getLogger("hypercorn.error").exception("request failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == [
        "task.finished",
        "broker b1 unreachable",
        "request failed",
    ]
    assert lines[0]["task_id"] == "t-1" and lines[0]["level"] == "info"
    assert lines[1]["logger"] == "kafka.conn" and lines[1]["level"] == "warning"
    assert "ZeroDivisionError: boom" in lines[2]["exception"]
    assert all(line["timestamp"].endswith("Z") for line in lines)


def test_level_filters_our_own_events(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", "console")
    structlog.get_logger("ftp_pooler.test").info("hidden")
    structlog.get_logger("ftp_pooler.test").warning("shown")
    err = capsys.readouterr().err
    assert "shown" in err and "hidden" not in err


def test_human_lines_escape_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    """A library's message can quote a server (a reply, a name): its escape sequences
    must not reach the terminal; values are already shown with repr."""
    configure_logging("INFO", "console")
    structlog.get_logger("ftp_pooler.test").info("ours \x1b[2J", reply="550 \x1b]0;x\x07")
    logging.getLogger("kafka.conn").warning("broker said %s", "\x1b[31mred")
    try:
        raise ValueError("\x1b[2J")
    except ValueError:
        logging.getLogger("hypercorn.error").exception("failed")
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert "ours \\x1b[2J" in err and "broker said \\x1b[31mred" in err
    assert "ValueError: \\x1b[2J" in err and "Traceback (most recent call last):\n" in err


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_a_repeating_library_message_passes_once_per_interval_and_counts_the_rest() -> None:
    now = [100.0]
    limiter = RepeatLimiter(interval=30.0, clock=lambda: now[0])
    template = "<BrokerConnection node_id=%s host=%s>: connect attempt returned error %s"
    passed = []
    for second in range(120):  # two minutes of an outage, 4 lines a second
        now[0] = 100.0 + second
        for node in range(4):
            record = _record("kafka.conn", template, node, "b:9092", 111)
            if limiter.filter(record):
                passed.append((second, getattr(record, "suppressed", 0)))
    assert passed == [(0, 0), (30, 119), (60, 119), (90, 119)]
    # another template or another logger is its own key
    assert limiter.filter(_record("kafka.client", template, 1, "b:9092", 111))
    assert limiter.filter(_record("kafka.conn", "metadata request failed: %s", "x"))


def test_library_repeats_are_dropped_from_stderr_with_a_count(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    monkeypatch.setattr("ftp_pooler.logs.time.monotonic", lambda: now[0])
    configure_logging("INFO", "json")
    for attempt in range(50):
        logging.getLogger("kafka.conn").warning("connect to %s failed (%d)", "b1", attempt)
    logging.getLogger("kafka.client").warning("node not ready")
    now[0] = 31.0
    logging.getLogger("kafka.conn").warning("connect to %s failed (%d)", "b1", 50)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == [
        "connect to b1 failed (0)",
        "node not ready",
        "connect to b1 failed (50)",
    ]
    assert "suppressed" not in lines[0] and lines[2]["suppressed"] == 49


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError):
        configure_logging("LOUD")


async def test_lines_carry_the_task_id_of_their_trio_task(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    log = structlog.get_logger("ftp_pooler.test")

    async def work(task_id: str, event: trio.Event) -> None:
        current_task_id.set(task_id)
        await event.wait()
        log.info("transfer.step")

    first, second = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(work, "t-1", first)
        nursery.start_soon(work, "t-2", second)
        await trio.testing.wait_all_tasks_blocked()
        second.set()
        await trio.testing.wait_all_tasks_blocked()
        first.set()
    log.info("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["event"], line.get("task_id")) for line in lines] == [
        ("transfer.step", "t-2"), ("transfer.step", "t-1"), ("outside", None),
    ]  # fmt: skip
