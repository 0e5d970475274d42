"""A real ProFTPD per test, unpacked from the Debian .debs (no install).

Debian's FTP servers conflict as packages, so ``.ci/run`` does ``apt-get
download proftpd-core proftpd-mod-crypto`` + ``dpkg -x`` into
``$FTP_POOLER_PROFTPD_DIR`` (default ``<repo>/.ci/cache/proftpd``).
(``proftpd-basic`` is only a transitional package on bookworm; the daemon is
in ``proftpd-core`` and ``mod_tls.so`` in ``proftpd-mod-crypto``.)  Runtime
libraries it needs beyond a base system: ``libhiredis0.14 libmemcached11
libmemcachedutil2 libpcre2-posix3`` (and ``libsodium23`` for mod_tls), all
installed by ``.ci/run``.

Debian's build compiles in mod_core, mod_xfer, mod_auth_file, mod_auth_pam,
mod_ls, mod_facts (MLSD/MLST), mod_delay, mod_lang (UTF8) and mod_dso; mod_tls
is a shared module, loaded here with ``ModulePath``/``LoadModule`` from the
unpacked tree.  Login is a virtual user from an ``AuthUserFile`` (passwd
format, SHA-512 crypt hash) mapped to the vsftpd test system user's uid/gid,
chrooted to ``root`` with ``DefaultRoot ~``; PAM and the system passwd file
are not consulted (``AuthOrder mod_auth_file.c``).

Server defaults kept on purpose: explicit FTPS requires TLS session reuse on
data connections (as vsftpd's ``require_ssl_reuse``), and there is no per-host
session limit.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path
from typing import Self

from . import ExternalFTPLauncher, ServerUnavailable
from .certs import TLSCerts
from .pureftpd import sha512_crypt
from .vsftpd import prepare_dirs

__all__ = ["ProFTPD", "find_proftpd", "proftpd_dir"]

_REPO = Path(__file__).resolve().parents[2]
TEST_USER = "ftppooler"
TEST_PASSWORD = "pooler-test-secret"


def proftpd_dir() -> Path:
    return Path(os.environ.get("FTP_POOLER_PROFTPD_DIR", _REPO / ".ci" / "cache" / "proftpd"))


def find_proftpd() -> tuple[Path, Path]:
    """Return (proftpd, its module directory) from the unpacked .debs or raise ServerUnavailable."""
    base = proftpd_dir()
    daemon = base / "usr" / "sbin" / "proftpd"
    modules = base / "usr" / "lib" / "proftpd"
    if (
        not (daemon.is_file() and os.access(daemon, os.X_OK))
        or not (modules / "mod_tls.so").is_file()
    ):
        raise ServerUnavailable(
            f"{daemon} or {modules}/mod_tls.so missing: run .ci/run, or `apt-get download "
            f"proftpd-core proftpd-mod-crypto && dpkg -x` each into {base} (needs libhiredis0.14 "
            "libmemcached11 libmemcachedutil2 libpcre2-posix3 libsodium23)"
        )
    return daemon, modules


def _quote(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class ProFTPD(ExternalFTPLauncher):
    """One standalone ``proftpd -n`` on 127.0.0.1 with a generated config.

    ``max_clients`` is ``MaxInstances`` (server-wide; 0 = 200) and
    ``max_per_ip`` is ``MaxClientsPerHost`` (0 = none, the server default).
    """

    kind = "proftpd"
    log_file: Path

    def __init__(
        self,
        root: Path,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        user: str = TEST_USER,
        password: str = TEST_PASSWORD,
        tls: bool = False,
        certs: TLSCerts | None = None,
        tls_control_required: bool = False,
        tls_data_required: bool = False,
        max_clients: int = 0,
        max_per_ip: int = 0,
        passive_ports: tuple[int, int] | int = 128,
        extra_config: list[str] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            root,
            workdir,
            host=host,
            port=port,
            user=user,
            password=password,
            tls=tls,
            certs=certs,
            tls_control_required=tls_control_required,
            tls_data_required=tls_data_required,
            passive_ports=passive_ports,
            max_clients=max_clients,
            max_per_ip=max_per_ip,
            start_timeout=start_timeout,
        )
        self.extra_config = list(extra_config or [])
        self.config_file = self.workdir / "proftpd.conf"
        self.passwd_file = self.workdir / "proftpd.passwd"
        self.log_file = self.workdir / "proftpd.log"

    def _tls_required(self) -> str:
        if self.tls_control_required and self.tls_data_required:
            return "on"
        if self.tls_control_required:
            return "ctrl"
        if self.tls_data_required:
            return "data"
        return "off"

    def config(self, modules: Path, uid: int, gid: int) -> list[str]:
        w = self.workdir
        lines = [
            'ServerName "ftp-pooler test proftpd"',
            "ServerType standalone",
            'ServerIdent on "ftp-pooler test proftpd ready."',
            "DefaultServer on",
            "UseIPv6 off",
            f"DefaultAddress {self.host}",
            "SocketBindTight on",
            f"Port {self.port}",
            f"PassivePorts {self.passive_ports[0]} {self.passive_ports[1]}",
            f"MaxInstances {self.max_clients or 200}",
            f"User {pwd.getpwuid(uid).pw_name}",
            f"Group {grp.getgrgid(gid).gr_name}",
            f"PidFile {_quote(w / 'proftpd.pid')}",
            f"ScoreboardFile {_quote(w / 'proftpd.scoreboard')}",
            f"SystemLog {_quote(self.log_file)}",
            f"TransferLog {_quote(w / 'xferlog')}",
            "WtmpLog off",
            "UseLastlog off",
            "UseReverseDNS off",
            "AuthPAM off",
            "AuthOrder mod_auth_file.c",
            f"AuthUserFile {_quote(self.passwd_file)}",
            "RequireValidShell off",
            "DefaultRoot ~",
            "Umask 022",
            "AllowOverwrite on",
            "AllowStoreRestart on",
            "DelayEngine off",
            "<IfModule mod_cap.c>",
            "  CapabilitiesEngine off",
            "</IfModule>",
        ]
        if self.max_per_ip:
            lines.append(f"MaxClientsPerHost {self.max_per_ip}")
        if self.tls:
            assert self.certs is not None
            lines += [
                f"ModulePath {_quote(modules)}",
                "LoadModule mod_tls.c",
                "TLSEngine on",
                f"TLSLog {_quote(w / 'tls.log')}",
                "TLSProtocol TLSv1.2 TLSv1.3",
                f"TLSRSACertificateFile {_quote(self.certs.cert_file)}",
                f"TLSRSACertificateKeyFile {_quote(self.certs.key_file)}",
                "TLSVerifyClient off",
                f"TLSRequired {self._tls_required()}",
            ]
        return lines + self.extra_config

    def start(self) -> Self:
        daemon, modules = find_proftpd()
        if os.geteuid() != 0:
            raise ServerUnavailable("proftpd tests need root (chroot, setuid)")
        uid, gid = prepare_dirs(self.root, self.workdir)
        # name:hash:uid:gid:gecos:home:shell
        self.passwd_file.write_text(
            f"{self.user}:{sha512_crypt(self.password)}:{uid}:{gid}::{self.root}:/bin/false\n"
        )
        # proftpd refuses an AuthUserFile others can read or write.
        os.chmod(self.passwd_file, 0o600)
        self.config_file.write_text("\n".join(self.config(modules, uid, gid)) + "\n")
        os.chmod(self.config_file, 0o600)
        self._start_server(
            [str(daemon), "-n", "-q", "-c", str(self.config_file)], self.workdir / "proftpd.out"
        )
        return self

    def read_log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""
