"""Accepting events: assign ids and receive times, then one intake call for the lot."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.intake import Intake, IntakeResult, Pending
from store.domain import EventIn, body_hash, event_document, new_event_id


def prepare(event: EventIn, received_at: datetime) -> Pending:
    """The stored document for ``event`` (a new time-ordered id when it has none)."""
    document = event_document(event, event.id or new_event_id(), received_at)
    return Pending(document=document, body_hash=body_hash(document))


def accept_events(intake: Intake, tenant: str, events: list[EventIn]) -> list[IntakeResult]:
    """Accept ``events`` for ``tenant`` in one broker round trip; results are in input order.

    Raises IntakeUnavailable (nothing accepted) when the broker cannot be reached.
    """
    now = datetime.now(UTC)
    return intake.accept(tenant, [prepare(e, now) for e in events])
