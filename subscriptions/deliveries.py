"""Deliveries and their attempt log: locking a delivery, recording attempts, listing, replay."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from events.models import EventRecord
from subscriptions.contract import AttemptOut
from subscriptions.matching import MatchRule, SubscriptionIndex
from subscriptions.models import Delivery, DeliveryAttempt, DeliveryStatus, Subscription


def lock_deliveries(session: Session, delivery_ids: list[int]) -> list[Delivery]:
    """The delivery rows, locked in id order for this transaction on PostgreSQL."""
    stmt = select(Delivery).where(Delivery.id.in_(delivery_ids)).order_by(Delivery.id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return list(session.execute(stmt).scalars())


def overdue_deliveries(session: Session, now: datetime, older_than: float,
                       limit: int = 5000) -> list[int]:
    """Pending deliveries that should have been attempted ``older_than`` seconds ago: never
    attempted since their creation, or past their next attempt (the message that should have
    carried them was lost, e.g. an enqueue after a commit that failed). By subscription."""
    cutoff = now - timedelta(seconds=older_than)
    return list(session.execute(
        select(Delivery.id).where(
            Delivery.status == DeliveryStatus.PENDING,
            or_(and_(Delivery.attempts == 0, Delivery.created_at < cutoff),
                Delivery.next_attempt_at < cutoff),
        ).order_by(Delivery.subscription_id, Delivery.id).limit(limit)
    ).scalars())


def record_attempt(
    session: Session, delivery: Delivery, *, status: str, at: datetime, latency_ms: int,
    error_code: str | None = None, error_message: str | None = None, message_id: str | None = None,
) -> None:
    session.add(DeliveryAttempt(
        tenant=delivery.tenant, subscription_id=delivery.subscription_id, delivery_id=delivery.id,
        event_id=delivery.event_id, attempt=delivery.attempts, attempted_at=at, status=status,
        error_code=error_code, error_message=(error_message or None) and error_message[:1024],
        message_id=message_id, latency_ms=latency_ms,
    ))


@dataclass(frozen=True)
class AttemptPage:
    attempts: list[AttemptOut]
    total: int
    next_from_id: int | None


def list_attempts(
    session: Session, tenant: str, sub_id: str, *, status: str | None, since: datetime | None,
    from_id: int | None, per_page: int,
) -> AttemptPage:
    conditions = [DeliveryAttempt.tenant == tenant, DeliveryAttempt.subscription_id == sub_id]
    if status:
        conditions.append(DeliveryAttempt.status == status)
    if since:
        conditions.append(DeliveryAttempt.attempted_at >= since)
    total = int(session.execute(select(func.count()).where(*conditions)).scalar_one())
    if from_id:
        conditions.append(DeliveryAttempt.id >= from_id)
    rows = list(session.execute(
        select(DeliveryAttempt).where(*conditions).order_by(DeliveryAttempt.id).limit(per_page + 1)
    ).scalars())
    next_id = rows[per_page].id if len(rows) > per_page else None
    return AttemptPage([AttemptOut.from_row(r) for r in rows[:per_page]], total, next_id)


def replay_deliveries(
    session: Session, sub: Subscription, since: datetime, until: datetime, limit: int
) -> list[int] | None:
    """Create replay deliveries for the subscription's matching stored events in [since, until).

    Returns the new delivery ids (not committed), or None when more than ``limit`` match.
    """
    conditions = [
        EventRecord.tenant == sub.tenant,
        EventRecord.received_at >= since,
        EventRecord.received_at < until,
        *MatchRule.of(sub).where(EventRecord.entity_name, EventRecord.event_type,
                                 EventRecord.operation),
    ]
    count = int(session.execute(select(func.count()).where(*conditions)).scalar_one())
    if count > limit:
        return None
    event_ids = list(session.execute(
        select(EventRecord.event_id).where(*conditions).order_by(EventRecord.seq)).scalars())
    if not event_ids:
        return []
    now = datetime.now(UTC)
    rows = [{"tenant": sub.tenant, "subscription_id": sub.id, "event_id": eid,
             "status": DeliveryStatus.PENDING, "attempts": 0, "replay": True, "created_at": now}
            for eid in event_ids]
    result = session.execute(insert(Delivery).returning(Delivery.id), rows)
    return sorted(r[0] for r in result)


def create_deliveries(
    session: Session, tenant: str, docs: list[dict[str, Any]], index: SubscriptionIndex,
    *, replay: bool = False,
) -> int:
    """Insert one pending delivery per (event, matching subscription); does not commit."""
    now = datetime.now(UTC)
    rows = [
        {"tenant": tenant, "subscription_id": sid, "event_id": doc["id"], "status": DeliveryStatus.PENDING,
         "attempts": 0, "replay": replay, "created_at": now}
        for doc in docs for sid in index.match(doc)
    ]
    if rows:
        session.execute(insert(Delivery), rows)
    return len(rows)


def pending_by_event(session: Session, tenant: str,
                     event_ids: list[str]) -> list[tuple[int, str]]:
    """(delivery id, event id) of the never-attempted deliveries of these events (to be enqueued
    after the commit), by subscription then id so that consecutive ids share a batch call."""
    if not event_ids:
        return []
    return [(int(r[0]), str(r[1])) for r in session.execute(
        select(Delivery.id, Delivery.event_id).where(
            Delivery.tenant == tenant, Delivery.event_id.in_(event_ids),
            Delivery.status == DeliveryStatus.PENDING, Delivery.attempts == 0,
        ).order_by(Delivery.subscription_id, Delivery.id)
    ).all()]


def resume_paused(session: Session, tenant: str) -> list[int]:
    """An enabled tenant's pending deliveries become due now. Returns their ids (to enqueue;
    their delayed messages would also bring them within PAUSE_RECHECK_SECONDS); the caller commits."""
    now = datetime.now(UTC)
    ids = list(session.execute(select(Delivery.id).where(
        Delivery.tenant == tenant, Delivery.status == DeliveryStatus.PENDING).order_by(
        Delivery.subscription_id, Delivery.id)).scalars())
    if ids:
        session.execute(update(Delivery).where(Delivery.tenant == tenant,
                                               Delivery.status == DeliveryStatus.PENDING)
                        .values(next_attempt_at=now))
    return ids
