"""The persist pool's actor: store events, fan out to subscriptions, feed the read models."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
import dramatiq.errors
import redis
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from broker.dispatch import BrokerUnavailable, enqueue_deliveries
from broker.queues import PERSIST_ACTOR, PERSIST_QUEUE
from store.db import begin_write
from store.events import save_events
from store.readmodels import project
from store.subscriptions import IndexCache, create_deliveries, pending_by_event
from workers.grouping import Grouper

log = logging.getLogger(__name__)

Message = tuple[str, list[dict[str, Any]]]  # (tenant, events)


def is_transient(exc: BaseException) -> bool:
    """True for errors that go away by themselves: the database or the broker unreachable.

    A broker error matters after the commit: the events are stored but their deliveries were
    not enqueued; the retried message finds them still unattempted and enqueues them.
    """
    if isinstance(exc, OperationalError | PoolTimeout | redis.ConnectionError | redis.TimeoutError
                  | dramatiq.errors.BrokerConnectionError | BrokerUnavailable):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def persist_many(
    session: Session, messages: list[tuple[str, list[dict[str, Any]]]], indexes: IndexCache
) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """Store several messages' events (any tenants) in one transaction. Returns, per message,
    (events it stored, its deliveries to enqueue), and all those deliveries in one list ordered
    by subscription (for batch sends). An id in two messages is stored, fanned out and
    enqueued once, for the first."""
    begin_write(session)
    by_tenant: dict[str, dict[str, dict[str, Any]]] = {}
    for tenant, events in messages:
        docs = by_tenant.setdefault(tenant, {})
        for event in events:
            docs.setdefault(event["id"], event)
    inserted: dict[str, set[str]] = {}
    fans_out: set[str] = set()
    for tenant, docs in by_tenant.items():
        inserted[tenant] = set(save_events(session, tenant, list(docs.values())))
        new_events = [d for d in docs.values() if d["id"] in inserted[tenant]]
        index = indexes.get(session, tenant)
        if not index.empty:
            fans_out.add(tenant)
            if new_events:
                create_deliveries(session, tenant, new_events, index)
        if new_events:
            project(session, tenant, new_events)
    session.commit()
    pending = {t: pending_by_event(session, t, list(by_tenant[t])) for t in fans_out}
    session.rollback()
    results = []
    claimed: dict[str, set[str]] = {t: set() for t in by_tenant}
    for tenant, events in messages:
        mine = {e["id"] for e in events} - claimed[tenant]
        claimed[tenant] |= mine
        due = [d for d, event_id in pending.get(tenant, []) if event_id in mine]
        results.append((len(mine & inserted[tenant]), due))
    return results, [d for t in pending for d, _ in pending[t]]


class GroupCommit:
    """The persist messages a process handles at the same time share one transaction.

    A process whose threads all wait on one commit turns N commits (each a WAL flush, under the
    sequence lock) into one (see workers/grouping.py). If the shared transaction fails for a
    reason other than an unreachable database or broker, each message is tried again in a
    transaction of its own, so a bad message fails alone.

    ``after_commit(delivery ids)`` runs once per transaction, before any of its messages is
    acknowledged: the deliver messages of a whole group are sent together (ten ids each, one
    SendMessageBatch). If it fails, every message of the group fails and is redelivered; the
    redelivery stores nothing twice and re-lists the deliveries not yet attempted.
    """

    def __init__(self, sessions: sessionmaker[Session], indexes: IndexCache,
                 max_events: int = 5000,
                 after_commit: Callable[[list[int]], object] | None = None) -> None:
        self.sessions = sessions
        self.indexes = indexes
        self.after_commit = after_commit
        self._grouper: Grouper[Message, tuple[int, list[int]]] = Grouper(
            self._store, size=lambda m: len(m[1]), max_size=max_events)

    def submit(self, tenant: str, events: list[dict[str, Any]]) -> tuple[int, list[int]]:
        """Store one message's events; return (new events, its deliveries)."""
        return self._grouper.submit((tenant, events))

    def _store(self, batch: list[Message]) -> list[tuple[int, list[int]] | BaseException]:
        try:
            return list(self._transaction(batch))
        except Exception as exc:  # noqa: BLE001 - handed to the submitting threads
            if len(batch) == 1 or is_transient(exc):
                raise
        outcomes: list[tuple[int, list[int]] | BaseException] = []
        for message in batch:  # find the bad message: each in its own transaction
            try:
                outcomes += self._transaction([message])
            except Exception as one:  # noqa: BLE001
                outcomes.append(one)
        return outcomes

    def _transaction(self, messages: list[Message]) -> list[tuple[int, list[int]]]:
        with self.sessions() as session:
            try:
                results, due = persist_many(session, messages, self.indexes)
            except Exception:
                session.rollback()
                raise
        # Committed first, then enqueued: a crash in between leaves the messages unacked, and
        # their redelivery finds these deliveries still unattempted and enqueues them.
        if due and self.after_commit is not None:
            self.after_commit(due)
        return results


def declare_persist_actor(
    broker: dramatiq.Broker, sessions: sessionmaker[Session], *, max_retries: int
) -> dramatiq.Actor:
    """Declare ``persist_events`` on ``broker`` (queue ``persist``) and return it."""
    group = GroupCommit(sessions, IndexCache(),
                        after_commit=lambda due: enqueue_deliveries(broker, due))

    def persist_events(tenant: str, events: list[dict[str, Any]]) -> None:
        stored, due = group.submit(tenant, events)  # committed, deliveries enqueued
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
