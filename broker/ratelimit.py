"""Per-tenant token buckets shared by every web process (Redis), or in memory (embedded)."""

from __future__ import annotations

import abc
import logging
import math
import threading
import time
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0  # seconds until the cost would fit


class RateLimiter(abc.ABC):
    @abc.abstractmethod
    def take(self, tenant: str, cost: int, rate: float, burst: int) -> Verdict:
        """Take ``cost`` tokens from the tenant's bucket (``rate`` per second, ``burst`` max)."""


# KEYS: bucket.  ARGV: rate, burst, cost.  Server time, so web hosts' clocks do not matter.
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 10)
return {allowed, tostring(wait)}
"""


class RedisRateLimiter(RateLimiter):
    """Token bucket in Redis; fails open (and logs) when Redis cannot be reached."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(_BUCKET_LUA)

    def take(self, tenant: str, cost: int, rate: float, burst: int) -> Verdict:
        try:
            allowed, wait = self._script(keys=[f"ec:rate:{tenant}"], args=[rate, burst, cost])
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
