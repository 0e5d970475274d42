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
  delayed (a network volume's client caches answer those).  Each request
  runs in a Trio task of its own, so delays overlap like concurrent RPCs.
  The kernel caches names, attributes and absent names for a minute, as an
  NFS client's attribute cache would (``actimeo``).
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
``/dev/fuse``, ``fusermount3`` (Debian ``fuse3``) and ``pyfuse3`` (PyPI,
Cython over libfuse3's low-level API, Trio-based; built from source against
Debian's ``libfuse3-dev``).  Per request it costs a fraction of a
high-level binding (mfusepy, ctypes with a thread per request, which this
file used before): the slow volume's benchmark rows measure ftp-pooler, not
the file system (docs/architecture.md, "Local I/O and durability").
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
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any, Self

MOUNT_TIMEOUT = 10.0
MAX_TASKS = 128  # concurrent FUSE requests (each may sleep its delay)
CACHE_SECONDS = 60.0  # the kernel's cache of names and attributes (NFS acregmax/acdirmax)
RENAME_NOREPLACE = 1  # linux/fs.h
OPERATIONS = (
    "lookup", "getattr", "setattr", "readdir", "read", "statfs", "mkdir", "rmdir", "create",
    "open", "rename", "link", "unlink", "write", "flush", "release", "fsync", "fsyncdir",
    "opendir", "releasedir",
)  # fmt: skip


class _Node:
    """An inode of the live overlay: a directory (``entries``) or a file (bytes in live/)."""

    __slots__ = ("entries", "ino", "nlink", "dirty", "shared", "mtime_ns")

    def __init__(self, ino: int, is_dir: bool) -> None:
        self.ino = ino
        self.entries: dict[bytes, _Node] | None = {} if is_dir else None
        self.nlink = 0
        self.dirty = False
        self.shared = False  # live/<ino> is durable/data/<ino> (hard link): synced, unchanged since
        self.mtime_ns = time.time_ns()


def _operations(state: Path, delay: float) -> Any:
    import pyfuse3
    import trio
    from pyfuse3 import FUSEError

    live = state / "live"
    durable = state / "durable"
    data = durable / "data"
    journal_path = durable / "journal"

    class SlowOps(pyfuse3.Operations):  # type: ignore[misc]
        enable_writeback_cache = True

        def __init__(self) -> None:
            super().__init__()
            self.handles: dict[int, _Node] = {}
            shutil.rmtree(live, ignore_errors=True)
            live.mkdir(parents=True)
            data.mkdir(parents=True, exist_ok=True)
            self.nodes: dict[int, _Node] = {}
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
            nodes = self.nodes

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
                    node.entries[os.fsencode(name)] = child

            root = _Node(pyfuse3.ROOT_INODE, True)
            nodes[root.ino] = root
            build(root)
            return root, top + 1

        def _restore(self, ino: int) -> None:
            source = data / str(ino)
            if source.exists():
                shutil.copy2(source, live / str(ino))
            else:
                (live / str(ino)).touch(0o644)

        def _unshare(self, node: _Node) -> None:
            """Before the live file changes: give the durable copy an inode of its own."""
            if not node.shared:
                return
            temp = data / f"{node.ino}.tmp"
            shutil.copy2(live / str(node.ino), temp)
            os.replace(temp, data / str(node.ino))
            node.shared = False

        # -- helpers -------------------------------------------------------------------

        def _node(self, ino: int) -> _Node:
            node = self.nodes.get(ino)
            if node is None:
                raise FUSEError(errno.ENOENT)
            return node

        def _directory(self, ino: int) -> dict[bytes, _Node]:
            entries = self._node(ino).entries
            if entries is None:
                raise FUSEError(errno.ENOTDIR)
            return entries

        def _new(self, parent: int, name: bytes, is_dir: bool) -> _Node:
            entries = self._directory(parent)
            if name in entries:
                raise FUSEError(errno.EEXIST)
            node = self.nodes[self.next_ino] = _Node(self.next_ino, is_dir)
            self.next_ino += 1
            node.nlink = 1
            entries[name] = node
            return node

        def _attributes(self, node: _Node) -> Any:
            entry = pyfuse3.EntryAttributes()
            entry.st_ino = node.ino
            entry.entry_timeout = entry.attr_timeout = CACHE_SECONDS
            if node.entries is not None:
                entry.st_mode = stat.S_IFDIR | 0o755
                entry.st_nlink = 2
                entry.st_mtime_ns = entry.st_ctime_ns = entry.st_atime_ns = node.mtime_ns
                return entry
            try:
                st = os.stat(live / str(node.ino))
            except FileNotFoundError:  # unlinked, still open
                entry.st_mode = stat.S_IFREG | 0o644
                return entry
            entry.st_mode = st.st_mode
            entry.st_nlink = node.nlink
            entry.st_size = st.st_size
            entry.st_blocks = st.st_blocks
            entry.st_blksize = st.st_blksize
            entry.st_mtime_ns = st.st_mtime_ns
            entry.st_ctime_ns = st.st_ctime_ns
            entry.st_atime_ns = st.st_atime_ns
            entry.st_uid = st.st_uid
            entry.st_gid = st.st_gid
            return entry

        def _drop(self, node: _Node) -> None:
            node.nlink -= 1
            if node.entries is None and node.nlink == 0:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(live / str(node.ino))

        # -- reading -------------------------------------------------------------------

        async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> Any:
            entries = self._directory(parent_inode)
            if name == b".":
                return self._attributes(self._node(parent_inode))
            node = entries.get(name)
            if node is None:
                if name == b"..":
                    return self._attributes(self.root)
                absent = pyfuse3.EntryAttributes()  # st_ino 0: cached as absent
                absent.entry_timeout = CACHE_SECONDS
                return absent
            return self._attributes(node)

        async def getattr(self, inode: int, ctx: Any) -> Any:
            return self._attributes(self._node(inode))

        async def opendir(self, inode: int, ctx: Any) -> int:
            self._directory(inode)
            return inode

        async def readdir(self, fh: int, start_id: int, token: Any) -> None:
            names = list(self._directory(fh).items())
            for index in range(start_id, len(names)):
                name, node = names[index]
                if not pyfuse3.readdir_reply(token, name, self._attributes(node), index + 1):
                    return

        async def releasedir(self, fh: int) -> None:
            return

        async def read(self, fh: int, off: int, size: int) -> bytes:
            return os.pread(fh, size, off)

        async def statfs(self, ctx: Any) -> Any:
            sv = os.statvfs(live)
            out = pyfuse3.StatvfsData()
            for key in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files"):
                setattr(out, key, getattr(sv, key))
            out.f_ffree = out.f_favail = sv.f_ffree
            out.f_namemax = sv.f_namemax
            return out

        async def access(self, inode: int, mode: int, ctx: Any) -> bool:
            return True

        async def forget(self, inode_list: Any) -> None:
            return  # inodes stay while named (or open): the tree is small

        # -- names (each pays the delay) -----------------------------------------------

        async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
            await trio.sleep(delay)
            return self._attributes(self._new(parent_inode, name, True))

        async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
            await trio.sleep(delay)
            entries = self._directory(parent_inode)
            node = entries.get(name)
            if node is None:
                raise FUSEError(errno.ENOENT)
            if node.entries is None:
                raise FUSEError(errno.ENOTDIR)
            if node.entries:
                raise FUSEError(errno.ENOTEMPTY)
            del entries[name]

        async def create(
            self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
        ) -> Any:
            await trio.sleep(delay)
            node = self._new(parent_inode, name, False)
            fd = os.open(live / str(node.ino), os.O_RDWR | os.O_CREAT | os.O_EXCL, mode & 0o777)
            self.handles[fd] = node
            return pyfuse3.FileInfo(fh=fd), self._attributes(node)

        async def open(self, inode: int, flags: int, ctx: Any) -> Any:
            await trio.sleep(delay)
            node = self._node(inode)
            if flags & os.O_TRUNC:
                self._unshare(node)
                node.dirty = True
            fd = os.open(live / str(node.ino), os.O_RDWR | (flags & os.O_TRUNC))
            self.handles[fd] = node
            return pyfuse3.FileInfo(fh=fd)

        async def rename(
            self,
            parent_inode_old: int,
            name_old: bytes,
            parent_inode_new: int,
            name_new: bytes,
            flags: int,
            ctx: Any,
        ) -> None:
            await trio.sleep(delay)
            if flags & ~RENAME_NOREPLACE:
                raise FUSEError(errno.EINVAL)  # RENAME_EXCHANGE, RENAME_WHITEOUT
            old_entries = self._directory(parent_inode_old)
            new_entries = self._directory(parent_inode_new)
            node = old_entries.get(name_old)
            if node is None:
                raise FUSEError(errno.ENOENT)
            replaced = new_entries.get(name_new)
            if replaced is not None and flags & RENAME_NOREPLACE:
                raise FUSEError(errno.EEXIST)
            if replaced is node:
                return
            if replaced is not None:
                if replaced.entries is not None and replaced.entries:
                    raise FUSEError(errno.ENOTEMPTY)
                self._drop(replaced)
            del old_entries[name_old]
            new_entries[name_new] = node

        async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
            await trio.sleep(delay)
            node = self._node(inode)
            entries = self._directory(new_parent_inode)
            if new_name in entries:
                raise FUSEError(errno.EEXIST)
            node.nlink += 1
            entries[new_name] = node
            return self._attributes(node)

        async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
            await trio.sleep(delay)
            entries = self._directory(parent_inode)
            node = entries.get(name)
            if node is None:
                raise FUSEError(errno.ENOENT)
            if node.entries is not None:
                raise FUSEError(errno.EISDIR)
            del entries[name]
            self._drop(node)

        async def setattr(
            self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any
        ) -> Any:
            # Not delayed, and the durable copy shares new times: with the writeback cache
            # the kernel sends the times it keeps at each flush, which NFS folds into its
            # WRITE. Times are not part of what a power cut is checked for here.
            node = self._node(inode)
            if node.entries is None:
                path = live / str(node.ino)
                if fields.update_size:
                    self._unshare(node)
                    os.truncate(path, attr.st_size)
                    node.dirty = True
                if fields.update_mode:
                    self._unshare(node)
                    os.chmod(path, attr.st_mode & 0o7777)
                if fields.update_mtime or fields.update_atime:
                    st = os.stat(path)
                    atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
                    mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
                    os.utime(path, ns=(atime, mtime))
            return self._attributes(node)

        # -- bytes ---------------------------------------------------------------------

        async def write(self, fh: int, off: int, buf: bytes) -> int:
            node = self.handles[fh]
            if node.shared:
                self._unshare(node)
            written = os.pwrite(fh, buf, off)
            node.dirty = True
            return written

        async def flush(self, fh: int) -> None:
            node = self.handles[fh]
            # NFS close-to-open: close waits for the written bytes to reach the server
            if node.dirty:
                await trio.sleep(delay)
                node.dirty = False

        async def release(self, fh: int) -> None:
            del self.handles[fh]
            os.close(fh)

        # -- durability ----------------------------------------------------------------

        async def fsync(self, fh: int, datasync: bool) -> None:
            await trio.sleep(delay)
            node = self.handles[fh]
            if not node.shared:  # the durable copy: the live file itself, until it changes
                temp = data / f"{node.ino}.tmp"
                os.link(live / str(node.ino), temp)
                os.replace(temp, data / str(node.ino))
                node.shared = True
            node.dirty = False

        async def fsyncdir(self, fh: int, datasync: bool) -> None:
            await trio.sleep(delay)
            node = self._node(fh)
            assert node.entries is not None
            entries = {
                os.fsdecode(name): [child.ino, "d" if child.entries is not None else "f"]
                for name, child in node.entries.items()
            }
            line = json.dumps({"dir": node.ino, "entries": entries}).encode() + b"\n"
            os.write(self.journal, line)  # one append: whole or (killed) not at all

    ops = SlowOps()
    for name in OPERATIONS:
        setattr(ops, name, _errors_as_errno(getattr(ops, name), FUSEError))
    return ops


def _errors_as_errno(call: Any, fuse_error: type[Exception]) -> Any:
    """``call``, its OSErrors answered with their errno and any other error with EIO
    (traceback on stderr): an exception escaping a handler would end pyfuse3's loop."""

    async def run(*args: Any) -> Any:
        try:
            return await call(*args)
        except fuse_error:
            raise
        except OSError as exc:
            raise fuse_error(exc.errno or errno.EIO) from exc
        except Exception as exc:
            traceback.print_exc()
            raise fuse_error(errno.EIO) from exc

    return run


def _count_calls(ops: Any, stats: Path) -> Any:
    """Count ``ops``' calls per operation; a task that writes them to ``stats`` on SIGUSR1.

    ``{"lookup": calls, ...}`` (JSON, replaced atomically). Returns the task
    (an async function taking a ``task_status``), to run beside the FUSE loop.
    """
    import trio

    counts = dict.fromkeys(OPERATIONS, 0)

    def counted(name: str, call: Any) -> Any:
        async def run(*args: Any) -> Any:
            counts[name] += 1
            return await call(*args)

        return run

    for name in OPERATIONS:
        setattr(ops, name, counted(name, getattr(ops, name)))

    async def report(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGUSR1) as signals:
            task_status.started()
            async for _ in signals:
                temp = stats.with_name(stats.name + ".tmp")
                temp.write_text(json.dumps({k: n for k, n in counts.items() if n}))
                os.replace(temp, stats)

    return report


def serve(mount: Path, state: Path, delay: float, stats: Path | None = None) -> None:
    """Mount and serve until unmounted (or killed: a power cut).

    With ``stats``, the calls per operation are written there on SIGUSR1 (:func:`_count_calls`).
    """
    import pyfuse3
    import trio

    ops = _operations(state, delay)
    report = _count_calls(ops, stats) if stats is not None else None

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            if report is not None:
                await nursery.start(report)
            pyfuse3.init(ops, str(mount), {"fsname=slowfs"})
            try:
                await pyfuse3.main(min_tasks=MAX_TASKS, max_tasks=MAX_TASKS)
            finally:
                pyfuse3.close(unmount=False)  # unmounted already (or killed)
            nursery.cancel_scope.cancel()

    trio.run(run)


class SlowFS:
    """Mounts :func:`serve` at ``mount`` in a subprocess; :meth:`crash` cuts its power.

    ``with SlowFS(mount, state, delay=0.002) as fs: ... fs.crash() ...``.
    ``state`` holds the durable store and the live overlay; ``mount`` must be an
    empty directory.  Raises ``servers.ServerUnavailable`` when FUSE cannot be
    used here (no root, no ``/dev/fuse``, no ``fusermount3`` or ``pyfuse3``).
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
            import pyfuse3  # noqa: F401
        except (ImportError, OSError) as exc:
            raise ServerUnavailable(f"slowfs needs pyfuse3 and libfuse3: {exc}") from exc

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

    def calls(self) -> dict[str, int]:
        """FUSE requests per operation since the mount: ``{"create": 2000, ...}``
        (made with ``count_calls=True``; else empty)."""
        if self._stats is None or self._process is None:
            return {}
        self._stats.unlink(missing_ok=True)
        os.kill(self._process.pid, signal.SIGUSR1)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not self._stats.exists():
            if time.monotonic() > deadline:
                return {}
            time.sleep(0.005)
        return {k: int(n) for k, n in json.loads(self._stats.read_text()).items()}

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
