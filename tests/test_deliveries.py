"""DeliveryQueue: first in, first out, to many runners; closing stops them all."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from ftp_pooler.kafka.deliveries import Delivery, DeliveryQueue


def _deliveries(*offsets: int) -> list[Delivery]:
    return [Delivery("tasks-0", offset, b"") for offset in offsets]


async def test_first_in_first_out_without_waiting() -> None:
    queue = DeliveryQueue()
    queue.put(_deliveries(1, 2))
    queue.put(_deliveries(3))
    assert len(queue) == 3
    assert [(await queue.get()).offset for _ in range(3)] == [1, 2, 3]
    assert len(queue) == 0


async def test_one_put_wakes_as_many_waiting_runners_as_it_brings() -> None:
    queue = DeliveryQueue()
    taken: list[int] = []

    async def runner() -> None:
        taken.append((await queue.get()).offset)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(runner)
        await trio.testing.wait_all_tasks_blocked()
        queue.put(_deliveries(10, 11, 12))
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(taken) == [10, 11, 12]
        queue.put(_deliveries(13))
    assert sorted(taken) == [10, 11, 12, 13]


async def test_close_ends_waiting_and_later_gets_and_refuses_puts() -> None:
    queue = DeliveryQueue()
    ended: list[str] = []

    async def runner() -> None:
        try:
            await queue.get()
        except trio.EndOfChannel:
            ended.append("waiting")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner)
        await trio.testing.wait_all_tasks_blocked()
        queue.close()
    assert ended == ["waiting"]
    with pytest.raises(trio.ClosedResourceError):
        queue.put(_deliveries(1))


async def test_deliveries_left_at_close_are_not_handed_out() -> None:
    queue = DeliveryQueue()
    queue.put(_deliveries(1, 2))
    queue.close()
    with pytest.raises(trio.EndOfChannel):
        await queue.get()
