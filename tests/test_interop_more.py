"""More members of issue 12's kinds, found after it was closed (held-out cases of the
same kinds): EPSV refused with other codes, a refused time stamp after an upload,
remote paths naming a directory.

Same harness as tests/test_interop.py: the scripted server plays the partner, and
``copy`` runs in-process; each test asserts the result lines and the bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scripted_server import Rule
from servers import FTPServer
from test_copy import ftp_pooler, write_config
from test_interop import (
    A_BIN,
    COMPLETED_ONCE,
    UP_BIN,
    MakeScripted,
    commands,
    copy,
    download,
    outcome,
    upload,
)


@pytest.fixture
def local(tmp_path: Path) -> Path:
    """The local connection's root, holding ``in/up.bin`` (as in tests/test_interop.py)."""
    root = tmp_path / "local"
    (root / "in").mkdir(parents=True)
    (root / "in" / "up.bin").write_bytes(UP_BIN)
    return root


# --- EPSV refused with codes other than "not implemented" (kind A) ----------------------------


@pytest.mark.parametrize(
    "refusal",
    [
        "550 EPSV not allowed.",
        "534 Policy requires PASV.",
        "425 Can't open passive connection.",
        "451 Local error in EPSV.",
        "553 EPSV refused by the firewall.",
    ],
)
@pytest.mark.parametrize("pipelining", ["auto", "off", "on"])
async def test_epsv_refused_with_any_error_falls_back_to_pasv_for_good(
    make_scripted_ftp: MakeScripted, local: Path, refusal: str, pipelining: str
) -> None:
    """NAT'd or misconfigured servers refuse EPSV with 550, 534, 425...; PASV works
    (curl, rclone and lftp fall back). One EPSV per server, then PASV on every session."""
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN, "/data/b.bin": A_BIN}, rules=[Rule(r"EPSV", refusal)]
    )
    results = await copy(
        local,
        {"partner": server},
        [
            download("/data/a.bin", "out/a.bin"),
            upload("in/up.bin", "/data/up.bin"),
            download("/data/b.bin", "out/again.bin"),
        ],
        pipelining=pipelining,
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 3, results
    assert (local / "out" / "a.bin").read_bytes() == A_BIN
    assert (local / "out" / "again.bin").read_bytes() == A_BIN
    assert server.files["/data/up.bin"] == UP_BIN
    assert len(commands(server, "EPSV")) == 1, "the refusal is remembered for the server"
    assert len(commands(server, "PASV")) == 3
    assert server.sessions == 1, "no session thrown away over it"


@pytest.mark.parametrize("pipelining", ["auto", "off"])
async def test_epsv_refused_after_it_worked_goes_on_with_pasv(
    make_scripted_ftp: MakeScripted, local: Path, pipelining: str
) -> None:
    """A server whose EPSV worked, then answers ``425`` (no passive port free): with
    pipelining the RETR went out with the EPSV and is refused too; PASV then carries it."""
    names = [f"/data/{n}.bin" for n in "abcd"]
    server = make_scripted_ftp(
        files=dict.fromkeys(names, A_BIN),
        rules=[
            Rule(r"EPSV", times=2),  # the built-in answer, twice
            Rule(r"EPSV", "425 Can't open passive connection: no port free.", times=1),
        ],
    )
    tasks = [download(name, f"out{name}") for name in names]
    results = await copy(local, {"partner": server}, tasks, pipelining=pipelining)
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 4, results
    for name in names:
        assert (local / f"out{name}").read_bytes() == A_BIN
    assert len(commands(server, "EPSV")) == 3 and len(commands(server, "PASV")) == 2


@pytest.mark.parametrize(
    "refusal", ["421 Service closing control connection.", "530 Not logged in."]
)
async def test_epsv_answered_with_session_gone_keeps_epsv(
    make_scripted_ftp: MakeScripted, local: Path, refusal: str
) -> None:
    """A 421 or a 530 says the session is gone, nothing about EPSV: the task gets another
    session and EPSV stays in use."""
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN}, rules=[Rule(r"EPSV", refusal, times=1)]
    )
    [result] = (
        await copy(local, {"partner": server}, [download("/data/a.bin", "out/a.bin")])
    ).values()
    assert result["status"] == "completed", result
    assert (local / "out" / "a.bin").read_bytes() == A_BIN
    assert not commands(server, "PASV")
    assert len(commands(server, "EPSV")) == 2


# --- a refused time stamp after an upload (kind D) ---------------------------------------------


def _upload_with_mtime(**options: Any) -> dict[str, Any]:
    return upload("in/up.bin", "/data/up.bin", preserve_mtime=True, **options)


@pytest.mark.parametrize(
    "refusal",
    [
        "550 Permission denied.",
        "550 /data/.up.bin.part: Operation not permitted",
        "500 MFMT not understood.",
        "504 Command not implemented for that parameter.",
        "553 Could not set file modification time.",
        "550 Could not get file modification time.",  # vsftpd, mdtm_write=NO
    ],
)
@pytest.mark.parametrize("upload_temp", ["hidden", "none"])
async def test_refused_time_stamp_after_an_upload_completes_it_like_a_download(
    make_scripted_ftp: MakeScripted, local: Path, refusal: str, upload_temp: str
) -> None:
    """The bytes landed (STOR's 226): a refused MFMT is a warning, the file gets its
    final name without the time, as a refused MDTM after a download (case D1) does."""
    server = make_scripted_ftp(
        files={"/data/a.bin": A_BIN},
        rules=[Rule(r"MFMT .*", refusal), Rule(r"MDTM /data/a\.bin", refusal)],
    )
    results = await copy(
        local,
        {"partner": server},
        [
            _upload_with_mtime(verify_size=True),
            download("/data/a.bin", "out/a.bin", preserve_mtime=True),
        ],
        upload_temp=upload_temp,
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 2, results
    assert server.files["/data/up.bin"] == UP_BIN
    assert sorted(server.files) == ["/data/a.bin", "/data/up.bin"], "no temporary file left"
    assert len(commands(server, "STOR")) == 1 and len(commands(server, "RETR")) == 1
    assert (local / "out" / "a.bin").read_bytes() == A_BIN


async def test_server_that_cannot_set_times_fails_the_upload_before_any_byte(
    make_scripted_ftp: MakeScripted, local: Path
) -> None:
    """docs/contract.md: preserve_mtime on a server offering neither MFMT nor MDTM fails
    PERMANENT and the file never appears; now known from FEAT before the upload."""
    feat = "211-Features:\n EPSV\n PASV\n SIZE\n UTF8\n211 End"
    server = make_scripted_ftp(feat=feat)
    [result] = (await copy(local, {"partner": server}, [_upload_with_mtime()])).values()
    assert outcome(result) == ("failed", "PERMANENT", 1), result
    assert result["retryable"] is False
    assert "cannot set modification times" in result["error_message"]
    assert not commands(server, "STOR") and not server.files


@pytest.mark.vsftpd
async def test_vsftpd_refusing_to_set_times_still_takes_the_upload(
    make_vsftpd: Callable[..., FTPServer], ftp_root: Path, local: Path
) -> None:
    """vsftpd with ``mdtm_write=NO`` reads ``MDTM <time> <path>`` as a file name and answers
    550: the upload completes without the time."""
    os.utime(local / "in" / "up.bin", (1_600_000_000, 1_600_000_000))
    server = make_vsftpd(extra_config={"mdtm_write": "NO"})
    [result] = (await copy(local, {"partner": server}, [_upload_with_mtime()])).values()
    assert outcome(result) == COMPLETED_ONCE, result
    stored = ftp_root / "data" / "up.bin"
    assert stored.read_bytes() == UP_BIN
    assert stored.stat().st_mtime != 1_600_000_000
    assert [p.name for p in (ftp_root / "data").iterdir()] == ["up.bin"]


# --- a remote path naming a directory (bad input) -----------------------------------------------


@pytest.mark.parametrize("remote", ["/data/", "data/sub/", "/", "/data/.", "\\data\\sub\\"])
async def test_remote_path_naming_a_directory_is_refused_like_a_local_one(
    make_scripted_ftp: MakeScripted, local: Path, remote: str
) -> None:
    """A local destination ending in ``/`` is PATH_NOT_ALLOWED before anything is done;
    a remote source or destination gets the same code and line, before any session."""
    server = make_scripted_ftp(files={"/data/a.bin": A_BIN})
    tasks = [download(remote, "out/a.bin"), upload("in/up.bin", remote)]
    local_twin = download("/data/a.bin", "out/dir/")
    local_twin["task_id"] = "local twin"
    results = await copy(local, {"partner": server}, [*tasks, local_twin])
    twin = results.pop("local twin")
    assert outcome(twin) == ("failed", "PATH_NOT_ALLOWED", 0)
    for result in results.values():
        assert outcome(result) == outcome(twin), result
        assert result["error_message"] == f"{remote!r} names a directory, not a file"
        assert result["retryable"] is False
    assert server.sessions == 0 and not server.files.keys() - {"/data/a.bin"}


# --- a 257 without quotes (kind C: a reply we read too strictly) --------------------------------


@pytest.mark.parametrize(
    "pwd", ["257 / is the current directory", "257 Current directory is /", "257 /"]
)
async def test_unquoted_257_to_pwd_does_not_fail_an_upload_into_an_existing_directory(
    make_scripted_ftp: MakeScripted, local: Path, pwd: str
) -> None:
    """``mkdir -p`` into a directory that exists checks it with PWD and CWD: embedded
    and old servers answer PWD without the quotes RFC 959 asks for."""
    server = make_scripted_ftp(files={"/data/old.bin": A_BIN}, rules=[Rule(r"PWD", pwd)])
    [result] = (
        await copy(local, {"partner": server}, [upload("in/up.bin", "/data/up.bin")])
    ).values()
    assert outcome(result) == COMPLETED_ONCE, result
    assert server.files["/data/up.bin"] == UP_BIN
    assert commands(server, "PWD"), "the directory check ran"


# --- an MS-DOS style LIST (IIS: a reply we read too strictly) ----------------------------------


def test_check_connection_lists_an_iis_style_directory(
    make_scripted_ftp: MakeScripted, tmp_path: Path
) -> None:
    """IIS lists directories MS-DOS style by default and offers no MLSD (before IIS 10):
    check-connection failed PROTOCOL_ERROR on the first line."""
    feat = "211-Features:\n EPSV\n PASV\n SIZE\n MDTM\n UTF8\n211 End"
    server = make_scripted_ftp(
        feat=feat, list_style="dos", files={"/in/report 2024.csv": b"x" * 1234}
    )
    env = write_config(tmp_path, server, tmp_path / "local")  # type: ignore[arg-type]
    done = ftp_pooler("check-connection", "remote", "--path", "/in", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "listed /in: 1 entries" in done.stdout.decode()
    assert "file report 2024.csv 1234" in done.stdout.decode()
