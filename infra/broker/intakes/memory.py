"""In-process intake for the embedded default and unit tests: a dict plus ``broker.enqueue``."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq

from infra.broker.intake import Intake, IntakeResult, IntakeUnavailable, Outcome, Pending
from infra.broker.queues import PERSIST_ACTOR, PERSIST_QUEUE
from infra.broker.ratelimit import Charge, RateLimited, RateLimiter


class MemoryIntake(Intake):
    """Remembers accepted ids in memory and enqueues on an in-process Dramatiq broker.

    Attributes:
        broker: usually a ``StubBroker`` consumed by a worker thread in the same process.
        ttl_seconds: how long an accepted id is remembered.
        limiter: the process's rate limiter, charged by ``accept`` (None: no limit).
    """

    def __init__(self, broker: dramatiq.Broker, ttl_seconds: int,
                 limiter: RateLimiter | None = None) -> None:
        self.broker = broker
        self.ttl_seconds = ttl_seconds
        self.limiter = limiter
        self._seen: dict[tuple[str, str], tuple[float, str, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        broker.declare_queue(PERSIST_QUEUE)

    def _expire(self, now: float) -> None:
        if len(self._seen) > 10_000:
            for key in [k for k, v in self._seen.items() if v[0] < now]:
                del self._seen[key]

    def accept(self, tenant: str, items: list[Pending],
               charge: Charge | None = None) -> list[IntakeResult]:
        if charge is not None and self.limiter is not None:
            verdict = self.limiter.take(tenant, charge.cost, charge.rate, charge.burst)
            if not verdict.allowed:
                raise RateLimited(charge, verdict.retry_after)
        now = time.monotonic()
        results: list[IntakeResult] = []
        accepted: list[dict[str, Any]] = []
        with self._lock:
            self._expire(now)
            for item in items:
                key = (tenant, item.document["id"])
                seen = self._seen.get(key)
                if seen is not None and seen[0] >= now:
                    same = seen[1] == item.body_hash
                    outcome = Outcome.DUPLICATE if same else Outcome.CONFLICT
                    results.append(IntakeResult(outcome, seen[2]))
                    continue
                self._seen[key] = (now + self.ttl_seconds, item.body_hash, item.document)
                accepted.append(item.document)
                results.append(IntakeResult(Outcome.ACCEPTED, item.document))
            if accepted:
                try:
                    self.broker.enqueue(
                        dramatiq.Message(
                            queue_name=PERSIST_QUEUE,
                            actor_name=PERSIST_ACTOR,
                            args=(tenant, accepted),
                            kwargs={},
                            options={},
                        )
                    )
                except Exception as exc:
                    for doc in accepted:
                        self._seen.pop((tenant, doc["id"]), None)
                    raise IntakeUnavailable(f"broker unavailable: {type(exc).__name__}") from exc
        return results

    def lookup(self, tenant: str, event_id: str) -> dict[str, Any] | None:
        seen = self._seen.get((tenant, event_id))
        if seen is None or seen[0] < time.monotonic():
            return None
        return seen[2]

    def ping(self) -> bool:
        return True
