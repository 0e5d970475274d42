"""The circuit breaker alone: transitions on plain data, and their invariants under any history."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftp_pooler.scheduling.breaker import Breaker, BreakerPolicy, BreakerState

POLICY = BreakerPolicy(failures_to_open=3, open_seconds=2.0, max_open_seconds=5.0)


def test_opens_after_k_consecutive_failures_and_a_success_resets_the_count() -> None:
    breaker = Breaker(POLICY)
    breaker = breaker.failed(0.0, probe=False).failed(0.1, probe=False).succeeded()
    breaker = breaker.failed(0.2, probe=False).failed(0.3, probe=False)
    assert breaker.state(0.3) is BreakerState.CLOSED and breaker.may_open(0.3)
    breaker = breaker.failed(0.4, probe=False)
    assert breaker.state(0.4) is BreakerState.OPEN
    assert not breaker.may_open(2.3)


def test_half_open_lets_one_probe_through_and_its_success_closes() -> None:
    breaker = Breaker(POLICY)
    for t in (0.0, 0.0, 0.0):
        breaker = breaker.failed(t, probe=False)
    assert breaker.state(2.0) is BreakerState.HALF_OPEN and breaker.may_open(2.0)
    breaker, probe = breaker.opening(2.0)
    assert probe and not breaker.may_open(2.0)
    assert breaker.opening(2.0)[1]  # a caller that ignores may_open still learns nothing new
    breaker = breaker.succeeded()
    assert breaker.state(2.0) is BreakerState.CLOSED and breaker.failures == 0


def test_a_failed_probe_reopens_for_twice_as_long_capped() -> None:
    breaker = Breaker(POLICY)
    for _ in range(3):
        breaker = breaker.failed(0.0, probe=False)
    now = 2.0
    periods = []
    for _ in range(4):
        breaker, probe = breaker.opening(now)
        assert probe
        breaker = breaker.failed(now, probe=True)
        periods.append(breaker.open_until - now if breaker.open_until is not None else None)
        assert breaker.state(now) is BreakerState.OPEN
        now = breaker.open_until if breaker.open_until is not None else now
    assert periods == [4.0, 5.0, 5.0, 5.0]


def test_a_cancelled_probe_lets_the_next_opener_probe() -> None:
    breaker = Breaker(POLICY)
    for _ in range(3):
        breaker = breaker.failed(0.0, probe=False)
    breaker, probe = breaker.opening(2.0)
    assert not breaker.may_open(2.0)
    breaker = breaker.abandoned(probe=probe)
    assert breaker.may_open(2.0) and breaker.opening(2.0)[1]


def test_late_failures_of_opens_started_before_the_trip_do_not_extend_it() -> None:
    breaker = Breaker(POLICY)
    for _ in range(3):
        breaker = breaker.failed(0.0, probe=False)
    later = breaker.failed(1.5, probe=False)
    assert later.open_until == breaker.open_until


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(failures_to_open=0)
    with pytest.raises(ValueError):
        BreakerPolicy(open_seconds=10, max_open_seconds=5)


# -- any history ---------------------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["open", "succeed", "fail", "cancel"]),
        st.floats(min_value=0, max_value=3, allow_nan=False),
    ),
    max_size=80,
)


@given(EVENTS)
def test_any_history_keeps_the_breaker_invariants(events: list[tuple[str, float]]) -> None:
    """Driven like the pool drives it: an open is attempted only when allowed, and each
    attempt in flight ends in exactly one of success, failure or cancellation."""
    breaker = Breaker(POLICY)
    now = 0.0
    in_flight: list[bool] = []  # whether each open in flight is a probe
    consecutive = 0
    for event, dt in events:
        now += dt
        state = breaker.state(now)
        assert breaker.may_open(now) == (
            state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not any(in_flight))
        )
        if state is not BreakerState.CLOSED:
            assert breaker.failures >= POLICY.failures_to_open
            assert POLICY.open_seconds <= breaker.open_seconds <= POLICY.max_open_seconds
        if event == "open":
            if breaker.may_open(now):
                breaker, probe = breaker.opening(now)
                assert probe == (state is BreakerState.HALF_OPEN)
                in_flight.append(probe)
            assert sum(in_flight) <= 1, "two probes at once"
            continue
        if not in_flight:
            continue
        probe = in_flight.pop(0)
        if event == "succeed":
            breaker = breaker.succeeded()
            consecutive = 0
            assert breaker.state(now) is BreakerState.CLOSED
        elif event == "fail":
            before = breaker.state(now)
            breaker = breaker.failed(now, probe=probe)
            consecutive += 1
            if probe:
                assert breaker.state(now) is BreakerState.OPEN
            elif before is BreakerState.CLOSED:
                opened = breaker.state(now) is BreakerState.OPEN
                assert opened == (consecutive >= POLICY.failures_to_open)
        else:
            breaker = breaker.abandoned(probe=probe)
