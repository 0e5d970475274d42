"""Fuzzing: thousands of generated hostile messages, interleaved with valid tasks.

A seeded generator (:class:`Corpus`, seed :data:`SEED`, so every run and CI
sees the same messages) writes messages of every hostile kind issue 11 names:
deep nesting of arrays and objects (alone, in any field, in ignored fields),
lone surrogates in every string field, wrong types and out-of-range values in
every field, huge fields and oversized messages, NaN/Infinity, duplicate
keys, non-UTF-8 bytes, a BOM, empty and whitespace messages (worker only:
``copy`` skips blank lines), numbers of 10^6 digits, control characters, and
paths of every shape, local and remote. Each message knows what must become
of it: ``INVALID_MESSAGE`` (with its input echoed) for what is not a valid
task; the engine's code (``PATH_NOT_ALLOWED``, ``FILE_NOT_FOUND``,
``INVALID_CONFIG``, ``FILE_EXISTS``...) for a valid-shaped task with a
hostile path or connection; ``completed``, with the file byte-identical, for
valid tasks (whose names are odd but legal: control characters, unicode,
spaces).

They go through ``copy`` in process (copy_tasks, 10,000 messages), through
the real CLI subprocess (1,000), and through the worker process with a real
Tansu broker (10,000, on one partition, so offsets name the messages), all
against an in-process pyftpdlib server. In every case: no crash, exactly one
result per message, the expected code for each, every valid task completed
(about 13 s for all three, measured).

Remote paths stay under 200 characters: longer ones hit pyftpdlib's command
line limit, a separate FTP-client matter (issue 11, item 3).
"""

from __future__ import annotations

import base64
import collections
import io
import json
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from clients import ftp_config
from conftest import _scratch_base
from ftp_pooler.cli.batch import copy_tasks
from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.ftp.config import Timeouts
from ftp_pooler.ftp.pool import PoolLimits, open_session_pool
from ftp_pooler.transfer.retry import RetryPolicy
from servers import FTPServer
from servers.kafka import KafkaBroker
from test_copy import ftp_pooler, write_config
from test_worker import Topics, Worker

SEED = 20261129
COPY_MESSAGES = 10_000
CLI_MESSAGES = 1_000
WORKER_MESSAGES = 10_000
REMOTE_FILES = 40
PATIENT = Timeouts(connect=30.0, reply=30.0, data_stall=30.0)
"""No timeout is under test here: pyftpdlib shares the GIL with the test and
may answer late while the machine is busy."""
RARE_EACH = 3

ALL_KINDS = {
    "deep nesting", "garbage bytes", "truncated", "not an object", "not strict JSON",
    "not UTF-8", "huge number", "oversized", "oversized, named", "blank", "wrong field",
    "Infinity", "surrogate in a field", "surrogate task id", "control task id",
    "unreadable task id", "unknown connection", "contradicting operation",
    "hostile local path", "hostile remote path", "hostile upload source", "valid download",
    "valid upload",
}  # fmt: skip

COMPLETED = "completed"
INVALID = "INVALID_MESSAGE"

SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\udc80"]
CONTROL = "\x00\x01\x07\x08\t\x0b\x0c\r\x1b\x7f\x85\u2028\u2029"
ODD_BUT_LEGAL = "é ü ✓ 漢 -_~%#&;!$'\"()[]{}@+=,\\\x01\t\x1b\x7f\u2028"
ODD_REMOTE = "é ü ✓ 漢 -_~%#&;!$'()[]{}@+=,"


@dataclass(frozen=True)
class Case:
    """One message and what must become of it."""

    raw: bytes
    expect: str
    """``completed`` or the error code of its one result."""
    task_id: str | None
    """The task id its result carries; None: none (matched by its echoed input)."""
    kind: str
    local: str | None = None
    """A valid download's local path (relative to the local base), checked afterwards."""
    remote: str | None = None
    """A valid upload's remote path, checked afterwards."""
    content: bytes | None = None
    echoed: bool = False
    """Whether the result carries the message in ``input`` (parse-level failures)."""


class Corpus:
    """A seeded generator of hostile and valid task messages, and the files they name.

    Args:
        seed: Same seed, same messages.
        ftp_root: The FTP server's root; ``src/`` gets the files valid downloads fetch.
        local_root: The local connection's base; ``hostile/`` gets a file, a
            directory, a FIFO and a symlink out, ``up/`` the upload source.
        remote_id, local_id: The connections' ids.
    """

    def __init__(
        self, seed: int, ftp_root: Path, local_root: Path, remote_id: str, local_id: str
    ) -> None:
        self.rng = random.Random(seed)
        self.remote_id, self.local_id = remote_id, local_id
        self.serial = 0
        self.remote_files: dict[str, bytes] = {}
        for index in range(REMOTE_FILES):
            payload = self.rng.randbytes(self.rng.randint(0, 3000))
            path = ftp_root / "src" / f"f{index}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
            self.remote_files[f"/src/f{index}.bin"] = payload
        hostile = local_root / "hostile"
        (hostile / "dir").mkdir(parents=True, exist_ok=True)
        (hostile / "file.bin").write_bytes(b"in the way")
        if not (hostile / "fifo").exists():
            os.mkfifo(hostile / "fifo")
        if not (hostile / "link-out").is_symlink():
            (hostile / "link-out").symlink_to("/etc/hostname")
        self.upload_source = self.rng.randbytes(5000)
        (local_root / "up").mkdir(exist_ok=True)
        (local_root / "up" / "src.bin").write_bytes(self.upload_source)
        self._base_length = len(str(local_root.resolve()))
        self._makers: list[tuple[int, Callable[[], Case]]] = [
            (3, self._deep_nesting),
            (5, self._garbage_bytes),
            (4, self._truncated),
            (3, self._not_an_object),
            (3, self._not_strict_json),
            (3, self._not_utf8),
            (8, self._wrong_field),
            (4, self._surrogate_field),
            (3, self._bad_task_id),
            (3, self._unknown_connection),
            (1, self._contradicting_operation),
            (6, self._hostile_local_download),
            (4, self._hostile_remote_download),
            (3, self._hostile_upload_source),
            (4, self._valid_download),
            (2, self._valid_upload),
        ]

    def cases(self, count: int, *, empty_messages: bool = False) -> list[Case]:
        """``count`` messages in random order; with ``empty_messages``, blank ones too.

        The large kinds (1 MiB messages, '[' x 100,000) come a few times each,
        the others in proportion to their weight.
        """
        makers = [maker for weight, maker in self._makers for _ in range(weight)]
        if empty_messages:
            makers += [self._blank] * 2
        rare = [self._oversized, self._oversized_named, self._huge_number, self._deepest]
        rare *= RARE_EACH
        cases = [self.rng.choice(makers)() for _ in range(count - len(rare))]
        for maker in rare:
            cases.insert(self.rng.randrange(len(cases) + 1), maker())
        for case in cases:
            assert b"\n" not in case.raw, case.kind  # copy reads one message per line
            assert empty_messages or case.raw.strip(), case.kind
        return cases

    # -- helpers -----------------------------------------------------------------------

    def _id(self) -> str:
        self.serial += 1
        return f"fz-{self.serial}"

    def _text(self, size: int, alphabet: str = ODD_BUT_LEGAL + "abcxyz") -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(size))

    def _task(self, task_id: object, source: Any, destination: Any, **extra: Any) -> dict[str, Any]:
        if self.rng.random() < 0.5 and isinstance(source, dict) and isinstance(destination, dict):
            flat = {"task_id": task_id, "src_id": source.get("connection_id"),
                    "src_path": source.get("path"), "dst_id": destination.get("connection_id"),
                    "dst_path": destination.get("path")}  # fmt: skip
            return {**{k: v for k, v in flat.items() if v is not None}, **extra}
        return {"task_id": task_id, "source": source, "destination": destination, **extra}

    def _download(self, task_id: object, remote: Any, local: Any, **extra: Any) -> dict[str, Any]:
        return self._task(
            task_id,
            {"connection_id": self.remote_id, "path": remote},
            {"connection_id": self.local_id, "path": local},
            **extra,
        )

    def _upload(self, task_id: object, local: Any, remote: Any, **extra: Any) -> dict[str, Any]:
        return self._task(
            task_id,
            {"connection_id": self.local_id, "path": local},
            {"connection_id": self.remote_id, "path": remote},
            **extra,
        )

    def _encode(self, message: object) -> bytes:
        """JSON as producers write it: ASCII-escaped or raw UTF-8, at random."""
        return json.dumps(message, ensure_ascii=self.rng.random() < 0.5).encode()

    def _a_remote_file(self) -> str:
        return self.rng.choice(sorted(self.remote_files))

    def _deep(self, depth: int) -> str:
        opener = self.rng.choice(["[", '{"a":', '[{"k":', "[[", '{"":'])
        closer = {"[": "]", '{"a":': "}", '[{"k":': "}]", "[[": "]]", '{"":': "}"}[opener]
        return opener * depth + "0" + closer * depth

    # -- cases that never parse: INVALID_MESSAGE, echoed, no task id ---------------------

    def _deepest(self) -> Case:
        """The issue's own message: '[' x 100,000."""
        return Case(b"[" * 100_000, INVALID, None, "deep nesting", echoed=True)

    def _deep_nesting(self) -> Case:
        depth = self.rng.choice([1_200, 2_000, 5_000])
        shape = self.rng.randrange(4)
        if shape == 0:  # never closed
            raw = self.rng.choice(["[", "{", '{"a":', '[{"a":']) * depth
        elif shape == 1:  # closed, so valid JSON but for its depth
            raw = self._deep(depth)
        else:  # inside a field of a task that is otherwise fine
            field = self.rng.choice(["task_id", "src_path", "options", "note", "source"])
            task = self._download(self._id(), self._a_remote_file(), f"ok/{self.serial}")
            text = json.dumps({**task, field: "__DEEP__"})
            raw = text.replace('"__DEEP__"', self._deep(depth))
        return Case(raw.encode(), INVALID, None, "deep nesting", echoed=True)

    def _garbage_bytes(self) -> Case:
        raw = self.rng.randbytes(self.rng.randint(1, 300)).replace(b"\n", b"")
        if not raw.strip() or raw.lstrip()[:1] in b'0123456789-[{"tfn':
            raw = b"\xff" + raw  # never a JSON value by accident
        return Case(raw, INVALID, None, "garbage bytes", echoed=True)

    def _truncated(self) -> Case:
        text = self._encode(self._download(self._id(), self._a_remote_file(), "ok/x"))
        cut = self.rng.randint(1, len(text) - 1)
        return Case(text[:cut], INVALID, None, "truncated", echoed=True)

    def _not_an_object(self) -> Case:
        value = self.rng.choice(
            [[], [1, 2], "task", 42, -0.5, True, False, None, [{"task_id": "x"}], 1e308]
        )
        return Case(json.dumps(value).encode(), INVALID, None, "not an object", echoed=True)

    def _not_strict_json(self) -> Case:
        task = self._download(self._id(), self._a_remote_file(), "ok/x")
        text = json.dumps(task)
        shape = self.rng.randrange(5)
        if shape == 0:  # NaN, Infinity: Python writes them, JSON has none
            constant = self.rng.choice(["NaN", "Infinity", "-Infinity"])
            text = text[:-1] + f', "retry": {constant}}}'
        elif shape == 1:  # a key twice
            key = self.rng.choice(['"task_id"', '"options"', '"note"'])
            text = text[:-1] + f", {key}: 1, {key}: 2}}"
        elif shape == 2:  # a raw control character inside a string
            text = text.replace("ok/x", "ok/" + self.rng.choice("\x00\x01\x1f\t\r"))
        elif shape == 3:  # single quotes, trailing commas, comments
            text = self.rng.choice(
                ["{'task_id': 'x'}", text[:-1] + ",}", "// c " + text, text + " x"]
            )
        else:  # two byte order marks: the first is allowed, the second is not JSON
            text = "\ufeff\ufeff" + text
        return Case(text.encode(), INVALID, None, "not strict JSON", echoed=True)

    def _not_utf8(self) -> Case:
        task = self._download(self._id(), "/src/caf\u00e9", "ok/caf\u00e9")
        text = json.dumps(task, ensure_ascii=False)
        raw = self.rng.choice(
            [
                text.encode("latin-1"),
                text.encode("utf-16-le"),
                text.encode("utf-32"),
                text.encode().replace("é".encode(), b"\xed\xa0\x80"),  # an encoded surrogate
                text.encode().replace("é".encode(), b"\xc3"),  # a cut sequence
            ]
        )
        return Case(raw.replace(b"\n", b""), INVALID, None, "not UTF-8", echoed=True)

    def _huge_number(self) -> Case:
        digits = self.rng.choice(["9" * 1_000_000, "1" + "0" * 5_000, "-" + "7" * 4_301])
        task = self._download(self._id(), self._a_remote_file(), "ok/x")
        raw = json.dumps({**task, "options": "__N__"}).replace('"__N__"', digits).encode()
        return Case(raw, INVALID, None, "huge number", echoed=True)

    def _oversized(self) -> Case:
        pad = "x" * (1_048_576 + self.rng.randint(1, 50_000))
        raw = json.dumps({"pad": pad, "task_id": self._id()}).encode()
        return Case(raw, INVALID, None, "oversized", echoed=True)

    def _oversized_named(self) -> Case:
        """Over the limit, but the id appears plainly at the start: it is given back."""
        task_id = self._id()
        pad = "x" * (1_048_576 + self.rng.randint(1, 50_000))
        raw = json.dumps({"task_id": task_id, "pad": pad}).encode()
        return Case(raw, INVALID, task_id, "oversized, named", echoed=True)

    def _blank(self) -> Case:
        raw = self.rng.choice([b"", b" ", b"\t\r ", b"\r"])
        return Case(raw, INVALID, None, "blank", echoed=True)

    # -- cases that parse but are not tasks: INVALID_MESSAGE with their id -----------------

    def _wrong_field(self) -> Case:
        task_id = self._id()
        task = self._download(task_id, self._a_remote_file(), f"ok/{task_id}")
        flat = "src_id" in task
        text_fields = ["src_id", "src_path", "dst_id", "dst_path"] if flat else [
            "source.connection_id", "source.path", "destination.connection_id",
            "destination.path"]  # fmt: skip
        field = self.rng.choice([*text_fields, "source", "options", "operation", "options.x"])
        not_text = [None, 0, 1.5, True, [], {}, [[["deep"]]], {"a": {"b": []}}]
        if field == "options.x":
            option, bad = self.rng.choice(
                [
                    ("retry_count", self.rng.choice([-1, 101, 1e999, "x", [], 1.5, 10**30])),
                    ("overwrite", self.rng.choice(["maybe", [], {}, 2, None])),
                    ("if_exists", self.rng.choice(["replace", 3, [], True])),
                    ("verify_size", self.rng.choice(["sure", [1], {"x": 1}])),
                ]
            )
            task["options"] = {option: bad}
        else:
            if field in ("source", "options"):
                value: Any = self.rng.choice(["text", 3, [], [[{}]], True])
            elif field == "operation":
                value = self.rng.choice(["copy", "DOWNLOAD ", 1, [], {}])
            else:
                limit = 4096 if field.endswith("path") else 256
                value = self.rng.choice([*not_text, "", self._text(limit + 1, "ab/")])
            if "." in field:
                outer, inner = field.split(".")
                if not isinstance(task.get(outer), dict):
                    task[outer] = {}
                task[outer][inner] = value
            elif field in ("source", "destination") and flat:
                task = {"task_id": task_id, field: value}  # mixes forms: source is checked
            else:
                task[field] = value
        if self.rng.random() < 0.3:  # and a field missing
            for key in ("dst_path", "destination"):
                task.pop(key, None)
        raw = json.dumps(task, allow_nan=True).encode()
        if b"Infinity" in raw:  # 1e999: not JSON, refused before the id is read
            return Case(raw, INVALID, None, "Infinity", echoed=True)
        return Case(raw, INVALID, task_id, "wrong field", echoed=True)

    def _surrogate_field(self) -> Case:
        task_id = self._id()
        surrogate = self.rng.choice(SURROGATES)
        task = self._download(task_id, self._a_remote_file(), f"ok/{task_id}")
        keys = [key for key in ("src_id", "src_path", "dst_id", "dst_path") if key in task]
        if keys:
            key = self.rng.choice(keys)
            task[key] = f"{task[key]}{surrogate}"
        else:
            side = self.rng.choice(["source", "destination"])
            key = self.rng.choice(["connection_id", "path"])
            task[side][key] = f"x{surrogate}{task[side][key]}"
        raw = json.dumps(task, ensure_ascii=True).encode()  # escaped: "\\ud800"
        return Case(raw, INVALID, task_id, "surrogate in a field", echoed=True)

    def _bad_task_id(self) -> Case:
        serial_id = self._id()
        task = self._download(serial_id, self._a_remote_file(), f"ok/{serial_id}")
        shape = self.rng.randrange(5)
        if shape == 0:  # a lone surrogate: given back escaped
            task_id = f"{serial_id}-{self.rng.choice(SURROGATES)}"
            task["task_id"] = task_id
            raw = json.dumps(task, ensure_ascii=True).encode()
            escaped = task_id.encode("utf-8", "backslashreplace").decode()
            return Case(raw, INVALID, escaped, "surrogate task id", echoed=True)
        if shape == 1:  # control characters: a task id like any other; invalid elsewhere
            task_id = f"{serial_id}{self._text(5, CONTROL)}"
            task["task_id"] = task_id
            task["options"] = {"retry_count": -1}
            return Case(self._encode(task), INVALID, task_id, "control task id", echoed=True)
        task["task_id"] = self.rng.choice(["", "x" * 513, 7, None, ["fz"], {"id": 1}])
        if shape == 4:
            del task["task_id"]
        return Case(json.dumps(task).encode(), INVALID, None, "unreadable task id", echoed=True)

    # -- valid-shaped tasks the engine refuses: their code, their id ---------------------

    def _unknown_connection(self) -> Case:
        task_id = self._id()
        shape = self.rng.randrange(3)
        remote, local = self.remote_id, self.local_id
        if shape == 0:
            unknown = self._text(self.rng.randint(1, 256), ODD_BUT_LEGAL + CONTROL + "ab")
            task = self._task(task_id, {"connection_id": unknown, "path": "/a"},
                              {"connection_id": local, "path": f"ok/{task_id}"})  # fmt: skip
        else:  # two sides of one kind
            kind = remote if shape == 1 else local
            task = self._task(task_id, {"connection_id": kind, "path": "/a"},
                              {"connection_id": kind, "path": f"b/{task_id}"})  # fmt: skip
        return Case(self._encode(task), "INVALID_CONFIG", task_id, "unknown connection")

    def _contradicting_operation(self) -> Case:
        task_id = self._id()
        task = self._download(task_id, self._a_remote_file(), f"ok/{task_id}", operation="upload")
        return Case(self._encode(task), INVALID, task_id, "contradicting operation")

    def _hostile_local_download(self) -> Case:
        task_id = self._id()
        expect = "PATH_NOT_ALLOWED"
        shape = self.rng.randrange(10)
        if shape == 0:
            local = self.rng.choice(["..", "../x", "a/../../x", "ok/../../../etc/x", "./.."])
        elif shape == 1:
            local = self.rng.choice(["/etc/passwd-copy", "/tmp/x", "/", "//x", "/dev/null"])
        elif shape == 2:
            local = f"ok/{task_id}\x00.bin"
        elif shape == 3:
            local = self.rng.choice([".", "./", "ok/..", "./."])
        elif shape == 4:  # a name over NAME_MAX, as a file or a directory
            local = self.rng.choice([f"{task_id}-{'x' * 256}", f"d/{'y' * 300}/{task_id}"])
        elif shape == 5:  # more than 128 levels: refused before realpath pays for each
            local = "d/" * self.rng.randint(129, 2_000) + "f"
            expect = INVALID
        elif shape == 6:  # not too long, but over PATH_MAX with the base in front
            size = self.rng.randint(200, 255)
            local = ("p" * size + "/") * ((4096 - self._base_length) // size + 1) + task_id
            if len(local) > 4096:
                local = local[len(local) - 4096 :].lstrip("/")
        elif shape == 7:  # a file where a directory must be made
            local, expect = f"hostile/file.bin/{task_id}", "FILE_EXISTS"
        elif shape == 8:  # a directory where the file goes
            local = "hostile/dir"
        else:  # a symlink leading out of the base
            local = f"hostile/link-out/{task_id}"
        task = self._download(task_id, self._a_remote_file(), local)
        return Case(
            self._encode(task), expect, task_id, "hostile local path", echoed=expect == INVALID
        )

    def _hostile_remote_download(self) -> Case:
        task_id = self._id()
        shape = self.rng.randrange(4)
        expect = "PATH_NOT_ALLOWED"
        if shape == 0:
            remote = f"/src/{task_id}" + self.rng.choice(["\r", "\n", "\x00", "\r\nDELE x"])
        elif shape == 1:
            remote = self.rng.choice(["..", "/src/../..", "../etc/passwd", "a/.."])
        elif shape == 2:  # odd text naming nothing
            name = self._text(self.rng.randint(1, 100), ODD_REMOTE + "\x01\t\x1b\x7f*?")
            remote = self.rng.choice(["/", "", "src/", "-"]) + f"nope-{task_id}-{name}"
            expect = "FILE_NOT_FOUND"
        else:  # a directory, not a file: by its name (refused before any session), or not
            remote = self.rng.choice(["/", "/src", "src/", "/src/."])
            expect = "FILE_NOT_FOUND" if remote == "/src" else "PATH_NOT_ALLOWED"
        task = self._download(task_id, remote, f"ok/{task_id}")
        return Case(self._encode(task), expect, task_id, "hostile remote path")

    def _hostile_upload_source(self) -> Case:
        task_id = self._id()
        local, expect = self.rng.choice(
            [
                ("hostile/dir", "PATH_NOT_ALLOWED"),
                ("hostile/fifo", "PATH_NOT_ALLOWED"),
                ("hostile/link-out", "PATH_NOT_ALLOWED"),
                ("hostile/file.bin/x", "PATH_NOT_ALLOWED"),
                ("n" * 300, "PATH_NOT_ALLOWED"),
                ("../up/src.bin", "PATH_NOT_ALLOWED"),
                (f"nope/{task_id}", "FILE_NOT_FOUND"),
                (f"up/{task_id}\x00", "PATH_NOT_ALLOWED"),
            ]
        )
        task = self._upload(task_id, local, f"/up/{task_id}.bin")
        return Case(self._encode(task), expect, task_id, "hostile upload source")

    # -- valid tasks: completed -----------------------------------------------------------

    def _noise(self) -> dict[str, Any]:
        """Fields a task may carry and the worker ignores, hostile ones included."""
        return self.rng.choice(
            [
                {},
                {"note": self.rng.choice(SURROGATES)},
                {"meta": json.loads(self._deep(self.rng.randint(1, 300)))},
                {"blob": "z" * self.rng.randint(0, 200_000)},
                {"options": {"retry_count": self.rng.randint(0, 3), "unknown": [None, 1e308]}},
                {"operation": "download"},
            ]
        )

    def _valid_download(self) -> Case:
        task_id = self._id()
        name = self._text(self.rng.randint(0, 40))
        local = self.rng.choice(
            [
                f"ok/{task_id}-{name}",
                f"ok/{'deep/' * self.rng.randint(1, 50)}{task_id}",
                f"./ok//{task_id}/./{name}x",
                f"ok/{task_id}-{'l' * 180}",
                f"ok/{'d/' * self.rng.randint(100, 127)}{task_id}",
            ]
        )
        remote = self._a_remote_file()
        task = self._download(task_id, remote, local, **self._noise())
        raw = json.dumps(task, ensure_ascii=True).encode()
        if self.rng.random() < 0.1:
            raw = "\ufeff".encode() + raw  # a byte order mark is allowed (RFC 8259 8.1)
        content = self.remote_files[remote]
        return Case(raw, COMPLETED, task_id, "valid download", local=local, content=content)

    def _valid_upload(self) -> Case:
        task_id = self._id()
        name = self._text(self.rng.randint(0, 30), ODD_REMOTE)
        remote = f"/up/{task_id}-{name}.bin"
        noise = self._noise()
        if "operation" in noise:
            noise["operation"] = "upload"
        task = self._upload(task_id, "up/src.bin", remote, **noise)
        raw = json.dumps(task, ensure_ascii=True).encode()
        return Case(raw, COMPLETED, task_id, "valid upload", remote=remote,
                    content=self.upload_source)  # fmt: skip


# -- checking results ------------------------------------------------------------------


def check_results(
    cases: list[Case],
    results: list[dict[str, Any]],
    *,
    local_root: Path,
    ftp_root: Path,
    by_offset: bool = False,
) -> collections.Counter[str]:
    """Exactly one result per case, with its expected code; valid files byte-identical.

    Results are matched to cases by task id, and those that echo their input
    by that input (or, from the worker, by the offset it names). Returns the
    count of cases per kind.
    """
    assert len(results) == len(cases), f"{len(results)} results for {len(cases)} messages"
    named: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    echoed: dict[Any, list[dict[str, Any]]] = collections.defaultdict(list)
    for result in results:
        if "input" in result:
            echo = result["input"]
            key = echo["offset"] if by_offset else (echo["payload_base64"], echo["size"])
            echoed[key].append(result)
        else:
            named[result["task_id"]].append(result)
    wrong = []
    for offset, case in enumerate(cases):
        if case.echoed:
            key = (
                offset if by_offset else (base64.b64encode(case.raw[:4096]).decode(), len(case.raw))
            )
            found = echoed.get(key, [])
        else:
            found = named.pop(case.task_id or "", [])
        if len(found) != 1 and not (case.echoed and not by_offset and found):
            wrong.append((case, f"{len(found)} results"))
            continue
        result = found.pop()
        code = result.get("error_code", result["status"])
        if code != case.expect or result.get("task_id") != case.task_id:
            wrong.append(
                (case, f"{code} {result.get('task_id')!r} {result.get('error_message')!r}")
            )
    assert not wrong, (
        "\n".join(
            f"{case.kind}: expected {case.expect} {case.task_id!r}, got {got[:300]}"
            f" for {case.raw[:200]!r}"
            for case, got in wrong[:20]
        )
        + f"\n({len(wrong)} wrong)"
    )
    assert not any(named.values()) and not any(echoed.values()), "results for no message"
    for case in cases:
        if case.local is not None:
            assert (local_root / case.local).read_bytes() == case.content, case.local
        if case.remote is not None:
            assert (ftp_root / case.remote.lstrip("/")).read_bytes() == case.content, case.remote
    for result in results:
        assert "\n" not in result.get("error_message", "")
        assert result.get("error_code") != "UNKNOWN_ERROR", result
    assert not temporary_files(local_root) and not temporary_files(ftp_root)
    return collections.Counter(case.kind for case in cases)


def temporary_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.endswith(".part")]


def interleaved(cases: list[Case]) -> bytes:
    return b"".join(case.raw + b"\n" for case in cases)


@pytest.fixture
def local_root() -> Iterator[Path]:
    """The local connection's base, on tmpfs when there is one (thousands of files)."""
    root = Path(tempfile.mkdtemp(prefix="ftp-pooler-fuzz-", dir=_scratch_base()))
    try:
        yield root
    finally:  # rm, not shutil.rmtree: a deep tree (a regression's) exhausts its recursion
        subprocess.run(["rm", "-rf", str(root)], check=False)


# -- copy, in process ----------------------------------------------------------------


async def test_10000_hostile_messages_through_copy_tasks(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path
) -> None:
    corpus = Corpus(SEED, ftp_root, local_root, "remote", "local")
    cases = corpus.cases(COPY_MESSAGES)
    connections = Connections(
        [
            FTPConnection(id="remote", ftp=ftp_config(pyftpd_server, timeouts=PATIENT)),
            LocalConnection(id="local", base_path=local_root),
        ]
    )
    started = time.monotonic()
    output = io.BytesIO()
    limits = PoolLimits(max_sessions_per_connection=8)
    async with open_session_pool(connections.session_factories(), limits) as pool:
        engine = TransferEngine(
            connections, pool, retry=RetryPolicy(initial_backoff=0.01), worker="fuzz"
        )
        summary = await copy_tasks(
            io.BytesIO(interleaved(cases)), output, engine, concurrency=16, worker="fuzz"
        )
    results = [json.loads(line) for line in output.getvalue().splitlines()]
    kinds = check_results(cases, results, local_root=local_root, ftp_root=ftp_root)
    assert summary.tasks == COPY_MESSAGES
    assert summary.completed == kinds["valid download"] + kinds["valid upload"] > 500
    assert set(kinds) == ALL_KINDS - {"blank"}, kinds  # every kind came up
    assert time.monotonic() - started < 60


# -- copy, the CLI -----------------------------------------------------------------------


def test_1000_hostile_messages_through_the_copy_command(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path, tmp_path: Path
) -> None:
    corpus = Corpus(SEED + 1, ftp_root, local_root, "remote", "local")
    cases = corpus.cases(CLI_MESSAGES)
    env = write_config(tmp_path, pyftpd_server, local_root)
    done = ftp_pooler("copy", "-", "-j", "8", env=env, stdin=interleaved(cases), timeout=120)
    assert done.returncode == 1, done.stderr.decode()[-3000:]
    assert b"Traceback" not in done.stderr and b"task.crashed" not in done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = check_results(cases, results, local_root=local_root, ftp_root=ftp_root)
    valid = kinds["valid download"] + kinds["valid upload"]
    assert f"{CLI_MESSAGES} tasks: {valid} completed".encode() in done.stderr


# -- the worker, with a real broker ------------------------------------------------------


def read_all_results(topics: Topics, count: int, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Every result on both topics, until there are ``count`` (or the timeout)."""
    consumer = KafkaConsumer(**topics.broker.consumer_config())
    partitions = [TopicPartition(topics.results, 0), TopicPartition(topics.failures, 0)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(results) < count and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=500).values():
                results.extend(json.loads(message.value) for message in messages)
        for messages in consumer.poll(timeout_ms=500).values():  # nothing more may come
            results.extend(json.loads(message.value) for message in messages)
    finally:
        consumer.close()
    return results


def test_10000_hostile_messages_through_the_worker(
    kafka_broker: KafkaBroker,
    pyftpd_server: FTPServer,
    ftp_root: Path,
    local_root: Path,
    tmp_path: Path,
) -> None:
    corpus = Corpus(SEED + 2, ftp_root, local_root, "ftp", "local")
    cases = corpus.cases(WORKER_MESSAGES, empty_messages=True)
    topics = Topics(kafka_broker, partitions=1)
    password = tmp_path / "password"
    password.write_text(pyftpd_server.password)
    (tmp_path / "connections.ini").write_text(
        f"[ftp]\ntype = ftp\nhost = {pyftpd_server.host}\nport = {pyftpd_server.port}\n"
        f"user = {pyftpd_server.user}\npass_file = {password}\ntimeout = 30\n\n"
        f"[local]\ntype = local\nbase_path = {local_root}\n"
    )
    (tmp_path / "none.yaml").write_text("{}\n")
    env = {
        **topics.worker_env(tmp_path / "connections.ini", tmp_path / "none.yaml"),
        "FTP_POOLER__POOL__MAX_SESSIONS_PER_CONNECTION": "8",
        "FTP_POOLER__TRANSFER__INITIAL_BACKOFF_SECONDS": "0.01",
        "FTP_POOLER__LOGGING__LEVEL": "WARNING",
    }
    worker = Worker(tmp_path, env, "fuzz")
    try:
        worker.wait_ready()
        topics.produce([case.raw for case in cases])
        results = read_all_results(topics, len(cases))
        assert worker.process.poll() is None, "the worker died"
        kinds = check_results(
            cases, results, local_root=local_root, ftp_root=ftp_root, by_offset=True
        )
        assert kinds["blank"] > 0 and kinds["valid download"] > 0
        deadline = time.monotonic() + 30  # a condition: the last commit may be late under load
        while topics.committed()[0] != len(cases) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert topics.committed()[0] == len(cases)
        assert worker.stop() == 0
    finally:
        worker.kill()
    log = (tmp_path / "fuzz.log").read_bytes()
    assert b"Traceback" not in log and b"task.crashed" not in log
    assert b"transfer.unexpected_error" not in log


def test_the_corpus_is_the_same_on_every_run(tmp_path: Path) -> None:
    """CI reproduces a failure: one seed, one sequence of messages."""

    def digest(directory: str) -> list[bytes]:
        ftp, local = tmp_path / directory / "ftp", tmp_path / directory / "local"
        local.mkdir(parents=True)
        return [case.raw for case in Corpus(SEED, ftp, local, "r", "l").cases(300)]

    assert digest("a") == digest("b")
