"""How many sessions to one server are opened at once: a pure policy, no I/O.

A server takes new connections through a short listen backlog (pure-ftpd:
3 + max clients / 8); a burst of connects beyond it is dropped and waits for
TCP's SYN retransmit, 1 s, then 3 s, 7 s... (RFC 6298 section 2: initial RTO
1 s). Opening one session at a time wastes a login's round trips per
session, though, on a far server. So the pool starts at a few at once and
adds one after every open whose TCP connect was quick (the server keeps up),
and halves on a connect that stalled (took at least a retransmit timeout)
or an open the server refused or that failed to connect: additive increase,
multiplicative decrease, as TCP's own congestion control (RFC 5681).
"""

from __future__ import annotations

from dataclasses import dataclass

STALL_SECONDS = 1.0
"""A TCP connect this slow waited for a SYN retransmit (RFC 6298's initial RTO)."""


@dataclass
class OpeningPolicy:
    """Sessions one server may have being opened at once (:attr:`limit`).

    Attributes:
        limit: How many now; starts at the pool's ``max_concurrent_opens``.
        ceiling: Never more (the connection's session cap).
        stall_seconds: A connect at least this long counts as stalled.
    """

    limit: int
    ceiling: int
    stall_seconds: float = STALL_SECONDS

    def __post_init__(self) -> None:
        self.ceiling = max(1, self.ceiling)
        self.limit = max(1, min(self.limit, self.ceiling))

    def opened(self, connect_seconds: float) -> int:
        """A session opened; its TCP connect took ``connect_seconds``. Returns the new limit."""
        if connect_seconds >= self.stall_seconds:
            self.limit = max(1, self.limit // 2)
        else:
            self.limit = min(self.ceiling, self.limit + 1)
        return self.limit

    def failed(self) -> int:
        """An open was refused (421) or could not connect (refused, timed out); the new limit."""
        self.limit = max(1, self.limit // 2)
        return self.limit
