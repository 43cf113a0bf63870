"""Event persistence: idempotent batch inserts, lookups, and filtered cursor pagination."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, Boolean, DateTime, Integer, TypeDecorator, func, select, text, tuple_
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from events.contract import EventOut, body_hash, event_columns
from events.models import EventRecord
from infra.timefmt import parse_time

log = logging.getLogger(__name__)

# Any constant will do: every persist transaction takes this lock so that sequence numbers
# become visible in the order they were assigned (a reader paging by seq never skips one).
_SEQ_LOCK_KEY = 0x45564331


def _row_values(tenant: str, doc: dict[str, Any], now: datetime) -> dict[str, Any]:
    columns = event_columns(doc)
    attributes = columns["key_attributes"]
    return {
        "tenant": tenant,
        **columns,
        "correlation_id": (attributes.get("correlationId") or attributes.get("correlation_id")),
        "body_hash": body_hash(doc),
        "received_at": parse_time(doc["received_at"]),
        "stored_at": now,
    }


# All rows travel as one JSON parameter that PostgreSQL expands with json_to_recordset: the
# statement text is the same whatever the batch size (the multi-row VALUES form had thousands of
# placeholders that the driver re-parsed on every execute: two thirds of the persist pool's CPU),
# and orjson encodes a whole batch in one C call (one text array per column spent half the pool's
# CPU in psycopg's Python array dumper; see bench/NOTES.md).
# Every column but the two numbers the database assigns, in table order, with its type there.
def _sql_type(column: Any) -> str:
    """The PostgreSQL type json_to_recordset reads a column's value as (a TypeDecorator such as
    infra.db.UtcDateTime by the type it stores as)."""
    stored = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
    return ("jsonb" if isinstance(stored, JSON) else
            "timestamptz" if isinstance(stored, DateTime) else
            "boolean" if isinstance(stored, Boolean) else
            "bigint" if isinstance(stored, Integer) else "text")


_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (c.name, _sql_type(c))
    for c in EventRecord.__table__.columns if c.name not in ("seq", "tenant_seq"))
_NAMES = ", ".join(c for c, _ in _COLUMNS)
# tenant_seq: the tenant's highest number so far (a unique index lookup) plus the row's position
# in the batch. Every inserting transaction holds the sequence lock (lock_sequence), so the max
# cannot move under it. An id already stored (a redelivered message) leaves its number unused: a
# gap in the tenant's own numbers, which tells it nothing about anyone else. (Leaving such ids
# out first with NOT EXISTS made the statement 1.3 times slower per 1,000 rows.)
_RECORDSET_INSERT = text(
    f"INSERT INTO events ({_NAMES}, tenant_seq) SELECT {_NAMES}, "
    "(SELECT COALESCE(MAX(e.tenant_seq), :base) FROM events e WHERE e.tenant = :tenant) "
    "+ row_number() OVER (ORDER BY r.ord) "
    f"FROM ROWS FROM (json_to_recordset(CAST(:rows AS json)) "
    f"AS ({', '.join(f'{c} {t}' for c, t in _COLUMNS)})) "
    f"WITH ORDINALITY AS r({_NAMES}, ord) "
    "ON CONFLICT (tenant, event_id) DO NOTHING RETURNING event_id"
)

# The ids a tenant sees (Open Loyalty ``id``/``fromId``, ``next_from_id``) are its own sequence
# numbers, from TENANT_SEQ_BASE + 1: they reveal nothing of other tenants' volume. Numbers below
# the base are the global ``seq`` shown before migration 0009 (always below it), still read as
# such. Within a tenant ``tenant_seq`` grows with ``seq``, so pages are still read in ``seq``
# order and a cursor is translated to a ``seq`` bound.
TENANT_SEQ_BASE = 10**12


# Rows per statement: bounds the JSON text (and its copies in the driver) a big group holds.
_ROWS_PER_STATEMENT = 1000


def _insert_recordset(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    inserted: set[str] = set()
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        # orjson writes datetimes as RFC 3339, which timestamptz reads back exactly.
        payload = orjson.dumps(rows[start:start + _ROWS_PER_STATEMENT]).decode()
        inserted.update(r[0] for r in session.execute(
            _RECORDSET_INSERT, {"rows": payload, "tenant": rows[0]["tenant"],
                                "base": TENANT_SEQ_BASE}))
    return inserted


def _insert_sqlite(session: Session, tenant: str, rows: list[dict[str, Any]]) -> set[str]:
    """SQLite: number the rows not stored yet after the tenant's highest. One writer at a time
    (BEGIN IMMEDIATE; a deferred transaction whose snapshot is stale cannot write at all)."""
    stored = set(session.execute(select(EventRecord.event_id).where(
        EventRecord.tenant == tenant,
        EventRecord.event_id.in_([r["event_id"] for r in rows]))).scalars())
    new = [r for r in rows if r["event_id"] not in stored]
    if not new:
        return set()
    top = session.execute(select(func.max(EventRecord.tenant_seq))
                          .where(EventRecord.tenant == tenant)).scalar()
    start = top if top is not None else TENANT_SEQ_BASE
    numbered = [{**r, "tenant_seq": start + i} for i, r in enumerate(new, 1)]
    stmt = sqlite_insert(EventRecord).on_conflict_do_nothing(index_elements=["tenant", "event_id"])
    return {r[0] for r in session.execute(stmt.returning(EventRecord.event_id), numbered)}


def lock_sequence(session: Session) -> None:
    """Hold the sequence lock until the transaction ends (PostgreSQL; SQLite has one writer).

    save_events takes it too; a unit of work that inserts inside SAVEPOINTs takes it first,
    outside them, since rolling back to a savepoint releases a lock taken after it."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SEQ_LOCK_KEY})


def save_events(session: Session, tenant: str, documents: list[dict[str, Any]]) -> list[str]:
    """Store events idempotently (the caller commits); return the ids that were new.

    A redelivered message inserts nothing twice: rows are keyed by (tenant, event id). An id
    already stored with a different body keeps the first body and is logged as a conflict.
    """
    if not documents:
        return []
    now = datetime.now(UTC)
    # One row per id even if a batch repeats one.
    unique: dict[str, dict[str, Any]] = {}
    for doc in documents:
        unique.setdefault(doc["id"], doc)
    rows = [_row_values(tenant, doc, now) for doc in unique.values()]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SEQ_LOCK_KEY})
        inserted = _insert_recordset(session, rows)
    else:  # the caller's writer unit of work began IMMEDIATE
        inserted = _insert_sqlite(session, tenant, rows)
    skipped = [r for r in rows if r["event_id"] not in inserted]
    if skipped:
        existing = dict(
            session.execute(
                select(EventRecord.event_id, EventRecord.body_hash).where(
                    EventRecord.tenant == tenant,
                    EventRecord.event_id.in_([r["event_id"] for r in skipped]),
                )
            ).all()
        )
        for r in skipped:
            if existing.get(r["event_id"]) not in (None, r["body_hash"]):
                log.warning(
                    "event id conflict: kept the first body",
                    extra={"tenant": tenant, "event_id": r["event_id"]},
                )
    return [r["event_id"] for r in rows if r["event_id"] in inserted]


def to_document(row: EventRecord) -> dict[str, Any]:
    """The stored event in the v1 API shape (the same document the intake cached)."""
    return EventOut.from_row(row).model_dump(mode="json")


def stored_versions(
    session: Session, tenant: str, event_ids: list[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """For ids already stored: their body hash and document."""
    if not event_ids:
        return {}
    rows = session.execute(
        select(EventRecord).where(EventRecord.tenant == tenant, EventRecord.event_id.in_(event_ids))
    ).scalars()
    return {r.event_id: (r.body_hash, to_document(r)) for r in rows}


def get_event(session: Session, tenant: str, event_id: str) -> EventRecord | None:
    return session.execute(
        select(EventRecord).where(EventRecord.tenant == tenant, EventRecord.event_id == event_id)
    ).scalar_one_or_none()


def get_events(session: Session, tenant: str, event_ids: list[str]) -> dict[str, EventRecord]:
    rows = session.execute(select(EventRecord).where(
        EventRecord.tenant == tenant, EventRecord.event_id.in_(set(event_ids)))).scalars()
    return {r.event_id: r for r in rows}


def get_event_by_seq(session: Session, tenant: str, seq: int) -> EventRecord | None:
    return session.execute(
        select(EventRecord).where(EventRecord.tenant == tenant, EventRecord.seq == seq)
    ).scalar_one_or_none()


def get_event_by_number(session: Session, tenant: str, number: int) -> EventRecord | None:
    """The tenant's event shown as ``number``: its own sequence number, or (below
    TENANT_SEQ_BASE) the global number shown before migration 0009."""
    if number < TENANT_SEQ_BASE:
        return get_event_by_seq(session, tenant, number)
    return session.execute(select(EventRecord).where(
        EventRecord.tenant == tenant, EventRecord.tenant_seq == number)).scalar_one_or_none()


def _seq_bound(session: Session, tenant: str, number: int, descending: bool) -> list[Any]:
    """Conditions for "from ``number`` on" (ASC: numbers >= it; DESC: <= it) in ``seq`` terms.

    A legacy number (below TENANT_SEQ_BASE) was a global ``seq``: compared as it is. A tenant
    number becomes the ``seq`` of the first (ASC) / last (DESC) event at or past it (the same
    rows: ``tenant_seq`` grows with ``seq``); past the end, it stays a ``tenant_seq`` condition
    (events stored later)."""
    if number < TENANT_SEQ_BASE:
        return [EventRecord.seq <= number if descending else EventRecord.seq >= number]
    if descending:
        edge = session.execute(select(EventRecord.seq).where(
            EventRecord.tenant == tenant, EventRecord.tenant_seq <= number)
            .order_by(EventRecord.tenant_seq.desc()).limit(1)).scalar()
        return [EventRecord.seq <= edge] if edge is not None else [EventRecord.tenant_seq <= number]
    edge = session.execute(select(EventRecord.seq).where(
        EventRecord.tenant == tenant, EventRecord.tenant_seq >= number)
        .order_by(EventRecord.tenant_seq).limit(1)).scalar()
    return [EventRecord.seq >= edge] if edge is not None else [EventRecord.tenant_seq >= number]


SORTABLE = ("id", "received_at")


@dataclass(frozen=True)
class EventQuery:
    """Filters and a cursor for listing one tenant's events.

    Attributes:
        from_seq: first number to return (inclusive), in ``direction``'s order: a tenant
            sequence number (``tenant_seq``) or a legacy global one (get_event_by_number).
        sort: ``id`` (sequence order, stable while events arrive), ``received_at`` or ``type``
            (the type name: event type, entity name, operation; then sequence).
    """

    from_seq: int | None = None
    per_page: int = 10
    sort: str = "id"
    descending: bool = False
    event_type: str | None = None
    event_source: str | None = None
    entity_name: str | None = None
    entity_id: str | None = None
    operation: str | None = None
    correlation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class EventPage:
    rows: list[EventRecord]
    total: int
    next_from_seq: int | None


def list_events(session: Session, tenant: str, q: EventQuery) -> EventPage:
    """One page of a tenant's events; ``total`` counts every event matching the filters."""
    conditions = [EventRecord.tenant == tenant]
    for column, value in (
        (EventRecord.event_type, q.event_type),
        (EventRecord.event_source, q.event_source),
        (EventRecord.entity_name, q.entity_name),
        (EventRecord.entity_id, q.entity_id),
        (EventRecord.operation, q.operation),
        (EventRecord.correlation_id, q.correlation_id),
    ):
        if value is not None:
            conditions.append(column == value)
    if q.since is not None:
        conditions.append(EventRecord.received_at >= q.since)
    if q.until is not None:
        conditions.append(EventRecord.received_at < q.until)

    total = session.execute(select(func.count()).where(*conditions)).scalar_one()

    page_conditions = list(conditions)
    if q.sort == "received_at":
        order: tuple[Any, ...] = (EventRecord.received_at, EventRecord.seq)
        if q.from_seq is not None:
            anchor = get_event_by_number(session, tenant, q.from_seq)
            if anchor is not None:
                key: tuple[Any, ...] = (anchor.received_at, anchor.seq)
                cmp = tuple_(EventRecord.received_at, EventRecord.seq)
                page_conditions.append(cmp <= key if q.descending else cmp >= key)
    elif q.sort == "type":
        # The type name ENTITY_EVENT.ORDER.CREATE sorts as its parts do ('.' sorts before '_').
        order = (EventRecord.event_type, func.coalesce(EventRecord.entity_name, ""),
                 func.coalesce(EventRecord.operation, ""), EventRecord.seq)
        if q.from_seq is not None:
            anchor = get_event_by_number(session, tenant, q.from_seq)
            if anchor is not None:
                key = (anchor.event_type, anchor.entity_name or "", anchor.operation or "",
                       anchor.seq)
                cmp = tuple_(*order)
                page_conditions.append(cmp <= key if q.descending else cmp >= key)
    else:
        order = (EventRecord.seq,)
        if q.from_seq is not None:
            page_conditions.extend(_seq_bound(session, tenant, q.from_seq, q.descending))
    ordering = [c.desc() if q.descending else c.asc() for c in order]
    rows = list(
        session.execute(
            select(EventRecord).where(*page_conditions).order_by(*ordering).limit(q.per_page + 1)
        ).scalars()
    )
    if len(rows) > q.per_page:
        next_from: int | None = rows[q.per_page].tenant_seq
    elif rows and q.sort == "id" and not q.descending:
        # The last page so far: events stored later get higher numbers, so a client can come
        # back with this cursor and miss nothing; an empty page answers None.
        next_from = rows[-1].tenant_seq + 1
    else:
        next_from = None
    return EventPage(rows=rows[: q.per_page], total=total, next_from_seq=next_from)
