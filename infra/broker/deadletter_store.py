"""The embedded default's dead letters in its database (models.StoredDeadLetter)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import (
    Index,
    String,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from infra.db import Base, SequenceType, UtcDateTime


def keep(session: Session, queue: str, message_id: str, encoded: str) -> None:
    session.add(StoredDeadLetter(queue=queue, message_id=message_id, message=encoded,
                                 dead_at=datetime.now(UTC)))


def listed(session: Session, queue: str, limit: int) -> list[StoredDeadLetter]:
    return list(session.execute(
        select(StoredDeadLetter).where(StoredDeadLetter.queue == queue)
        .order_by(StoredDeadLetter.id).limit(limit)).scalars())


def count(session: Session, queue: str) -> int:
    return int(session.execute(select(func.count()).where(
        StoredDeadLetter.queue == queue)).scalar_one())


def counts(session: Session) -> dict[str, int]:
    return {q: int(n) for q, n in session.execute(
        select(StoredDeadLetter.queue, func.count()).group_by(StoredDeadLetter.queue))}


def _selected(queue: str, ids: Iterable[str] | None) -> list[object]:
    where: list[object] = [StoredDeadLetter.queue == queue]
    if ids:
        where.append(StoredDeadLetter.id.in_([int(i) for i in ids if str(i).isdigit()]))
    return where


def request_retry(session: Session, queue: str, ids: Iterable[str] | None = None) -> int:
    """Mark dead letters (all of ``queue``, or those ``ids``) for the running process to
    re-enqueue; return how many."""
    result = session.execute(update(StoredDeadLetter).where(
        *_selected(queue, ids), StoredDeadLetter.retry_requested_at.is_(None))  # type: ignore[arg-type]
        .values(retry_requested_at=datetime.now(UTC)))
    return int(result.rowcount)  # type: ignore[attr-defined]


def take_requested(session: Session, limit: int = 500) -> list[StoredDeadLetter]:
    """Remove and return dead letters marked for re-drive (the caller re-enqueues them in the
    same transaction's wake: it commits only after enqueueing)."""
    rows = list(session.execute(
        select(StoredDeadLetter).where(StoredDeadLetter.retry_requested_at.is_not(None))
        .order_by(StoredDeadLetter.id).limit(limit)).scalars())
    for row in rows:
        session.delete(row)
    return rows


def purge(session: Session, queue: str) -> int:
    result = session.execute(delete(StoredDeadLetter).where(StoredDeadLetter.queue == queue))
    return int(result.rowcount)  # type: ignore[attr-defined]


class StoredDeadLetter(Base):
    """A message the embedded default's in-process broker dead-lettered, kept in its database so
    that ``eventcollector dlq`` (another process) can list, re-drive and purge it; the running
    ``eventcollector dev`` re-enqueues the ones asked for. (On Redis, dead letters stay in
    Dramatiq's own ``.XQ`` sets: broker/deadletters.py.)"""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(64), nullable=False)
    message_id: Mapped[str] = mapped_column(String(64), nullable=False)
    # Dramatiq's encoded message (JSON text), re-enqueued as it is.
    message: Mapped[str] = mapped_column(Text, nullable=False)
    dead_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    retry_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_dead_letters_queue_id", "queue", "id"),)
