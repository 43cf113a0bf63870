"""Matching events to subscriptions: the rule (MatchRule), as Python for the live fan-out (a
per-tenant index, cached by version) and as SQL for a replay of stored events."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from subscriptions.contract import OPERATION_FLAGS
from subscriptions.models import Subscription
from subscriptions.repository import list_subscriptions
from tenants.models import Tenant

# The key of an event that carries no operation (a FAULT or WARNING event): every subscription of
# its entity type takes it, whatever its flags.
NO_OPERATION = "*"
ENTITY_EVENT = "ENTITY_EVENT"


@dataclass(frozen=True)
class MatchRule:
    """Which events a subscription takes: its entity type, one of its event types, and an
    operation it subscribed to (create, change, delete flags: OPERATION_FLAGS), or no operation
    at all for an event that is not an ENTITY_EVENT. Nothing else matches: another entity, no
    entity, READ, an ENTITY_EVENT without an operation."""

    entity_type: str
    event_types: frozenset[str]
    operations: frozenset[str]  # the event operations (CREATE, BULK_CREATE, …) subscribed to

    @classmethod
    def of(cls, sub: Subscription) -> MatchRule:
        flags = {"create": sub.subscribe_create, "change": sub.subscribe_change,
                 "delete": sub.subscribe_delete}
        return cls(entity_type=sub.entity_type, event_types=frozenset(sub.event_types.split()),
                   operations=frozenset(op for op, flag in OPERATION_FLAGS.items() if flags[flag]))

    @staticmethod
    def key_of(event_type: str | None, operation: str | None) -> str | None:
        """What an event is matched by: its operation, NO_OPERATION when it has none and is
        not an ENTITY_EVENT, None when it has none and is one (it matches nothing)."""
        if operation:
            return operation
        return None if event_type == ENTITY_EVENT else NO_OPERATION

    @property
    def keys(self) -> frozenset[str]:
        return self.operations | {NO_OPERATION}

    def matches(self, entity: str | None, event_type: str | None, operation: str | None) -> bool:
        return (entity == self.entity_type and event_type in self.event_types
                and self.key_of(event_type, operation) in self.keys)

    def where(self, entity: InstrumentedAttribute[str | None],
              event_type: InstrumentedAttribute[str],
              operation: InstrumentedAttribute[str | None]) -> list[ColumnElement[bool]]:
        """The same rule as SQL conditions on an event table's columns."""
        return [
            entity == self.entity_type,
            event_type.in_(sorted(self.event_types)),
            or_(operation.in_(sorted(self.operations)),
                and_(or_(operation.is_(None), operation == ""), event_type != ENTITY_EVENT)),
        ]


@dataclass(frozen=True)
class SubscriptionIndex:
    """Active subscriptions of one tenant keyed for O(1) matching per event.

    Attributes:
        version: the tenant's ``subscriptions_version`` this index was built from.
        by_key: (entity type, MatchRule key) → [(subscription id, its rule)]: a subscription
            is listed under each of its rule's keys, and its rule decides.
        fifo: the ids of the subscriptions whose destination is FIFO (their deliveries carry
            their message group).
    """

    version: int
    by_key: dict[tuple[str, str], list[tuple[str, MatchRule]]] = field(default_factory=dict)
    fifo: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.by_key

    def match(self, doc: dict[str, Any]) -> list[str]:
        entity = doc.get("entity_name")
        if not entity or self.empty:
            return []
        event_type = doc.get("event_type")
        operation = (doc.get("event_payload") or {}).get("operation")
        key = MatchRule.key_of(event_type, operation)
        if key is None:
            return []
        return [sid for sid, rule in self.by_key.get((entity, key), ())
                if rule.matches(entity, event_type, operation)]


def build_index(subs: list[Subscription], version: int) -> SubscriptionIndex:
    by_key: dict[tuple[str, str], list[tuple[str, MatchRule]]] = {}
    fifo = set()
    for sub in subs:
        if not sub.active:
            continue
        rule = MatchRule.of(sub)
        for key in sorted(rule.keys):
            by_key.setdefault((rule.entity_type, key), []).append((sub.id, rule))
        if is_fifo(sub.target):
            fifo.add(sub.id)
    return SubscriptionIndex(version=version, by_key=by_key, fifo=frozenset(fifo))


def is_fifo(target: str) -> bool:
    """A FIFO queue's URL or topic's ARN ends in ``.fifo``."""
    return target.endswith(".fifo")


def message_group(doc: dict[str, Any]) -> str:
    """The key of an event's FIFO message group within its tenant: its entity, else itself."""
    return str(doc.get("entity_id") or doc["id"])


class IndexCache:
    """Per-process cache of each tenant's index, reloaded when its version moves."""

    def __init__(self) -> None:
        self._indexes: dict[str, SubscriptionIndex] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, tenant: str) -> SubscriptionIndex:
        version = session.execute(
            select(Tenant.subscriptions_version).where(Tenant.name == tenant)
        ).scalar_one_or_none()
        if version is None:
            return SubscriptionIndex(version=-1)
        cached = self._indexes.get(tenant)
        if cached is not None and cached.version == version:
            return cached
        index = build_index(list_subscriptions(session, tenant, include_inactive=False), version)
        with self._lock:
            self._indexes[tenant] = index
        return index
