"""Redis intake: one Lua call charges the tenant's rate limit, claims each event id and enqueues
one Dramatiq message.

The message is written exactly as ``dramatiq.brokers.redis.RedisBroker.enqueue`` writes it (the
message hash ``<ns>:<queue>.msgs`` plus the id pushed on ``<ns>:<queue>``: the layout in
infra/broker/dramatiq_compat.py), so the standard Dramatiq worker consumes it;
tests/unit/test_dramatiq_compat.py checks that layout against the installed Dramatiq and
``tests/integration/test_pipeline.py`` proves it against a real worker. The script is
lua/take_tokens.lua followed by lua/intake_accept.lua.
"""

from __future__ import annotations

import uuid
from typing import Any

import dramatiq
import orjson
import redis

from infra.broker.dramatiq_compat import enqueue_options, messages_key, queue_key
from infra.broker.intake import Intake, IntakeResult, IntakeUnavailable, Outcome, Pending
from infra.broker.queues import (
    BROKER_NAMESPACE,
    PERSIST_ACTOR,
    PERSIST_QUEUE,
    intake_key,
    intake_key_prefix,
    rate_bucket_key,
)
from infra.broker.ratelimit import Charge, RateLimited
from infra.broker.scripts import lua

_PLACEHOLDER = "__EC_EVENTS__"

_ACCEPT_SCRIPTS = ("take_tokens.lua", "intake_accept.lua")

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
        self, client: redis.Redis, ttl_seconds: int, *, namespace: str = BROKER_NAMESPACE
    ) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.namespace = namespace
        self._script = client.register_script(lua(*_ACCEPT_SCRIPTS))
        self._queue_key = queue_key(namespace, PERSIST_QUEUE)
        self._msgs_key = messages_key(namespace, PERSIST_QUEUE)

    def _envelope(self, tenant: str, redis_message_id: str) -> tuple[bytes, bytes]:
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=PERSIST_QUEUE,
            actor_name=PERSIST_ACTOR,
            args=(tenant, _PLACEHOLDER),
            kwargs={},
            options=enqueue_options(redis_message_id),
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
        argv: list[Any] = [self.ttl_seconds, intake_key_prefix(tenant), redis_message_id, head, tail]
        argv.extend((charge.rate, charge.burst, charge.cost) if charge is not None else (0, 0, 0))
        for item in items:
            argv.extend((item.document["id"], item.body_hash, orjson.dumps(item.document)))
        try:
            raw = self._script(keys=[self._queue_key, self._msgs_key, rate_bucket_key(tenant)],
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
            raw = self.client.get(intake_key(tenant, event_id))
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
