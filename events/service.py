"""Accepting events: assign ids and receive times, settle retries, one intake call for the rest."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from events.contract import EventIn, body_hash, event_document, new_event_id
from infra.broker.intake import Intake, IntakeResult, Outcome, Pending
from infra.broker.ratelimit import Charge

log = logging.getLogger(__name__)

# ids → (body hash, stored document) for the ids that are already stored
StoredLookup = Callable[[list[str]], dict[str, tuple[str, dict[str, Any]]]]


def prepare(event: EventIn, received_at: datetime) -> Pending:
    """The stored document for ``event`` (a new time-ordered id when it has none)."""
    document = event_document(event, event.id or new_event_id(), received_at)
    return Pending(document=document, body_hash=body_hash(document))


def accept_events(
    intake: Intake, tenant: str, events: list[EventIn], *, stored: StoredLookup | None = None,
    charge: Charge | None = None,
) -> list[IntakeResult]:
    """Accept ``events`` for ``tenant``; results are in input order.

    Client-chosen ids already stored (older than the intake's memory) are answered from the
    store: same body → DUPLICATE, other body → CONFLICT. Everything else goes to the broker in
    one round trip, which also takes ``charge`` from the tenant's rate limit. Raises
    IntakeUnavailable (nothing accepted) when the broker is unreachable and RateLimited (nothing
    accepted) when the tenant's bucket cannot pay.
    """
    now = datetime.now(UTC)
    pending = [prepare(e, now) for e in events]
    known: dict[str, tuple[str, dict[str, Any]]] = {}
    client_ids = [p.document["id"] for p, e in zip(pending, events, strict=True) if e.id]
    if stored is not None and client_ids:
        known = stored(client_ids)
    results: list[IntakeResult | None] = [None] * len(pending)
    fresh: list[int] = []
    for i, item in enumerate(pending):
        seen = known.get(item.document["id"])
        if seen is None:
            fresh.append(i)
        else:
            outcome = Outcome.DUPLICATE if seen[0] == item.body_hash else Outcome.CONFLICT
            results[i] = IntakeResult(outcome, seen[1])
    if fresh or charge is not None:
        accepted = intake.accept(tenant, [pending[i] for i in fresh], charge)
        for i, result in zip(fresh, accepted, strict=True):
            results[i] = result
    return [r for r in results if r is not None]
