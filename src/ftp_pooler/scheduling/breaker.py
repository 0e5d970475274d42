"""A circuit breaker per server: whether a new session may be opened to it now.

Pure state, no I/O, no clock of its own: every step takes ``now`` (seconds on
any monotonic clock) and returns a new :class:`Breaker` (urllib3's ``Retry``
style), so the pool can keep one per connection and tests can walk it
through any history.

States (the usual circuit-breaker cycle, as in Nygard's *Release It!*)::

    CLOSED --K consecutive connect failures--> OPEN
    OPEN   --open period elapsed------------> HALF_OPEN (reads so at the next step)
    HALF_OPEN --the one probe connects------> CLOSED
    HALF_OPEN --the one probe fails---------> OPEN, for twice as long (capped)

Only failures to *open* a session count (connect, greeting, TLS handshake,
login timing out): a server that refuses logins or is full (421) is up, and
the pool handles a full server by lowering its cap instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class BreakerState(StrEnum):
    """Where a server stands; the value is the ``state`` label in metrics and logs."""

    CLOSED = "closed"
    """Sessions open freely."""
    OPEN = "open"
    """Marked down: no session is opened until the open period ends."""
    HALF_OPEN = "half_open"
    """One probe at a time may open a session; its outcome closes or reopens the breaker."""


@dataclass(frozen=True)
class BreakerPolicy:
    """When a server is marked down, and for how long.

    Attributes:
        failures_to_open: Consecutive failed session opens that mark the server down.
        open_seconds: How long it then stays down before one probe is let through.
        max_open_seconds: Each failed probe doubles the open period, up to this.
    """

    failures_to_open: int = 5
    open_seconds: float = 5.0
    max_open_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.failures_to_open < 1:
            raise ValueError("failures_to_open must be at least 1")
        if not 0 < self.open_seconds <= self.max_open_seconds:
            raise ValueError("open_seconds must be > 0 and <= max_open_seconds")


@dataclass(frozen=True)
class Breaker:
    """One server's breaker; every step returns a new value.

    Attributes:
        policy: Thresholds and periods.
        failures: Consecutive failed opens since the last success.
        open_until: While open, when a probe may go (seconds, the caller's clock).
        open_seconds: The current open period (doubles per failed probe).
        probing: A probe's open is in progress (half-open only).
    """

    policy: BreakerPolicy = BreakerPolicy()
    failures: int = 0
    open_until: float | None = None
    open_seconds: float = 0.0
    probing: bool = False

    def state(self, now: float) -> BreakerState:
        """The state at ``now``: an open breaker whose period is over reads as half-open."""
        if self.open_until is None:
            return BreakerState.CLOSED
        if now < self.open_until:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def may_open(self, now: float) -> bool:
        """Whether a session may be opened now (then call :meth:`opening`)."""
        if self.open_until is None:
            return True
        return now >= self.open_until and not self.probing

    def opening(self, now: float) -> tuple[Breaker, bool]:
        """A session open starts (allowed by :meth:`may_open`).

        Returns:
            The new breaker, and whether this open is the half-open state's probe
            (pass that to :meth:`failed` or :meth:`abandoned`).
        """
        if self.state(now) is BreakerState.HALF_OPEN:
            return replace(self, probing=True), True
        return self, False

    def succeeded(self) -> Breaker:
        """A session opened: the server is up, whatever the state was."""
        if self.open_until is None and self.failures == 0:
            return self
        return Breaker(self.policy)

    def failed(self, now: float, *, probe: bool) -> Breaker:
        """A session open failed for a reason that says the server is unreachable.

        In the closed state this counts towards ``failures_to_open``; a failed
        probe reopens for twice the last period (capped at ``max_open_seconds``);
        a failure of an open that started before the breaker opened only counts.
        """
        if self.open_until is None:
            failures = self.failures + 1
            if failures < self.policy.failures_to_open:
                return replace(self, failures=failures)
            period = self.policy.open_seconds
            return replace(self, failures=failures, open_until=now + period, open_seconds=period)
        if probe:
            period = min(self.open_seconds * 2, self.policy.max_open_seconds)
            return replace(
                self,
                failures=self.failures + 1,
                open_until=now + period,
                open_seconds=period,
                probing=False,
            )
        return replace(self, failures=self.failures + 1)

    def abandoned(self, *, probe: bool) -> Breaker:
        """An open ended without an answer (cancelled); if it was the probe, the next opener
        probes."""
        return replace(self, probing=False) if probe else self
