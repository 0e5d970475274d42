"""A real pure-ftpd per test, unpacked from the Debian .deb (no install).

Debian's FTP servers conflict as packages, so ``.ci/run`` does
``apt-get download pure-ftpd`` + ``dpkg -x`` into ``$FTP_POOLER_PUREFTPD_DIR``
(default ``<repo>/.ci/cache/pure-ftpd``).  Runtime libraries it needs beyond a
base system: ``libsodium23`` (installed by ``.ci/run``).

Virtual users come from a puredb file.  ``pure-pw`` would hash the password
with argon2id (~2.4 s of CPU per *login* on the CI machines), so the passwd
line is written directly with an ``openssl passwd -6`` (SHA-512 crypt) hash and
only ``pure-pw mkdb`` is run.  Sessions run as the vsftpd test system user's
uid/gid (so both servers leave files with the same owner).
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Self

from . import ExternalFTPLauncher, ServerUnavailable
from .certs import TLSCerts
from .vsftpd import prepare_dirs

__all__ = ["PureFTPd", "find_pureftpd", "pureftpd_dir"]

_REPO = Path(__file__).resolve().parents[2]
TEST_USER = "ftppooler"
TEST_PASSWORD = "pooler-test-secret"


def pureftpd_dir() -> Path:
    return Path(os.environ.get("FTP_POOLER_PUREFTPD_DIR", _REPO / ".ci" / "cache" / "pure-ftpd"))


def find_pureftpd() -> tuple[Path, Path]:
    """Return (pure-ftpd, pure-pw) from the unpacked .deb or raise ServerUnavailable."""
    base = pureftpd_dir()
    daemon = base / "usr" / "sbin" / "pure-ftpd"
    pw = base / "usr" / "bin" / "pure-pw"
    for p in (daemon, pw):
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise ServerUnavailable(
                f"{p} missing: run .ci/run, or `apt-get download pure-ftpd && "
                f"dpkg -x pure-ftpd_*.deb {base}` (needs libsodium23)"
            )
    return daemon, pw


@functools.lru_cache(maxsize=8)
def sha512_crypt(password: str) -> str:
    res = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if res.returncode != 0 or not res.stdout.startswith("$6$"):
        raise RuntimeError(f"openssl passwd -6 failed: {res.stderr.strip()}")
    return res.stdout.strip()


class PureFTPd(ExternalFTPLauncher):
    kind = "pure-ftpd"

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
        max_clients: int = 100,
        max_per_ip: int | None = None,
        passive_ports: tuple[int, int] | int | None = None,
        extra_args: list[str] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        if tls_data_required and not tls_control_required:
            # pure-ftpd's -Y 3 implies ciphered control as well
            tls_control_required = True
        if passive_ports is None:
            # pure-ftpd caps sessions at half the passive range; TIME_WAIT needs room too
            passive_ports = max(64, 2 * max_clients + 16)
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
            max_per_ip=max_clients if max_per_ip is None else max_per_ip,
            start_timeout=start_timeout,
        )
        self.extra_args = list(extra_args or [])
        self.passwd_file = self.workdir / "pureftpd.passwd"
        self.pdb_file = self.workdir / "pureftpd.pdb"

    def _tls_level(self) -> str:
        if not self.tls:
            return "0"
        if self.tls_data_required:
            return "3"
        if self.tls_control_required:
            return "2"
        return "1"

    def argv(self, daemon: Path) -> list[str]:
        argv = [
            str(daemon),
            "-S", f"{self.host},{self.port}",
            "-l", f"puredb:{self.pdb_file}",
            "-E",  # no anonymous logins
            "-A",  # chroot everyone
            "-H",  # no reverse DNS
            "-4",
            "-f", "none",  # no syslog
            "-p", f"{self.passive_ports[0]}:{self.passive_ports[1]}",
            "-P", self.host,
            "-c", str(self.max_clients),
            "-C", str(self.max_per_ip),
            "-Y", self._tls_level(),
        ]  # fmt: skip
        if self.tls:
            assert self.certs is not None
            argv += ["-2", str(self.certs.combined_file)]
        return argv + self.extra_args

    def start(self) -> Self:
        daemon, pure_pw = find_pureftpd()
        if os.geteuid() != 0:
            raise ServerUnavailable("pure-ftpd tests need root (chroot, setuid)")
        uid, gid = prepare_dirs(self.root, self.workdir)
        # login:hash:uid:gid:gecos:home/./:(12 empty limit fields)
        line = f"{self.user}:{sha512_crypt(self.password)}:{uid}:{gid}::{self.root}/./" + ":" * 12
        self.passwd_file.write_text(line + "\n")
        os.chmod(self.passwd_file, 0o600)
        res = subprocess.run(
            [str(pure_pw), "mkdb", str(self.pdb_file), "-f", str(self.passwd_file)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"pure-pw mkdb failed: {res.stderr.strip()}")
        self._start_server(self.argv(daemon), self.workdir / "pure-ftpd.out")
        return self
