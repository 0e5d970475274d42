"""Which Kafka offsets may be committed: pure bookkeeping, no Kafka.

An offset is *done* when the result of its message has been acknowledged by
the broker. A partition may be committed up to (not including) its first
offset that is not done: the committed position is the last offset of the
done prefix plus one. Offsets are tracked in the order they were received, so
gaps in the numbering (compaction, transaction markers) need no special case.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


@dataclass
class _Partition:
    pending: deque[int] = field(default_factory=deque)
    """Offsets received and not yet behind the committable position, in order."""
    done: set[int] = field(default_factory=set)
    position: int | None = None
    """Next offset to commit: last offset of the done prefix + 1."""
    committed: int | None = None


class OffsetTracker(Generic[P]):
    """Per-partition record of received and done offsets.

    ``P`` is whatever names a partition (kafka-python's ``TopicPartition``).
    """

    def __init__(self) -> None:
        self._partitions: dict[P, _Partition] = {}

    def received(self, partition: P, offset: int) -> None:
        """A message was taken from ``partition``; offsets must arrive in increasing order."""
        state = self._partitions.setdefault(partition, _Partition())
        if state.pending and offset <= state.pending[-1]:
            raise ValueError(f"offset {offset} of {partition} arrived out of order")
        if state.position is not None and offset < state.position:
            raise ValueError(f"offset {offset} of {partition} is behind {state.position}")
        state.pending.append(offset)

    def done(self, partition: P, offset: int) -> None:
        """The result of ``offset`` is safely stored; ignored for partitions no longer tracked."""
        state = self._partitions.get(partition)
        if state is None or not state.pending or offset < state.pending[0]:
            return
        state.done.add(offset)
        while state.pending and state.pending[0] in state.done:
            first = state.pending.popleft()
            state.done.discard(first)
            state.position = first + 1

    def to_commit(self) -> dict[P, int]:
        """Partitions whose committable position moved since it was last marked committed."""
        return {
            partition: state.position
            for partition, state in self._partitions.items()
            if state.position is not None and state.position != state.committed
        }

    def committed(self, positions: dict[P, int]) -> None:
        """Record that these positions were committed."""
        for partition, position in positions.items():
            state = self._partitions.get(partition)
            if state is not None:
                state.committed = position

    def resume_position(self, partition: P) -> int | None:
        """Where consumption must resume so nothing not yet done is skipped (None if unknown)."""
        state = self._partitions.get(partition)
        if state is None:
            return None
        return state.pending[0] if state.pending else state.position

    def in_flight(self, partitions: Iterable[P] | None = None) -> int:
        """Messages received and not yet done (in ``partitions``, or in all)."""
        keys = self._partitions.keys() if partitions is None else partitions
        return sum(
            len(state.pending) - len(state.done)
            for key in keys
            if (state := self._partitions.get(key)) is not None
        )

    def forget(self, partitions: Iterable[P]) -> None:
        """Stop tracking partitions (revoked or lost); later :meth:`done` calls are ignored."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def partitions(self) -> list[P]:
        return list(self._partitions)
