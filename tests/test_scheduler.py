"""The scheduler's decision alone: plain data in, which task starts out.

The property test drives it the way the runners do (push, decide, finish,
retry with a not-before, allowances changing as breakers trip) and checks
after every step that caps hold, no ticket starts early, no connection
waits behind more than one start of every other, and every ticket leaves
exactly once.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ftp_pooler.scheduling.scheduler import Allowance, Scheduler, Ticket

OPEN = Allowance(limit=4)


def starts(
    scheduler: Scheduler[int], now: float, allowances: dict[str, Allowance], n: int
) -> list[str]:
    keys = []
    for _ in range(n):
        decision = scheduler.decide(now, allowances.__getitem__, total_limit=100)
        if decision.start is None:
            break
        keys.append(decision.start.key)
    return keys


def test_round_robin_across_connections_in_queue_order() -> None:
    scheduler: Scheduler[int] = Scheduler()
    for i in range(6):
        scheduler.push(Ticket("a", i, 0.0), 0.0)
    for i in range(2):
        scheduler.push(Ticket("b", i, 0.0), 0.0)
    scheduler.push(Ticket("c", 0, 0.0), 0.0)
    allowances = {"a": Allowance(10), "b": Allowance(10), "c": Allowance(10)}
    assert starts(scheduler, 0.0, allowances, 20) == ["a", "b", "c", "a", "b", "a", "a", "a", "a"]


def test_a_saturated_connection_is_skipped_not_waited_for() -> None:
    scheduler: Scheduler[int] = Scheduler()
    for i in range(10):
        scheduler.push(Ticket("slow", i, 0.0), 0.0)
        scheduler.push(Ticket("fast", i, 0.0), 0.0)
    allowances = {"slow": Allowance(2), "fast": Allowance(4)}
    assert starts(scheduler, 0.0, allowances, 20) == ["slow", "fast"] * 2 + ["fast"] * 2
    decision = scheduler.decide(0.0, allowances.__getitem__, total_limit=100)
    assert decision.start is None and decision.wake_at is None


def test_the_pod_cap_bounds_all_connections_together() -> None:
    scheduler: Scheduler[int] = Scheduler()
    for key in "abc":
        scheduler.push(Ticket(key, 0, 0.0), 0.0)
    assert scheduler.decide(0.0, lambda _: OPEN, total_limit=2).start is not None
    assert scheduler.decide(0.0, lambda _: OPEN, total_limit=2).start is not None
    assert scheduler.decide(0.0, lambda _: OPEN, total_limit=2).start is None


def test_a_retry_waits_for_its_not_before_without_blocking_the_queue() -> None:
    scheduler: Scheduler[str] = Scheduler()
    scheduler.push(Ticket("a", "retry", 0.0, not_before=5.0), 0.0)
    scheduler.push(Ticket("a", "fresh", 0.0), 0.0)
    first = scheduler.decide(1.0, lambda _: OPEN, total_limit=10)
    assert first.start is not None and first.start.item == "fresh"
    idle = scheduler.decide(1.0, lambda _: OPEN, total_limit=10)
    assert idle.start is None and idle.wake_at == 5.0
    later = scheduler.decide(5.0, lambda _: OPEN, total_limit=10)
    assert later.start is not None and later.start.item == "retry"


def test_a_down_connection_holds_its_tasks_then_expires_them_and_wakes_for_the_probe() -> None:
    scheduler: Scheduler[int] = Scheduler()
    scheduler.push(Ticket("dead", 1, 0.0, expires_at=3.0), 0.0)
    scheduler.push(Ticket("dead", 2, 0.0, expires_at=30.0), 0.0)
    down = Allowance(0, down=True, retry_at=10.0)
    waiting = scheduler.decide(1.0, lambda _: down, total_limit=10)
    assert waiting.start is None and waiting.expired == [] and waiting.wake_at == 3.0
    expired = scheduler.decide(3.0, lambda _: down, total_limit=10)
    assert [t.item for t in expired.expired] == [1] and expired.wake_at == 10.0
    probe = scheduler.decide(10.0, lambda _: Allowance(1, down=True), total_limit=10)
    assert probe.start is not None and probe.start.item == 2 and len(scheduler) == 0


def test_an_expired_ticket_of_a_healthy_connection_still_runs() -> None:
    scheduler: Scheduler[int] = Scheduler()
    scheduler.push(Ticket("a", 1, 0.0, expires_at=1.0), 0.0)
    decision = scheduler.decide(9.0, lambda _: OPEN, total_limit=10)
    assert decision.start is not None and decision.expired == []


def test_drain_takes_every_queued_ticket_and_stats_count_them() -> None:
    scheduler: Scheduler[int] = Scheduler()
    scheduler.push(Ticket("a", 1, 0.0), 0.0)
    scheduler.push(Ticket("a", 2, 0.0, not_before=9.0), 0.0)
    scheduler.push(Ticket("b", 3, 0.0), 0.0)
    started = scheduler.decide(0.0, lambda _: OPEN, total_limit=10).start
    assert started is not None
    stats = scheduler.stats()
    assert (stats["a"].ready, stats["a"].delayed, stats["a"].running) == (0, 1, 1)
    assert sorted(t.item for t in scheduler.drain()) == [2, 3]
    assert len(scheduler) == 0 and scheduler.running == 1
    scheduler.finished(started)
    assert scheduler.running == 0


# -- the property test -------------------------------------------------------------

KEYS = ["a", "b", "c", "d"]
ALLOWANCES = st.sampled_from(
    [
        Allowance(0, down=True, retry_at=None),
        Allowance(0, down=True, retry_at=50.0),
        Allowance(1, down=True),
        Allowance(1),
        Allowance(2),
        Allowance(8),
    ]
)
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.sampled_from(KEYS),
            st.floats(0, 5, allow_nan=False),
            st.floats(0, 20, allow_nan=False),
        ),
        st.tuples(st.just("decide"), st.floats(0, 2, allow_nan=False), st.integers(1, 10)),
        st.tuples(st.just("finish"), st.integers(0, 1000), st.booleans(), st.floats(0, 5)),
        st.tuples(st.just("allow"), st.sampled_from(KEYS), ALLOWANCES),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_caps_not_before_fairness_and_exactly_once_under_any_history(ops: list[tuple]) -> None:
    scheduler: Scheduler[int] = Scheduler()
    allowances = dict.fromkeys(KEYS, Allowance(2))
    now = 0.0
    serial = 0
    queued: dict[int, Ticket[int]] = {}  # every ticket pushed and not yet left
    running: list[Ticket[int]] = []
    left: list[int] = []
    skipped = dict.fromkeys(KEYS, 0)  # starts of others while this one could have started

    def running_of(key: str) -> int:
        return sum(1 for t in running if t.key == key)

    def eligible(key: str, total_limit: int) -> bool:
        room = allowances[key]
        return (
            len(running) < total_limit
            and running_of(key) < room.limit
            and any(
                t.key == key and t.not_before <= now and not (room.down and t.expires_at <= now)
                for t in queued.values()
            )
        )

    for op in ops:
        if op[0] == "push":
            _, key, delay, budget = op
            serial += 1
            ticket = Ticket(key, serial, now, not_before=now + delay, expires_at=now + budget)
            queued[serial] = ticket
            scheduler.push(ticket, now)
        elif op[0] == "decide":
            _, dt, total_limit = op
            now += dt
            could = {key for key in KEYS if eligible(key, total_limit)}
            decision = scheduler.decide(now, allowances.__getitem__, total_limit)
            for ticket in decision.expired:
                room = allowances[ticket.key]
                assert room.down and ticket.expires_at <= now
                assert queued.pop(ticket.item) is ticket
                left.append(ticket.item)
            start = decision.start
            if start is None:
                assert not could, f"{could} could start but nothing did"
                if decision.wake_at is not None:
                    assert decision.wake_at > now
                continue
            assert start.not_before <= now
            assert running_of(start.key) < allowances[start.key].limit
            assert len(running) < total_limit
            assert queued.pop(start.item) is start
            left.append(start.item)
            running.append(start)
            for key in KEYS:
                if key == start.key or key not in could:
                    skipped[key] = 0
                else:
                    skipped[key] += 1
                    assert skipped[key] < len(KEYS), f"{key} starved"
        elif op[0] == "finish":
            _, index, retry, backoff = op
            if not running:
                continue
            ticket = running.pop(index % len(running))
            scheduler.finished(ticket)
            if retry:
                serial += 1
                again = Ticket(
                    ticket.key, serial, now, not_before=now + backoff, expires_at=ticket.expires_at
                )
                queued[serial] = again
                scheduler.push(again, now)
        else:
            _, key, room = op
            allowances[key] = room
            skipped[key] = 0
        assert len(scheduler) == len(queued)
        assert scheduler.running == len(running)
        stats = scheduler.stats()
        for key in KEYS:
            mine = [t for t in queued.values() if t.key == key]
            if key in stats:
                assert stats[key].ready + stats[key].delayed == len(mine)
                assert stats[key].running == running_of(key)
    drained = scheduler.drain()
    for ticket in drained:
        assert queued.pop(ticket.item) is ticket
        left.append(ticket.item)
    assert not queued
    assert sorted(left) == sorted(set(left)) == list(range(1, serial + 1))
