"""The persist pool's actor: store a message's events idempotently, retry while the DB is down."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from broker.queues import PERSIST_ACTOR, PERSIST_QUEUE
from store.events import save_events

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """True for errors that go away by themselves (database down, connection lost)."""
    if isinstance(exc, OperationalError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def declare_persist_actor(
    broker: dramatiq.Broker, sessions: sessionmaker[Session], *, max_retries: int
) -> dramatiq.Actor:
    """Declare ``persist_events`` on ``broker`` (queue ``persist``) and return it."""

    def persist_events(tenant: str, events: list[dict[str, Any]]) -> int:
        with sessions() as session:
            try:
                inserted = save_events(session, tenant, events)
            except Exception:
                session.rollback()
                raise
        log.debug("stored %d of %d events for %s", len(inserted), len(events), tenant)
        return len(inserted)

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
