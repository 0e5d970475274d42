"""TransferEngine end to end: every error code from a real scenario against a real server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from pyftpdlib.handlers import FTPHandler

from clients import ftp_config
from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.contract import Result, Task
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.errors import ErrorCode
from ftp_pooler.ftp.pool import PoolLimits, open_session_pool
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.transfer import localfs
from ftp_pooler.transfer.retry import RetryPolicy
from servers import FTPServer
from servers.pyftpd import DropControlMidTransferHandler

MakeServer = Callable[..., FTPServer]
NO_WAIT = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture
def local_root(tmp_path: Path) -> Path:
    root = tmp_path / "local"
    root.mkdir()
    return root


def connections(server: FTPServer, local_root: Path, **ftp: Any) -> Connections:
    return Connections(
        [
            FTPConnection(id="remote", ftp=ftp_config(server, **ftp)),
            LocalConnection(id="local", base_path=local_root),
        ]
    )


@pytest.fixture
def run_tasks(
    local_root: Path,
) -> Callable[..., Any]:
    """``await run_tasks(server, [task dicts], **ftp_overrides)`` -> results, in order."""

    async def run(server: FTPServer, tasks: list[dict[str, Any]], **ftp: Any) -> list[Result]:
        conns = connections(server, local_root, **ftp)
        factories = {"remote": SessionFactory(conns["remote"].ftp)}  # type: ignore[union-attr]
        async with open_session_pool(factories, PoolLimits(max_sessions_per_connection=4)) as pool:
            engine = TransferEngine(conns, pool, retry=NO_WAIT, worker="test-worker")
            return [await engine.run(Task.model_validate(task)) for task in tasks]

    return run


def download(remote: str, local: str, **options: Any) -> dict[str, Any]:
    return {
        "task_id": f"dl-{remote}",
        "source": {"connection_id": "remote", "path": remote},
        "destination": {"connection_id": "local", "path": local},
        "options": options,
    }


def upload(local: str, remote: str, **options: Any) -> dict[str, Any]:
    return {
        "task_id": f"ul-{local}",
        "source": {"connection_id": "local", "path": local},
        "destination": {"connection_id": "remote", "path": remote},
        "options": options,
    }


def leftovers(*roots: Path) -> list[Path]:
    """Temporary files anyone left behind."""
    return [p for root in roots for p in root.rglob("*") if p.name.endswith(".part")]


@pytest.mark.parametrize("kind", ("pyftpdlib", "vsftpd", "pure-ftpd"))
async def test_download_and_upload_are_byte_identical(
    make_ftp_server: MakeServer, ftp_root: Path, local_root: Path, run_tasks: Any, kind: str
) -> None:
    server = make_ftp_server(kind)
    remote_payload = os.urandom(700_000)
    (ftp_root / "in").mkdir()
    (ftp_root / "in" / "a.bin").write_bytes(remote_payload)
    os.chmod(ftp_root / "in" / "a.bin", 0o644)
    local_payload = os.urandom(300_000)
    (local_root / "out").mkdir()
    (local_root / "out" / "b.bin").write_bytes(local_payload)

    results = await run_tasks(
        server,
        [
            download("/in/a.bin", str(local_root / "got" / "a.bin")),
            upload("out/b.bin", "/deep/er/b.bin"),
        ],
    )
    assert [r.status for r in results] == ["completed", "completed"], results
    assert [r.operation for r in results] == ["download", "upload"]
    assert results[0].bytes_transferred == len(remote_payload)
    assert (local_root / "got" / "a.bin").read_bytes() == remote_payload
    assert (ftp_root / "deep" / "er" / "b.bin").read_bytes() == local_payload
    assert results[0].attempts == 1 and results[0].worker == "test-worker"
    assert leftovers(ftp_root, local_root) == []


async def test_missing_remote_file_is_file_not_found(
    pyftpd_server: FTPServer, local_root: Path, run_tasks: Any
) -> None:
    [result] = await run_tasks(pyftpd_server, [download("/nope.bin", "x.bin")])
    assert (result.status, result.error_code) == ("failed", ErrorCode.FILE_NOT_FOUND)
    assert result.retryable is False and result.attempts == 1
    assert list(local_root.rglob("*")) == []


async def test_missing_local_file_is_file_not_found(
    pyftpd_server: FTPServer, ftp_root: Path, run_tasks: Any
) -> None:
    [result] = await run_tasks(pyftpd_server, [upload("nope.bin", "/x.bin")])
    assert result.error_code is ErrorCode.FILE_NOT_FOUND
    assert list(ftp_root.rglob("*")) == []


@pytest.mark.parametrize(
    "local_path", ["../escape.bin", "a/../../escape.bin", "/etc/passwd-copy", "/tmp/elsewhere.bin"]
)
async def test_paths_escaping_base_path_are_refused(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path, run_tasks: Any, local_path: str
) -> None:
    (ftp_root / "a.bin").write_bytes(b"data")
    results = await run_tasks(
        pyftpd_server, [download("/a.bin", local_path), upload(local_path, "/b.bin")]
    )
    for result in results:
        assert result.error_code is ErrorCode.PATH_NOT_ALLOWED, result
        assert result.attempts == 0
    assert not (ftp_root / "b.bin").exists()


async def test_symlink_out_of_base_path_is_refused(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path, tmp_path: Path, run_tasks: Any
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (local_root / "link").symlink_to(outside)
    (local_root / "file-link").symlink_to(outside / "secret.txt")
    (ftp_root / "a.bin").write_bytes(b"data")
    results = await run_tasks(
        pyftpd_server,
        [
            download("/a.bin", "link/a.bin"),
            upload("link/secret.txt", "/s1.txt"),
            upload("file-link", "/s2.txt"),
        ],
    )
    assert [r.error_code for r in results] == [ErrorCode.PATH_NOT_ALLOWED] * 3
    assert not (outside / "a.bin").exists()
    assert not (ftp_root / "s1.txt").exists() and not (ftp_root / "s2.txt").exists()


async def test_absolute_path_inside_base_path_is_allowed(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    (ftp_root / "sample1.txt").write_bytes(b"sample")
    target = local_root / "downloaded" / "sample1.txt"
    [result] = await run_tasks(pyftpd_server, [download("/sample1.txt", str(target))])
    assert result.status == "completed"
    assert target.read_bytes() == b"sample"


async def test_if_exists_fail_and_skip_in_both_directions(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    (ftp_root / "r.bin").write_bytes(b"remote")
    (local_root / "l.bin").write_bytes(b"local")
    results = await run_tasks(
        pyftpd_server,
        [
            download("/r.bin", "l.bin", if_exists="fail"),
            download("/r.bin", "l.bin", overwrite=False),
            download("/r.bin", "l.bin", if_exists="skip"),
            upload("l.bin", "/r.bin", if_exists="fail"),
            upload("l.bin", "/r.bin", if_exists="skip", overwrite=True),
        ],
    )
    assert [r.status for r in results] == ["failed", "failed", "skipped", "failed", "skipped"]
    assert [r.error_code for r in results] == [
        ErrorCode.FILE_EXISTS, ErrorCode.FILE_EXISTS, None, ErrorCode.FILE_EXISTS, None,
    ]
    assert (local_root / "l.bin").read_bytes() == b"local"
    assert (ftp_root / "r.bin").read_bytes() == b"remote"

    results = await run_tasks(
        pyftpd_server, [download("/r.bin", "l.bin"), upload("l.bin", "/r.bin")]
    )
    assert [r.status for r in results] == ["completed", "completed"]
    assert (local_root / "l.bin").read_bytes() == b"remote"
    assert (ftp_root / "r.bin").read_bytes() == b"remote"


class NoRenameOverFilesHandler(FTPHandler):  # type: ignore[misc]
    """Refuses RNTO onto an existing file, as some servers do."""

    def ftp_RNTO(self, path: str) -> None:
        if os.path.exists(path):
            self.respond("553 Can't rename: destination exists.")
            self._rnfr = None
            return
        super().ftp_RNTO(path)


async def test_overwrite_deletes_first_when_the_server_refuses_to_rename_over(
    make_pyftpd: MakeServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    server = make_pyftpd(handler_class=NoRenameOverFilesHandler)
    (ftp_root / "target.bin").write_bytes(b"old")
    (local_root / "new.bin").write_bytes(b"new contents")
    [result] = await run_tasks(server, [upload("new.bin", "/target.bin")])
    assert result.status == "completed", result
    assert (ftp_root / "target.bin").read_bytes() == b"new contents"
    assert leftovers(ftp_root) == []


class NoRenameHandler(FTPHandler):  # type: ignore[misc]
    def ftp_RNFR(self, path: str) -> None:
        self.respond("550 Renaming is not allowed here.")


async def test_server_refusing_rename_fails_and_cleans_up(
    make_pyftpd: MakeServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    server = make_pyftpd(handler_class=NoRenameHandler)
    (local_root / "new.bin").write_bytes(b"new")
    [result] = await run_tasks(server, [upload("new.bin", "/target.bin")])
    assert result.status == "failed"
    assert result.error_code is ErrorCode.PERMISSION_DENIED
    assert list(ftp_root.iterdir()) == []


async def test_truncated_download_is_retried_and_never_lands(
    make_pyftpd: MakeServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    handler = type("Drop", (DropControlMidTransferHandler,), {"drop_after_bytes": 100_000})
    server = make_pyftpd(handler_class=handler)
    (ftp_root / "big.bin").write_bytes(os.urandom(2_000_000))
    [result] = await run_tasks(server, [download("/big.bin", "big.bin", retry_count=2)])
    assert result.status == "failed"
    assert result.error_code in (ErrorCode.CONNECTION_ERROR, ErrorCode.TRANSIENT)
    assert result.retryable is True
    assert result.attempts == 3
    assert list(local_root.rglob("*")) == []


class _DropsUploadsDTP:
    receive: bool
    tot_bytes_received: int
    cmd_channel: FTPHandler

    def handle_read(self) -> None:
        super().handle_read()  # type: ignore[misc]
        if self.receive and self.tot_bytes_received > 100_000:
            self.cmd_channel.close()

    handle_read_event = handle_read  # DTPHandler aliases it, bypassing handle_read overrides


class DropsUploadsHandler(FTPHandler):  # type: ignore[misc]
    """Closes the control (and data) connection once an upload has sent 100 kB."""

    dtp_mixin = _DropsUploadsDTP


async def test_truncated_upload_never_lands(
    make_pyftpd: MakeServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    server = make_pyftpd(handler_class=DropsUploadsHandler)
    (local_root / "big.bin").write_bytes(os.urandom(2_000_000))
    [result] = await run_tasks(server, [upload("big.bin", "/big.bin", retry_count=1)])
    assert result.status == "failed"
    assert result.attempts == 2
    assert result.error_code is ErrorCode.CONNECTION_ERROR
    assert list(ftp_root.iterdir()) == []


class LyingSizeHandler(FTPHandler):  # type: ignore[misc]
    def ftp_SIZE(self, path: str) -> None:
        self.respond("213 12345")


async def test_size_mismatch_is_detected(
    make_pyftpd: MakeServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    server = make_pyftpd(handler_class=LyingSizeHandler)
    (ftp_root / "a.bin").write_bytes(b"x" * 100)
    (local_root / "b.bin").write_bytes(b"y" * 100)
    results = await run_tasks(
        server,
        [download("/a.bin", "a.bin", retry_count=0), upload("b.bin", "/b.bin", retry_count=0)],
    )
    assert [r.error_code for r in results] == [ErrorCode.SIZE_MISMATCH] * 2
    assert not (local_root / "a.bin").exists()
    assert not (ftp_root / "b.bin").exists()
    assert leftovers(ftp_root, local_root) == []

    results = await run_tasks(
        server, [download("/a.bin", "a.bin", verify_size=False, retry_count=0)]
    )
    assert results[0].status == "completed"


async def test_wrong_password_is_auth_failed_without_retries(
    pyftpd_server: FTPServer, ftp_root: Path, run_tasks: Any
) -> None:
    (ftp_root / "a.bin").write_bytes(b"a")
    [result] = await run_tasks(pyftpd_server, [download("/a.bin", "a.bin")], password="wrong!")
    assert (result.error_code, result.attempts, result.retryable) == (
        ErrorCode.AUTH_FAILED, 1, False,
    )
    assert "wrong!" not in result.to_json().decode()


async def test_unknown_connection_and_contradicting_operation(
    pyftpd_server: FTPServer, run_tasks: Any
) -> None:
    unknown = download("/a.bin", "a.bin")
    unknown["source"]["connection_id"] = "nowhere"
    both_local = download("/a.bin", "a.bin")
    both_local["source"]["connection_id"] = "local"
    contradicting = download("/a.bin", "a.bin")
    contradicting["operation"] = "upload"
    results = await run_tasks(pyftpd_server, [unknown, both_local, contradicting])
    assert [r.error_code for r in results] == [
        ErrorCode.INVALID_CONFIG, ErrorCode.INVALID_CONFIG, ErrorCode.INVALID_MESSAGE,
    ]
    assert "nowhere" in (results[0].error_message or "")


@pytest.mark.parametrize("kind", ("pyftpdlib", "vsftpd"))
async def test_preserve_mtime_both_ways(
    make_ftp_server: MakeServer, ftp_root: Path, local_root: Path, run_tasks: Any, kind: str
) -> None:
    server = make_ftp_server(kind)
    stamp = datetime(2020, 2, 29, 12, 0, 0, tzinfo=UTC).timestamp()
    (ftp_root / "r.bin").write_bytes(b"r")
    os.chmod(ftp_root / "r.bin", 0o644)
    os.utime(ftp_root / "r.bin", (stamp, stamp))
    (local_root / "l.bin").write_bytes(b"l")
    os.utime(local_root / "l.bin", (stamp, stamp))
    results = await run_tasks(
        server,
        [
            download("/r.bin", "r.bin", preserve_mtime=True),
            upload("l.bin", "/l.bin", preserve_mtime=True),
        ],
    )
    assert [r.status for r in results] == ["completed", "completed"], results
    assert (local_root / "r.bin").stat().st_mtime == stamp
    assert (ftp_root / "l.bin").stat().st_mtime == stamp


async def test_retryable_failure_then_success_counts_attempts(
    make_pyftpd: MakeServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    failures = {"left": 2}

    class FlakyHandler(FTPHandler):  # type: ignore[misc]
        def ftp_RETR(self, file: str) -> None:
            if failures["left"]:
                failures["left"] -= 1
                self.respond("451 Local error in processing, try again.")
                return
            super().ftp_RETR(file)

    server = make_pyftpd(handler_class=FlakyHandler)
    (ftp_root / "a.bin").write_bytes(b"eventually")
    [result] = await run_tasks(server, [download("/a.bin", "a.bin")])
    assert (result.status, result.attempts) == ("completed", 3)
    assert (local_root / "a.bin").read_bytes() == b"eventually"



async def test_remote_directory_removed_between_uploads_is_made_again(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path, run_tasks: Any
) -> None:
    (local_root / "a.bin").write_bytes(b"first")
    (local_root / "b.bin").write_bytes(b"second")
    conns = connections(pyftpd_server, local_root)
    factories = {"remote": SessionFactory(conns["remote"].ftp)}  # type: ignore[union-attr]
    async with open_session_pool(factories) as pool:
        engine = TransferEngine(conns, pool, retry=NO_WAIT, worker="w")
        first = await engine.run(Task.model_validate(upload("a.bin", "/made/here/a.bin")))
        shutil.rmtree(ftp_root / "made")
        second = await engine.run(
            Task.model_validate(upload("b.bin", "/made/here/b.bin", retry_count=0))
        )
    assert (first.status, second.status) == ("completed", "completed"), second
    assert (ftp_root / "made" / "here" / "b.bin").read_bytes() == b"second"


async def test_cr_lf_in_a_remote_path_is_refused_before_any_session(
    pyftpd_server: FTPServer, local_root: Path, run_tasks: Any
) -> None:
    (local_root / "a.bin").write_bytes(b"a")
    results = await run_tasks(
        pyftpd_server,
        [download("/a\r\nDELE x", "a.bin"), upload("a.bin", "/b\nRMD /")],
    )
    assert [(r.error_code, r.attempts) for r in results] == [(ErrorCode.PATH_NOT_ALLOWED, 0)] * 2
    assert pyftpd_server.counter is not None and pyftpd_server.counter.total() == 0


async def test_a_download_gives_its_session_back_before_landing_its_file(
    pyftpd_server: FTPServer, ftp_root: Path, local_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one session for the server, the first download's landing (create, fsync,
    rename: tens of ms a file on NFS) waits until the second download has moved its bytes:
    it can only do so if the first gave the session back before landing. The old engine
    held the session through the landing: a deadlock here."""
    for name in ("a", "b"):
        (ftp_root / f"{name}.bin").write_bytes(name.encode() * 1000)
    second_landing = trio.Event()
    real_commit = localfs.AtomicFile.commit

    async def commit(self: localfs.AtomicFile, **kwargs: Any) -> None:
        if self.final.name == "a.bin":
            await second_landing.wait()
        else:
            second_landing.set()
        await real_commit(self, **kwargs)

    monkeypatch.setattr(localfs.AtomicFile, "commit", commit)
    conns = connections(pyftpd_server, local_root)
    factories = {"remote": SessionFactory(conns["remote"].ftp)}  # type: ignore[union-attr]
    results: dict[str, Result] = {}
    with trio.fail_after(10):
        async with open_session_pool(factories, PoolLimits(max_sessions_per_connection=1)) as pool:
            engine = TransferEngine(conns, pool, retry=NO_WAIT, worker="test-worker")

            async def run(name: str) -> None:
                task = Task.model_validate(download(f"/{name}.bin", f"{name}.bin"))
                results[name] = await engine.run(task)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, "a")
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(run, "b")
            assert pool.stats()["remote"].opened_total == 1
    statuses = {name: result.status.value for name, result in results.items()}
    assert statuses == {"a": "completed", "b": "completed"}
    assert (local_root / "a.bin").read_bytes() == b"a" * 1000
