"""OffsetTracker: the committed position is always the end of the done prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftp_pooler.kafka.offsets import OffsetTracker


def test_commits_only_the_contiguous_done_prefix() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in range(5):
        tracker.received("p0", offset)
    tracker.done("p0", 1)
    tracker.done("p0", 2)
    assert tracker.to_commit() == {}
    tracker.done("p0", 0)
    assert tracker.to_commit() == {"p0": 3}
    tracker.committed({"p0": 3})
    assert tracker.to_commit() == {}
    assert tracker.in_flight() == 2
    tracker.done("p0", 4)
    assert tracker.to_commit() == {}
    tracker.done("p0", 3)
    assert tracker.to_commit() == {"p0": 5}


def test_gaps_in_offsets_are_not_waited_for() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in (10, 12, 15):
        tracker.received("p", offset)
    for offset in (15, 12, 10):
        tracker.done("p", offset)
    assert tracker.to_commit() == {"p": 16}


def test_partitions_are_independent_and_forgettable() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.received("a", 0)
    tracker.received("b", 0)
    tracker.done("b", 0)
    assert tracker.to_commit() == {"b": 1}
    assert tracker.in_flight(["a"]) == 1
    tracker.forget(["a"])
    tracker.done("a", 0)
    assert tracker.to_commit() == {"b": 1}
    assert tracker.partitions() == ["b"]


def test_out_of_order_receipt_is_refused() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.received("p", 5)
    with pytest.raises(ValueError):
        tracker.received("p", 5)


def test_done_for_unknown_offsets_is_ignored() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.received("p", 3)
    tracker.done("p", 1)
    assert tracker.in_flight() == 1
    assert tracker.to_commit() == {}


@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=60).flatmap(
        lambda gaps: st.tuples(st.just(gaps), st.permutations(range(len(gaps))), st.data())
    )
)
def test_any_completion_order_commits_exactly_the_done_prefix(args) -> None:  # type: ignore[no-untyped-def]
    gaps, order, data = args
    offsets = []
    offset = 0
    for gap in gaps:
        offset += gap + 1
        offsets.append(offset)
    tracker: OffsetTracker[int] = OffsetTracker()
    for o in offsets:
        tracker.received(0, o)
    finished = data.draw(st.integers(0, len(order)))
    done = set()
    for index in order[:finished]:
        tracker.done(0, offsets[index])
        done.add(index)
        prefix = 0
        while prefix < len(offsets) and prefix in done:
            prefix += 1
        expected = {0: offsets[prefix - 1] + 1} if prefix else {}
        assert tracker.to_commit() == expected
        assert tracker.in_flight() == len(offsets) - len(done)
