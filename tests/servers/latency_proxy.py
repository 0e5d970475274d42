"""A TCP proxy that adds a round-trip time, for a "slow server" on loopback.

No ``tc netem`` on these machines (see /work/shared/TESTING.md, "Real
latency"), so latency is added in user space: the proxy listens on another
loopback address (127.0.0.2 by default) on the FTP control port and on every
port of the server's passive range, and forwards each connection to the
upstream address on the same port. Every chunk is written RTT/2 after it was
read, in each direction (a FIFO of (release time, bytes) per connection and
direction), and the upstream connect is made one RTT after accepting, so a
new connection costs about what a TCP handshake would. EPSV clients connect
data channels to the control host by themselves; for PASV the server must
name the proxy's address (pure-ftpd ``-P 127.0.0.2``).

It runs as a subprocess (asyncio, one thread), so it shares no interpreter
lock with the test or the benchmark that uses it::

    with LatencyProxy(ports=[server.port, *range(lo, hi + 1)], rtt=0.2) as proxy:
        ...connect to proxy.host, server.port...

or alone: ``python tests/servers/latency_proxy.py --rtt-ms 200 --ports 2121,30000-30063``.

With ``transcript=PATH`` (and ``control_ports``), every chunk read on a control
connection is written to PATH as one JSON line as it arrives (``conn``
number, ``dir`` ``">"`` client to server or ``"<"`` back, ``t`` seconds,
``text``). :func:`read_transcript` reads it back and :func:`waits` counts the
round trips a client waited for: a client chunk that follows server bytes
(since its previous chunk) is one wait; commands written together, or sent
before the previous reply arrived, add none.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

CHUNK = 256 * 1024


class LatencyProxy:
    """Runs the proxy in a subprocess; ``with`` starts it (ready to accept) and stops it.

    Args:
        ports: Ports to listen on (and forward to the same port upstream).
        rtt: Round-trip time to add, in seconds.
        host: Address to listen on.
        upstream: Address to forward to.
        transcript: File to write control connections' chunks to (JSON lines).
        control_ports: Which of ``ports`` carry control connections (for the transcript).
    """

    def __init__(
        self,
        ports: Iterable[int],
        rtt: float,
        *,
        host: str = "127.0.0.2",
        upstream: str = "127.0.0.1",
        transcript: Path | None = None,
        control_ports: Iterable[int] = (),
    ) -> None:
        self.ports = sorted(set(ports))
        self.rtt = rtt
        self.host = host
        self.upstream = upstream
        self.transcript = transcript
        self.control_ports = sorted(set(control_ports))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--listen",
                self.host,
                "--upstream",
                self.upstream,
                "--rtt-ms",
                str(self.rtt * 1000),
                "--ports",
                ",".join(map(str, self.ports)),
                *(
                    [
                        "--transcript",
                        str(self.transcript),
                        "--control-ports",
                        ",".join(map(str, self.control_ports)),
                    ]
                    if self.transcript is not None
                    else []
                ),
            ],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # "ready" once every port listens
        if line.strip() != b"ready":
            self.stop()
            raise RuntimeError(f"latency proxy did not start: {line!r}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- the transcript ---------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One chunk read on a control connection, as the proxy saw it arrive."""

    conn: int
    direction: str
    """``">"``: client to server; ``"<"``: server to client."""
    t: float
    text: str


def read_transcript(path: Path) -> list[Chunk]:
    """The chunks of a transcript file, in the order they arrived."""
    with path.open(encoding="utf-8") as lines:
        return [Chunk(e["conn"], e["dir"], e["t"], e["text"]) for e in map(json.loads, lines) if e]


def waits(chunks: Iterable[Chunk]) -> Counter[str]:
    """Round trips the clients waited for, by the verb that opened each (see the module doc).

    A wait is a client chunk that arrived after server bytes on the same
    connection (since that connection's previous client chunk): the client
    needed an answer before it wrote again. The key is the first command of
    the chunk (``"SIZE"`` for ``SIZE a\r\nEPSV\r\n``), so login, transfers
    and renames can be told apart. The total is ``sum(...values())``.
    """
    counted: Counter[str] = Counter()
    heard: dict[int, bool] = {}
    for chunk in chunks:
        if chunk.direction == "<":
            heard[chunk.conn] = True
        elif heard.pop(chunk.conn, False):
            counted[chunk.text.split("\r\n", 1)[0].split(" ", 1)[0].upper()] += 1
    return counted


# -- the proxy itself (runs in the subprocess) -------------------------------------------

_Record = Callable[[str, bytes], None]


async def _pump(
    reader: asyncio.StreamReader,
    writer: Awaitable[asyncio.StreamWriter],
    delay: float,
    record: _Record | None = None,
    direction: str = ">",
) -> None:
    """Copy ``reader`` to ``writer`` (once it exists), each chunk ``delay`` s after arrival.

    Reading starts at once, so a chunk's clock starts when it arrives, not
    when the other side is connected; end of input is passed on as a
    half-close (FTP data connections rely on it).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while True:
            try:
                data = await reader.read(CHUNK)
            except ConnectionError:
                data = b""
            queue.put_nowait((loop.time() + delay, data))
            if record is not None and data:
                record(direction, data)
            if not data:
                return

    async def write() -> None:
        out = await writer
        while True:
            release, data = await queue.get()
            wait = release - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if out.can_write_eof():
                    out.write_eof()
                return
            out.write(data)
            await out.drain()

    async with asyncio.TaskGroup() as group:
        group.create_task(read())
        group.create_task(write())


async def _serve_one(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream: str,
    port: int,
    rtt: float,
    record: _Record | None = None,
) -> None:
    """One proxied connection: upstream connect one RTT late, RTT/2 each way."""

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await asyncio.sleep(rtt)  # what the TCP handshake would cost
        return await asyncio.open_connection(upstream, port)

    async def client() -> asyncio.StreamWriter:
        return client_writer

    async def up_writer() -> asyncio.StreamWriter:
        return (await upstream_conn)[1]

    async def down() -> None:
        up_reader, _ = await upstream_conn
        await _pump(up_reader, client(), rtt / 2, record, "<")

    upstream_conn = asyncio.ensure_future(connect())
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_pump(client_reader, up_writer(), rtt / 2, record, ">"))
            group.create_task(down())
    except* (ConnectionError, OSError):
        pass
    finally:
        client_writer.close()
        if upstream_conn.done() and not upstream_conn.cancelled():
            if upstream_conn.exception() is None:
                upstream_conn.result()[1].close()
        else:
            upstream_conn.cancel()


async def _main(
    listen: str,
    upstream: str,
    ports: Sequence[int],
    rtt: float,
    transcript: IO[str] | None = None,
    control_ports: Sequence[int] = (),
) -> None:
    servers = []
    numbers = itertools.count(1)
    loop = asyncio.get_running_loop()

    def recorder(port: int) -> _Record | None:
        if transcript is None or port not in control_ports:
            return None
        conn = next(numbers)

        def record(direction: str, data: bytes) -> None:
            entry = {"conn": conn, "dir": direction, "t": round(loop.time(), 6)}
            entry["text"] = data.decode("latin-1")
            transcript.write(json.dumps(entry) + "\n")
            transcript.flush()

        return record

    for port in ports:

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int = port
        ) -> None:
            await _serve_one(reader, writer, upstream, port, rtt, recorder(port))

        servers.append(await asyncio.start_server(handle, listen, port, reuse_address=True))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def _ports(text: str) -> list[int]:
    ports: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        ports.extend(range(int(low), int(high or low) + 1))
    return ports


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.2")
    parser.add_argument("--upstream", default="127.0.0.1")
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--ports", type=_ports, required=True, help="e.g. 2121,30000-30063")
    parser.add_argument("--transcript", type=Path, help="write control chunks here (JSON lines)")
    parser.add_argument("--control-ports", type=_ports, default=[], help="e.g. 2121")
    args = parser.parse_args(argv)
    transcript = args.transcript.open("w", encoding="utf-8") if args.transcript else None
    try:
        asyncio.run(
            _main(
                args.listen,
                args.upstream,
                args.ports,
                args.rtt_ms / 1000,
                transcript,
                args.control_ports,
            )
        )
    finally:
        if transcript is not None:
            transcript.close()


if __name__ == "__main__":
    main()
