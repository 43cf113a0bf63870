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


def bucket_key(tenant: str) -> str:
    return f"ec:rate:{tenant}"


class RateLimiter(abc.ABC):
    @abc.abstractmethod
    def take(self, tenant: str, cost: int, rate: float, burst: int) -> Verdict:
        """Take ``cost`` tokens from the tenant's bucket (``rate`` per second, ``burst`` max)."""


# The token bucket as a Lua function, also called from the intake's script (one round trip per
# ingest request). Server time, so web hosts' clocks do not matter. Returns allowed (0/1), wait.
BUCKET_LUA_FUNCTION = """
local function take_tokens(key, rate, burst, cost)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local state = redis.call('HMGET', key, 'tokens', 'at')
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
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', key, math.ceil(burst / rate) + 10)
  return allowed, wait
end
"""

# KEYS: bucket.  ARGV: rate, burst, cost.
_BUCKET_LUA = BUCKET_LUA_FUNCTION + """
local allowed, wait = take_tokens(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
                                  tonumber(ARGV[3]))
return {allowed, tostring(wait)}
"""


class RedisRateLimiter(RateLimiter):
    """Token bucket in Redis; fails open (and logs) when Redis cannot be reached."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(_BUCKET_LUA)

    def take(self, tenant: str, cost: int, rate: float, burst: int) -> Verdict:
        try:
            allowed, wait = self._script(keys=[bucket_key(tenant)], args=[rate, burst, cost])
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
