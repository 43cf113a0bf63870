"""The persist pool's actor: store events, fan out to subscriptions, feed the read models."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import dramatiq.errors
import redis
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from events.quarantine import describe, list_quarantined, quarantine, release
from events.readmodels import project
from events.repository import lock_sequence, save_events
from infra.broker.dispatch import BrokerUnavailable, enqueue_deliveries
from infra.broker.queues import PERSIST_ACTOR, PERSIST_QUEUE
from infra.db import begin_write, is_permanent_operational
from subscriptions.deliveries import create_deliveries, pending_by_event
from subscriptions.matching import IndexCache, SubscriptionIndex
from workers.grouping import Grouper

log = logging.getLogger(__name__)

Message = tuple[str, list[dict[str, Any]]]  # (tenant, events)


def is_transient(exc: BaseException) -> bool:
    """True for errors that go away by themselves: the database or the broker unreachable.

    A broker error matters after the commit: the events are stored but their deliveries were
    not enqueued; the retried message finds them still unattempted and enqueues them. An
    OperationalError that says a value can never be stored (SQLSTATE class 54: an index entry or
    a row too large) is not transient.
    """
    if is_permanent_operational(exc):
        return False
    if isinstance(exc, OperationalError | PoolTimeout | redis.ConnectionError | redis.TimeoutError
                  | dramatiq.errors.BrokerConnectionError | BrokerUnavailable):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@dataclass
class _Stored:
    """What one tenant's share of a transaction stored (and which of its events it refused)."""

    inserted: set[str] = field(default_factory=set)
    present: set[str] = field(default_factory=set)  # stored now or before (a re-drive's success)
    refused: dict[str, BaseException] = field(default_factory=dict)


def _store_tenant(session: Session, tenant: str, docs: list[dict[str, Any]],
                  index: SubscriptionIndex) -> set[str]:
    """Insert the events, fan them out to subscriptions and project them (does not commit)."""
    inserted = set(save_events(session, tenant, docs))
    new_events = [d for d in docs if d["id"] in inserted]
    if new_events:
        if not index.empty:
            create_deliveries(session, tenant, new_events, index)
        project(session, tenant, new_events)
    return inserted


def _salvage(session: Session, tenant: str, docs: list[dict[str, Any]],
             index: SubscriptionIndex, out: _Stored) -> None:
    """Store what the database takes of ``docs``, each part inside a SAVEPOINT, halving a part
    it refuses until the refused events stand alone (about 2 log2(n) savepoints for one bad
    event among n): the others are stored, fanned out and projected as usual, and each refused
    one (with no deliveries: they were rolled back with it) is listed with its error."""
    try:
        with session.begin_nested():
            out.inserted |= _store_tenant(session, tenant, docs, index)
        return
    except Exception as exc:  # noqa: BLE001 - classified: transient errors go up
        if is_transient(exc):
            raise
        if len(docs) == 1:
            out.refused[docs[0]["id"]] = exc
            return
    middle = len(docs) // 2
    _salvage(session, tenant, docs[:middle], index, out)
    _salvage(session, tenant, docs[middle:], index, out)


def persist_many(
    session: Session, messages: list[tuple[str, list[dict[str, Any]]]], indexes: IndexCache,
    *, salvage: bool = False, redrive: bool = False,
) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """Store several messages' events (any tenants) in one transaction. Returns, per message,
    (events it stored, its deliveries to enqueue), and all those deliveries in one list ordered
    by subscription (for batch sends). An id in two messages is stored, fanned out and
    enqueued once, for the first.

    With ``salvage`` (after the plain transaction failed for a data reason) the events the
    database refuses go to the quarantine in the same transaction, and the others are stored:
    an accepted event is then either stored or quarantined, never lost and never retried on its
    own. ``redrive`` (``eventcollector quarantine retry``): an event found stored leaves the
    quarantine, one refused again counts a retry."""
    begin_write(session)
    if salvage:
        lock_sequence(session)
    by_tenant: dict[str, dict[str, dict[str, Any]]] = {}
    for tenant, events in messages:
        docs = by_tenant.setdefault(tenant, {})
        for event in events:
            docs.setdefault(event["id"], event)
    stored: dict[str, _Stored] = {}
    fans_out: set[str] = set()
    for tenant, docs in by_tenant.items():
        index = indexes.get(session, tenant)
        if not index.empty:
            fans_out.add(tenant)
        out = stored[tenant] = _Stored()
        if not salvage:
            out.inserted = _store_tenant(session, tenant, list(docs.values()), index)
            continue
        _salvage(session, tenant, list(docs.values()), index, out)
        for event_id, exc in out.refused.items():
            quarantine(session, tenant, docs[event_id], exc, retried=redrive)
            error_class, reason = describe(exc)
            log.warning("event quarantined: the database refused it (%s)", reason,
                        extra={"tenant": tenant, "event_id": event_id, "error_class": error_class})
        out.present = set(docs) - set(out.refused)
        release(session, tenant, sorted(out.present))
    session.commit()
    pending = {t: pending_by_event(session, t, list(by_tenant[t])) for t in fans_out}
    session.rollback()
    results = []
    claimed: dict[str, set[str]] = {t: set() for t in by_tenant}
    for tenant, events in messages:
        mine = {e["id"] for e in events} - claimed[tenant]
        claimed[tenant] |= mine
        due = [d for d, event_id in pending.get(tenant, []) if event_id in mine]
        results.append((len(mine & stored[tenant].inserted), due))
    return results, [d for t in pending for d, _ in pending[t]]


def redrive(sessions: sessionmaker[Session], indexes: IndexCache,
            rows: list[tuple[str, dict[str, Any]]],
            after_commit: Callable[[list[int]], object] | None = None) -> dict[tuple[str, str], str]:
    """Store quarantined events again through the persist path, one transaction: (tenant, event
    id) -> "stored" (now or already), or "quarantined" (refused again: the new reason is on its
    row). Their deliveries are enqueued by ``after_commit`` (when it fails, the scheduler's
    sweep sends them: they are committed)."""
    messages: dict[str, list[dict[str, Any]]] = {}
    for tenant, document in rows:
        messages.setdefault(tenant, []).append(document)
    with sessions() as session:
        try:
            _, due = persist_many(session, list(messages.items()), indexes, salvage=True,
                                  redrive=True)
        except Exception:
            session.rollback()
            raise
    with sessions() as session:
        left = {(r.tenant, r.event_id) for tenant, docs in messages.items()
                for r in list_quarantined(session, tenant=tenant,
                                          event_ids=[d["id"] for d in docs],
                                          per_page=len(docs)).rows}
    if due and after_commit is not None:
        after_commit(due)
    return {(t, d["id"]): "quarantined" if (t, d["id"]) in left else "stored"
            for t, d in rows}


class GroupCommit:
    """The persist messages a process handles at the same time share one transaction.

    A process whose threads all wait on one commit turns N commits (each a WAL flush, under the
    sequence lock) into one (see workers/grouping.py). If the shared transaction fails for a
    reason other than an unreachable database or broker, it is run again storing what the
    database takes and quarantining the events it refuses (``persist_many(salvage=True)``): one
    bad event never takes the others of its message or group down. Should that fail too (a
    message the quarantine cannot hold, e.g. an event without an id), each message is tried
    alone the same way, so a bad message fails alone.

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
            if is_transient(exc):
                raise
        try:  # a data error: store what the database takes, quarantine the rest
            return list(self._transaction(batch, salvage=True))
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1 or is_transient(exc):
                raise
        outcomes: list[tuple[int, list[int]] | BaseException] = []
        for message in batch:  # find the bad message: each in its own transaction
            try:
                outcomes += self._transaction([message], salvage=True)
            except Exception as one:  # noqa: BLE001
                outcomes.append(one)
        return outcomes

    def _transaction(self, messages: list[Message],
                     salvage: bool = False) -> list[tuple[int, list[int]]]:
        with self.sessions() as session:
            try:
                results, due = persist_many(session, messages, self.indexes, salvage=salvage)
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
