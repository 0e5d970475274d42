"""The messages a worker reads (tasks) and writes (results), and their JSON Schemas.

A task arrives as JSON bytes from Kafka; :func:`parse_task` turns it into a
:class:`Task` or raises :class:`InvalidTaskError`, whose message names every
failing field. Each task ends as exactly one :class:`Result`, serialised with
:meth:`Result.to_json`. The schemas in ``docs/schemas/`` are generated from
these models; regenerate them with ``python -m ftp_pooler.contract``.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    Discriminator,
    Tag,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import models_json_schema

from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.validation import Location, describe_validation_error, dotted

MAX_TASK_ID_LENGTH = 512
MAX_CONNECTION_ID_LENGTH = 256
MAX_PATH_LENGTH = 4096
"""Characters in a path: Linux's ``PATH_MAX`` (bytes), and more than any FTP
server takes on a command line (vsftpd reads at most 4096 bytes)."""
MAX_PATH_LEVELS = 128
"""``/`` in a path. Checking where a local path really leads (``realpath``)
costs an ``lstat`` per level, each longer than the last: 0.8 ms at 128
levels, 70 ms at 1,000 and 250 ms at 2,000 (measured on tmpfs), all of it on
the event loop."""
MAX_MESSAGE_BYTES = 1_048_576
MAX_INPUT_ECHO_BYTES = 4096
"""How much of an invalid message a failure result carries back."""
MAX_ERROR_MESSAGE_LENGTH = 8192
"""Characters of ``error_message`` kept; longer ones are cut, ending in ``...``.

With the bounds above a result stays far below Kafka's default 1 MiB message
limit whatever the task held (about 110 KB at worst)."""
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(text: str, limit: int = MAX_ERROR_MESSAGE_LENGTH) -> str:
    """``text`` made safe to publish: one line, valid UTF-8, at most ``limit`` characters.

    Control characters (C0, C1, DEL, the Unicode line and paragraph
    separators) and lone surrogates become Python escapes (``\\n``,
    ``\\ud800``); other text, non-ASCII included, is kept. Text over ``limit``
    is cut and ends in ``...``.
    """
    if not text.isprintable():
        text = _UNPRINTABLE.sub(lambda match: ascii(match.group())[1:-1], text)
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


def shown(value: str, limit: int = 64) -> str:
    """A value quoted for an error message: ``repr`` of its first ``limit`` characters."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


def unexpected_error(exc: BaseException) -> PoolerError:
    """UNKNOWN_ERROR for an exception nobody expected (a bug), named in one line.

    An exception group is named by its leaves: ``ExceptionGroup: KeyError: 'x'``.
    Never raises, even when the exception's ``str`` does.
    """
    return PoolerError(ErrorCode.UNKNOWN_ERROR, one_line(_describe(exc)))


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    if isinstance(exc, BaseExceptionGroup):
        return f"{name}: " + "; ".join(_describe(leaf) for leaf in exc.exceptions)
    try:
        detail = str(exc)
    except Exception:  # an exception whose __str__ fails is still named
        detail = ""
    return f"{name}: {detail}" if detail else name


class Operation(StrEnum):
    """Which way a file moves."""

    DOWNLOAD = "download"
    """From an FTP connection to a local one."""
    UPLOAD = "upload"
    """From a local connection to an FTP one."""


class ConflictPolicy(StrEnum):
    """What to do when the destination file already exists."""

    OVERWRITE = "overwrite"
    SKIP = "skip"
    FAIL = "fail"


class ResultStatus(StrEnum):
    """How a task ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    """The destination existed and the task asked to skip it."""


TaskId = Annotated[str, Field(min_length=1, max_length=MAX_TASK_ID_LENGTH)]
ConnectionId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CONNECTION_ID_LENGTH,
        description="A section of the connections file.",
    ),
]


def _at_most_levels(path: str) -> str:
    if path.count("/") > MAX_PATH_LEVELS:
        raise ValueError(f"more than {MAX_PATH_LEVELS} directory levels ('/')")
    return path


FilePath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        description=f"A file path on that connection; at most {MAX_PATH_LEVELS} '/'.",
        json_schema_extra={"pattern": f"^(?:[^/]*/){{0,{MAX_PATH_LEVELS}}}[^/]*$"},
    ),
    AfterValidator(_at_most_levels),
]


class Endpoint(BaseModel):
    """One file on one configured connection."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    connection_id: ConnectionId
    path: FilePath


class SourceAction(StrEnum):
    """What becomes of the source file once the destination holds it (by name)."""

    KEEP = "keep"
    DELETE = "delete"


class MoveTo(BaseModel):
    """Move the source file into a directory once the destination holds it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    move_to: FilePath = Field(
        description=(
            "A directory on the source's connection (mkdir -p if missing); the file keeps"
            " its name there and replaces a file of that name."
        )
    )


def _on_success_form(value: Any) -> str:
    return "move" if isinstance(value, dict | MoveTo) else "name"


OnSuccess = Annotated[
    Annotated[SourceAction, Tag("name")] | Annotated[MoveTo, Tag("move")],
    Discriminator(_on_success_form),
]
"""``"keep"``, ``"delete"`` or ``{"move_to": "<directory>"}``."""


class SourceActionDone(StrEnum):
    """What a task whose ``on_success`` is not keep did to its source (``source_action``)."""

    DELETED = "deleted"
    MOVED = "moved"
    ALREADY_DONE = "already_done"
    """The source was gone and the destination held the finished file: an
    earlier delivery of the task did the transfer and the action
    (``docs/contract.md``, "Redelivery and on_success")."""
    FAILED = "failed"
    """The transfer succeeded; the action did not (the source is still there)."""


class TransferOptions(BaseModel):
    """How to move the file. Booleans and integers are strict: JSON true/false and
    whole numbers only; "no", "3", 3.0 or true for a count are refused, not converted."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    overwrite: StrictBool = Field(
        True, description="false is the same as if_exists = fail; if_exists wins when given."
    )
    if_exists: ConflictPolicy | None = None
    retry_count: StrictInt = Field(3, ge=0, le=100, description="Retries after the first attempt.")
    verify_size: StrictBool = Field(
        True, description="Compare the size written with the size read."
    )
    preserve_mtime: StrictBool = False
    on_success: OnSuccess = Field(
        SourceAction.KEEP,
        description=(
            'What to do with the source once the destination holds the file: "keep",'
            ' "delete", or {"move_to": "<directory>"}.'
        ),
    )

    @field_validator("on_success", mode="wrap")
    @classmethod
    def _one_line_on_success_errors(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Errors named ``options.on_success`` (not by the union's internal branch names)."""
        try:
            return handler(value)
        except ValidationError as exc:
            if not isinstance(value, dict):
                raise ValueError(
                    'should be "keep", "delete" or {"move_to": "<directory>"}'
                ) from None
            raise ValueError(describe_validation_error(exc, lambda loc: dotted(loc[1:]))) from None

    @property
    def conflict(self) -> ConflictPolicy:
        """What to do with an existing destination: ``if_exists``, else what ``overwrite`` means."""
        if self.if_exists is not None:
            return self.if_exists
        return ConflictPolicy.OVERWRITE if self.overwrite else ConflictPolicy.FAIL


_FLAT_KEYS: dict[str, tuple[str, str]] = {
    "src_id": ("source", "connection_id"),
    "src_path": ("source", "path"),
    "dst_id": ("destination", "connection_id"),
    "dst_path": ("destination", "path"),
}
_NESTED_NAMES: dict[Location, str] = {location: flat for flat, location in _FLAT_KEYS.items()}


def _is_flat(data: object) -> bool:
    """A flat task has ``src_*``/``dst_*`` keys and neither ``source`` nor ``destination``."""
    return (
        isinstance(data, dict)
        and "source" not in data
        and "destination" not in data
        and not _FLAT_KEYS.keys().isdisjoint(data)
    )


class Task(BaseModel):
    """Copy one file from a source connection to a destination connection.

    The flat spelling (src_id, src_path, dst_id, dst_path) is accepted too.
    The operation may be left out: the worker infers it from the connection
    types and refuses a task whose operation disagrees with them. Unknown
    fields are ignored.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    task_id: TaskId
    operation: Operation | None = None
    source: Endpoint
    destination: Endpoint
    options: TransferOptions = TransferOptions()

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_form(cls, data: Any) -> Any:
        if not _is_flat(data):
            return data
        nested = {key: value for key, value in data.items() if key not in _FLAT_KEYS}
        nested["source"], nested["destination"] = {}, {}
        for key, (endpoint, field) in _FLAT_KEYS.items():
            if key in data:
                nested[endpoint][field] = data[key]
        return nested


class FlatTask(BaseModel):
    """The flat spelling of a task: src_* and dst_* fields instead of source and destination."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    task_id: TaskId
    operation: Operation | None = None
    src_id: ConnectionId
    src_path: FilePath
    dst_id: ConnectionId
    dst_path: FilePath
    options: TransferOptions = TransferOptions()


class InvalidTaskError(PoolerError):
    """A message that is not a valid task.

    Attributes:
        task_id: The message's ``task_id`` when it could be read, so the
            failure result can still name the task.
    """

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(ErrorCode.INVALID_MESSAGE, message)
        self.task_id = task_id


_JSON_TYPES = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


def parse_task(
    raw: bytes | str, *, max_bytes: int = MAX_MESSAGE_BYTES, size: int | None = None
) -> Task:
    """Validate one task message.

    Strict JSON (RFC 8259) in UTF-8: bytes that are not UTF-8, ``NaN`` and
    ``Infinity``, an object with a key twice, and nesting deeper than the
    parser's recursion limit are refused like any other invalid message. A
    leading byte order mark is ignored (RFC 8259 section 8.1 allows it).
    Every string of the task must be Unicode text: a JSON escape of a lone
    surrogate (``"\\ud800"``) cannot be encoded as UTF-8 and is refused.

    Args:
        raw: The message value, UTF-8 JSON.
        max_bytes: Larger messages are refused unread.
        size: Bytes in the whole message when ``raw`` is only its start (a
            reader that kept ``max_bytes + 1`` bytes of a longer line).

    Raises:
        InvalidTaskError: The message is too large, not JSON, not a JSON object,
            or not a valid task; the message names each failing field. Nothing
            else, whatever ``raw`` holds.
    """
    if size is None:
        size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "replace"))
    if size > max_bytes:
        raise InvalidTaskError(
            f"message is {size} bytes, over the limit of {max_bytes}",
            task_id=_task_id_in_head(raw),
        )
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = json.loads(
            text.removeprefix("\ufeff"),
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
        )
    except RecursionError:
        raise InvalidTaskError("message is not JSON we read: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a 4300+ digit number
        raise InvalidTaskError(f"message is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidTaskError(
            f"message is {_JSON_TYPES.get(type(data), 'null')}, not a JSON object"
        )
    try:
        return Task.model_validate(data)
    except ValidationError as exc:
        field_name = _flat_name if _is_flat(data) else dotted
        task_id = data.get("task_id")
        readable = isinstance(task_id, str) and 0 < len(task_id) <= MAX_TASK_ID_LENGTH
        raise InvalidTaskError(
            describe_validation_error(exc, field_name), task_id=task_id if readable else None
        ) from exc
    except RecursionError:
        raise InvalidTaskError("message is not a task: nested too deeply") from None


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s object hook: a key given twice is an error, not "the last one wins".

    RFC 8259 section 4: with duplicate names, "the behavior of software that
    receives such an object is unpredictable"; two readers of one message
    could act on two different tasks.
    """
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidTaskError(f"message is not JSON: key {shown(key)} appears twice")
            seen.add(key)
    return data


def _refuse_constant(name: str) -> Any:
    """``json.loads``'s hook for ``NaN`` and ``(-)Infinity``: not JSON (RFC 8259 section 6)."""
    raise InvalidTaskError(f"message is not JSON: {name} is not a JSON number")


_TASK_ID_IN_HEAD = re.compile(rb'"task_id"\s*:\s*"([^"\\]{1,%d})"' % MAX_TASK_ID_LENGTH)
TASK_ID_SCAN_BYTES = 4096


def _task_id_in_head(raw: bytes | str) -> str | None:
    """The task id of an oversized message, if it appears plainly in its first 4 KiB.

    The message is not parsed (that is what the size limit avoids); this only
    lets its failure result name the task.
    """
    head = raw[:TASK_ID_SCAN_BYTES]
    match = _TASK_ID_IN_HEAD.search(head if isinstance(head, bytes) else head.encode("utf-8"))
    return match.group(1).decode("utf-8", "replace") if match else None


def _flat_name(loc: Location) -> str:
    """Name a field the way a flat message spells it: ``src_path``, not ``source.path``."""
    return _NESTED_NAMES.get(loc) or dotted(loc)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Timestamp = Annotated[
    AwareDatetime,
    PlainSerializer(_rfc3339, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class TaskInput(BaseModel):
    """The start of a message that was not a valid task, for whoever fixes its producer."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    payload_base64: str = Field(
        description=f"The first {MAX_INPUT_ECHO_BYTES} bytes of the message, base64-encoded."
    )
    size: int = Field(ge=0, description="Bytes in the whole message.")
    truncated: bool
    partition: int | None = None
    offset: int | None = None

    @classmethod
    def from_raw(
        cls,
        raw: bytes | str,
        *,
        partition: int | None = None,
        offset: int | None = None,
        size: int | None = None,
    ) -> TaskInput:
        """``raw``'s start; ``size``: the whole message's bytes when ``raw`` is only its start."""
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "replace")
        size = len(data) if size is None else size
        return cls(
            payload_base64=base64.b64encode(data[:MAX_INPUT_ECHO_BYTES]).decode("ascii"),
            size=size,
            truncated=size > MAX_INPUT_ECHO_BYTES,
            partition=partition,
            offset=offset,
        )


def _now() -> datetime:
    return datetime.now(UTC)


class Result(BaseModel):
    """What became of one task. Fields that do not apply are left out.

    error_code, error_message and retryable appear only on failed results;
    input only when the message was not a valid task (or its handling crashed).

    Whatever it was built from, a result can be encoded: every string in it
    is validated Unicode text (pydantic refuses lone surrogates), an invalid
    message's task id is escaped, ``error_message`` is one bounded line, and
    ``task_id.encode()`` (the Kafka key) cannot fail.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    task_id: str | None = Field(None, description="Left out only when an invalid message had none.")
    status: ResultStatus
    operation: Operation | None = None
    source: Endpoint | None = None
    destination: Endpoint | None = None
    bytes_transferred: int = Field(ge=0)
    duration_ms: int = Field(ge=0)
    attempts: int = Field(ge=0)
    completed_at: Timestamp = Field(description="UTC, e.g. 2026-11-23T10:40:00.123Z.")
    worker: str = Field(description="The pod or host that ran the task.")
    error_code: ErrorCode | None = None
    error_message: str | None = None
    retryable: bool | None = Field(
        None, description="Whether sending the same task again may succeed."
    )
    input: TaskInput | None = None
    source_action: SourceActionDone | None = Field(
        None,
        description=(
            "What became of the source, on completed and skipped results of tasks whose"
            " on_success is not keep."
        ),
    )
    source_action_error_code: ErrorCode | None = Field(
        None, description='Why the source action failed; only with source_action "failed".'
    )
    source_action_error_message: str | None = Field(
        None, description='Only with source_action "failed"; one line, like error_message.'
    )

    @field_validator("task_id", mode="before")
    @classmethod
    def _encodable_task_id(cls, value: Any) -> Any:
        """A task id that is not Unicode text (a lone surrogate) is given back escaped.

        Only an invalid message's id can be one (a task's own is validated);
        escaped, it can still be encoded as UTF-8 for the result and its Kafka key.
        """
        if isinstance(value, str) and not value.isascii():
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value

    @field_validator("error_message", "source_action_error_message", mode="before")
    @classmethod
    def _one_line_message(cls, value: Any) -> Any:
        return one_line(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _error_code_iff_failed(self) -> Self:
        if (self.status is ResultStatus.FAILED) != (self.error_code is not None):
            raise ValueError("error_code is required on failed results, and allowed only there")
        action_failed = self.source_action is SourceActionDone.FAILED
        if action_failed != (self.source_action_error_code is not None):
            raise ValueError(
                "source_action_error_code is required when source_action is failed,"
                " and allowed only then"
            )
        return self

    @classmethod
    def completed(
        cls,
        task: Task,
        *,
        worker: str,
        bytes_transferred: int,
        duration_ms: int,
        attempts: int,
        operation: Operation | None = None,
        source: SourceReport | None = None,
    ) -> Result:
        """A completed result for ``task``.

        Args:
            operation: The one the worker inferred, when the task left it out
                (also for :meth:`skipped` and :meth:`failed`).
            source: What became of the source (``on_success`` not keep; also
                for :meth:`skipped`).
        """
        return cls(
            **_identity(task, operation),
            **_source_fields(source),
            status=ResultStatus.COMPLETED,
            bytes_transferred=bytes_transferred,
            duration_ms=duration_ms,
            attempts=attempts,
            completed_at=_now(),
            worker=worker,
        )

    @classmethod
    def skipped(
        cls,
        task: Task,
        *,
        worker: str,
        duration_ms: int,
        attempts: int,
        operation: Operation | None = None,
        source: SourceReport | None = None,
    ) -> Result:
        return cls(
            **_identity(task, operation),
            **_source_fields(source),
            status=ResultStatus.SKIPPED,
            bytes_transferred=0,
            duration_ms=duration_ms,
            attempts=attempts,
            completed_at=_now(),
            worker=worker,
        )

    @classmethod
    def failed(
        cls,
        task: Task,
        error: PoolerError,
        *,
        worker: str,
        duration_ms: int,
        attempts: int,
        bytes_transferred: int = 0,
        operation: Operation | None = None,
    ) -> Result:
        return cls(
            **_identity(task, operation),
            status=ResultStatus.FAILED,
            bytes_transferred=bytes_transferred,
            duration_ms=duration_ms,
            attempts=attempts,
            completed_at=_now(),
            worker=worker,
            error_code=error.code,
            error_message=error.message,
            retryable=error.retryable,
        )

    @classmethod
    def invalid(
        cls,
        error: InvalidTaskError,
        raw: bytes | str,
        *,
        worker: str,
        partition: int | None = None,
        offset: int | None = None,
        size: int | None = None,
    ) -> Result:
        """The failure result for a message :func:`parse_task` refused (``size``: as
        :meth:`TaskInput.from_raw`)."""
        return cls._not_run(error, raw, error.task_id, worker, partition, offset, size)

    @classmethod
    def crashed(
        cls,
        error: PoolerError,
        raw: bytes | str,
        *,
        task_id: str | None,
        worker: str,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Result:
        """The failure result for a message whose handling raised what nothing expected.

        Like :meth:`invalid`, it carries the message in ``input``, and the task's
        id when the message got as far as being a task.
        """
        return cls._not_run(error, raw, task_id, worker, partition, offset)

    @classmethod
    def _not_run(
        cls,
        error: PoolerError,
        raw: bytes | str,
        task_id: str | None,
        worker: str,
        partition: int | None,
        offset: int | None,
        size: int | None = None,
    ) -> Result:
        return cls(
            task_id=task_id,
            status=ResultStatus.FAILED,
            bytes_transferred=0,
            duration_ms=0,
            attempts=0,
            completed_at=_now(),
            worker=worker,
            error_code=error.code,
            error_message=error.message,
            retryable=error.retryable,
            input=TaskInput.from_raw(raw, partition=partition, offset=offset, size=size),
        )

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON without the fields that are ``None``.

        Raises:
            PydanticSerializationError: Only for a result made without
                validation (``model_construct``), which nothing here does.
        """
        return self.model_dump_json(exclude_none=True).encode()


def _identity(task: Task, operation: Operation | None) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "operation": operation or task.operation,
        "source": task.source,
        "destination": task.destination,
    }


@dataclass(frozen=True)
class SourceReport:
    """What a task did to its source after the destination held the file.

    Attributes:
        done: The outcome, as published in ``source_action``.
        error: Why the action failed; set exactly when ``done`` is FAILED.
    """

    done: SourceActionDone
    error: PoolerError | None = None


def _source_fields(source: SourceReport | None) -> dict[str, Any]:
    if source is None:
        return {}
    fields: dict[str, Any] = {"source_action": source.done}
    if source.error is not None:
        fields["source_action_error_code"] = source.error.code
        fields["source_action_error_message"] = source.error.message
    return fields


def task_json_schema() -> dict[str, Any]:
    """The JSON Schema of a task message, nested or flat."""
    refs, defs = models_json_schema([(Task, "validation"), (FlatTask, "validation")])
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "ftp-pooler task",
        "description": "One file to copy, nested (Task, preferred) or flat (FlatTask).",
        "anyOf": list(refs.values()),
        **defs,
    }


def result_json_schema() -> dict[str, Any]:
    """The JSON Schema of a result message, as :meth:`Result.to_json` writes it."""
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        **Result.model_json_schema(mode="serialization"),
        "title": "ftp-pooler result",
    }


SCHEMA_FILES: dict[str, Callable[[], dict[str, Any]]] = {
    "task.schema.json": task_json_schema,
    "result.schema.json": result_json_schema,
}
"""File name in ``docs/schemas/`` -> the function that generates it."""


def write_schemas(directory: Path) -> list[Path]:
    """Write every file of :data:`SCHEMA_FILES` into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, generate in SCHEMA_FILES.items():
        path = directory / name
        path.write_text(json.dumps(generate(), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")):
        print(written_path)
