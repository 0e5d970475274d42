"""The runners' Trio glue on a virtual clock: who runs when, with fake attempts.

The attempts are stand-ins (sleeps on Trio's autojump clock); what is under
test is the waiting and waking around the scheduler's decisions. Real
servers are in test_copy_mix.py and test_worker_mix.py.
"""

from __future__ import annotations

from collections import defaultdict

import trio

from ftp_pooler.scheduling.runners import Runners
from ftp_pooler.scheduling.scheduler import Allowance


async def test_a_saturated_connection_does_not_hold_the_runners(autojump_clock: object) -> None:
    allowances = {"slow": Allowance(1), "fast": Allowance(2)}
    finished: dict[str, list[float]] = defaultdict(list)

    async def attempt(item: tuple[str, int]) -> float | None:
        await trio.sleep(10.0 if item[0] == "slow" else 0.1)
        finished[item[0]].append(trio.current_time())
        return None

    runners: Runners[tuple[str, int]] = Runners(
        allowances.__getitem__, total_limit=100, attempt=attempt, expired=lambda item: None
    )
    start = trio.current_time()
    for i in range(20):
        runners.push("slow", ("slow", i))
        runners.push("fast", ("fast", i))
    runners.close()
    await runners.run(8)
    assert len(finished["fast"]) == len(finished["slow"]) == 20
    assert max(finished["fast"]) - start < 1.01  # 20 tasks, 2 at a time, 0.1 s each
    assert max(finished["slow"]) - start >= 200


async def test_a_retry_waits_for_its_not_before_holding_no_runner(autojump_clock: object) -> None:
    runs: list[tuple[int, float]] = []

    async def attempt(item: int) -> float | None:
        runs.append((item, trio.current_time()))
        await trio.sleep(0.01)
        if item == 0 and len([r for r in runs if r[0] == 0]) == 1:
            return trio.current_time() + 5.0
        return None

    runners: Runners[int] = Runners(
        lambda key: Allowance(1), total_limit=1, attempt=attempt, expired=lambda item: None
    )
    for i in range(3):
        runners.push("a", i)
    runners.close()
    await runners.run(1)  # one runner: the backoff must not hold it
    order = [item for item, _ in runs]
    assert order == [0, 1, 2, 0]
    assert runs[3][1] - runs[0][1] >= 5.0
    assert runs[2][1] - runs[0][1] < 0.1


async def test_tasks_of_a_down_connection_expire_while_others_run(autojump_clock: object) -> None:
    expired: list[tuple[int, float]] = []
    done: list[int] = []

    async def attempt(item: int) -> float | None:
        await trio.sleep(0.01)
        done.append(item)
        return None

    allowances = {"dead": Allowance(0, down=True, retry_at=60.0), "ok": Allowance(4)}
    runners: Runners[int] = Runners(
        allowances.__getitem__,
        total_limit=100,
        attempt=attempt,
        expired=lambda item: expired.append((item, trio.current_time())),
    )
    start = trio.current_time()
    runners.push("dead", 1, expires_at=start + 3.0)
    runners.push("dead", 2, expires_at=start + 7.0)
    for i in range(10, 14):
        runners.push("ok", i)
    runners.close()
    await runners.run(4)
    assert sorted(done) == [10, 11, 12, 13]
    assert [item for item, _ in expired] == [1, 2]
    assert [round(t - start, 2) for _, t in expired] == [3.0, 7.0]


async def test_stop_returns_queued_items_and_drops_later_retries(autojump_clock: object) -> None:
    dropped: list[int] = []

    async def attempt(item: int) -> float | None:
        await trio.sleep(1.0)
        return trio.current_time()  # always asks for a retry

    runners: Runners[int] = Runners(
        lambda key: Allowance(2),
        total_limit=100,
        attempt=attempt,
        expired=lambda item: None,
        dropped=dropped.append,
    )
    for i in range(5):
        runners.push("a", i)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runners.run, 4)
        await trio.sleep(0.5)
        assert sorted(runners.stop()) == [2, 3, 4]
    assert sorted(dropped) == [0, 1]


async def test_wait_room_holds_a_producer_until_items_start(autojump_clock: object) -> None:
    async def attempt(item: int) -> float | None:
        await trio.sleep(1.0)
        return None

    runners: Runners[int] = Runners(
        lambda key: Allowance(1), total_limit=100, attempt=attempt, expired=lambda item: None
    )
    pushed: list[float] = []

    async def produce() -> None:
        for i in range(6):
            await runners.wait_room(2)
            runners.push("a", i)
            pushed.append(trio.current_time())
        runners.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        nursery.start_soon(runners.run, 2)
    assert len(pushed) == 6 and pushed[-1] >= 3.0  # one starts per second; two may wait
