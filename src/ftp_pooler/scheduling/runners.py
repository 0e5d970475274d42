"""The Trio side of the scheduler: long-lived runners that ask it for work.

Each runner loops: ask the :class:`~ftp_pooler.scheduling.scheduler.Scheduler`
for a ticket (one synchronous :meth:`~Scheduler.decide` step), run one
attempt of it, report it finished, and queue it again with a not-before time
if the attempt asked for a retry. With nothing it may start, a runner parks
until something changes: a push, a finished attempt (a session came free), or
the decision's ``wake_at`` (a retry's not-before, an open breaker's probe
time, an expiry). A runner that does get a ticket wakes one parked runner in
turn, so one change that frees several slots is taken up by as many runners.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

from ftp_pooler.scheduling.scheduler import Allowance, QueueStats, Scheduler, Ticket

T = TypeVar("T")

_INF = float("inf")


class Runners(Generic[T]):
    """Runs attempts of queued items, per connection, on a fixed number of runners.

    Args:
        allowance: A connection's :class:`Allowance` now (``SessionPool.allowance``).
        total_limit: Attempts running at once over all connections (the pod's
            session cap; the number of runners bounds it too).
        attempt: Runs one attempt of an item; returns None when the item is
            done, or the time (``trio.current_time()`` clock) before which its
            retry may not start. It must not raise but for cancellation.
        expired: Called with an item that left its queue because its
            connection stayed down past the item's ``expires_at``.
        dropped: Called with an item whose attempt asked for a retry after
            :meth:`stop`.
        waited: Called at each start with the connection id and the seconds
            the item was ready to start but waited (not counting a backoff).
    """

    def __init__(
        self,
        allowance: Callable[[str], Allowance],
        *,
        total_limit: int,
        attempt: Callable[[T], Awaitable[float | None]],
        expired: Callable[[T], None],
        dropped: Callable[[T], None] = lambda item: None,
        waited: Callable[[str, float], None] = lambda key, seconds: None,
    ) -> None:
        self._scheduler: Scheduler[T] = Scheduler()
        self._allowance = allowance
        self._total_limit = total_limit
        self._attempt = attempt
        self._expired = expired
        self._dropped = dropped
        self._waited = waited
        self._idle = trio.lowlevel.ParkingLot()
        """Runners with nothing they may start."""
        self._room = trio.lowlevel.ParkingLot()
        """Producers waiting in :meth:`wait_room`."""
        self._closed = False
        self._stopped = False

    def __len__(self) -> int:
        """Items queued (ready or waiting for a retry's not-before), not counting running ones."""
        return len(self._scheduler)

    @property
    def running(self) -> int:
        """Attempts running now."""
        return self._scheduler.running

    def stats(self) -> dict[str, QueueStats]:
        """Per connection id: items ready, delayed (backoff) and running."""
        return self._scheduler.stats()

    def push(self, key: str, item: T, *, expires_at: float = _INF) -> None:
        """Queue an item that needs a session to connection ``key``.

        Args:
            expires_at: While ``key``'s server is marked down, the item waits
                until this time at most, then goes to ``expired``.

        Raises:
            trio.ClosedResourceError: After :meth:`close` or :meth:`stop`.
        """
        if self._closed or self._stopped:
            raise trio.ClosedResourceError("the runners take no more items")
        now = trio.current_time()
        self._scheduler.push(Ticket(key, item, now, expires_at=expires_at), now)
        self._idle.unpark()

    async def wait_room(self, limit: int) -> None:
        """Wait until fewer than ``limit`` items are queued (a producer's memory bound)."""
        while len(self._scheduler) >= limit and not self._stopped:
            await self._room.park()

    def close(self) -> None:
        """No more pushes: the runners return once every item is done (retries included)."""
        self._closed = True
        self._idle.unpark_all()

    def stop(self) -> list[T]:
        """Start nothing more; take the queued items out and return them.

        Running attempts finish; a retry any of them asks for goes to
        ``dropped``. The runners return as soon as they are idle.
        """
        self._stopped = True
        items = [ticket.item for ticket in self._scheduler.drain()]
        self._idle.unpark_all()
        self._room.unpark_all()
        return items

    async def run(self, runners: int) -> None:
        """Run ``runners`` runners until :meth:`close` (and all is done) or :meth:`stop`."""
        async with trio.open_nursery() as nursery:
            for _ in range(runners):
                nursery.start_soon(self._run)

    async def _run(self) -> None:
        while (ticket := await self._next()) is not None:
            try:
                retry_at = await self._attempt(ticket.item)
            finally:
                self._scheduler.finished(ticket)  # this runner decides next, no wake-up needed
            if retry_at is None:
                continue
            if self._stopped:
                self._dropped(ticket.item)
                continue
            now = trio.current_time()
            again = Ticket(
                ticket.key, ticket.item, now, not_before=retry_at, expires_at=ticket.expires_at
            )
            self._scheduler.push(again, now)
            self._idle.unpark()  # a parked runner's wake-up time may be later than retry_at

    async def _next(self) -> Ticket[T] | None:
        scheduler = self._scheduler
        while not self._stopped:
            now = trio.current_time()
            decision = scheduler.decide(now, self._allowance, self._total_limit)
            for gone in decision.expired:
                self._expired(gone.item)
            ticket = decision.start
            if ticket is not None or decision.expired:
                self._room.unpark_all()
            if ticket is not None:
                self._waited(ticket.key, now - max(ticket.queued_at, ticket.not_before))
                self._idle.unpark()
                return ticket
            if self._closed and not len(scheduler) and not scheduler.running:
                self._idle.unpark_all()
                return None
            wake_at = _INF if decision.wake_at is None else decision.wake_at
            with trio.move_on_at(wake_at):
                await self._idle.park()
        return None
