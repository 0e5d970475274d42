"""A real vsftpd (Debian's /usr/sbin/vsftpd) per test, as a subprocess.

Login is PAM (service ``vsftpd``, Debian's stock ``/etc/pam.d/vsftpd``) with
a local system user created on first use (we run as root):

* ``pam_listfile``: the user must not be listed in ``/etc/ftpusers``;
* ``common-auth`` / ``common-account`` (pam_unix): a valid, unlocked,
  unexpired password -- set with ``chpasswd -c SHA512`` because the Debian
  default (yescrypt) costs ~51 ms per login against ~8 ms for SHA-512;
* ``pam_shells``: the user's shell must be listed in ``/etc/shells``.
  (``common-session`` is not used: ``session_support`` defaults to NO.)
* vsftpd chdirs to the user's *home* before ``local_root``, so the home
  directory must exist (``/var/lib/ftppooler-test``, root-owned, 0555, empty);
  a ``local_root`` the user cannot enter is silently ignored by vsftpd, hence
  :func:`tests.servers.check_traversable`.

Every session runs in its own ``setsid()`` session, so stopping the listener's
process group is not enough; :class:`tests.servers.ServerProcess` also kills
the stragglers.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import threading
from pathlib import Path
from typing import Any, Self

from . import ExternalFTPLauncher, ServerUnavailable, check_traversable
from .certs import TLSCerts

__all__ = [
    "TEST_PASSWORD",
    "TEST_USER",
    "VSFTPD_BIN",
    "Vsftpd",
    "ensure_test_user",
    "find_vsftpd",
    "prepare_dirs",
]

VSFTPD_BIN = os.environ.get("FTP_POOLER_VSFTPD", "/usr/sbin/vsftpd")
TEST_USER = "ftppooler-test"
TEST_PASSWORD = "pooler-test-secret"
TEST_HOME = Path("/var/lib/ftppooler-test")

_user_lock = threading.Lock()
_user_ready: tuple[int, int] | None = None


def find_vsftpd() -> str:
    if not (os.path.isfile(VSFTPD_BIN) and os.access(VSFTPD_BIN, os.X_OK)):
        raise ServerUnavailable(
            f"vsftpd not found at {VSFTPD_BIN} (apt-get install vsftpd, or see .ci/run)"
        )
    return VSFTPD_BIN


def _pick_shell() -> str:
    try:
        shells = [
            ln.strip()
            for ln in Path("/etc/shells").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")
        ]
    except OSError:
        shells = []
    for candidate in ("/bin/sh", "/usr/bin/sh", "/bin/bash"):
        if candidate in shells and os.path.exists(candidate):
            return candidate
    if shells:
        return shells[0]
    raise ServerUnavailable("/etc/shells lists no shell; pam_shells would refuse every login")


def _run(argv: list[str], stdin: str | None = None) -> None:
    res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({res.returncode}): {res.stderr.strip()}")


def ensure_test_user(user: str = TEST_USER, password: str = TEST_PASSWORD) -> tuple[int, int]:
    """Create (idempotently) the local system user vsftpd logs in as; return (uid, gid).

    Needs root.  The password is (re)set once per test process.
    """
    global _user_ready
    with _user_lock:
        if _user_ready is not None:
            return _user_ready
        if os.geteuid() != 0:
            raise ServerUnavailable("vsftpd tests need root (to create the PAM test user)")
        TEST_HOME.mkdir(mode=0o555, parents=True, exist_ok=True)
        os.chown(TEST_HOME, 0, 0)
        os.chmod(TEST_HOME, 0o555)
        shell = _pick_shell()
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            _run([
                "useradd", "--system", "--user-group", "--no-create-home",
                "--home-dir", str(TEST_HOME), "--shell", shell,
                "--comment", "ftp-pooler test user", user,
            ])  # fmt: skip
            pw = pwd.getpwnam(user)
        if pw.pw_dir != str(TEST_HOME) or pw.pw_shell != shell:
            _run(["usermod", "--home", str(TEST_HOME), "--shell", shell, user])
        try:
            ftpusers = Path("/etc/ftpusers").read_text().split()
        except OSError:
            ftpusers = []
        if user in ftpusers:
            raise ServerUnavailable(f"{user} is listed in /etc/ftpusers; PAM would deny it")
        # SHA-512 crypt: ~8 ms per PAM login instead of ~51 ms for yescrypt.
        _run(["chpasswd", "-c", "SHA512"], stdin=f"{user}:{password}\n")
        pw = pwd.getpwnam(user)
        _user_ready = (pw.pw_uid, pw.pw_gid)
        return _user_ready


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def prepare_dirs(root: Path, workdir: Path) -> tuple[int, int]:
    """Create ``workdir`` and ``root`` and give ``root`` to the test user; return its (uid, gid).

    vsftpd and pure-ftpd sessions both run as that user.
    """
    uid, gid = ensure_test_user()
    workdir.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    check_traversable(root)
    chown_tree(root, uid, gid)
    return uid, gid


def _yn(v: bool) -> str:
    return "YES" if v else "NO"


class Vsftpd(ExternalFTPLauncher):
    """One vsftpd listener on 127.0.0.1 with a generated config."""

    kind = "vsftpd"
    log_file: Path

    def __init__(
        self,
        root: Path,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        tls: bool = False,
        certs: TLSCerts | None = None,
        tls_control_required: bool = False,
        tls_data_required: bool = False,
        require_ssl_reuse: bool = True,
        passive_ports: tuple[int, int] | int = 256,
        max_per_ip: int = 0,
        max_clients: int = 0,
        log_protocol: bool = False,
        extra_config: dict[str, Any] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            root,
            workdir,
            host=host,
            port=port,
            user=TEST_USER,
            password=TEST_PASSWORD,
            tls=tls,
            certs=certs,
            tls_control_required=tls_control_required,
            tls_data_required=tls_data_required,
            passive_ports=passive_ports,
            max_clients=max_clients,
            max_per_ip=max_per_ip,
            start_timeout=start_timeout,
        )
        self.require_ssl_reuse = require_ssl_reuse
        self.log_protocol = log_protocol
        self.extra_config = dict(extra_config or {})
        self.config_file = self.workdir / "vsftpd.conf"
        self.log_file = self.workdir / "vsftpd.log"
        self.empty_dir = self.workdir / "empty"

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "listen": True,
            "listen_ipv6": False,
            "listen_address": self.host,
            "listen_port": self.port,
            "background": False,
            "anonymous_enable": False,
            "local_enable": True,
            "write_enable": True,
            "local_umask": "022",
            "chroot_local_user": True,
            "allow_writeable_chroot": True,
            "local_root": str(self.root),
            "pam_service_name": "vsftpd",
            "session_support": False,
            "seccomp_sandbox": False,
            "secure_chroot_dir": str(self.empty_dir),
            "pasv_enable": True,
            "pasv_address": self.host,
            "pasv_min_port": self.passive_ports[0],
            "pasv_max_port": self.passive_ports[1],
            "connect_from_port_20": False,
            # The compiled-in max_per_ip is 50 whatever the man page says.
            "max_per_ip": self.max_per_ip,
            "max_clients": self.max_clients,
            "delay_failed_login": 0,
            # vsftpd-style log into the work dir; no wu-ftpd xferlog, no syslog.
            "xferlog_enable": True,
            "xferlog_std_format": False,
            "dual_log_enable": False,
            "syslog_enable": False,
            "vsftpd_log_file": str(self.log_file),
            "log_ftp_protocol": self.log_protocol,
            "ssl_enable": self.tls,
        }
        if self.tls:
            assert self.certs is not None
            cfg.update(
                {
                    # Without ssl_tlsv1=YES vsftpd does not advertise AUTH TLS.
                    "ssl_tlsv1": True,
                    "ssl_sslv2": False,
                    "ssl_sslv3": False,
                    "rsa_cert_file": str(self.certs.cert_file),
                    "rsa_private_key_file": str(self.certs.key_file),
                    "force_local_logins_ssl": self.tls_control_required,
                    "force_local_data_ssl": self.tls_data_required,
                    "require_ssl_reuse": self.require_ssl_reuse,
                    "ssl_request_cert": False,
                    "allow_anon_ssl": False,
                }
            )
        cfg.update(self.extra_config)
        return cfg

    def _write_config(self) -> None:
        lines = []
        for key, value in self.config().items():
            if isinstance(value, bool):
                value = _yn(value)
            lines.append(f"{key}={value}")
        self.config_file.write_text("\n".join(lines) + "\n")
        os.chmod(self.config_file, 0o600)  # vsftpd refuses configs others can write

    def start(self) -> Self:
        binary = find_vsftpd()
        prepare_dirs(self.root, self.workdir)
        self.empty_dir.mkdir(mode=0o555, exist_ok=True)
        self._write_config()
        self._start_server([binary, str(self.config_file)], self.workdir / "vsftpd.out")
        return self

    def read_log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""
