"""Queue and actor names shared by the processes that enqueue and the pools that consume, and
the layout of every Redis key the product writes.

The product's own keys start with ``ec:`` and are built here. The Dramatiq broker's keys
(``<BROKER_NAMESPACE>:<queue>``, ``.msgs``, ``.DQ``, ``.XQ``, acks and heartbeats) follow
Dramatiq's layout and are built by infra/broker/dramatiq_compat.py.

- ``ec:intake:<tenant>:<event id>``: an accepted event, ``<body sha256 hex>|<document json>``,
  for the intake's idempotency window (infra/broker/intakes/redis.py).
- ``ec:rate:<tenant>``: the tenant's ingest token bucket, hash ``tokens``/``at``
  (infra/broker/ratelimit.py).
- ``ec:authfail:<client|source>:<sha256 of the value, 32 hex>``: a bucket of failed token
  endpoint attempts per client id or source address (api/token_guard.py).
"""

from __future__ import annotations

import hashlib

PERSIST_QUEUE = "persist"
PERSIST_ACTOR = "persist_events"
DELIVER_QUEUE = "deliveries"
DELIVER_ACTOR = "deliver"
NOTIFY_QUEUE = "notifications"
NOTIFY_ACTOR = "send_notifications"

# The Dramatiq broker's key namespace (config/runtime.py gives it to the RedisBroker).
BROKER_NAMESPACE = "dramatiq"


def intake_key_prefix(tenant: str) -> str:
    """The prefix of ``tenant``'s accepted-event keys (the intake's Lua appends the id)."""
    return f"ec:intake:{tenant}:"


def intake_key(tenant: str, event_id: str) -> str:
    return intake_key_prefix(tenant) + event_id


def rate_bucket_key(tenant: str) -> str:
    return f"ec:rate:{tenant}"


def auth_failure_key(kind: str, value: str) -> str:
    """The failed-attempt bucket of a client id (``kind`` "client") or a source address
    ("source"); the value is hashed, so neither appears in Redis."""
    return f"ec:authfail:{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"
