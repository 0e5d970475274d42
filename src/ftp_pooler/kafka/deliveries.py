"""Consumed messages on their way from the Kafka poller to the transfer runners."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import trio


@dataclass(frozen=True, slots=True)
class Delivery:
    """One consumed message: where it came from, and its raw value."""

    partition: Any
    """kafka-python ``TopicPartition``."""
    offset: int
    value: bytes


class DeliveryQueue:
    """A first-in first-out queue from one poller to many runners.

    Cheaper per message than a memory channel: the poller hands over a whole
    poll's records in one call, with no checkpoint per record, and a runner
    takes the next record without a trip through the scheduler when one is
    waiting. It is unbounded; the poller's pause/resume bounds it.
    """

    def __init__(self) -> None:
        self._items: deque[Delivery] = deque()
        self._waiting = trio.lowlevel.ParkingLot()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, deliveries: Iterable[Delivery]) -> None:
        """Append deliveries and wake as many waiting runners.

        Raises:
            trio.ClosedResourceError: The queue was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("the delivery queue is closed")
        before = len(self._items)
        self._items.extend(deliveries)
        self._waiting.unpark(count=len(self._items) - before)

    async def get(self) -> Delivery:
        """The oldest delivery, waiting for one if need be.

        Raises:
            trio.EndOfChannel: The queue was closed; deliveries still in it
                are not handed out (they are redelivered by Kafka).
        """
        while True:
            if self._closed:
                raise trio.EndOfChannel
            if self._items:
                return self._items.popleft()
            await self._waiting.park()

    def close(self) -> None:
        """Hand out nothing more; waiting and later :meth:`get` calls raise ``EndOfChannel``."""
        self._closed = True
        self._waiting.unpark_all()
