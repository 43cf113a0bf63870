"""Redis intake: one Lua call charges the tenant's rate limit, claims each event id and enqueues
one Dramatiq message.

The message is written exactly as ``dramatiq.brokers.redis.RedisBroker.enqueue`` writes it (the
message hash ``<ns>:<queue>.msgs`` plus the id pushed on ``<ns>:<queue>``), so the standard
Dramatiq worker consumes it; ``tests/integration/test_pipeline.py`` proves that against a real
worker so a Dramatiq upgrade that changes the layout fails loudly.
"""

from __future__ import annotations

import uuid
from typing import Any

import dramatiq
import orjson
import redis

from infra.broker.intake import Intake, IntakeResult, IntakeUnavailable, Outcome, Pending
from infra.broker.queues import PERSIST_ACTOR, PERSIST_QUEUE
from infra.broker.ratelimit import BUCKET_LUA_FUNCTION, Charge, RateLimited, bucket_key

_PLACEHOLDER = "__EC_EVENTS__"

# KEYS: queue list, queue message hash, the tenant's rate-limit bucket.
# ARGV: ttl, key prefix, redis message id, message prefix, message suffix, rate (0: no charge),
#       burst, cost, then per event (id, hash, document json).
# Returns per event {code, document}: 0 new, 1 same, 2 conflict; or {{-1, wait}} when the bucket
# cannot pay (nothing accepted).
_ACCEPT_LUA = BUCKET_LUA_FUNCTION + """
local ttl = tonumber(ARGV[1])
local prefix = ARGV[2]
local rate = tonumber(ARGV[6])
if rate > 0 then
  local allowed, wait = take_tokens(KEYS[3], rate, tonumber(ARGV[7]), tonumber(ARGV[8]))
  if allowed == 0 then
    return {{-1, tostring(wait)}}
  end
end
local results = {}
local accepted = {}
local n = (#ARGV - 8) / 3
for i = 0, n - 1 do
  local id = ARGV[9 + 3 * i]
  local h = ARGV[10 + 3 * i]
  local doc = ARGV[11 + 3 * i]
  local key = prefix .. id
  local existing = redis.call("GET", key)
  if existing then
    local code = 2
    if string.sub(existing, 1, 64) == h then code = 1 end
    results[i + 1] = {code, string.sub(existing, 66)}
  else
    redis.call("SET", key, h .. "|" .. doc, "EX", ttl)
    accepted[#accepted + 1] = doc
    results[i + 1] = {0, ""}
  end
end
if #accepted > 0 then
  redis.call("HSET", KEYS[2], ARGV[3], ARGV[4] .. "[" .. table.concat(accepted, ",") .. "]" .. ARGV[5])
  redis.call("RPUSH", KEYS[1], ARGV[3])
end
return results
"""

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError)


class RedisIntake(Intake):
    """Intake on the Redis that backs the Dramatiq broker.

    Attributes:
        client: a redis-py client (its pool is shared by the process's threads).
        ttl_seconds: how long an accepted id is remembered in Redis (idempotency window and
            read-your-writes); older ids are still deduplicated by the persist pool.
        namespace: the Dramatiq broker's key namespace.
    """

    def __init__(
        self, client: redis.Redis, ttl_seconds: int, *, namespace: str = "dramatiq"
    ) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.namespace = namespace
        self._script = client.register_script(_ACCEPT_LUA)
        self._queue_key = f"{namespace}:{PERSIST_QUEUE}"
        self._msgs_key = f"{namespace}:{PERSIST_QUEUE}.msgs"

    def _key_prefix(self, tenant: str) -> str:
        return f"ec:intake:{tenant}:"

    def _envelope(self, tenant: str, redis_message_id: str) -> tuple[bytes, bytes]:
        message = dramatiq.Message(
            queue_name=PERSIST_QUEUE,
            actor_name=PERSIST_ACTOR,
            args=(tenant, _PLACEHOLDER),
            kwargs={},
            options={"redis_message_id": redis_message_id},
        )
        encoded = message.encode()
        marker = orjson.dumps(_PLACEHOLDER)
        head, sep, tail = encoded.partition(marker)
        if not sep:  # pragma: no cover - only if Dramatiq's encoder stops producing JSON
            raise RuntimeError("cannot build the persist message envelope")
        return head, tail

    def accept(self, tenant: str, items: list[Pending],
               charge: Charge | None = None) -> list[IntakeResult]:
        if not items and charge is None:
            return []
        redis_message_id = str(uuid.uuid4())
        head, tail = self._envelope(tenant, redis_message_id)
        argv: list[Any] = [self.ttl_seconds, self._key_prefix(tenant), redis_message_id, head, tail]
        argv.extend((charge.rate, charge.burst, charge.cost) if charge is not None else (0, 0, 0))
        for item in items:
            argv.extend((item.document["id"], item.body_hash, orjson.dumps(item.document)))
        try:
            raw = self._script(keys=[self._queue_key, self._msgs_key, bucket_key(tenant)],
                               args=argv)
        except _REDIS_DOWN as exc:
            raise IntakeUnavailable(f"broker unavailable: {type(exc).__name__}") from None
        if charge is not None and raw and int(raw[0][0]) == -1:
            raise RateLimited(charge, float(raw[0][1]))
        results = []
        for item, (code, existing) in zip(items, raw, strict=True):
            if code == 0:
                results.append(IntakeResult(Outcome.ACCEPTED, item.document))
            else:
                outcome = Outcome.DUPLICATE if code == 1 else Outcome.CONFLICT
                results.append(IntakeResult(outcome, orjson.loads(existing)))
        return results

    def lookup(self, tenant: str, event_id: str) -> dict[str, Any] | None:
        try:
            raw = self.client.get(self._key_prefix(tenant) + event_id)
        except _REDIS_DOWN:
            return None
        if raw is None:
            return None
        return orjson.loads(raw[65:])

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except _REDIS_DOWN:
            return False
