"""Quarantined events: accepted events the database refused for a data reason.

The persist pool puts such an event here, in the same transaction that stores the other events
of its message (workers/persist.py), so an accepted event is always either stored or here.
A re-drive (``eventcollector quarantine retry``) goes through the persist path again: a stored
event leaves the quarantine, one refused again stays with the new reason and one more retry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from events.contract import QuarantineDetails, QuarantinedEventOut
from events.models import EventRecord, QuarantinedEvent
from infra.limits import ERROR_TEXT_MAX


def describe(exc: BaseException) -> tuple[str, str]:
    """(error class, reason) for why the database refused a row: the driver's primary message,
    its SQLSTATE and the column or constraint it names; never the row's values (PostgreSQL's
    DETAIL line and SQLAlchemy's statement text carry them)."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    name = type(orig).__name__
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or (str(orig).splitlines() or [""])[0] or name
    parts = [text]
    state = getattr(orig, "sqlstate", None)
    if state:
        parts.append(f"SQLSTATE {state}")
    for label in ("column_name", "constraint_name"):
        value = getattr(diag, label, None) if diag is not None else None
        if value:
            parts.append(f"{label.split('_')[0]} {value}")
    return name[:128], "; ".join(parts)[:ERROR_TEXT_MAX]


def _encode(document: dict[str, Any]) -> str:
    # ASCII JSON: escapes make any accepted text (and anything a bug let through) storable.
    return json.dumps(document, ensure_ascii=True)


def quarantine(session: Session, tenant: str, document: dict[str, Any], exc: BaseException,
               *, retried: bool, now: datetime | None = None) -> None:
    """Keep ``document`` with why ``exc`` refused it (does not commit). Quarantined again, it
    keeps its first ``quarantined_at`` and takes the new reason; a re-drive counts a retry."""
    now = now or datetime.now(UTC)
    error_class, reason = describe(exc)
    values = {"tenant": tenant, "event_id": str(document["id"]), "document": _encode(document),
              "reason": reason, "error_class": error_class, "quarantined_at": now,
              "retries": 1 if retried else 0, "last_retry_at": now if retried else None}
    dialect = session.get_bind().dialect.name
    ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(QuarantinedEvent).values(
        **values)
    changes: dict[str, Any] = {"reason": reason, "error_class": error_class}
    if retried:
        changes["retries"] = QuarantinedEvent.retries + 1
        changes["last_retry_at"] = now
    session.execute(ins.on_conflict_do_update(index_elements=["tenant", "event_id"],
                                              set_=changes))


def release(session: Session, tenant: str, event_ids: list[str]) -> int:
    """Forget the quarantine of events now stored (does not commit)."""
    if not event_ids:
        return 0
    result = session.execute(delete(QuarantinedEvent).where(
        QuarantinedEvent.tenant == tenant, QuarantinedEvent.event_id.in_(event_ids)))
    return int(getattr(result, "rowcount", 0) or 0)


def _not_stored() -> Any:
    # A quarantined event stored since (its client posted it again once the cause was fixed)
    # is no longer quarantined: the events table wins.
    return ~exists().where(EventRecord.tenant == QuarantinedEvent.tenant,
                           EventRecord.event_id == QuarantinedEvent.event_id)


def get_quarantined(session: Session, tenant: str, event_id: str) -> QuarantinedEvent | None:
    return session.execute(select(QuarantinedEvent).where(
        QuarantinedEvent.tenant == tenant, QuarantinedEvent.event_id == event_id,
        _not_stored())).scalar_one_or_none()


@dataclass(frozen=True)
class QuarantinePage:
    rows: list[QuarantinedEvent]
    total: int
    next_from_id: int | None


def list_quarantined(session: Session, *, tenant: str | None, event_ids: list[str] | None = None,
                     from_id: int | None = None, per_page: int = 100) -> QuarantinePage:
    """Quarantined events in the order they were quarantined; ``tenant`` None = every tenant
    (operators only)."""
    conditions = [_not_stored()]
    if tenant is not None:
        conditions.append(QuarantinedEvent.tenant == tenant)
    if event_ids:
        conditions.append(QuarantinedEvent.event_id.in_(event_ids))
    total = int(session.execute(select(func.count()).select_from(QuarantinedEvent)
                                .where(*conditions)).scalar_one())
    if from_id is not None:
        conditions.append(QuarantinedEvent.id >= from_id)
    rows = list(session.execute(select(QuarantinedEvent).where(*conditions)
                                .order_by(QuarantinedEvent.id).limit(per_page + 1)).scalars())
    next_id = rows[per_page].id if len(rows) > per_page else None
    return QuarantinePage(rows[:per_page], total, next_id)


def purge(session: Session, *, tenant: str | None, event_ids: list[str] | None = None) -> int:
    """Delete quarantined events for good (all, a tenant's, or the given ids)."""
    stmt = delete(QuarantinedEvent)
    if tenant is not None:
        stmt = stmt.where(QuarantinedEvent.tenant == tenant)
    if event_ids:
        stmt = stmt.where(QuarantinedEvent.event_id.in_(event_ids))
    return int(getattr(session.execute(stmt), "rowcount", 0) or 0)


def document_of(row: QuarantinedEvent) -> dict[str, Any]:
    """The event document as it was accepted."""
    document: dict[str, Any] = json.loads(row.document)
    return document


def details(row: QuarantinedEvent) -> dict[str, Any]:
    """Why and since when the event is quarantined (the ``quarantine`` object of the API)."""
    return QuarantineDetails.from_row(row).model_dump(mode="json")


def to_api(row: QuarantinedEvent) -> QuarantinedEventOut:
    """A quarantined event as GET /api/v1/events/{id} and GET /api/v1/quarantine show it: the
    accepted document, ``"status": "quarantined"`` and the ``quarantine`` details."""
    return QuarantinedEventOut.model_validate(
        {**document_of(row), "status": "quarantined",
         "quarantine": QuarantineDetails.from_row(row)})
