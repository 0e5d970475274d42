"""RetryPolicy: a frozen value; backoff grows, is capped and jittered; only retryable errors retry;
patience bounds the wait for a server marked down."""

from __future__ import annotations

import random

import pytest

from ftp_pooler.transfer.retry import RetryPolicy


def test_backoff_grows_exponentially_up_to_the_cap_without_jitter() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=3.0, multiplier=2.0, jitter=0.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(initial_backoff=1.0, multiplier=1.0, jitter=0.2)
    rng = random.Random(7)
    waits = [policy.backoff(1, rng) for _ in range(1000)]
    assert min(waits) >= 0.8 and max(waits) <= 1.2
    assert max(waits) - min(waits) > 0.3


def test_retries_only_retryable_errors_and_only_as_often_as_allowed() -> None:
    policy = RetryPolicy().with_retries(2)
    assert policy.max_attempts == 3
    assert policy.should_retry(1, retryable=True)
    assert policy.should_retry(2, retryable=True)
    assert not policy.should_retry(3, retryable=True)
    assert not policy.should_retry(1, retryable=False)
    assert not RetryPolicy(retries=0).should_retry(1, retryable=True)


def test_with_retries_returns_a_new_value() -> None:
    policy = RetryPolicy(retries=3)
    assert policy.with_retries(5).retries == 5
    assert policy.retries == 3
    with pytest.raises(AttributeError):
        policy.retries = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [{"retries": -1}, {"initial_backoff": -1}, {"multiplier": 0.5}, {"jitter": 1.5}],
)
def test_nonsense_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_patience_is_every_attempt_plus_every_backoff_without_jitter() -> None:
    policy = RetryPolicy(retries=3, initial_backoff=0.5, max_backoff=1.5, multiplier=2.0)
    assert policy.patience(10.0) == 4 * 10.0 + 0.5 + 1.0 + 1.5
    assert RetryPolicy(retries=0).patience(2.0) == 2.0
    assert RetryPolicy(retries=100, multiplier=1e6, max_backoff=30.0).patience(0) == pytest.approx(
        0.5 + 99 * 30.0
    )
