"""Retry with exponential backoff and jitter, as an immutable value (urllib3's ``Retry`` style)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed transfer is tried again.

    Attributes:
        retries: Tries after the first one (a task's ``retry_count``).
        initial_backoff: Seconds before the first retry.
        max_backoff: Upper bound of any one wait.
        multiplier: Growth of the wait per retry.
        jitter: Fraction (0..1) by which each wait is randomly shortened or
            lengthened, so that many failing tasks do not retry in lockstep.
    """

    retries: int = 3
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.retries < 0 or self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("retries and backoffs must not be negative")
        if self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("multiplier must be >= 1 and jitter within 0..1")

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def with_retries(self, retries: int) -> RetryPolicy:
        """The same policy allowing ``retries`` retries."""
        return replace(self, retries=retries)

    def should_retry(self, attempt: int, retryable: bool) -> bool:
        """Whether attempt number ``attempt`` (1-based), having failed, is followed by another."""
        return retryable and attempt < self.max_attempts

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))

    def patience(self, attempt_seconds: float) -> float:
        """Seconds every attempt and the backoffs between them could take, each attempt
        lasting ``attempt_seconds`` (without jitter): a task's budget for waiting on a
        server that is marked down."""
        waits = 0.0
        wait = self.initial_backoff
        for _ in range(self.retries):
            waits += min(wait, self.max_backoff)
            wait = min(wait * self.multiplier, self.max_backoff)
        return self.max_attempts * attempt_seconds + waits
