"""Storing persist messages: their events, the deliveries they fan out to and the read models
they feed, in one writer unit of work; what the database refuses goes to the quarantine.

The persist actor (workers/persist.py) only batches messages and enqueues the deliveries this
returns. It lives here rather than in events/ because fanning out needs the subscription
index, and events/ never imports subscriptions/.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from events.quarantine import describe, list_quarantined, quarantine, release
from events.readmodels import project
from events.repository import lock_sequence, save_events
from infra.db import UnitOfWork
from infra.errors import is_transient
from subscriptions.deliveries import create_deliveries, pending_by_event
from subscriptions.matching import IndexCache, SubscriptionIndex

log = logging.getLogger(__name__)

Message = tuple[str, list[dict[str, Any]]]  # (tenant, events)
Outcome = tuple[int, list[int]]  # (events it stored, its deliveries to enqueue)
AfterCommit = Callable[[list[int]], object]


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
    sessions: sessionmaker[Session], messages: list[Message], indexes: IndexCache,
    *, salvage: bool = False, redrive: bool = False,
) -> tuple[list[Outcome], list[int]]:
    """Store several messages' events (any tenants) in one writer unit of work, committed here.
    Returns, per message, (events it stored, its deliveries to enqueue), and all those
    deliveries in one list ordered by subscription (for batch sends), read after the commit.
    An id in two messages is stored, fanned out and enqueued once, for the first.

    With ``salvage`` (after the plain transaction failed for a data reason) the events the
    database refuses go to the quarantine in the same transaction, and the others are stored:
    an accepted event is then either stored or quarantined, never lost and never retried on its
    own. ``redrive`` (``eventcollector quarantine retry``): an event found stored leaves the
    quarantine, one refused again counts a retry."""
    by_tenant: dict[str, dict[str, dict[str, Any]]] = {}
    for tenant, events in messages:
        docs = by_tenant.setdefault(tenant, {})
        for event in events:
            docs.setdefault(event["id"], event)
    stored: dict[str, _Stored] = {}
    fans_out: set[str] = set()
    with UnitOfWork(sessions, write=True) as uow:
        session = uow.session
        if salvage:
            lock_sequence(session)
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
                            extra={"tenant": tenant, "event_id": event_id,
                                   "error_class": error_class})
            out.present = set(docs) - set(out.refused)
            release(session, tenant, sorted(out.present))
        uow.commit()
    pending: dict[str, list[tuple[int, str]]] = {}
    if fans_out:
        with UnitOfWork(sessions) as uow:
            pending = {t: pending_by_event(uow.session, t, list(by_tenant[t])) for t in fans_out}
    results = []
    claimed: dict[str, set[str]] = {t: set() for t in by_tenant}
    for tenant, events in messages:
        mine = {e["id"] for e in events} - claimed[tenant]
        claimed[tenant] |= mine
        due = [d for d, event_id in pending.get(tenant, []) if event_id in mine]
        results.append((len(mine & stored[tenant].inserted), due))
    return results, [d for t in pending for d, _ in pending[t]]


def store_messages(sessions: sessionmaker[Session], indexes: IndexCache, batch: list[Message],
                   after_commit: AfterCommit | None = None) -> list[Outcome | BaseException]:
    """Store a batch of persist messages (one group commit); per message, its outcome or the
    error it fails with.

    If the shared transaction fails for a reason other than an unreachable database or broker,
    it is run again storing what the database takes and quarantining the events it refuses
    (``persist_many(salvage=True)``): one bad event never takes the others of its message or
    group down. Should that fail too (a message the quarantine cannot hold, e.g. an event
    without an id), each message is tried alone the same way, so a bad message fails alone.
    Transient errors are raised (the whole batch is retried). ``after_commit(delivery ids)``
    runs once per committed transaction."""
    try:
        return list(_transaction(sessions, indexes, batch, after_commit))
    except Exception as exc:  # noqa: BLE001 - handed to the submitting threads
        if is_transient(exc):
            raise
    try:  # a data error: store what the database takes, quarantine the rest
        return list(_transaction(sessions, indexes, batch, after_commit, salvage=True))
    except Exception as exc:  # noqa: BLE001
        if len(batch) == 1 or is_transient(exc):
            raise
    outcomes: list[Outcome | BaseException] = []
    for message in batch:  # find the bad message: each in its own transaction
        try:
            outcomes += _transaction(sessions, indexes, [message], after_commit, salvage=True)
        except Exception as one:  # noqa: BLE001
            outcomes.append(one)
    return outcomes


def _transaction(sessions: sessionmaker[Session], indexes: IndexCache, messages: list[Message],
                 after_commit: AfterCommit | None, salvage: bool = False) -> list[Outcome]:
    results, due = persist_many(sessions, messages, indexes, salvage=salvage)
    # Committed first, then enqueued: a crash in between leaves the messages unacked, and
    # their redelivery finds these deliveries still unattempted and enqueues them.
    if due and after_commit is not None:
        after_commit(due)
    return results


def redrive(sessions: sessionmaker[Session], indexes: IndexCache,
            rows: list[tuple[str, dict[str, Any]]],
            after_commit: AfterCommit | None = None) -> dict[tuple[str, str], str]:
    """Store quarantined events again through the persist path, one transaction: (tenant, event
    id) -> "stored" (now or already), or "quarantined" (refused again: the new reason is on its
    row). Their deliveries are enqueued by ``after_commit`` (when it fails, the scheduler's
    sweep sends them: they are committed)."""
    messages: dict[str, list[dict[str, Any]]] = {}
    for tenant, document in rows:
        messages.setdefault(tenant, []).append(document)
    _, due = persist_many(sessions, list(messages.items()), indexes, salvage=True, redrive=True)
    with UnitOfWork(sessions) as uow:
        left = {(r.tenant, r.event_id) for tenant, docs in messages.items()
                for r in list_quarantined(uow.session, tenant=tenant,
                                          event_ids=[d["id"] for d in docs],
                                          per_page=len(docs)).rows}
    if due and after_commit is not None:
        after_commit(due)
    return {(t, d["id"]): "quarantined" if (t, d["id"]) in left else "stored"
            for t, d in rows}
