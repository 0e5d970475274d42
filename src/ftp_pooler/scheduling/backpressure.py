"""How much consumed, unfinished work the worker holds before it stops fetching: pure policy.

The worker keeps fetching from Kafka while it has room, whatever one slow or
dead server's queue holds, so the other servers' tasks keep flowing; only
when the bound on buffered tasks or their bytes is reached does the poller
pause its partitions (and keep polling, so the group keeps it). It resumes
once half a poll's worth of tasks, and a quarter of the bytes, are free
again, so the runners do not run dry while the next poll fetches.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BufferBound:
    """The bound on tasks taken from Kafka whose results are not yet acknowledged.

    Attributes:
        max_tasks: Tasks (messages) held at most; a poll may overshoot it by
            up to ``max_poll_records - 1``.
        max_bytes: Bytes of their message values held at most (same overshoot).
        resume_slack: Tasks below ``max_tasks`` at which fetching resumes
            (the poller uses half of ``kafka.max_poll_records``).
    """

    max_tasks: int
    max_bytes: int
    resume_slack: int = 0

    def __post_init__(self) -> None:
        if self.max_tasks < 1 or self.max_bytes < 1 or self.resume_slack < 0:
            raise ValueError("the bounds must be positive and the slack not negative")

    def full(self, tasks: int, size: int) -> bool:
        """Whether ``tasks`` messages of ``size`` bytes in all reach the bound (pause)."""
        return tasks >= self.max_tasks or size >= self.max_bytes

    def has_room(self, tasks: int, size: int) -> bool:
        """Whether a paused poller may resume: below the bound by the slack, and by a
        quarter of the bytes."""
        return (
            tasks < max(1, self.max_tasks - self.resume_slack)
            and size < self.max_bytes - self.max_bytes // 4
        )
