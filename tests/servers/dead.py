"""Servers that are down, for tests of the circuit breaker and the scheduler.

* :class:`MuteServer` accepts TCP connections and never sends a byte (a hung
  server, or a firewall that completes the handshake): a client waits for the
  greeting until its connect timeout. It counts the connections it accepted.
* :func:`closed_port` is a loopback port with nothing listening: connects are
  refused at once.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Self

from servers.netutil import LOCALHOST, free_port


class MuteServer:
    """``with MuteServer() as mute: ... mute.port ... mute.accepted``"""

    def __init__(self, host: str = LOCALHOST) -> None:
        self.host = host
        self._listener = socket.create_server((host, free_port(host)))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="mute-server", daemon=True)

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return len(self._held)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._held.append(conn)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            for conn in self._held:
                conn.close()


def closed_port() -> int:
    """A loopback port that refuses connections (nothing listens on it)."""
    return free_port()
