"""Local file-system failures keep their code: real full, read-only and refusing volumes.

Each test makes the kernel fail for real (a 64 KiB tmpfs that fills up, a
tmpfs mounted read-only, an immutable directory, names over ``NAME_MAX``) and
runs tasks through :class:`TransferEngine` against pyftpdlib. Mounting needs
root: without it the tests skip, and under CI they fail.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clients import ftp_config
from conftest import unavailable
from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.contract import Result, Task
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.errors import ErrorCode
from ftp_pooler.ftp.pool import PoolLimits, open_session_pool
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.transfer.localfs import error_for_os_error, quoted
from ftp_pooler.transfer.retry import RetryPolicy
from servers import FTPServer
from test_copy import ftp_pooler, write_config

NO_WAIT = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs ({options}): {done.stderr.decode().strip()}")


def _unmount(target: Path) -> None:
    subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=False)


@pytest.fixture
def full_volume(tmp_path: Path) -> Iterator[Path]:
    """An empty 64 KiB tmpfs: the first download larger than that fills it."""
    target = tmp_path / "tiny"
    _mount(target, "size=64k,mode=0755")
    try:
        yield target
    finally:
        _unmount(target)


@pytest.fixture
def read_only_volume(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted read-only: every write is EROFS, for root too."""
    target = tmp_path / "ro"
    _mount(target, "size=64k,ro")
    try:
        yield target
    finally:
        _unmount(target)


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory with the immutable attribute: creating a file in it is EPERM, for root too."""
    target = tmp_path / "immutable"
    target.mkdir()
    done = subprocess.run(["chattr", "+i", str(target)], capture_output=True, check=False)
    if done.returncode != 0:
        unavailable(f"cannot make a directory immutable: {done.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["chattr", "-i", str(target)], capture_output=True, check=False)


Run = Callable[..., Any]


@pytest.fixture
def run_tasks(pyftpd_server: FTPServer) -> Run:
    """``await run_tasks(local_base, [task dicts])`` -> results, one engine and pool for all
    (its caches kept); ``between=f`` calls ``f()`` after the first task."""

    async def run(
        local: Path, tasks: list[dict[str, Any]], between: Callable[[], None] | None = None
    ) -> list[Result]:
        conns = Connections(
            [
                FTPConnection(id="remote", ftp=ftp_config(pyftpd_server)),
                LocalConnection(id="local", base_path=local),
            ]
        )
        factories = {"remote": SessionFactory(conns["remote"].ftp)}  # type: ignore[union-attr]
        async with open_session_pool(factories, PoolLimits(max_sessions_per_connection=2)) as pool:
            engine = TransferEngine(conns, pool, retry=NO_WAIT, worker="w")
            results = []
            for task in tasks:
                results.append(await engine.run(Task.model_validate(task)))
                if between is not None:
                    between()
                    between = None
            return results

    return run


def download(remote: str, local: str) -> dict[str, Any]:
    return {
        "task_id": f"dl-{local[:40]}",
        "source": {"connection_id": "remote", "path": remote},
        "destination": {"connection_id": "local", "path": local},
    }


def upload(local: str, remote: str) -> dict[str, Any]:
    return {
        "task_id": f"ul-{local[:40]}",
        "source": {"connection_id": "local", "path": local},
        "destination": {"connection_id": "remote", "path": remote},
    }


def failure(result: Result) -> tuple[ErrorCode | None, str]:
    """The code and message of a failed result, checked to be one line."""
    assert result.status == "failed", result
    message = result.error_message or ""
    assert "\n" not in message and "ExceptionGroup" not in message, message
    return result.error_code, message


async def test_download_into_a_full_volume_is_io_error_and_frees_the_space(
    ftp_root: Path, full_volume: Path, run_tasks: Run
) -> None:
    (ftp_root / "big.bin").write_bytes(os.urandom(1024 * 1024))
    (ftp_root / "small.bin").write_bytes(b"s" * 8192)
    big, small = await run_tasks(
        full_volume, [download("/big.bin", "in/big.bin"), download("/small.bin", "in/small.bin")]
    )
    code, message = failure(big)
    assert code is ErrorCode.IO_ERROR and big.retryable is False
    assert message.startswith(f"writing {quoted(full_volume / 'in')[:-1]}/.big.bin.")
    assert message.endswith(": No space left on device")
    assert big.attempts == 1
    # The partial file is gone, so the next task has room; its session is a fresh one
    # (the one whose transfer broke off is never reused).
    assert small.status == "completed", small
    assert sorted(p.name for p in full_volume.rglob("*")) == ["in", "small.bin"]


@pytest.mark.parametrize("where", ["in/a.bin", "a.bin"], ids=["below", "in-base"])
async def test_download_does_not_create_a_missing_base_path(
    ftp_root: Path, tmp_path: Path, run_tasks: Run, where: str
) -> None:
    """tester2: a download to a base_path that does not exist (a volume not mounted)
    made it and its parents and completed: the file landed on the host's disk. Now
    TRANSIENT (the volume may be mounted later), saying so, and nothing is made."""
    (ftp_root / "a.bin").write_bytes(b"abc")
    mount_point = tmp_path / "mnt" / "nfs" / "data"
    [result] = await run_tasks(mount_point, [download("/a.bin", where)])
    code, message = failure(result)
    assert code is ErrorCode.TRANSIENT and result.retryable is True
    assert message == f"the local base path {quoted(mount_point)} does not exist (not mounted?)"
    assert not (tmp_path / "mnt").exists()
    mount_point.mkdir(parents=True)  # mounted: the same task now completes
    [result] = await run_tasks(mount_point, [download("/a.bin", where)])
    assert result.status == "completed", result
    assert (mount_point / where).read_bytes() == b"abc"


async def test_a_download_directory_removed_between_tasks_is_made_again(
    ftp_root: Path, tmp_path: Path, run_tasks: Run
) -> None:
    """tester3: a directory made for a download was remembered for the whole process:
    once removed (a clean-up job, a volume remounted) every later download into it
    failed FILE_NOT_FOUND, not retryable, until a restart. Now it is made again."""
    (ftp_root / "a.bin").write_bytes(b"abc")
    (ftp_root / "b.bin").write_bytes(b"cba")
    local = tmp_path / "local"
    local.mkdir()
    first, second = await run_tasks(
        local,
        [download("/a.bin", "out/a.bin"), download("/b.bin", "out/b.bin")],
        between=lambda: shutil.rmtree(local / "out"),
    )
    assert (first.status, second.status) == ("completed", "completed"), second
    assert (local / "out" / "b.bin").read_bytes() == b"cba"


async def test_a_base_path_gone_mid_run_is_transient(
    ftp_root: Path, tmp_path: Path, run_tasks: Run
) -> None:
    """tester3: a base_path that disappears mid-run (a volume unmounted) failed the next
    downloads FILE_NOT_FOUND, not retryable; it is the documented TRANSIENT, and the
    base path is not made again."""
    (ftp_root / "a.bin").write_bytes(b"abc")
    (ftp_root / "b.bin").write_bytes(b"cba")
    local = tmp_path / "local"
    local.mkdir()
    first, second = await run_tasks(
        local,
        [download("/a.bin", "out/a.bin"), download("/b.bin", "out/b.bin")],
        between=lambda: shutil.rmtree(local),
    )
    assert first.status == "completed", first
    code, message = failure(second)
    assert code is ErrorCode.TRANSIENT and second.retryable is True
    assert message == f"the local base path {quoted(local)} does not exist (not mounted?)"
    assert not local.exists()


async def test_upload_of_a_directory_is_refused_before_any_session(
    pyftpd_server: FTPServer, ftp_root: Path, tmp_path: Path, run_tasks: Run
) -> None:
    local = tmp_path / "local"
    (local / "a-directory").mkdir(parents=True)
    [result] = await run_tasks(local, [upload("a-directory", "/up/x.bin")])
    code, message = failure(result)
    assert code is ErrorCode.PATH_NOT_ALLOWED
    assert message == f"reading {quoted(local / 'a-directory')}: Is a directory"
    assert pyftpd_server.peak_connections() == 0
    assert list(ftp_root.rglob("*")) == []


def test_upload_of_a_fifo_fails_at_once_instead_of_blocking(
    pyftpd_server: FTPServer, tmp_path: Path
) -> None:
    """Opening a FIFO for reading blocks until a writer comes: it must not be opened at all."""
    local = tmp_path / "local"
    local.mkdir()
    os.mkfifo(local / "pipe")
    (local / "file.txt").write_bytes(b"after the pipe")
    env = write_config(tmp_path, pyftpd_server, local)
    lines = b'{"task_id": "fifo", "src_id": "local", "src_path": "pipe", "dst_id": "remote", ' \
        b'"dst_path": "/pipe"}\n{"task_id": "file", "src_id": "local", "src_path": "file.txt", ' \
        b'"dst_id": "remote", "dst_path": "/file.txt"}\n'  # fmt: skip
    try:
        done = ftp_pooler("copy", "-", "--concurrency", "1", env=env, stdin=lines, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("copy blocked on the FIFO")
    results = {r["task_id"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert results["fifo"]["error_code"] == "PATH_NOT_ALLOWED"
    assert results["fifo"]["error_message"].endswith("pipe': not a regular file")
    assert results["file"]["status"] == "completed"


async def test_download_into_a_read_only_volume_is_io_error(
    ftp_root: Path, read_only_volume: Path, run_tasks: Run
) -> None:
    (ftp_root / "a.bin").write_bytes(b"a" * 100)
    [result] = await run_tasks(read_only_volume, [download("/a.bin", "in/a.bin")])
    code, message = failure(result)
    assert code is ErrorCode.IO_ERROR
    assert message == f"creating {quoted(read_only_volume / 'in')}: Read-only file system"


async def test_download_into_an_immutable_directory_is_permission_denied(
    ftp_root: Path, immutable_dir: Path, run_tasks: Run
) -> None:
    (ftp_root / "a.bin").write_bytes(b"a" * 100)
    [result] = await run_tasks(immutable_dir, [download("/a.bin", "a.bin")])
    code, message = failure(result)
    assert code is ErrorCode.PERMISSION_DENIED
    assert message.startswith(f"creating {quoted(immutable_dir)[:-1]}/.a.bin.")
    assert message.endswith(": Operation not permitted")
    assert list(immutable_dir.iterdir()) == []


async def test_paths_the_file_system_cannot_hold_are_path_not_allowed(
    ftp_root: Path, tmp_path: Path, run_tasks: Run
) -> None:
    local = tmp_path / "local"
    local.mkdir()
    (local / "plain-file").write_bytes(b"x")
    (local / "a-directory").mkdir()
    (ftp_root / "a.bin").write_bytes(b"a" * 100)
    long_name = "n" * 300
    results = await run_tasks(
        local,
        [
            download("/a.bin", long_name),  # over NAME_MAX (255)
            download("/a.bin", f"{long_name}/a.bin"),  # a directory over NAME_MAX
            download("/a.bin", ("p" * 250 + "/") * 16 + "a.bin"),  # with the base, over PATH_MAX
            download("/a.bin", "a-directory"),  # a directory where the file goes
            upload(long_name, "/x.bin"),
            upload("plain-file/x.bin", "/x.bin"),  # a file where a directory should be
        ],
    )
    expected = [
        ("creating", "File name too long"),
        ("creating", "File name too long"),
        ("creating", "File name too long"),
        ("moving", "Is a directory"),
        ("reading", "File name too long"),
        ("reading", "Not a directory"),
    ]
    for result, (verb, text) in zip(results, expected, strict=True):
        code, message = failure(result)
        assert code is ErrorCode.PATH_NOT_ALLOWED, message
        assert message.startswith(f"{verb} '{local}/") and message.endswith(f": {text}")
        assert len(message) < 12_000
    assert list(ftp_root.iterdir()) == [ftp_root / "a.bin"]


@pytest.mark.parametrize(
    ("number", "code"),
    [
        (errno.ENOENT, ErrorCode.FILE_NOT_FOUND),
        (errno.EEXIST, ErrorCode.FILE_EXISTS),
        (errno.ENOTEMPTY, ErrorCode.FILE_EXISTS),
        (errno.EACCES, ErrorCode.PERMISSION_DENIED),
        (errno.EPERM, ErrorCode.PERMISSION_DENIED),
        (errno.EISDIR, ErrorCode.PATH_NOT_ALLOWED),
        (errno.ENOTDIR, ErrorCode.PATH_NOT_ALLOWED),
        (errno.ENAMETOOLONG, ErrorCode.PATH_NOT_ALLOWED),
        (errno.ELOOP, ErrorCode.PATH_NOT_ALLOWED),
        (errno.EILSEQ, ErrorCode.PATH_NOT_ALLOWED),
        (errno.EMFILE, ErrorCode.TRANSIENT),
        (errno.ENFILE, ErrorCode.TRANSIENT),
        (errno.ENOMEM, ErrorCode.TRANSIENT),
        (errno.ESTALE, ErrorCode.TRANSIENT),
        (errno.ENOSPC, ErrorCode.IO_ERROR),
        (errno.EDQUOT, ErrorCode.IO_ERROR),
        (errno.EIO, ErrorCode.IO_ERROR),
        (errno.EROFS, ErrorCode.IO_ERROR),
        (errno.EFBIG, ErrorCode.IO_ERROR),
        (None, ErrorCode.IO_ERROR),
    ],
)
def test_each_errno_has_its_code(number: int | None, code: ErrorCode) -> None:
    exc = OSError(number, os.strerror(number)) if number is not None else OSError("odd")
    hostile_path = "/data/in\n\x1b[31mred"
    error = error_for_os_error(exc, f"writing {quoted(hostile_path)}")
    assert error.code is code
    assert error.message.startswith("writing '/data/in\\n\\x1b[31mred': ")
    assert "\n" not in error.message and "\x1b" not in error.message
