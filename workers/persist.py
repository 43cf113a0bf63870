"""The persist pool's actor: store events, fan out to subscriptions, feed the read models
(subscriptions/persist.py); this module batches messages and enqueues their deliveries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
from sqlalchemy.orm import Session, sessionmaker

from infra.broker.dispatch import enqueue_deliveries
from infra.broker.queues import PERSIST_ACTOR, PERSIST_QUEUE
from infra.errors import is_transient
from subscriptions.matching import IndexCache
from subscriptions.persist import Message, Outcome, store_messages
from workers.grouping import Grouper

log = logging.getLogger(__name__)

__all__ = ["GroupCommit", "declare_persist_actor", "is_transient"]


class GroupCommit:
    """The persist messages a process handles at the same time share one transaction.

    A process whose threads all wait on one commit turns N commits (each a WAL flush, under the
    sequence lock) into one (see workers/grouping.py); ``store_messages`` stores each group,
    quarantining what the database refuses so that one bad event or message fails alone.

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
        self._grouper: Grouper[Message, Outcome] = Grouper(
            self._store, size=lambda m: len(m[1]), max_size=max_events)

    def submit(self, tenant: str, events: list[dict[str, Any]]) -> Outcome:
        """Store one message's events; return (new events, its deliveries)."""
        return self._grouper.submit((tenant, events))

    def _store(self, batch: list[Message]) -> list[Outcome | BaseException]:
        return store_messages(self.sessions, self.indexes, batch, self.after_commit)


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
        actor_name=PERSIST_ACTOR,
        queue_name=PERSIST_QUEUE,
        broker=broker,
        retry_when=retry_when,
        min_backoff=500,
        max_backoff=60_000,
        time_limit=120_000,
    )(persist_events)
