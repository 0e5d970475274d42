"""Our logs and libraries' logs come out as one JSON format on stderr."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from ftp_pooler.logs import configure_logging


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
        "task.finished", "broker b1 unreachable", "request failed",
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


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError):
        configure_logging("LOUD")
