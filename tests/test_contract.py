"""The task/result message contract: parsing, error messages, result JSON and the schema files."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ftp_pooler.contract import (
    MAX_CONNECTION_ID_LENGTH,
    MAX_ERROR_MESSAGE_LENGTH,
    MAX_INPUT_ECHO_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_PATH_LENGTH,
    MAX_TASK_ID_LENGTH,
    SCHEMA_FILES,
    ConflictPolicy,
    Endpoint,
    InvalidTaskError,
    Operation,
    Result,
    ResultStatus,
    Task,
    TransferOptions,
    one_line,
    parse_task,
    unexpected_error,
    write_schemas,
)
from ftp_pooler.errors import ErrorCode, PoolerError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

NESTED: dict[str, Any] = {
    "task_id": "t-1",
    "operation": "download",
    "source": {"connection_id": "partner-a", "path": "/out/a.csv"},
    "destination": {"connection_id": "local", "path": "in/a.csv"},
    "options": {"overwrite": False, "retry_count": 5},
}
FLAT: dict[str, Any] = {
    "task_id": "t-1",
    "operation": "download",
    "src_id": "partner-a",
    "src_path": "/out/a.csv",
    "dst_id": "local",
    "dst_path": "in/a.csv",
    "options": {"overwrite": False, "retry_count": 5},
}


def dumps(message: object) -> bytes:
    return json.dumps(message).encode()


def invalid(message: object) -> InvalidTaskError:
    with pytest.raises(InvalidTaskError) as caught:
        parse_task(message if isinstance(message, (bytes, str)) else dumps(message))
    assert caught.value.code is ErrorCode.INVALID_MESSAGE
    assert not caught.value.retryable
    return caught.value


def test_nested_form() -> None:
    task = parse_task(dumps(NESTED))
    assert task.task_id == "t-1"
    assert task.operation is Operation.DOWNLOAD
    assert task.source == Endpoint(connection_id="partner-a", path="/out/a.csv")
    assert task.destination == Endpoint(connection_id="local", path="in/a.csv")
    assert task.options == TransferOptions(overwrite=False, retry_count=5)


def test_flat_form_is_the_same_task() -> None:
    assert parse_task(dumps(FLAT)) == parse_task(dumps(NESTED))


def test_text_is_accepted_as_well_as_bytes() -> None:
    assert parse_task(json.dumps(NESTED)) == parse_task(dumps(NESTED))


@pytest.mark.parametrize("form", [NESTED, FLAT], ids=["nested", "flat"])
def test_operation_is_optional(form: dict[str, Any]) -> None:
    message = {key: value for key, value in form.items() if key != "operation"}
    assert parse_task(dumps(message)).operation is None


def test_defaults() -> None:
    message = {key: value for key, value in NESTED.items() if key != "options"}
    options = parse_task(dumps(message)).options
    assert options == TransferOptions()
    assert (options.retry_count, options.verify_size, options.preserve_mtime) == (3, True, False)
    assert options.conflict is ConflictPolicy.OVERWRITE


@pytest.mark.parametrize(
    ("options", "conflict"),
    [
        ({}, ConflictPolicy.OVERWRITE),
        ({"overwrite": True}, ConflictPolicy.OVERWRITE),
        ({"overwrite": False}, ConflictPolicy.FAIL),
        ({"if_exists": "skip"}, ConflictPolicy.SKIP),
        ({"overwrite": True, "if_exists": "fail"}, ConflictPolicy.FAIL),
        ({"overwrite": False, "if_exists": "overwrite"}, ConflictPolicy.OVERWRITE),
        ({"overwrite": False, "if_exists": "skip"}, ConflictPolicy.SKIP),
        ({"overwrite": False, "if_exists": None}, ConflictPolicy.FAIL),
    ],
)
def test_if_exists_wins_over_overwrite(options: dict[str, Any], conflict: ConflictPolicy) -> None:
    assert parse_task(dumps({**NESTED, "options": options})).options.conflict is conflict


def test_unknown_fields_are_ignored_everywhere() -> None:
    message = {
        **NESTED,
        "priority": 7,
        "source": {**NESTED["source"], "checksum": "abc"},
        "destination": {**NESTED["destination"], "mode": "0644"},
        "options": {**NESTED["options"], "compress": True},
    }
    assert parse_task(dumps(message)) == parse_task(dumps(NESTED))
    assert parse_task(dumps({**FLAT, "src_host": "x"})) == parse_task(dumps(FLAT))


def test_limits_that_pass() -> None:
    for retry_count in (0, 100):
        message = {**NESTED, "task_id": "x" * 512, "options": {"retry_count": retry_count}}
        assert parse_task(dumps(message)).options.retry_count == retry_count


def without(message: dict[str, Any], *path: str) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(message))
    target = copy
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return copy


def replaced(message: dict[str, Any], value: object, *path: str) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(message))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (without(NESTED, "task_id"), "task_id: Field required"),
        (replaced(NESTED, "", "task_id"), "task_id: String should have at least 1 character"),
        (replaced(NESTED, "x" * 513, "task_id"), "task_id: String should have at most 512"),
        (replaced(NESTED, 42, "task_id"), "task_id: Input should be a valid string"),
        (
            replaced(NESTED, "copy", "operation"),
            "operation: Input should be 'download' or 'upload'",
        ),
        (without(NESTED, "source"), "source: Field required"),
        (without(NESTED, "source", "path"), "source.path: Field required"),
        (replaced(NESTED, "", "source", "path"), "source.path: String should have at least 1"),
        (without(NESTED, "source", "connection_id"), "source.connection_id: Field required"),
        (without(NESTED, "destination", "path"), "destination.path: Field required"),
        (replaced(NESTED, "", "destination", "connection_id"), "destination.connection_id:"),
        (replaced(NESTED, "x", "destination"), "destination: Input should be a valid dictionary"),
        (
            replaced(NESTED, -1, "options", "retry_count"),
            "options.retry_count: Input should be greater",
        ),
        (
            replaced(NESTED, 101, "options", "retry_count"),
            "options.retry_count: Input should be less",
        ),
        (replaced(NESTED, "maybe", "options", "if_exists"), "options.if_exists: Input should be"),
        (
            replaced(NESTED, "sure", "options", "overwrite"),
            "options.overwrite: Input should be a valid",
        ),
        (replaced(NESTED, [], "options"), "options: Input should be a valid dictionary"),
        (without(FLAT, "src_path"), "src_path: Field required"),
        (without(FLAT, "dst_id"), "dst_id: Field required"),
        (replaced(FLAT, "", "dst_path"), "dst_path: String should have at least 1 character"),
        (replaced(FLAT, 3, "src_id"), "src_id: Input should be a valid string"),
    ],
)
def test_each_validation_error_names_the_field(message: dict[str, Any], field: str) -> None:
    assert field in invalid(message).message


def test_every_failing_field_is_named() -> None:
    message = invalid(
        {"task_id": "t", "source": {"connection_id": "a"}, "options": {"retry_count": 999}}
    ).message
    for field in ("source.path", "destination", "options.retry_count"):
        assert field in message


def test_flat_message_missing_everything_names_flat_keys() -> None:
    message = invalid({"task_id": "t", "src_id": "a"}).message
    assert message == "src_path: Field required; dst_id: Field required; dst_path: Field required"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[1, 2]", "an array, not a JSON object"),
        (b'"task"', "a string, not a JSON object"),
        (b"42", "a number, not a JSON object"),
        (b"true", "a boolean, not a JSON object"),
        (b"null", "null, not a JSON object"),
    ],
)
def test_not_a_json_object(raw: bytes, words: str) -> None:
    error = invalid(raw)
    assert words in error.message
    assert error.task_id is None


def test_oversized_message_is_refused_unread() -> None:
    raw = dumps({**NESTED, "padding": "x" * 200})
    error = invalid_with_limit(raw, len(raw) - 1)
    assert f"{len(raw)} bytes" in error.message
    assert str(len(raw) - 1) in error.message
    assert error.task_id == "t-1"  # found in the first 4 KiB, not parsed
    assert parse_task(raw, max_bytes=len(raw)).task_id == "t-1"


def invalid_with_limit(raw: bytes, max_bytes: int) -> InvalidTaskError:
    with pytest.raises(InvalidTaskError) as caught:
        parse_task(raw, max_bytes=max_bytes)
    return caught.value


def test_oversized_text_counts_utf8_bytes() -> None:
    text = json.dumps({**NESTED, "note": "é" * 600}, ensure_ascii=False)
    assert len(text) <= 1000 < len(text.encode())
    with pytest.raises(InvalidTaskError, match="over the limit of 1000"):
        parse_task(text, max_bytes=1000)


def test_task_id_is_recovered_from_an_invalid_task() -> None:
    assert invalid(without(NESTED, "source")).task_id == "t-1"
    assert invalid(without(FLAT, "dst_path")).task_id == "t-1"


@pytest.mark.parametrize("task_id", [None, "", 42, "x" * 513, ["t-1"]])
def test_unreadable_task_id_is_not_recovered(task_id: object) -> None:
    message = (
        without(NESTED, "task_id") if task_id is None else replaced(NESTED, task_id, "task_id")
    )
    assert invalid(without(message, "source")).task_id is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_invalid_message(raw: bytes) -> None:
    try:
        parse_task(raw)
    except InvalidTaskError as exc:
        assert exc.code is ErrorCode.INVALID_MESSAGE


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
task_like = st.fixed_dictionaries(
    {},
    optional={
        key: json_values | st.text(max_size=5)
        for key in ("task_id", "operation", "src_id", "src_path", "dst_id", "dst_path", "options")
    }
    | {
        "source": st.fixed_dictionaries(
            {}, optional={"connection_id": json_values, "path": json_values}
        )
    },
)


@settings(max_examples=200, deadline=None)
@given(task_like)
def test_any_json_object_parses_or_raises_invalid_message(message: dict[str, Any]) -> None:
    try:
        parse_task(dumps(message))
    except InvalidTaskError as exc:
        assert exc.code is ErrorCode.INVALID_MESSAGE
        assert exc.message


# -- hostile messages: each is INVALID_MESSAGE, never another exception ---------------------

SURROGATE = "\ud800"
"""A lone surrogate: JSON can escape it (``"\\ud800"``), UTF-8 cannot encode it."""


def json_text(message: object) -> bytes:
    """JSON as a producer in another language may write it: lone surrogates escaped, not refused."""
    return json.dumps(message, ensure_ascii=True).encode("ascii")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"a":' * 50_000, "nested too deeply"),
        (b"[" * 5_000 + b"]" * 5_000, "nested too deeply"),
        (b'{"task_id": "t", "x": ' + b'[{"a":' * 9_000 + b"0" + b"}]" * 9_000 + b"}", "too deeply"),
        (b"\xed\xa0\x80", "not JSON"),  # a surrogate encoded as UTF-8 bytes
        (b'{"task_id": "caf\xe9"}', "not JSON"),  # Latin-1
        ('{"task_id": "t"}'.encode("utf-16"), "not JSON"),
        (b"\xef\xbb\xbf", "not JSON"),  # a BOM and nothing else
        (b" \t\r\n ", "not JSON"),
        (b"\x00", "not JSON"),
        (b"NaN", "NaN is not a JSON number"),
        (b'{"task_id": "t", "x": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"options": {"retry_count": Infinity}}', "Infinity is not a JSON number"),
        (b"1" * 1_000_000, "not JSON: Exceeds the limit"),
        (b'{"task_id": "t", "n": ' + b"9" * 1_000_000 + b"}", "not JSON: Exceeds the limit"),
        (b'{"task_id": "a", "task_id": "b"}', "key 'task_id' appears twice"),
        (b'{"source": {"path": "a", "path": "b"}}', "key 'path' appears twice"),
        (b'{"k\\n\\ud800": 1, "k\\n\\ud800": 2}', "key 'k\\n\\ud800' appears twice"),
    ],
    ids=lambda value: repr(value[:24]) if isinstance(value, bytes) else None,
)
def test_hostile_text_is_an_invalid_message(raw: bytes, words: str) -> None:
    error = invalid(raw)
    assert words in error.message
    assert "\n" not in error.message


def test_a_leading_byte_order_mark_is_ignored() -> None:
    assert parse_task(b"\xef\xbb\xbf" + dumps(NESTED)) == TASK
    assert parse_task("\ufeff" + json.dumps(NESTED)) == TASK


FIELDS = [
    ("task_id",),
    ("source", "connection_id"),
    ("source", "path"),
    ("destination", "connection_id"),
    ("destination", "path"),
]


@pytest.mark.parametrize("path", FIELDS, ids=".".join)
def test_a_lone_surrogate_in_any_string_is_an_invalid_message(path: tuple[str, ...]) -> None:
    message = replaced(NESTED, f"x{SURROGATE}y", *path)
    error = invalid(json_text(message))
    assert f"{'.'.join(path)}: not Unicode text" in error.message
    flat_key = {
        ("source", "connection_id"): "src_id",
        ("source", "path"): "src_path",
        ("destination", "connection_id"): "dst_id",
        ("destination", "path"): "dst_path",
    }.get(path, "task_id")
    flat_error = invalid(json_text({**FLAT, flat_key: SURROGATE}))
    assert f"{flat_key}: not Unicode text" in flat_error.message


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        (("source", "path"), 4096),
        (("destination", "path"), 4096),
        (("source", "connection_id"), 256),
        (("destination", "connection_id"), 256),
    ],
)
def test_paths_and_connection_ids_are_bounded(path: tuple[str, ...], limit: int) -> None:
    assert parse_task(dumps(replaced(NESTED, "p" * limit, *path)))
    error = invalid(replaced(NESTED, "p" * (limit + 1), *path))
    assert f"{'.'.join(path)}: String should have at most {limit} characters" in error.message
    assert error.task_id == "t-1"


@pytest.mark.parametrize("path", [("source", "path"), ("destination", "path")])
def test_paths_have_at_most_128_levels(path: tuple[str, ...]) -> None:
    """realpath's cost grows with the square of the depth: 250 ms at 2,000 levels."""
    assert parse_task(dumps(replaced(NESTED, "/d" * 128, *path)))
    error = invalid(replaced(NESTED, "d/" * 129, *path))
    assert error.message == f"{'.'.join(path)}: more than 128 directory levels ('/')"
    assert invalid(replaced(NESTED, "/" * 4000, *path)).task_id == "t-1"


@pytest.mark.parametrize(
    "value",
    [
        [[[[[[[[[[["deep"]]]]]]]]]]],
        {"a": {"b": {"c": {}}}},
        1e308,
        -0.0,
        2**64,
        True,
        None,
        "x" * 100_000,
        "\x00\x01\x1b[31m\u2028\x85",
    ],
    ids=repr,
)
@pytest.mark.parametrize("path", [*FIELDS, ("operation",), ("options",)], ids=".".join)
def test_a_wrong_value_in_any_field_names_the_field(path: tuple[str, ...], value: object) -> None:
    message = replaced(NESTED, value, *path)
    text_field = path[-1] not in ("operation", "options")
    acceptable = (
        (text_field and isinstance(value, str) and len(value) <= MAX_TASK_ID_LENGTH)
        or (path == ("operation",) and value is None)
        or (path == ("options",) and isinstance(value, dict))
    )
    if acceptable:  # any text is a task id, path or connection id: the engine judges it
        assert parse_task(dumps(message))
        return
    error = invalid(message)
    assert error.message.startswith(".".join(path) + ": ") and "\n" not in error.message
    assert error.task_id == (None if path == ("task_id",) else "t-1")


def test_unknown_fields_may_hold_anything_json_has() -> None:
    message = {**NESTED, "meta": [[[[{"x": [1e308, -0.0, 2**200, None, "\u2028"]}]]]] * 3}
    assert parse_task(dumps(message)) == TASK
    assert parse_task(json_text({**NESTED, "note": SURROGATE})) == TASK  # never read


def test_control_characters_are_kept_in_a_valid_task() -> None:
    """A task id or path with control characters is a task; its result's JSON escapes them."""
    message = replaced(replaced(NESTED, "id\n\x00\u2028", "task_id"), "a\tb\x1b", "source", "path")
    task = parse_task(dumps(message))
    result = Result.completed(task, worker="w", bytes_transferred=0, duration_ms=0, attempts=1)
    assert json.loads(result.to_json())["task_id"] == "id\n\x00\u2028"
    assert b"\n" not in result.to_json()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.binary(max_size=300))
def test_an_invalid_result_encodes_whatever_the_task_id(task_id: str, raw: bytes) -> None:
    """Any text as the id of an invalid message (lone surrogates included): the result encodes."""
    error = InvalidTaskError("broken", task_id=task_id or None)
    result = Result.invalid(error, raw, worker="w", partition=0, offset=1)
    body = json.loads(result.to_json())
    assert body.get("task_id", "") == task_id.encode("utf-8", "backslashreplace").decode()
    if result.task_id:
        result.task_id.encode()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_an_error_message_is_one_bounded_line_of_utf8(text: str) -> None:
    error = PoolerError(ErrorCode.IO_ERROR, text * 50)
    body = json.loads(Result.failed(TASK, error, worker="w", duration_ms=0, attempts=1).to_json())
    message = body["error_message"]
    assert len(message) <= MAX_ERROR_MESSAGE_LENGTH
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]", message)
    if len(text * 50) <= MAX_ERROR_MESSAGE_LENGTH and text.isprintable():
        assert message == text * 50


def test_one_line_escapes_and_cuts() -> None:
    assert one_line("a\nb\r\x00\x85\u2028" + SURROGATE) == "a\\nb\\r\\x00\\x85\\u2028\\ud800"
    assert one_line("é ü ✓") == "é ü ✓"
    assert one_line("x" * 20, limit=10) == "xxxxxxx..."


def test_the_largest_possible_result_fits_a_kafka_message() -> None:
    worst = "\x01" * MAX_PATH_LENGTH  # six bytes each in JSON
    endpoint = {"connection_id": "\x01" * MAX_CONNECTION_ID_LENGTH, "path": worst}
    task = Task.model_validate(
        {"task_id": "\x01" * 512, "source": endpoint, "destination": endpoint}
    )
    error = PoolerError(ErrorCode.UNKNOWN_ERROR, "\U0001f4a5" * 100_000)
    raw = b"x" * MAX_MESSAGE_BYTES
    failed = Result.failed(task, error, worker="w", duration_ms=0, attempts=1)
    crashed = Result.crashed(error, raw, task_id=task.task_id, worker="w")
    assert max(len(failed.to_json()), len(crashed.to_json())) < 200_000 < MAX_MESSAGE_BYTES


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (KeyError("k"), "KeyError: 'k'"),
        (ValueError(), "ValueError"),
        (_Unprintable(), "_Unprintable"),
        (ValueError("two\nlines"), "ValueError: two\\nlines"),
        (
            ExceptionGroup("g", [OSError(5, "EIO"), ExceptionGroup("h", [KeyError("k")])]),
            "ExceptionGroup: OSError: [Errno 5] EIO; ExceptionGroup: KeyError: 'k'",
        ),
    ],
)
def test_unexpected_errors_are_one_line_naming_the_exception(exc: Exception, text: str) -> None:
    error = unexpected_error(exc)
    assert (error.code, error.message) == (ErrorCode.UNKNOWN_ERROR, text)


TASK = Task.model_validate(NESTED)
WHEN = datetime(2026, 11, 23, 10, 40, 0, 123456, tzinfo=UTC)


def result_json(result: Result) -> dict[str, Any]:
    raw = result.to_json()
    assert isinstance(raw, bytes)
    decoded: dict[str, Any] = json.loads(raw)
    assert raw == json.dumps(decoded, separators=(",", ":"), ensure_ascii=False).encode()
    return decoded


def test_completed_result() -> None:
    result = Result.completed(
        TASK, worker="pod-7", bytes_transferred=1024, duration_ms=35, attempts=1
    )
    body = result_json(result)
    assert RFC3339_UTC.match(body.pop("completed_at"))
    assert body == {
        "task_id": "t-1",
        "status": "completed",
        "operation": "download",
        "source": {"connection_id": "partner-a", "path": "/out/a.csv"},
        "destination": {"connection_id": "local", "path": "in/a.csv"},
        "bytes_transferred": 1024,
        "duration_ms": 35,
        "attempts": 1,
        "worker": "pod-7",
    }


def test_inferred_operation_is_reported() -> None:
    task = TASK.model_copy(update={"operation": None})
    result = Result.skipped(task, worker="w", duration_ms=3, attempts=1, operation=Operation.UPLOAD)
    body = result_json(result)
    assert (body["status"], body["operation"], body["bytes_transferred"]) == (
        "skipped",
        "upload",
        0,
    )
    assert "error_code" not in body


def test_operation_left_out_when_unknown() -> None:
    task = TASK.model_copy(update={"operation": None})
    body = result_json(Result.skipped(task, worker="w", duration_ms=3, attempts=1))
    assert "operation" not in body


def test_failed_result() -> None:
    error = PoolerError(ErrorCode.SERVER_BUSY, "421 Too many connections")
    result = Result.failed(
        TASK, error, worker="w", duration_ms=900, attempts=4, bytes_transferred=10
    )
    body = result_json(result)
    assert body["status"] == "failed"
    assert (body["error_code"], body["error_message"], body["retryable"]) == (
        "SERVER_BUSY",
        "421 Too many connections",
        True,
    )
    assert (body["attempts"], body["bytes_transferred"]) == (4, 10)
    assert "input" not in body
    permanent = Result.failed(
        TASK, PoolerError(ErrorCode.FILE_NOT_FOUND, "x"), worker="w", duration_ms=1, attempts=1
    )
    assert result_json(permanent)["retryable"] is False


def test_invalid_message_result() -> None:
    raw = dumps({"task_id": "t-9", "source": {"connection_id": "a"}})
    with pytest.raises(InvalidTaskError) as caught:
        parse_task(raw)
    body = result_json(Result.invalid(caught.value, raw, worker="w", partition=3, offset=1234))
    assert RFC3339_UTC.match(body.pop("completed_at"))
    message = body.pop("error_message")
    assert "source.path: Field required" in message
    assert body == {
        "task_id": "t-9",
        "status": "failed",
        "bytes_transferred": 0,
        "duration_ms": 0,
        "attempts": 0,
        "worker": "w",
        "error_code": "INVALID_MESSAGE",
        "retryable": False,
        "input": {
            "payload_base64": base64.b64encode(raw).decode(),
            "size": len(raw),
            "truncated": False,
            "partition": 3,
            "offset": 1234,
        },
    }


def test_invalid_message_input_is_truncated_and_task_id_left_out() -> None:
    raw = b"\x00garbage" * 1000
    with pytest.raises(InvalidTaskError) as caught:
        parse_task(raw)
    body = result_json(Result.invalid(caught.value, raw, worker="w"))
    assert "task_id" not in body
    assert body["input"] == {
        "payload_base64": base64.b64encode(raw[:MAX_INPUT_ECHO_BYTES]).decode(),
        "size": len(raw),
        "truncated": True,
    }


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (WHEN, "2026-11-23T10:40:00.123Z"),
        (WHEN.replace(microsecond=0), "2026-11-23T10:40:00.000Z"),
        (WHEN.astimezone(timezone(timedelta(hours=-5))), "2026-11-23T10:40:00.123Z"),
    ],
)
def test_completed_at_is_rfc3339_utc_with_milliseconds(moment: datetime, text: str) -> None:
    result = Result.completed(TASK, worker="w", bytes_transferred=0, duration_ms=0, attempts=1)
    assert result_json(result.model_copy(update={"completed_at": moment}))["completed_at"] == text


def test_result_round_trips() -> None:
    result = Result.failed(
        TASK, PoolerError(ErrorCode.TIMEOUT, "slow"), worker="w", duration_ms=5, attempts=2
    ).model_copy(update={"completed_at": WHEN.replace(microsecond=123000)})
    assert Result.model_validate_json(result.to_json()) == result


def test_error_code_only_on_failed_results() -> None:
    fields: dict[str, Any] = {
        "task_id": "t",
        "bytes_transferred": 0,
        "duration_ms": 0,
        "attempts": 1,
        "completed_at": WHEN,
        "worker": "w",
    }
    with pytest.raises(ValidationError, match="error_code"):
        Result(status=ResultStatus.FAILED, **fields)
    with pytest.raises(ValidationError, match="error_code"):
        Result(status=ResultStatus.COMPLETED, error_code=ErrorCode.TIMEOUT, **fields)
    with pytest.raises(ValidationError, match="timezone"):
        Result(
            status=ResultStatus.COMPLETED, **{**fields, "completed_at": WHEN.replace(tzinfo=None)}
        )


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_schema_files_are_up_to_date(name: str) -> None:
    committed = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    assert committed == SCHEMA_FILES[name](), (
        f"docs/schemas/{name} is stale: run `python -m ftp_pooler.contract` and commit the result"
    )


def test_write_schemas_writes_what_the_code_generates(tmp_path: Path) -> None:
    written = write_schemas(tmp_path / "schemas")
    assert sorted(path.name for path in written) == sorted(SCHEMA_FILES)
    for path in written:
        assert path.read_text(encoding="utf-8") == (SCHEMA_DIR / path.name).read_text(
            encoding="utf-8"
        )


def test_task_schema_documents_both_forms() -> None:
    schema = SCHEMA_FILES["task.schema.json"]()
    assert [ref["$ref"] for ref in schema["anyOf"]] == ["#/$defs/Task", "#/$defs/FlatTask"]
    assert schema["$defs"]["Task"]["required"] == ["task_id", "source", "destination"]
    assert schema["$defs"]["FlatTask"]["required"] == [
        "task_id",
        "src_id",
        "src_path",
        "dst_id",
        "dst_path",
    ]


def test_result_schema_requires_what_is_always_written() -> None:
    schema = SCHEMA_FILES["result.schema.json"]()
    assert set(schema["required"]) == {
        "status",
        "bytes_transferred",
        "duration_ms",
        "attempts",
        "completed_at",
        "worker",
    }
    assert set(schema["$defs"]["ErrorCode"]["enum"]) == {code.value for code in ErrorCode}


def test_oversized_message_still_names_its_task() -> None:
    raw = b'{"task_id": "big-one", "pad": "' + b"x" * 2_000_000 + b'"}'
    with pytest.raises(InvalidTaskError) as caught:
        parse_task(raw, max_bytes=1_000_000)
    assert caught.value.task_id == "big-one"
    assert "over the limit" in caught.value.message
