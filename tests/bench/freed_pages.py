"""How much slower tmpfs writes get when the memory they land on was handed back to the host.

On a VM with free page reporting (``/sys/module/page_reporting``; Firecracker
here), memory that stays free for a few seconds is reported to the host, which
takes it back; the next touch of each page then costs a host fault, charged to
whatever guest instruction touched it -- for a download, the kernel's copy of
the received bytes into tmpfs.  ``tests/bench/run.py`` deletes the previous
run's tree right before each clock for that reason.  This script shows the
effect on its own: it writes ``--gib`` GiB of files to ``/dev/shm``, deletes
them, waits, and writes them again, for each wait in ``--waits``::

    .venv/bin/python tests/bench/freed_pages.py [--gib 4] [--waits 0,5,0,10,0]

The host only takes memory back once enough of it is waiting (here more than
1 GiB, ``max_waiting_mib``), so the default writes 4 GiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPORTED = Path("/sys/module/page_reporting/parameters/reported_kib")
FILE_SIZE = 2 * 1024 * 1024
CHUNK = 128 * 1024


def reported_kib() -> int | None:
    """KiB of free memory this VM has handed back to its host so far; None without
    free page reporting (also used by ``run.py``)."""
    try:
        return int(REPORTED.read_text())
    except (OSError, ValueError):
        return None


def write_files(root: Path, count: int, chunk: bytes) -> float:
    started = time.perf_counter()
    for i in range(count):
        fd = os.open(root / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for _ in range(FILE_SIZE // CHUNK):
                os.write(fd, chunk)
        finally:
            os.close(fd)
    return time.perf_counter() - started


def delete_files(root: Path, count: int) -> None:
    for i in range(count):
        os.unlink(root / f"f{i}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gib", type=float, default=4.0, help="GiB written per pass (default 4)")
    p.add_argument(
        "--waits",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[0.0, 5.0, 0.0, 10.0, 0.0],
        help="seconds to wait between deleting and writing again, one pass each",
    )
    args = p.parse_args(argv)
    count = max(1, int(args.gib * 1024**3 // FILE_SIZE))
    chunk = os.urandom(CHUNK)
    if reported_kib() is None:
        print("no free page reporting on this machine: expect no difference")
    root = Path(tempfile.mkdtemp(prefix="freed-pages-", dir="/dev/shm"))
    try:
        print(f"first pass: {write_files(root, count, chunk):.2f} s ({count} x 2 MiB)")
        for wait in args.waits:
            delete_files(root, count)
            before = reported_kib()
            time.sleep(wait)
            waited = reported_kib()
            seconds = write_files(root, count, chunk)
            after = reported_kib()
            line = f"freed, waited {wait:4.1f} s, written again: {seconds:5.2f} s"
            if before is not None and waited is not None and after is not None:
                line += (
                    f"   handed to the host while waiting {(waited - before) / 1024:6.0f} MiB,"
                    f" while writing {(after - waited) / 1024:6.0f} MiB"
                )
            print(line, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
