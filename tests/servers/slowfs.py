"""A slow, crashable volume: a FUSE file system with network-volume latency and power cuts.

It stands in for the ReadWriteMany volumes the worker runs on (NFS, EFS,
CephFS, Azure Files) and for the power cut that tests durability:

* **latency** -- every metadata operation (create, open, mkdir, rmdir,
  rename, link, unlink, fsync of a file or a directory) sleeps ``delay``
  seconds before it is carried out, as a round trip to a file server would;
  ``close`` (FUSE ``flush``) of a file written since its last flush or fsync
  pays one too, as NFS flushes on close.  Writes go to the kernel's page
  cache (FUSE writeback cache) and reach this process in large requests at
  close or fsync; lookups, ``stat``, reads, writes and time stamps are not
  delayed (a network volume's client caches answer those).  Each operation
  runs on its own libfuse thread, so delays overlap like concurrent RPCs.
* **power cuts** -- what survives follows POSIX to the letter, as the
  strictest file system would: a file's bytes only once the file was
  ``fsync``-ed, a name (create, rename, link, unlink, mkdir) only once its
  directory was ``fsync``-ed.  The live state is an overlay (file bytes in
  ``STATE/live/<inode>``, names in memory); ``fsync`` of a file makes its
  bytes durable (``STATE/durable/data/<inode>``, a hard link to the live file
  until that changes again), ``fsync`` of a directory appends a snapshot of
  its entries to ``STATE/durable/journal``.  A crash is a
  SIGKILL of this process: the overlay is gone, and the next mount starts
  from the durable state alone.  A name that survived but whose bytes were
  never synced comes back as an empty file, as on ext4 after a crash.

Run it as a subprocess (``python slowfs.py MOUNT STATE --delay 0.002``) or
through :class:`SlowFS`, which mounts, crashes and remounts it.  Needs root,
``/dev/fuse``, ``fusermount3`` (Debian ``fuse3``) and ``mfusepy`` (PyPI,
ctypes over libfuse3).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

MOUNT_TIMEOUT = 10.0
FUSE_CAP_WRITEBACK_CACHE = 1 << 16  # libfuse3 fuse_common.h
MAX_WRITE = 1024 * 1024  # bytes per write request (the kernel's limit: 256 pages)
FUSE_THREADS = 128  # concurrent FUSE requests (each may sleep its delay)


class _Node:
    """An inode of the live overlay: a directory (``entries``) or a file (bytes in live/)."""

    __slots__ = ("entries", "ino", "nlink", "dirty", "shared", "mtime_ns")

    def __init__(self, ino: int, is_dir: bool) -> None:
        self.ino = ino
        self.entries: dict[str, _Node] | None = {} if is_dir else None
        self.nlink = 0
        self.dirty = False
        self.shared = False  # live/<ino> is durable/data/<ino> (hard link): synced, unchanged since
        self.mtime_ns = time.time_ns()


OPERATIONS = (
    "getattr",
    "readdir",
    "read",
    "statfs",
    "access",
    "mkdir",
    "rmdir",
    "create",
    "open",
    "rename",
    "link",
    "unlink",
    "utimens",
    "chmod",
    "chown",
    "write",
    "truncate",
    "flush",
    "release",
    "fsync",
    "fsyncdir",
)


def _count_calls(ops: Any, stats: Path) -> None:
    """Count ``ops``' calls and their CPU per operation; written to ``stats`` on SIGUSR1.

    ``{"getattr": [calls, cpu_seconds], ...}`` (JSON, replaced atomically); the
    CPU is the handlers' own (thread time), not libfuse's or ctypes' share around
    them. SIGUSR1 is blocked here, before libfuse starts its threads (they inherit
    the mask), and taken by a thread of its own with ``sigwait``: the main thread
    sits in libfuse's loop, where a Python signal handler would never run.
    """
    counts: dict[str, list[float]] = {name: [0, 0.0] for name in OPERATIONS}
    lock = threading.Lock()

    def counted(name: str, call: Any) -> Any:
        def run(*args: Any) -> Any:
            started = time.thread_time()
            try:
                return call(*args)
            finally:
                spent = time.thread_time() - started
                with lock:
                    counts[name][0] += 1
                    counts[name][1] += spent

        return run

    for name in OPERATIONS:
        setattr(ops, name, counted(name, getattr(ops, name)))

    def report() -> None:
        while True:
            signal.sigwait([signal.SIGUSR1])
            with lock:
                text = json.dumps({k: v for k, v in counts.items() if v[0]})
            temp = stats.with_name(stats.name + ".tmp")
            temp.write_text(text)
            os.replace(temp, stats)

    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    threading.Thread(target=report, daemon=True, name="stats").start()


def _operations(state: Path, delay: float) -> Any:
    import mfusepy
    from mfusepy import FuseOSError

    live = state / "live"
    durable = state / "durable"
    data = durable / "data"
    journal_path = durable / "journal"

    class SlowOps(mfusepy.Operations):  # type: ignore[misc]
        use_ns = True

        def __init__(self) -> None:
            self._mutex = threading.Lock()
            self.handles: dict[int, _Node] = {}
            shutil.rmtree(live, ignore_errors=True)
            live.mkdir(parents=True)
            data.mkdir(parents=True, exist_ok=True)
            self.root, self.next_ino = self._recover()
            self.journal = os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

        # -- durable state -------------------------------------------------------------

        def _recover(self) -> tuple[_Node, int]:
            """The live tree from the durable state: synced names, synced bytes (else empty)."""
            snapshots: dict[int, dict[str, list[Any]]] = {}
            with contextlib.suppress(FileNotFoundError), open(journal_path, "rb") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        break  # a record cut short by the crash was never acknowledged
                    snapshots[record["dir"]] = record["entries"]
            top = max([1, *snapshots, *(int(n) for n in os.listdir(data) if n.isdigit())])
            for entries in snapshots.values():
                top = max([top, *(ino for ino, _kind in entries.values())])
            nodes: dict[int, _Node] = {}

            def build(node: _Node) -> None:
                assert node.entries is not None
                for name, (ino, kind) in snapshots.get(node.ino, {}).items():
                    child = nodes.get(ino)
                    if child is None:
                        child = nodes[ino] = _Node(ino, kind == "d")
                        if kind == "d":
                            build(child)
                        else:
                            self._restore(ino)
                    elif child.entries is not None:
                        continue  # a directory seen under two names: keep the first
                    child.nlink += 1
                    node.entries[name] = child

            root = _Node(1, True)
            nodes[1] = root
            build(root)
            return root, top + 1

        def _restore(self, ino: int) -> None:
            source = data / str(ino)
            if source.exists():
                shutil.copy2(source, live / str(ino))
            else:
                (live / str(ino)).touch(0o644)

        def init_with_config(self, conn: Any, config: Any) -> None:
            # Writes go to the kernel's page cache and reach us in large requests when the
            # file is flushed (close) or fsynced, as on NFS; the reply to close waits for them.
            conn.want |= FUSE_CAP_WRITEBACK_CACHE & conn.capable
            conn.max_write = MAX_WRITE

        def _unshare(self, node: _Node) -> None:
            """Before the live file changes: give the durable copy an inode of its own."""
            with self._mutex:
                if not node.shared:
                    return
                temp = data / f"{node.ino}.tmp{threading.get_ident()}"
                shutil.copy2(live / str(node.ino), temp)
                os.replace(temp, data / str(node.ino))
                node.shared = False

        # -- helpers -------------------------------------------------------------------

        def _lookup(self, path: str) -> _Node:
            node = self.root
            for part in path.strip("/").split("/"):
                if not part:
                    continue
                if node.entries is None or part not in node.entries:
                    raise FuseOSError(errno.ENOENT)
                node = node.entries[part]
            return node

        def _parent(self, path: str) -> tuple[_Node, str]:
            head, _, name = path.rstrip("/").rpartition("/")
            parent = self._lookup(head)
            if parent.entries is None:
                raise FuseOSError(errno.ENOTDIR)
            return parent, name

        def _drop(self, node: _Node) -> None:
            node.nlink -= 1
            if node.entries is None and node.nlink == 0:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(live / str(node.ino))

        # -- reading -------------------------------------------------------------------

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            with self._mutex:
                node = self.handles[fh] if fh is not None and fh in self.handles else None
                node = node or self._lookup(path)
            if node.entries is not None:
                return {
                    "st_mode": stat.S_IFDIR | 0o755,
                    "st_nlink": 2,
                    "st_ino": node.ino,
                    "st_mtime": node.mtime_ns,
                    "st_ctime": node.mtime_ns,
                    "st_atime": node.mtime_ns,
                }
            st = os.stat(live / str(node.ino))
            return {
                "st_mode": st.st_mode,
                "st_nlink": node.nlink,
                "st_ino": node.ino,
                "st_size": st.st_size,
                "st_mtime": st.st_mtime_ns,
                "st_ctime": st.st_ctime_ns,
                "st_atime": st.st_atime_ns,
                "st_uid": st.st_uid,
                "st_gid": st.st_gid,
            }

        def readdir(self, path: str, fh: int) -> list[str]:
            with self._mutex:
                node = self._lookup(path)
                if node.entries is None:
                    raise FuseOSError(errno.ENOTDIR)
                return [".", "..", *node.entries]

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def statfs(self, path: str) -> dict[str, Any]:
            sv = os.statvfs(live)
            return {
                key: getattr(sv, key)
                for key in (
                    "f_bsize",
                    "f_frsize",
                    "f_blocks",
                    "f_bfree",
                    "f_bavail",
                    "f_files",
                    "f_ffree",
                    "f_namemax",
                )
            }

        def access(self, path: str, amode: int) -> int:
            return 0

        # -- names (each pays the delay) -----------------------------------------------

        def mkdir(self, path: str, mode: int) -> int:
            time.sleep(delay)
            with self._mutex:
                parent, name = self._parent(path)
                assert parent.entries is not None
                if name in parent.entries:
                    raise FuseOSError(errno.EEXIST)
                node = _Node(self.next_ino, True)
                self.next_ino += 1
                node.nlink = 1
                parent.entries[name] = node
            return 0

        def rmdir(self, path: str) -> int:
            time.sleep(delay)
            with self._mutex:
                parent, name = self._parent(path)
                assert parent.entries is not None
                node = parent.entries.get(name)
                if node is None:
                    raise FuseOSError(errno.ENOENT)
                if node.entries is None:
                    raise FuseOSError(errno.ENOTDIR)
                if node.entries:
                    raise FuseOSError(errno.ENOTEMPTY)
                del parent.entries[name]
            return 0

        def create(self, path: str, mode: int, flags: int) -> int:
            time.sleep(delay)
            with self._mutex:
                parent, name = self._parent(path)
                assert parent.entries is not None
                if name in parent.entries:
                    raise FuseOSError(errno.EEXIST)
                node = _Node(self.next_ino, False)
                self.next_ino += 1
                fd = os.open(live / str(node.ino), os.O_RDWR | os.O_CREAT | os.O_EXCL, mode & 0o777)
                node.nlink = 1
                parent.entries[name] = node
                self.handles[fd] = node
            return fd

        def open(self, path: str, flags: int) -> int:
            time.sleep(delay)
            with self._mutex:
                node = self._lookup(path)
                fd = os.open(live / str(node.ino), os.O_RDWR | (flags & os.O_TRUNC))
                self.handles[fd] = node
            return fd

        def rename(self, old: str, new: str) -> int:
            time.sleep(delay)
            with self._mutex:
                old_parent, old_name = self._parent(old)
                new_parent, new_name = self._parent(new)
                assert old_parent.entries is not None and new_parent.entries is not None
                node = old_parent.entries.get(old_name)
                if node is None:
                    raise FuseOSError(errno.ENOENT)
                replaced = new_parent.entries.get(new_name)
                if replaced is node:
                    return 0
                if replaced is not None:
                    if replaced.entries is not None and replaced.entries:
                        raise FuseOSError(errno.ENOTEMPTY)
                    self._drop(replaced)
                del old_parent.entries[old_name]
                new_parent.entries[new_name] = node
            return 0

        def link(self, target: str, source: str) -> int:
            time.sleep(delay)
            with self._mutex:
                node = self._lookup(source)
                parent, name = self._parent(target)
                assert parent.entries is not None
                if name in parent.entries:
                    raise FuseOSError(errno.EEXIST)
                node.nlink += 1
                parent.entries[name] = node
            return 0

        def unlink(self, path: str) -> int:
            time.sleep(delay)
            with self._mutex:
                parent, name = self._parent(path)
                assert parent.entries is not None
                node = parent.entries.get(name)
                if node is None:
                    raise FuseOSError(errno.ENOENT)
                if node.entries is not None:
                    raise FuseOSError(errno.EISDIR)
                del parent.entries[name]
                self._drop(node)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            # Not delayed, and the durable copy shares the new times: with the writeback
            # cache the kernel sends one per flush (it keeps mtime), which NFS folds into
            # its WRITE. Times are not part of what a power cut is checked for here.
            with self._mutex:
                node = self._lookup(path)
            if node.entries is None:
                os.utime(live / str(node.ino), ns=times)
            return 0

        def chmod(self, path: str, mode: int) -> int:
            with self._mutex:
                node = self._lookup(path)
            if node.entries is None:
                self._unshare(node)
                os.chmod(live / str(node.ino), mode & 0o7777)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            return 0

        # -- bytes ---------------------------------------------------------------------

        def write(self, path: str, buf: bytes, offset: int, fh: int) -> int:
            if self.handles[fh].shared:
                self._unshare(self.handles[fh])
            written = os.pwrite(fh, buf, offset)
            self.handles[fh].dirty = True
            return written

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            with self._mutex:
                node = self.handles[fh] if fh is not None else self._lookup(path)
            self._unshare(node)
            os.truncate(live / str(node.ino), length)
            node.dirty = True
            return 0

        def flush(self, path: str, fh: int) -> int:
            node = self.handles[fh]
            # NFS close-to-open: close waits for the written bytes to reach the server
            if node.dirty:
                time.sleep(delay)
                node.dirty = False
            return 0

        def release(self, path: str, fh: int) -> int:
            with self._mutex:
                del self.handles[fh]
            os.close(fh)
            return 0

        # -- durability ----------------------------------------------------------------

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            time.sleep(delay)
            node = self.handles[fh]
            with self._mutex:
                if not node.shared:  # the durable copy: the live file itself, until it changes
                    temp = data / f"{node.ino}.tmp{threading.get_ident()}"
                    os.link(live / str(node.ino), temp)
                    os.replace(temp, data / str(node.ino))
                    node.shared = True
            node.dirty = False
            return 0

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            time.sleep(delay)
            with self._mutex:
                node = self._lookup(path)
                assert node.entries is not None
                entries = {
                    name: [child.ino, "d" if child.entries is not None else "f"]
                    for name, child in node.entries.items()
                }
                line = json.dumps({"dir": node.ino, "entries": entries}).encode() + b"\n"
                os.write(self.journal, line)  # one append: whole or (killed) not at all
            return 0

    return SlowOps()


def serve(mount: Path, state: Path, delay: float, stats: Path | None = None) -> None:
    """Mount and serve until unmounted (or killed: a power cut).

    With ``stats``, the calls per operation are written there at unmount (:func:`_count_calls`).
    """
    import mfusepy

    ops = _operations(state, delay)
    if stats is not None:
        _count_calls(ops, stats)
    mfusepy.FUSE(
        ops,
        str(mount),
        foreground=True,
        fsname="slowfs",
        hard_remove=True,
        max_threads=FUSE_THREADS,
        max_idle_threads=FUSE_THREADS,
    )


class SlowFS:
    """Mounts :func:`serve` at ``mount`` in a subprocess; :meth:`crash` cuts its power.

    ``with SlowFS(mount, state, delay=0.002) as fs: ... fs.crash() ...``.
    ``state`` holds the durable store and the live overlay; ``mount`` must be an
    empty directory.  Raises ``servers.ServerUnavailable`` when FUSE cannot be
    used here (no root, no ``/dev/fuse``, no ``fusermount3`` or ``mfusepy``).
    """

    def __init__(
        self, mount: Path, state: Path, *, delay: float = 0.002, count_calls: bool = False
    ) -> None:
        self.mount = mount
        self.state = state
        self.delay = delay
        self._stats = mount.with_name(f"{mount.name}.calls.json") if count_calls else None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @staticmethod
    def check_available() -> None:
        from . import ServerUnavailable

        if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
            raise ServerUnavailable("slowfs needs root and /dev/fuse")
        if shutil.which("fusermount3") is None:
            raise ServerUnavailable("slowfs needs fusermount3 (Debian package fuse3)")
        try:
            import mfusepy  # noqa: F401
        except (ImportError, OSError) as exc:
            raise ServerUnavailable(f"slowfs needs mfusepy and libfuse3: {exc}") from exc

    def start(self) -> None:
        """Mount the durable state (the live overlay starts from it) and wait until it serves."""
        self.check_available()
        self.mount.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [sys.executable, __file__, str(self.mount), str(self.state)]
            + ["--delay", str(self.delay)]
            + ([] if self._stats is None else ["--stats", str(self._stats)]),
            start_new_session=True,
        )
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.mount):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._kill()
                from . import ServerUnavailable

                raise ServerUnavailable(f"slowfs did not mount at {self.mount}")
            time.sleep(0.01)

    def cpu_seconds(self) -> float:
        """CPU (user + system) the running file system has used so far; 0 when stopped."""
        if self._process is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def calls(self) -> dict[str, tuple[int, float]]:
        """Calls per operation since the mount and their handlers' CPU seconds:
        ``{"create": (2000, 0.31), ...}`` (made with ``count_calls=True``; else empty)."""
        if self._stats is None or self._process is None:
            return {}
        self._stats.unlink(missing_ok=True)
        os.kill(self._process.pid, signal.SIGUSR1)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not self._stats.exists():
            if time.monotonic() > deadline:
                return {}
            time.sleep(0.005)
        return {k: (int(n), cpu) for k, (n, cpu) in json.loads(self._stats.read_text()).items()}

    def crash(self) -> None:
        """A power cut: SIGKILL the file system; only what was fsynced survives the remount."""
        self._kill()
        self.start()

    def stop(self) -> None:
        """Unmount (unsynced state is dropped, as in a crash) and end the process."""
        if self._process is None:
            return
        subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], capture_output=True)
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
        self._process = None

    def _kill(self) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._process = None
        subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], capture_output=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("mount", type=Path)
    parser.add_argument("state", type=Path)
    parser.add_argument("--delay", type=float, default=0.002, help="seconds per metadata op")
    parser.add_argument("--stats", type=Path, help="write calls and CPU per operation here")
    args = parser.parse_args(argv)
    serve(args.mount, args.state, args.delay, args.stats)


if __name__ == "__main__":
    main()
