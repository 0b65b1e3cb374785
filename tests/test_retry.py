"""The retry rule: exponential backoff with jitter, Retry-After, the give-up age."""
from datetime import datetime, timedelta, timezone

import pytest

from relay.pagerduty.retry import RetryPolicy

POLICY = RetryPolicy(base_seconds=1, max_seconds=60, give_up_seconds=3600)


@pytest.mark.parametrize("attempts, low, high", [(1, 0.5, 1), (2, 1, 2), (3, 2, 4), (6, 16, 32), (20, 30, 60)])
def test_backoff_doubles_with_jitter_up_to_the_cap(attempts, low, high):
    assert POLICY.delay(attempts, rng=lambda: 0.0) == low
    assert POLICY.delay(attempts, rng=lambda: 1.0) == high


def test_retry_after_is_honoured_when_longer_than_backoff():
    assert POLICY.delay(1, retry_after=7, rng=lambda: 0.0) == 7
    assert POLICY.delay(6, retry_after=7, rng=lambda: 0.0) == 16


def test_retry_after_is_capped_at_the_maximum():
    assert POLICY.delay(1, retry_after=10_000, rng=lambda: 0.0) == 60


def test_gives_up_after_the_configured_age():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert not POLICY.gives_up(start, start + timedelta(seconds=3599))
    assert POLICY.gives_up(start, start + timedelta(seconds=3600))
