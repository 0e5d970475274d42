"""When a Kafka producer counts as stalled and when it is replaced: pure decisions.

kafka-python 3.0.12's idempotent producer can stop delivering for good: after
a batch expired (``delivery_timeout_ms``) while the broker was frozen, its
futures are never completed; against a broker that lost its state it enters
a fatal state and fails every send at once. :class:`Recovery` is where the
:class:`~ftp_pooler.kafka.publisher.ResultPublisher` stands (healthy ->
stalled -> recreating -> healthy); :meth:`Recovery.step` decides, from how
long the oldest result has waited and whether the producer failed, whether
to replace the producer now, backing off by :class:`RecoveryPolicy`. No I/O,
no clock of its own: times are passed in.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

STALL_SECONDS = 5.0
"""A result unacknowledged this long (or half the ack timeout, if less) means "stalled"."""


class PublishState(enum.Enum):
    HEALTHY = "healthy"
    """Results are acknowledged in time (or none wait)."""
    STALLED = "stalled"
    """Results wait longer than :attr:`RecoveryPolicy.stall_after`, or the producer failed
    and the next replacement is not due yet."""
    RECREATING = "recreating"
    """The producer was replaced; the new one has not had a result acknowledged yet."""


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    """When the producer counts as stalled, when it is replaced, how soon again.

    Attributes:
        ack_timeout: Seconds a result may wait on one producer for its
            acknowledgement before that producer is replaced. Above kafka-python's
            ``delivery_timeout_ms``, so a producer that still works has reported
            every result (acknowledged or failed) by then.
        stall_after: Seconds a result may wait before the publisher reports itself stalled.
        initial_backoff: Seconds between the first and the second replacement
            without an acknowledgement in between; doubles for each further one.
        max_backoff: Upper bound of that pause.
    """

    ack_timeout: float
    stall_after: float = STALL_SECONDS
    initial_backoff: float = 1.0
    max_backoff: float = 30.0

    @classmethod
    def for_ack_timeout(cls, ack_timeout: float) -> RecoveryPolicy:
        """The default policy for ``ack_timeout``: stalled after :data:`STALL_SECONDS`, or
        half of ``ack_timeout`` when that is shorter."""
        return cls(ack_timeout=ack_timeout, stall_after=min(STALL_SECONDS, ack_timeout / 2))

    def backoff(self, attempts: int) -> float:
        """Seconds between replacement ``attempts`` and the next (none before the first)."""
        if attempts == 0:
            return 0.0
        return min(self.max_backoff, self.initial_backoff * 2.0 ** (attempts - 1))


@dataclass(frozen=True, slots=True)
class Recovery:
    """Where the publisher stands; each step returns a new value (times: Trio's clock, s).

    Attributes:
        state: See :class:`PublishState`.
        reason: Why the state is not healthy (empty when it is).
        attempts: Producers replaced since the last acknowledgement.
        replaced_at: When the producer was last replaced.
        acked_at: When a result was last acknowledged.
    """

    state: PublishState = PublishState.HEALTHY
    reason: str = ""
    attempts: int = 0
    replaced_at: float = -math.inf
    acked_at: float = -math.inf

    def acknowledged(self, now: float) -> Recovery:
        """A result was acknowledged: the producer works, replacements back off no more."""
        return replace(self, attempts=0, acked_at=now)

    def step(
        self, now: float, *, oldest_wait: float | None, failure: str | None, policy: RecoveryPolicy
    ) -> tuple[Recovery, bool]:
        """The state after a look at the producer, and whether to replace it now.

        Args:
            now: The current time.
            oldest_wait: How long the oldest result unacknowledged on the current
                producer has waited since it was first sent on it; None: none waits.
            failure: Why the producer is broken for good (its fatal state), or None.
            policy: The bounds.
        """
        replace_it = False
        if failure is not None:
            trouble: str | None = f"producer failed: {failure}"
            replace_it = True
        elif oldest_wait is not None and oldest_wait >= policy.ack_timeout:
            trouble = f"a result unacknowledged for {oldest_wait:.1f} s"
            replace_it = True
        elif oldest_wait is not None and oldest_wait >= policy.stall_after:
            trouble = f"a result unacknowledged for {oldest_wait:.1f} s"
        else:
            trouble = None
        if replace_it and now >= self.replaced_at + policy.backoff(self.attempts):
            assert trouble is not None
            recreating = PublishState.RECREATING
            return replace(
                self, state=recreating, reason=trouble, attempts=self.attempts + 1, replaced_at=now
            ), True
        if trouble is not None:
            if self.state is PublishState.HEALTHY:
                return replace(self, state=PublishState.STALLED, reason=trouble), False
            return self, False
        unproven = self.state is PublishState.RECREATING and self.acked_at < self.replaced_at
        if self.state is PublishState.HEALTHY or (unproven and oldest_wait is not None):
            return self, False
        return replace(self, state=PublishState.HEALTHY, reason=""), False
