"""Which queued task a free runner may start now: per-connection queues, round robin.

Pure bookkeeping in the style of httpcore's connection pool: every decision
is one synchronous step on plain data (the queues, and for each connection
an :class:`Allowance` read from the session pool and its breaker), and the
waiting, the transfers and the clock stay outside, in
:mod:`ftp_pooler.scheduling.runners`.

A task waits in the FIFO queue of the connection whose session it needs. A
runner that asks for work gets the oldest ready task of the next connection,
in round-robin order, that can give it a session now or soon (fewer of its
tasks running than its allowance); connections at their cap are skipped, so
no runner waits on a saturated or dead server while another server has work.
A task going back for a retry carries a not-before time and waits in a heap,
holding neither a runner nor a session, until then. While a connection is
marked down (its breaker is not closed) its queued tasks wait; those still
waiting at their ``expires_at`` leave the queue as expired.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

_INF = float("inf")


@dataclass(frozen=True, slots=True, eq=False)
class Ticket(Generic[T]):
    """A task waiting for a session to one connection.

    Attributes:
        key: The connection id whose session the task needs.
        item: The caller's task (the scheduler never looks inside).
        queued_at: When it joined the queue (seconds, the caller's clock), for
            the queue-wait metric.
        not_before: It may not start before this (a retry's backoff).
        expires_at: While its connection is down, it waits at most until this
            and then leaves as expired (its retry budget is spent).
    """

    key: str
    item: T
    queued_at: float
    not_before: float = -_INF
    expires_at: float = _INF


@dataclass(frozen=True, slots=True)
class Allowance:
    """What one connection can take now, from the pool and its breaker (plain data).

    Attributes:
        limit: Tasks of this connection that may run at once: its current
            session cap when its breaker is closed, 1 (the probe) when
            half-open, 0 when open.
        down: The breaker is not closed: queued tasks past ``expires_at`` expire.
        retry_at: When ``limit`` rises by time alone (an open breaker's
            probe time), or None.
    """

    limit: int
    down: bool = False
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class Decision(Generic[T]):
    """The outcome of one :meth:`Scheduler.decide` step.

    Attributes:
        start: The task the asking runner starts now (it counts as running
            until :meth:`Scheduler.finished`), or None.
        expired: Tasks that left their queue because their connection is down
            and their ``expires_at`` passed; the caller ends each one.
        wake_at: With no ``start``: when to decide again at the latest (the
            next not-before, expiry or probe time), unless a push or a finish
            comes first; None when only those can change anything.
    """

    start: Ticket[T] | None
    expired: list[Ticket[T]]
    wake_at: float | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One connection's tasks: ``ready`` to start, ``delayed`` by a not-before, ``running``."""

    ready: int
    delayed: int
    running: int


@dataclass(slots=True)
class _Queue(Generic[T]):
    ready: deque[Ticket[T]] = field(default_factory=deque)
    delayed: int = 0
    running: int = 0
    next_expiry: float = _INF
    """No ready ticket expires before this (a lower bound; exact after each expiry pass)."""


class Scheduler(Generic[T]):
    """Per-connection FIFO queues of :class:`Ticket` and the decision which one starts next.

    Invariants (property-tested): a connection never has more tasks running
    than its allowance's ``limit`` at the moment each started, nor the whole
    scheduler more than ``total_limit``; no ticket starts before its
    ``not_before``; every ticket pushed leaves exactly once (started, expired
    or drained); a connection with a ready ticket and room is served within as
    many starts as there are connections with ready tickets.
    """

    def __init__(self) -> None:
        self._queues: dict[str, _Queue[T]] = {}
        self._ring: deque[str] = deque()
        """Connections with ready tickets, in round-robin order (the next one first)."""
        self._delayed: list[tuple[float, int, Ticket[T]]] = []
        self._order = itertools.count()
        self._running = 0
        self._queued = 0

    def __len__(self) -> int:
        """Tickets queued (ready or delayed), not counting running ones."""
        return self._queued

    @property
    def running(self) -> int:
        """Tickets started and not yet :meth:`finished`."""
        return self._running

    def push(self, ticket: Ticket[T], now: float) -> None:
        """Queue a ticket: ready at once, or held until its ``not_before``."""
        self._queued += 1
        if ticket.not_before > now:
            self._queue(ticket.key).delayed += 1
            heapq.heappush(self._delayed, (ticket.not_before, next(self._order), ticket))
        else:
            self._make_ready(ticket)

    def decide(
        self, now: float, allowance: Callable[[str], Allowance], total_limit: int
    ) -> Decision[T]:
        """One step: which ticket a free runner starts now, which expire, when to look again.

        Args:
            now: The current time (the caller's clock, as for every time here).
            allowance: A connection's :class:`Allowance` now (looked up only
                for connections with ready tickets).
            total_limit: Tasks that may run at once over all connections (the
                pod's session cap).
        """
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            ticket = heapq.heappop(delayed)[2]
            self._queues[ticket.key].delayed -= 1
            self._make_ready(ticket)
        expired: list[Ticket[T]] = []
        wake_at = delayed[0][0] if delayed else _INF
        ring = self._ring
        for _ in range(len(ring)):
            key = ring[0]
            queue = self._queues[key]
            room = allowance(key)
            if room.down and queue.next_expiry <= now:
                self._expire(queue, now, expired)
                if not queue.ready:
                    ring.popleft()
                    continue
            if queue.running < room.limit and self._running < total_limit:
                ticket = queue.ready.popleft()
                self._queued -= 1
                queue.running += 1
                self._running += 1
                if queue.ready:
                    ring.rotate(-1)
                else:
                    ring.popleft()
                return Decision(ticket, expired, None)
            if room.down:
                wake_at = min(wake_at, queue.next_expiry)
            if room.retry_at is not None:
                wake_at = min(wake_at, room.retry_at)
            ring.rotate(-1)
        return Decision(None, expired, None if wake_at == _INF else wake_at)

    def finished(self, ticket: Ticket[T]) -> None:
        """A started ticket's attempt is over (push it again to retry it)."""
        self._queues[ticket.key].running -= 1
        self._running -= 1

    def drain(self) -> list[Ticket[T]]:
        """Take every queued ticket out (shutdown); running ones are not affected."""
        tickets = [ticket for queue in self._queues.values() for ticket in queue.ready]
        tickets.extend(entry[2] for entry in self._delayed)
        for queue in self._queues.values():
            queue.ready.clear()
            queue.delayed = 0
            queue.next_expiry = _INF
        self._delayed.clear()
        self._ring.clear()
        self._queued = 0
        return tickets

    def stats(self) -> dict[str, QueueStats]:
        """Per connection that has had tickets: ready, delayed and running counts."""
        return {
            key: QueueStats(len(queue.ready), queue.delayed, queue.running)
            for key, queue in self._queues.items()
        }

    def _queue(self, key: str) -> _Queue[T]:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        return queue

    def _make_ready(self, ticket: Ticket[T]) -> None:
        queue = self._queue(ticket.key)
        if not queue.ready:
            self._ring.append(ticket.key)
        queue.ready.append(ticket)
        if ticket.expires_at < queue.next_expiry:
            queue.next_expiry = ticket.expires_at

    def _expire(self, queue: _Queue[T], now: float, expired: list[Ticket[T]]) -> None:
        keep: deque[Ticket[T]] = deque()
        next_expiry = _INF
        for ticket in queue.ready:
            if ticket.expires_at <= now:
                expired.append(ticket)
            else:
                keep.append(ticket)
                next_expiry = min(next_expiry, ticket.expires_at)
        self._queued -= len(queue.ready) - len(keep)
        queue.ready = keep
        queue.next_expiry = next_expiry
