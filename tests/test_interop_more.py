"""More members of issue 12's kinds, found after it was closed (held-out cases of the
same kinds): EPSV refused with other codes, a refused time stamp after an upload,
remote paths naming a directory.

Same harness as tests/test_interop.py: the scripted server plays the partner, and
``copy`` runs in-process; each test asserts the result lines and the bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scripted_server import Rule
from test_interop import (
    A_BIN,
    COMPLETED_ONCE,
    UP_BIN,
    MakeScripted,
    commands,
    copy,
    download,
    local,  # noqa: F401 -- the fixture
    outcome,
    upload,
)

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


@pytest.mark.parametrize(
    ("refusal", "code"),
    [("421 Service closing control connection.", "SERVER_BUSY"), ("530 Not logged in.", None)],
)
async def test_epsv_answered_with_session_gone_keeps_epsv(
    make_scripted_ftp: MakeScripted, local: Path, refusal: str, code: str | None
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
