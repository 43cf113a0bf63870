"""Per-tenant token buckets shared by every web process (Redis), or in memory (embedded)."""

from __future__ import annotations

import abc
import logging
import math
import threading
import time
from dataclasses import dataclass

import redis

from infra.broker.queues import rate_bucket_key
from infra.broker.scripts import lua

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0  # seconds until the cost would fit


@dataclass(frozen=True)
class Charge:
    """``cost`` requests to take from ``tenant``'s bucket (``rate`` > 0 per second, ``burst`` ≥
    ``cost`` max)."""

    tenant: str
    cost: int
    rate: float
    burst: int


class RateLimited(Exception):
    """The tenant's bucket could not pay for the request: nothing was done."""

    def __init__(self, charge: Charge, retry_after: float) -> None:
        super().__init__(f"tenant {charge.tenant!r} is over its rate limit")
        self.charge = charge
        self.retry_after = retry_after


class RateLimiter(abc.ABC):
    @abc.abstractmethod
    def take(self, tenant: str, cost: int, rate: float, burst: int) -> Verdict:
        """Take ``cost`` tokens from the tenant's bucket (``rate`` per second, ``burst`` max)."""


# The token bucket in Redis: lua/take_tokens.lua (a function, also called from the intake's
# script: one round trip per ingest request) and lua/rate_limit.lua.
_BUCKET_SCRIPTS = ("take_tokens.lua", "rate_limit.lua")


class RedisRateLimiter(RateLimiter):
    """Token bucket in Redis; fails open (and logs) when Redis cannot be reached."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(lua(*_BUCKET_SCRIPTS))

    def take(self, tenant: str, cost: int, rate: float, burst: int) -> Verdict:
        try:
            allowed, wait = self._script(keys=[rate_bucket_key(tenant)], args=[rate, burst, cost])
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            log.warning("rate limiter unavailable: allowing")
            return Verdict(True)
        return Verdict(bool(int(allowed)), float(wait))


class MemoryRateLimiter(RateLimiter):
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, tenant: str, cost: int, rate: float, burst: int) -> Verdict:
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(tenant, (float(burst), now))
            tokens = min(float(burst), tokens + max(0.0, now - at) * rate)
            if tokens >= cost:
                self._buckets[tenant] = (tokens - cost, now)
                return Verdict(True)
            self._buckets[tenant] = (tokens, now)
            return Verdict(False, (cost - tokens) / rate)


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


# --- failed attempts (the token endpoint) ------------------------------------------------------
#
# One bucket per key of ``per_minute`` attempts, refilled continuously (``per_minute`` / 60 per
# second). ``attempt`` takes one from every bucket of a request, or from none when one of them
# is empty; ``forgive`` gives it back when the attempt turned out not to be a failure. Counting
# before the check (and forgiving afterwards) keeps concurrent failures from overshooting.


@dataclass(frozen=True)
class Allowance:
    """``per_minute`` failed attempts for ``key`` (a bucket of that size)."""

    key: str
    per_minute: int


class AttemptLimiter(abc.ABC):
    @abc.abstractmethod
    def attempt(self, allowances: list[Allowance]) -> Verdict:
        """Take one from each allowance's bucket, or none (refused, with the wait) if any is
        empty."""

    @abc.abstractmethod
    def forgive(self, allowances: list[Allowance]) -> None:
        """Give back what ``attempt`` took (the attempt was not a failure)."""




class MemoryAttemptLimiter(AttemptLimiter):
    """In-process buckets: the embedded default's, and the fallback while Redis is away."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _move(self, allowances: list[Allowance], sign: int) -> Verdict:
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) > 100_000:  # only full buckets are dropped: same as unknown
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
            levels = []
            wait = 0.0
            for a in allowances:
                tokens, at = self._buckets.get(a.key, (float(a.per_minute), now))
                tokens = min(float(a.per_minute), tokens + (now - at) * a.per_minute / 60)
                levels.append(tokens)
                if sign > 0 and tokens < 1:
                    wait = max(wait, (1 - tokens) * 60 / a.per_minute)
            if wait > 0:
                return Verdict(False, wait)
            for a, tokens in zip(allowances, levels, strict=True):
                self._buckets[a.key] = (min(float(a.per_minute), tokens - sign), now)
            return Verdict(True)

    def attempt(self, allowances: list[Allowance]) -> Verdict:
        return self._move(allowances, 1) if allowances else Verdict(True)

    def forgive(self, allowances: list[Allowance]) -> None:
        if allowances:
            self._move(allowances, -1)


class RedisAttemptLimiter(AttemptLimiter):
    """Buckets in Redis, shared by every web process; while Redis cannot be reached the process
    counts on its own (in memory) rather than not at all."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(lua("attempts.lua"))
        self._fallback = MemoryAttemptLimiter()

    def _call(self, allowances: list[Allowance], sign: int) -> Verdict:
        try:
            allowed, wait = self._script(keys=[a.key for a in allowances],
                                         args=[sign, *(a.per_minute for a in allowances)])
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            log.warning("attempt limiter: Redis unavailable, counting in this process")
            if sign > 0:
                return self._fallback.attempt(allowances)
            self._fallback.forgive(allowances)
            return Verdict(True)
        return Verdict(bool(int(allowed)), float(wait))

    def attempt(self, allowances: list[Allowance]) -> Verdict:
        return self._call(allowances, 1) if allowances else Verdict(True)

    def forgive(self, allowances: list[Allowance]) -> None:
        if allowances:
            self._call(allowances, -1)
