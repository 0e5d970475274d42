"""BufferBound alone: when the poller pauses and resumes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftp_pooler.scheduling.backpressure import BufferBound


def test_full_at_either_bound_and_room_only_below_both_with_slack() -> None:
    bound = BufferBound(max_tasks=100, max_bytes=4000, resume_slack=10)
    assert not bound.full(99, 3999)
    assert bound.full(100, 0) and bound.full(0, 4000)
    assert not bound.has_room(90, 0) and bound.has_room(89, 0)
    assert not bound.has_room(0, 3000) and bound.has_room(0, 2999)


@given(
    st.integers(1, 10_000),
    st.integers(1, 10**9),
    st.integers(0, 20_000),
    st.integers(0, 10_000),
    st.integers(0, 10**9),
)
def test_room_implies_not_full(
    max_tasks: int, max_bytes: int, slack: int, tasks: int, size: int
) -> None:
    bound = BufferBound(max_tasks, max_bytes, slack)
    if bound.has_room(tasks, size):
        assert not bound.full(tasks, size)
    assert bound.has_room(0, 0)


def test_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        BufferBound(0, 1)
    with pytest.raises(ValueError):
        BufferBound(1, 1, -1)
