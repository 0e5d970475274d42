"""Per-connection charset (``charset`` in connections.ini): legacy partner servers
that store names in Latin-1/CP1252 and do not speak UTF-8.

The pure parts (codec check, command encoding, reply decoding) are tested alone;
the rest against the scripted server in that charset, a real vsftpd (which
stores names as the bytes it gets), and the CLI's ``check-connection``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftp_pooler.config import ConfigError, load_connections
from ftp_pooler.errors import ErrorCode, FTPError, FTPProtocolError
from ftp_pooler.ftp.protocol import (
    ReplyParser,
    UnencodableArgumentError,
    build_command,
    charset_codec,
    decode_text,
    path_fits,
)
from ftp_pooler.ftp.session import SessionFactory
from clients import ftp_config
from scripted_server import Rule, ScriptedFTPServer
from servers import FTPServer
from test_copy import ftp_pooler, write_config
from test_interop import COMPLETED_ONCE, MakeScripted, commands, copy, download, outcome, upload

LEGACY_FEAT = "211-Features:\n EPSV\n MDTM\n PASV\n REST STREAM\n SIZE\n211 End"
"""A legacy server's FEAT: no UTF8."""

DATA = os.urandom(50_000)


# --- the pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_name", "codec"),
    [
        ("auto", "auto"),
        ("AUTO", "auto"),
        ("utf-8", "utf-8"),
        ("UTF8", "utf-8"),
        ("latin-1", "iso8859-1"),
        ("latin1", "iso8859-1"),
        ("ISO-8859-15", "iso8859-15"),
        ("cp1252", "cp1252"),
        ("windows-1252", "cp1252"),
        ("cp850", "cp850"),
        ("koi8-r", "koi8-r"),
        ("shift_jis", "shift_jis"),
        ("gb18030", "gb18030"),
    ],
)
def test_charset_names_a_user_would_write(given_name: str, codec: str) -> None:
    assert charset_codec(given_name) == codec


@pytest.mark.parametrize(
    "name", ["klingon", "utf-16", "utf-32", "cp037", "utf-8-sig", "rot13", "base64", "iso2022_jp"]
)
def test_charsets_that_cannot_carry_ftp_commands_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=repr(name)):
        charset_codec(name)


def test_commands_are_encoded_in_the_charset() -> None:
    assert build_command("RETR", "/données/café.csv", charset="iso8859-1") == (
        b"RETR /donn\xe9es/caf\xe9.csv\r\n"
    )
    assert build_command("RETR", "/€.csv", charset="cp1252") == b"RETR /\x80.csv\r\n"
    assert build_command("RETR", "/café.csv") == "RETR /café.csv\r\n".encode()


def test_an_argument_the_charset_cannot_encode_is_refused_without_showing_it() -> None:
    with pytest.raises(UnencodableArgumentError) as caught:
        build_command("PASS", "пароль-secret", charset="iso8859-1")
    assert caught.value.code is ErrorCode.PATH_NOT_ALLOWED
    assert "secret" not in caught.value.message and "iso8859-1" in caught.value.message


def test_path_length_is_counted_in_the_charset() -> None:
    from ftp_pooler.ftp.protocol import MAX_PATH_BYTES

    name = "é" * MAX_PATH_BYTES  # two bytes each in UTF-8, one in Latin-1
    assert path_fits(name, "iso8859-1")
    assert not path_fits(name)


def test_replies_are_decoded_in_the_charset() -> None:
    parser = ReplyParser("cp1252")
    parser.feed(b'257 "/\x80 r\xe9sum\xe9" created\r\n')
    reply = parser.next_reply()
    assert reply is not None and reply.text == '"/€ résumé" created'
    assert decode_text(b"caf\xe9", None) == "café"  # auto: UTF-8, else Latin-1
    assert decode_text(b"caf\xe9", "utf-8") == "caf\ufffd"  # never raises


@given(st.binary(max_size=300), st.sampled_from(["utf-8", "iso8859-1", "cp1252", "shift_jis"]))
def test_no_bytes_make_the_parser_crash_in_any_charset(data: bytes, charset: str) -> None:
    parser = ReplyParser(charset)
    parser.feed(b"211-x\r\n" + data + b"\r\n211 End\r\n")
    try:
        while parser.next_reply() is not None:
            pass
    except FTPProtocolError:
        pass


# --- configuration ------------------------------------------------------------------------------


def _ini(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "connections.ini"
    path.write_text(f"[partner]\ntype = ftp\nhost = ftp.example\n{body}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("charset = klingon\n", "[partner] charset: unknown charset 'klingon'"),
        ("charset = utf-16\n", "[partner] charset: charset 'utf-16' cannot carry FTP commands"),
        (
            "charset = latin-1\npass = пароль\n",
            "[partner] charset: password has characters the charset iso8859-1 cannot encode",
        ),
        (
            "charset = latin-1\nbase_path = /данные\n",
            "[partner] charset: base_path has characters the charset iso8859-1 cannot encode",
        ),
        ("encoding = Slash,Ctl\n", "[partner] encoding: rclone's name-escaping flags"),
    ],
)
def test_a_bad_charset_is_one_config_error_at_load_time(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_connections(_ini(tmp_path, body))
    assert caught.value.code is ErrorCode.INVALID_CONFIG
    assert message in caught.value.message
    assert "пароль" not in caught.value.message


def test_charset_is_read_from_the_ini(tmp_path: Path) -> None:
    connections = load_connections(_ini(tmp_path, "charset = Latin-1\n"))
    assert connections["partner"].ftp.charset == "iso8859-1"  # type: ignore[union-attr]
    assert load_connections(_ini(tmp_path, ""))["partner"].ftp.charset == "auto"  # type: ignore[union-attr]


def test_check_config_prints_one_line_for_an_unknown_charset(tmp_path: Path) -> None:
    server = ScriptedFTPServer()  # never started: only its address is written
    env = write_config(tmp_path, server, tmp_path / "local")  # type: ignore[arg-type]
    ini = tmp_path / "connections.ini"
    ini.write_text(ini.read_text().replace("type = ftp\n", "type = ftp\ncharset = klingon\n"))
    done = ftp_pooler("check-config", env=env, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "INVALID_CONFIG" in lines[0] and "klingon" in lines[0], lines


# --- the scripted legacy server ----------------------------------------------------------------


def legacy_server(
    make_scripted_ftp: MakeScripted, charset: str, **kwargs: object
) -> ScriptedFTPServer:
    return make_scripted_ftp(charset=charset, feat=LEGACY_FEAT, **kwargs)


async def test_latin1_server_download_and_upload(
    make_scripted_ftp: MakeScripted, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    (local / "in").mkdir(parents=True)
    (local / "in" / "reçu.bin").write_bytes(DATA)
    server = legacy_server(make_scripted_ftp, "latin-1", files={"/données/café.csv": DATA})
    tasks = [
        download("/données/café.csv", "out/café.csv"),
        upload("in/reçu.bin", "/données/reçu déjà.bin", verify_size=True),
    ]
    results = await copy(local, {"partner": server}, tasks, charset="latin-1")
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 2, results
    assert (local / "out" / "café.csv").read_bytes() == DATA
    assert server.files["/données/reçu déjà.bin"] == DATA
    assert "OPTS UTF8 ON" not in server.commands
    assert "RETR /données/café.csv" in server.commands  # read by the server as Latin-1

    # The same tasks in UTF-8 (today's only choice) name files the server does not have.
    results = await copy(local, {"partner": server}, tasks[:1])
    assert outcome(results["dl /données/café.csv"]) == ("failed", "FILE_NOT_FOUND", 1)


async def test_latin1_login_and_move_to_archive_in_the_charset(
    make_scripted_ftp: MakeScripted, tmp_path: Path
) -> None:
    """The user name, the password and the source action's paths go out in the charset too."""
    server = legacy_server(
        make_scripted_ftp,
        "latin-1",
        files={"/outbox/café.csv": DATA},
        user="müller",
        password="pässwört",
    )
    task = download("/outbox/café.csv", "café.csv", on_success={"move_to": "/archivé/"})
    config = {"charset": "latin-1", "user": "müller", "password": "pässwört"}
    [result] = (await copy(tmp_path, {"partner": server}, [task], **config)).values()
    assert outcome(result) == COMPLETED_ONCE, result
    assert (tmp_path / "café.csv").read_bytes() == DATA
    assert server.files == {"/archivé/café.csv": DATA}
    assert "RNTO /archivé/café.csv" in server.commands

    unencodable = download("/outbox/a.csv", "a.csv", on_success={"move_to": "/архив/"})
    [result] = (await copy(tmp_path, {"partner": server}, [unencodable], **config)).values()
    assert outcome(result) == ("failed", "PATH_NOT_ALLOWED", 0), result


async def test_cp1252_names_in_replies_and_errors_are_decoded(
    make_scripted_ftp: MakeScripted, tmp_path: Path
) -> None:
    server = legacy_server(
        make_scripted_ftp,
        "cp1252",
        files={"/€/a.bin": DATA},
        rules=[Rule(r"RETR /€/missing\.bin", "550 /€/missing.bin: No such file")],
    )
    [result] = (
        await copy(
            tmp_path, {"partner": server}, [download("/€/missing.bin", "m.bin")], charset="cp1252"
        )
    ).values()
    assert outcome(result) == ("failed", "FILE_NOT_FOUND", 1)
    assert "550 /€/missing.bin: No such file" in result["error_message"]

    config = ftp_config(server, charset="cp1252")
    session = await SessionFactory(config).open()
    try:
        await session.mkd("/€/œuvre")
        assert "/€/œuvre" in server.dirs
        names = [entry.name for entry in await session.list_dir("/€")]
        assert names == ["a.bin"]
        assert await session.nlst("/€") == ["a.bin"]
    finally:
        await session.aclose()


async def test_a_path_the_charset_cannot_encode_fails_before_anything_is_sent(
    make_scripted_ftp: MakeScripted, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.bin").write_bytes(DATA)
    server = legacy_server(make_scripted_ftp, "latin-1", files={"/a.bin": DATA})
    results = await copy(
        tmp_path,
        {"partner": server},
        [download("/日本/a.bin", "a.bin"), upload("in/a.bin", "/out/€.bin")],
        charset="latin-1",
    )
    for result in results.values():
        assert outcome(result) == ("failed", "PATH_NOT_ALLOWED", 0), result
        assert "cannot encode" in result["error_message"] and "iso8859-1" in result["error_message"]
        assert "\n" not in result["error_message"]
    assert not commands(server, "RETR") and not commands(server, "STOR")


async def test_undecodable_reply_bytes_never_crash(
    make_scripted_ftp: MakeScripted, tmp_path: Path
) -> None:
    def raw_refusal(s: object, m: object) -> None:
        s.sock.sendall(b"550 /a.bin: \xff\xfe not here\r\n")  # type: ignore[attr-defined]

    server = make_scripted_ftp(files={"/a.bin": DATA}, rules=[Rule(r"RETR .*", raw_refusal)])
    [result] = (
        await copy(tmp_path, {"partner": server}, [download("/a.bin", "a.bin")], charset="utf-8")
    ).values()
    assert outcome(result) == ("failed", "FILE_NOT_FOUND", 1)
    assert "\ufffd" in result["error_message"]


@pytest.mark.parametrize(
    ("charset", "feat_utf8", "sent"),
    [
        ("auto", True, True),
        ("auto", False, False),
        ("utf-8", False, True),
        ("latin-1", True, False),
    ],
)
@pytest.mark.parametrize("pipelining", ["off", "on"])
async def test_opts_utf8_follows_the_charset(
    make_scripted_ftp: MakeScripted,
    tmp_path: Path,
    charset: str,
    feat_utf8: bool,
    sent: bool,
    pipelining: str,
) -> None:
    feat = LEGACY_FEAT.replace(" SIZE\n", " SIZE\n UTF8\n") if feat_utf8 else LEGACY_FEAT
    server = make_scripted_ftp(files={"/a.bin": DATA, "/b.bin": DATA}, feat=feat)
    results = await copy(
        tmp_path,
        {"partner": server},
        [download("/a.bin", "a.bin"), download("/b.bin", "b.bin")],  # a second, pipelined login
        charset=charset,
        pipelining=pipelining,
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 2
    assert ("OPTS UTF8 ON" in server.commands) is sent


def test_check_connection_lists_names_in_the_charset(
    make_scripted_ftp: MakeScripted, tmp_path: Path
) -> None:
    server = legacy_server(
        make_scripted_ftp, "cp1252", files={"/in/€ œuvre.txt": b"x", "/in/résumé.txt": b"y"}
    )
    env = write_config(tmp_path, server, tmp_path / "local")  # type: ignore[arg-type]
    ini = tmp_path / "connections.ini"
    ini.write_text(ini.read_text().replace("type = ftp\n", "type = ftp\ncharset = cp1252\n"))
    done = ftp_pooler("check-connection", "remote", "--path", "/in", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert "€ œuvre.txt" in out and "résumé.txt" in out, out

    done = ftp_pooler("check-connection", "remote", "--path", "/日本", env=env, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "PATH_NOT_ALLOWED" in lines[0] and "cp1252" in lines[0], lines


# --- a real server that stores names as the bytes it gets ----------------------------------------


@pytest.mark.parametrize("kind", [pytest.param("vsftpd", marks=pytest.mark.vsftpd), "pure-ftpd"])
async def test_real_server_stores_latin1_names_as_latin1_bytes(
    make_ftp_server: Callable[..., FTPServer], ftp_root: Path, tmp_path: Path, kind: str
) -> None:
    """vsftpd and pure-ftpd store a name as the bytes they get: the file lands with
    Latin-1 bytes in its name, and comes back by the same name."""
    local = tmp_path / "local"
    (local / "in").mkdir(parents=True)
    (local / "in" / "up.bin").write_bytes(DATA)
    server = make_ftp_server(kind)
    results = await copy(
        local,
        {"partner": server},
        [
            upload("in/up.bin", "/archivé/café é.bin"),
            download("/archivé/café é.bin", "back/café é.bin"),
        ],
        charset="latin-1",
    )
    assert [outcome(r) for r in results.values()] == [COMPLETED_ONCE] * 2, results
    on_disk = os.fsencode(ftp_root) + b"/archiv\xe9/caf\xe9 \xe9.bin"
    assert Path(os.fsdecode(on_disk)).read_bytes() == DATA  # Latin-1 bytes in the name
    assert (local / "back" / "café é.bin").read_bytes() == DATA


@pytest.mark.vsftpd
async def test_vsftpd_latin1_file_put_there_by_the_partner_is_downloaded(
    make_vsftpd: Callable[..., FTPServer], ftp_root: Path, tmp_path: Path
) -> None:
    name = os.fsencode(ftp_root) + b"/r\xe9sum\xe9 \x80.txt"  # cp1252: "résumé €.txt"
    Path(os.fsdecode(name)).write_bytes(DATA)
    server = make_vsftpd()
    config = ftp_config(server, charset="cp1252")
    session = await SessionFactory(config).open()
    try:
        listed = [entry.name for entry in await session.list_dir("/")]
    finally:
        await session.aclose()
    assert "résumé €.txt" in listed, listed
    results = await copy(
        tmp_path, {"partner": server}, [download("/résumé €.txt", "r.txt")], charset="cp1252"
    )
    assert outcome(results["dl /résumé €.txt"]) == COMPLETED_ONCE
    assert (tmp_path / "r.txt").read_bytes() == DATA


async def test_session_refuses_an_unencodable_argument_and_stays_usable(
    make_scripted_ftp: MakeScripted,
) -> None:
    server = legacy_server(make_scripted_ftp, "latin-1", files={"/a.bin": DATA})
    config = ftp_config(server, charset="latin-1")
    session = await SessionFactory(config).open()
    try:
        with pytest.raises(FTPError) as caught:
            await session.size("/日本.bin")
        assert caught.value.code is ErrorCode.PATH_NOT_ALLOWED
        assert not session.broken
        assert await session.size("/a.bin") == len(DATA)
    finally:
        await session.aclose()
    assert commands(server, "SIZE") == ["SIZE /a.bin"]
