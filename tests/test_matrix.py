"""Interop matrix: every real server, plain and explicit FTPS, through the real engine.

Servers: vsftpd, pure-ftpd, proftpd (Debian builds) and pyftpdlib, each plain
and with explicit FTPS (AUTH TLS, PROT P, certificate verified against the test
CA).  Cases: download, upload, upload into a new nested directory (mkdir -p),
overwrite of an existing file in both directions, a name with spaces and
non-ASCII letters in both directions, a 0-byte file in both directions, and
no transfer at all when TLS is demanded but the certificate is not trusted or
the server has no TLS.

Every case runs its tasks through :func:`ftp_pooler.cli.batch.copy_tasks` with a
:class:`~ftp_pooler.transfer.engine.TransferEngine` over a session pool -- the code
path of ``ftp-pooler copy`` -- and asserts the result line and the bytes on
both sides.  One server per (server, TLS) for the whole module; each case
works in its own directory of it.  Test ids read ``[server-tls-case]``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from clients import ftp_config
from ftp_pooler.cli.batch import copy_tasks
from ftp_pooler.config import Connections, FTPConnection, LocalConnection
from ftp_pooler.transfer.engine import TransferEngine
from ftp_pooler.ftp.config import TLSMode
from ftp_pooler.ftp.pool import PoolLimits, open_session_pool
from ftp_pooler.ftp.session import SessionFactory
from ftp_pooler.transfer.retry import RetryPolicy
from servers import FTPServer

SERVERS = [
    pytest.param((kind, tls), id=f"{kind}-{'ftps' if tls else 'plain'}")
    for kind in ("vsftpd", "pure-ftpd", "proftpd", "pyftpdlib")
    for tls in (False, True)
]
NO_WAIT = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
ODD_NAME = "dir with space/résumé ü.txt"


@pytest.fixture(scope="module", params=SERVERS)
def server(
    request: pytest.FixtureRequest,
    launch_ftp_server: Callable[..., AbstractContextManager[FTPServer]],
) -> Iterator[FTPServer]:
    kind, tls = request.param
    options: dict[str, Any] = {"tls": tls}
    if tls:  # FTPS as partners configure it: nothing in clear, data protected
        options.update(tls_control_required=True, tls_data_required=True)
    with launch_ftp_server(kind, **options) as running:
        yield running


@dataclass
class Case:
    """One case's two sides: ``remote`` is its directory on the server, ``local`` its base."""

    server: FTPServer
    name: str
    local: Path

    @property
    def remote(self) -> Path:
        return self.server.root / self.name

    def put_remote(self, path: str, data: bytes) -> None:
        """Create a server-side file (and its directories) the FTP user may overwrite."""
        owner = self.server.root.stat()
        target = self.remote / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        for p in [target, *target.relative_to(self.server.root).parents]:
            os.chown(self.server.root / p, owner.st_uid, owner.st_gid)

    def put_local(self, path: str, data: bytes) -> None:
        target = self.local / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def download(self, remote: str, local: str) -> dict[str, Any]:
        return {"task_id": f"dl {remote}", "source": {"connection_id": "remote",
                "path": f"/{self.name}/{remote}"}, "destination": {"connection_id": "local",
                "path": local}}  # fmt: skip

    def upload(self, local: str, remote: str) -> dict[str, Any]:
        return {"task_id": f"ul {local}", "source": {"connection_id": "local", "path": local},
                "destination": {"connection_id": "remote",
                "path": f"/{self.name}/{remote}"}}  # fmt: skip

    async def copy(self, *tasks: dict[str, Any], **ftp: Any) -> dict[str, dict[str, Any]]:
        """Run ``tasks`` like ``ftp-pooler copy`` does; return the result lines by task id.

        ``ftp`` overrides fields of the remote connection's FTPConfig.
        """
        conns = Connections(
            [
                FTPConnection(id="remote", ftp=ftp_config(self.server, **ftp)),
                LocalConnection(id="local", base_path=self.local),
            ]
        )
        factories = {"remote": SessionFactory(conns["remote"].ftp)}  # type: ignore[union-attr]
        source = io.BytesIO(b"".join(json.dumps(t).encode() + b"\n" for t in tasks))
        sink = io.BytesIO()
        limits = PoolLimits(max_sessions_per_connection=2)
        async with open_session_pool(factories, limits) as pool:
            engine = TransferEngine(conns, pool, retry=NO_WAIT, worker="matrix")
            await copy_tasks(source, sink, engine, concurrency=2, worker="matrix")
        results = [json.loads(line) for line in sink.getvalue().splitlines()]
        assert len(results) == len(tasks)
        return {r["task_id"]: r for r in results}

    def leftovers(self) -> list[Path]:
        return [p for root in (self.remote, self.local) for p in root.rglob("*.part")]


@pytest.fixture
def case(server: FTPServer, request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    # each case in its own remote directory of the shared server
    name = request.node.originalname.removeprefix("test_")
    local = tmp_path / "local"
    local.mkdir()
    made = Case(server, name, local)
    made.put_remote(".keep", b"")
    return made


def completed(result: dict[str, Any], size: int) -> None:
    assert (result["status"], result.get("error_code")) == ("completed", None), result
    assert result["bytes_transferred"] == size, result
    assert result["attempts"] == 1, result


async def test_download(case: Case) -> None:
    payload = os.urandom(300_000)
    case.put_remote("data.bin", payload)
    results = await case.copy(case.download("data.bin", "got/data.bin"))
    completed(results["dl data.bin"], len(payload))
    assert (case.local / "got" / "data.bin").read_bytes() == payload
    assert (case.remote / "data.bin").read_bytes() == payload
    assert case.leftovers() == []


async def test_upload(case: Case) -> None:
    payload = os.urandom(300_000)
    case.put_local("data.bin", payload)
    results = await case.copy(case.upload("data.bin", "data.bin"))
    completed(results["ul data.bin"], len(payload))
    assert (case.remote / "data.bin").read_bytes() == payload
    assert (case.local / "data.bin").read_bytes() == payload
    assert case.leftovers() == []


async def test_upload_into_new_nested_directory(case: Case) -> None:
    payload = os.urandom(50_000)
    case.put_local("data.bin", payload)
    results = await case.copy(case.upload("data.bin", "new/deeper/deepest/data.bin"))
    completed(results["ul data.bin"], len(payload))
    assert (case.remote / "new" / "deeper" / "deepest" / "data.bin").read_bytes() == payload
    assert case.leftovers() == []


async def test_download_overwrites_local_file(case: Case) -> None:
    payload = os.urandom(40_000)
    case.put_remote("data.bin", payload)
    case.put_local("data.bin", b"old local content that is longer than nothing" * 2_000)
    results = await case.copy(case.download("data.bin", "data.bin"))
    completed(results["dl data.bin"], len(payload))
    assert (case.local / "data.bin").read_bytes() == payload
    assert case.leftovers() == []


async def test_upload_overwrites_remote_file(case: Case) -> None:
    payload = os.urandom(40_000)
    case.put_remote("data.bin", b"old remote content, longer than the new one" * 2_000)
    case.put_local("data.bin", payload)
    results = await case.copy(case.upload("data.bin", "data.bin"))
    completed(results["ul data.bin"], len(payload))
    assert (case.remote / "data.bin").read_bytes() == payload
    assert case.leftovers() == []


async def test_name_with_spaces_and_non_ascii(case: Case) -> None:
    down, up = "down: ü é ß".encode() * 1_000, "up: résumé".encode() * 1_000
    case.put_remote(ODD_NAME, down)
    case.put_local(f"out/{ODD_NAME}", up)
    results = await case.copy(
        case.download(ODD_NAME, f"in/{ODD_NAME}"),
        case.upload(f"out/{ODD_NAME}", f"up/{ODD_NAME}"),
    )
    completed(results[f"dl {ODD_NAME}"], len(down))
    completed(results[f"ul out/{ODD_NAME}"], len(up))
    assert (case.local / "in" / ODD_NAME).read_bytes() == down
    assert (case.remote / "up" / ODD_NAME).read_bytes() == up
    assert case.leftovers() == []


async def test_empty_file(case: Case) -> None:
    case.put_remote("empty-remote", b"")
    case.put_local("empty-local", b"")
    results = await case.copy(
        case.download("empty-remote", "got/empty-remote"),
        case.upload("empty-local", "up/empty-local"),
    )
    completed(results["dl empty-remote"], 0)
    completed(results["ul empty-local"], 0)
    assert (case.local / "got" / "empty-remote").read_bytes() == b""
    assert (case.remote / "up" / "empty-local").read_bytes() == b""
    assert case.leftovers() == []


async def test_no_transfer_without_a_verified_tls_session(case: Case, tmp_path: Path) -> None:
    """FTPS never goes on with a certificate from an unknown CA, nor falls back to plain FTP."""
    case.put_remote("secret.bin", b"not for anyone")
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    # FTPS servers: their certificate checked against another CA;
    # plain servers: asked for AUTH TLS
    results = await case.copy(
        case.download("secret.bin", "secret.bin"), tls=TLSMode.EXPLICIT, ca_file=other_ca
    )
    result = results["dl secret.bin"]
    assert (result["status"], result["retryable"]) == ("failed", False), result
    if case.server.tls:
        assert result["error_code"] == "TLS_ERROR", result
        assert "CERTIFICATE_VERIFY_FAILED" in result["error_message"], result
    else:  # the code follows the refusal's reply (530 or 500); the message names AUTH
        assert result["error_message"].startswith("AUTH: 5"), result
    assert result["bytes_transferred"] == 0
    assert list(case.local.iterdir()) == []
