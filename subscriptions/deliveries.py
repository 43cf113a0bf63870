"""Deliveries and their attempt log: claiming deliveries for an attempt, recording outcomes and
attempts in bulk, FIFO message groups, listing, replay."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from events.models import EventRecord
from subscriptions.contract import AttemptOut
from subscriptions.matching import MatchRule, SubscriptionIndex, is_fifo, message_group
from subscriptions.models import Delivery, DeliveryAttempt, DeliveryStatus, Subscription

# The table itself, for the claim's and the record's Core statements (no ORM session state).
_TABLE = cast(Table, Delivery.__table__)

_NEVER = datetime(1970, 1, 1, tzinfo=UTC)  # a time before any attempt or claim

# The columns an attempt needs, read back by the claim.
_CLAIMED = (Delivery.id, Delivery.tenant, Delivery.subscription_id, Delivery.event_id,
            Delivery.status, Delivery.attempts, Delivery.replay, Delivery.created_at,
            Delivery.first_attempt_at, Delivery.next_attempt_at, Delivery.group_key)


def claim_deliveries(session: Session, delivery_ids: list[int], *, token: str, now: datetime,
                     lease: float) -> list[Delivery]:
    """Claim, in one statement, the deliveries among ``delivery_ids`` that are pending, due
    (within a second) and not claimed by an attempt still in flight; they stay claimed by
    ``token`` for ``lease`` seconds. Returns them as transient Delivery objects (not in the
    session), in id order: their transitions are recorded by ``record_outcomes``."""
    if not delivery_ids:
        return []
    stmt = (update(_TABLE)
            .where(Delivery.id.in_(delivery_ids),
                   # Found by id alone: the other conditions are expressions no index matches,
                   # so no planner picks the (status, next_attempt_at) index and reads every
                   # pending delivery (PostgreSQL did, 100x slower, on a backlog it had no
                   # statistics for yet; keyed_lookups rules out reading the table whole).
                   func.coalesce(Delivery.status, "") == DeliveryStatus.PENDING,
                   func.coalesce(Delivery.next_attempt_at, _NEVER) <= now + timedelta(seconds=1),
                   func.coalesce(Delivery.claimed_until, _NEVER) < now)
            .values(claim=token, claimed_until=now + timedelta(seconds=lease))
            .returning(*_CLAIMED))
    rows = session.execute(stmt).all()
    claimed = [Delivery(**{c.key: v for c, v in zip(_CLAIMED, row, strict=True)},
                        claim=token) for row in rows]
    return sorted(claimed, key=lambda d: d.id)


def unclaimed_states(session: Session, delivery_ids: list[int]
                     ) -> dict[int, tuple[str, datetime | None, datetime | None]]:
    """id → (status, next attempt at, claimed until) of deliveries a claim did not take."""
    if not delivery_ids:
        return {}
    return {int(r[0]): (str(r[1]), r[2], r[3]) for r in session.execute(
        select(Delivery.id, Delivery.status, Delivery.next_attempt_at, Delivery.claimed_until)
        .where(Delivery.id.in_(delivery_ids))).all()}


def held_back(session: Session, deliveries: list[Delivery]) -> set[int]:
    """The ids among ``deliveries`` (of FIFO subscriptions: a ``group_key``) that an earlier
    pending delivery of their subscription's message group, outside this list, holds back."""
    grouped = [d for d in deliveries if d.group_key is not None]
    if not grouped:
        return set()
    mine = {d.id for d in grouped}
    first: dict[tuple[str, str, str], int] = {}
    for d in grouped:
        key = (d.tenant, d.subscription_id, str(d.group_key))
        first[key] = min(first.get(key, d.id), d.id)
    blocked: set[tuple[str, str, str]] = set()
    for (tenant, sub_id), keys in _by_subscription(first).items():
        rows = session.execute(
            select(Delivery.group_key, func.min(Delivery.id)).where(
                Delivery.tenant == tenant, Delivery.subscription_id == sub_id,
                Delivery.group_key.in_(sorted(keys)), Delivery.status == DeliveryStatus.PENDING,
                Delivery.id.not_in(sorted(mine)))
            .group_by(Delivery.group_key)).all()
        for group_key, earliest in rows:
            if earliest < first[(tenant, sub_id, str(group_key))]:
                blocked.add((tenant, sub_id, str(group_key)))
    return {d.id for d in grouped if (d.tenant, d.subscription_id, str(d.group_key)) in blocked}


def _by_subscription(keys: dict[tuple[str, str, str], int]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for tenant, sub_id, group_key in keys:
        out.setdefault((tenant, sub_id), set()).add(group_key)
    return out


def next_in_groups(session: Session, done: list[Delivery], limit: int = 1000) -> list[int]:
    """The pending deliveries of the message groups whose earlier deliveries ``done`` left
    (succeeded, failed or cancelled): what they held back, to enqueue now, in id order."""
    keys = {(d.tenant, d.subscription_id, str(d.group_key)): d.id for d in done
            if d.group_key is not None}
    ids: list[int] = []
    for (tenant, sub_id), groups in _by_subscription(keys).items():
        ids += [int(i) for i in session.execute(
            select(Delivery.id).where(
                Delivery.tenant == tenant, Delivery.subscription_id == sub_id,
                Delivery.group_key.in_(sorted(groups)), Delivery.status == DeliveryStatus.PENDING)
            .order_by(Delivery.id).limit(limit)).scalars()]
    return sorted(set(ids))


# What record_outcomes writes back of each delivery.
_OUTCOME_COLUMNS = ("status", "attempts", "first_attempt_at", "last_attempt_at",
                    "next_attempt_at", "delivered_at", "message_id", "last_error")


def record_outcomes(session: Session, deliveries: list[Delivery],
                    attempts: list[dict[str, Any]]) -> int:
    """Write back the claimed ``deliveries`` (their transitions applied) and release them, and
    insert the ``attempts`` rows; returns how many deliveries were written.

    The rows are locked first (one SELECT … FOR UPDATE on PostgreSQL) to see what happened to
    them while the attempt ran: a delivery still pending under this claim is written back; one
    whose claim lapsed and was taken again is left to that attempt (this attempt's row is still
    logged: it was made); one cancelled meanwhile (its subscription deleted or replaced) keeps
    its status and gets no attempt row (its log was cleared with it)."""
    if not deliveries:
        return 0
    stmt = select(Delivery.id, Delivery.status, Delivery.claim).where(
        Delivery.id.in_([d.id for d in deliveries]))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    now = {int(r[0]): (str(r[1]), r[2]) for r in session.execute(stmt).all()}
    mine = [d for d in deliveries
            if now.get(d.id, ("", None)) == (DeliveryStatus.PENDING, d.claim)]
    logged = {i for i, (status, _) in now.items() if status == DeliveryStatus.PENDING}
    if mine:
        update_stmt = (update(_TABLE).where(Delivery.id == bindparam("_id"))
                       .values(claim=None, claimed_until=None,
                               **{c: bindparam(f"_{c}") for c in _OUTCOME_COLUMNS}))
        session.execute(update_stmt, [{"_id": d.id, **{f"_{c}": getattr(d, c)
                                                        for c in _OUTCOME_COLUMNS}}
                                      for d in mine])
    rows = [a for a in attempts if a["delivery_id"] in logged]
    if rows:
        session.execute(insert(DeliveryAttempt), rows)
    return len(mine)


def attempt_row(delivery: Delivery, *, status: str, at: datetime, latency_ms: int,
                error_code: str | None = None, error_message: str | None = None,
                message_id: str | None = None) -> dict[str, Any]:
    """The attempt log's row for the attempt ``delivery`` just made (its ``attempts`` counted)."""
    return {"tenant": delivery.tenant, "subscription_id": delivery.subscription_id,
            "delivery_id": delivery.id, "event_id": delivery.event_id,
            "attempt": delivery.attempts, "attempted_at": at, "status": status,
            "error_code": error_code,
            "error_message": (error_message or None) and error_message[:1024],
            "message_id": message_id, "latency_ms": latency_ms}


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
    events = session.execute(select(EventRecord.event_id, EventRecord.entity_id)
                             .where(*conditions).order_by(EventRecord.seq)).all()
    if not events:
        return []
    now = datetime.now(UTC)
    fifo = is_fifo(sub.target)
    rows = [{"tenant": sub.tenant, "subscription_id": sub.id, "event_id": eid,
             "status": DeliveryStatus.PENDING, "attempts": 0, "replay": True, "created_at": now,
             "group_key": message_group({"id": eid, "entity_id": entity}) if fifo else None}
            for eid, entity in events]
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
         "attempts": 0, "replay": replay, "created_at": now,
         "group_key": message_group(doc) if sid in index.fifo else None}
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
