"""One retry policy: how long to wait before the next try, and when to stop trying.

Deliveries (subscriptions.service) and notification runs (jobs.notifications) both use it, each
with its own published schedule and limit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """A jittered back-off schedule and the limits after which a retry is not made.

    Attributes:
        schedule: seconds before retry 1, 2, …; the last value repeats.
        jitter: ± fraction applied to each delay.
        max_attempts: attempts after which no retry is made (None: no limit by count).
        give_up_after: seconds after the first attempt after which no retry is made (None: no
            limit by time).
    """

    schedule: tuple[float, ...]
    jitter: float = 0.2
    max_attempts: int | None = None
    give_up_after: float | None = None

    def delay(self, attempts: int, hint: float | None = None) -> float:
        """Seconds to wait after ``attempts`` tries (0 counts as 1); at least ``hint`` (a
        Retry-After), never less than the jittered schedule."""
        base = self.schedule[min(max(attempts, 1), len(self.schedule)) - 1]
        delay = base * random.uniform(1 - self.jitter, 1 + self.jitter)
        return max(delay, hint or 0.0)

    def may_retry(self, attempts: int, elapsed: float = 0.0) -> bool:
        """Whether another try is due after ``attempts`` tries, ``elapsed`` seconds after the
        first one."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return False
        return self.give_up_after is None or elapsed < self.give_up_after
