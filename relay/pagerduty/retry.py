"""When to try a delivery again: exponential backoff with full jitter, Retry-After honoured, a give-up age."""
import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """The one retry rule every delivery follows (PagerDuty 01-Overview.md: retry 429 and 5xx with backoff)."""

    base_seconds: float = 1.0
    max_seconds: float = 300.0
    give_up_seconds: float = 24 * 3600.0

    def delay(self, attempts: int, retry_after: float | None = None, rng=random.random) -> float:
        """Seconds to wait after the given number of failed attempts."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        # Half fixed, half random: spreads a herd of retries yet never retries at once.
        backoff = ceiling / 2 + rng() * ceiling / 2
        return max(backoff, min(retry_after or 0.0, self.max_seconds))

    def gives_up(self, created_at: datetime, now: datetime) -> bool:
        """Tell whether a row accepted at created_at has been retried for too long."""
        return now - created_at >= timedelta(seconds=self.give_up_seconds)
