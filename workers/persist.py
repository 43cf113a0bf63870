"""The persist pool's actor: store events, fan out to subscriptions, feed the read models."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
import dramatiq.errors
import redis
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from broker.dispatch import enqueue_deliveries
from broker.queues import PERSIST_ACTOR, PERSIST_QUEUE
from store.db import begin_write
from store.events import save_events
from store.readmodels import project
from store.subscriptions import IndexCache, create_deliveries, pending_deliveries

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """True for errors that go away by themselves: the database or the broker unreachable.

    A broker error matters after the commit: the events are stored but their deliveries were
    not enqueued; the retried message finds them still unattempted and enqueues them.
    """
    if isinstance(exc, OperationalError | PoolTimeout | redis.ConnectionError | redis.TimeoutError
                  | dramatiq.errors.BrokerConnectionError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def persist_and_fan_out(
    session: Session, tenant: str, events: list[dict[str, Any]], indexes: IndexCache
) -> tuple[int, list[int]]:
    """Store ``events`` and their deliveries in one transaction; return (new events, deliveries
    to enqueue). A redelivered message stores nothing twice and re-lists unsent deliveries."""
    begin_write(session)
    inserted = set(save_events(session, tenant, events))
    new_events = [e for e in events if e["id"] in inserted]
    index = indexes.get(session, tenant)
    if new_events and not index.empty:
        create_deliveries(session, tenant, new_events, index)
    if new_events:
        project(session, tenant, new_events)
    session.commit()
    due = [] if index.empty else pending_deliveries(session, tenant, [e["id"] for e in events])
    session.rollback()
    return len(inserted), due


def declare_persist_actor(
    broker: dramatiq.Broker, sessions: sessionmaker[Session], *, max_retries: int
) -> dramatiq.Actor:
    """Declare ``persist_events`` on ``broker`` (queue ``persist``) and return it."""
    indexes = IndexCache()

    def persist_events(tenant: str, events: list[dict[str, Any]]) -> None:
        with sessions() as session:
            try:
                stored, due = persist_and_fan_out(session, tenant, events, indexes)
            except Exception:
                session.rollback()
                raise
        # Committed first, then enqueued: a crash in between leaves the message unacked, and
        # its redelivery finds these deliveries still unattempted and enqueues them.
        enqueue_deliveries(broker, due)
        log.debug("stored %d of %d events for %s, %d deliveries", stored, len(events), tenant,
                  len(due))

    def retry_when(retries: int, exc: BaseException) -> bool:
        # Bad data would fail the same way forever: dead-letter it at once.
        return retries < max_retries and is_transient(exc)

    return dramatiq.actor(
        persist_events,
        actor_name=PERSIST_ACTOR,
        queue_name=PERSIST_QUEUE,
        broker=broker,
        retry_when=retry_when,
        min_backoff=500,
        max_backoff=60_000,
        time_limit=120_000,
    )
