"""Matching events to subscriptions: a per-tenant index, cached by version."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from subscriptions.contract import OPERATION_FLAGS
from subscriptions.models import Subscription
from subscriptions.repository import list_subscriptions
from tenants.models import Tenant


@dataclass(frozen=True)
class SubscriptionIndex:
    """Active subscriptions of one tenant keyed for O(1) matching per event.

    Attributes:
        version: the tenant's ``subscriptions_version`` this index was built from.
        by_key: (entity type, flag) → [(subscription id, event types)]; flag ``*`` holds every
            subscription of the entity type (FAULT/WARNING events without an operation).
    """

    version: int
    by_key: dict[tuple[str, str], list[tuple[str, frozenset[str]]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.by_key

    def match(self, doc: dict[str, Any]) -> list[str]:
        entity = doc.get("entity_name")
        if not entity or self.empty:
            return []
        event_type = doc.get("event_type")
        operation = (doc.get("event_payload") or {}).get("operation")
        flag = OPERATION_FLAGS.get(operation or "")
        if flag is None:
            if event_type == "ENTITY_EVENT" or operation:
                return []  # READ, or an entity event without a matching operation
            flag = "*"
        return [sid for sid, types in self.by_key.get((entity, flag), ()) if event_type in types]


def build_index(subs: list[Subscription], version: int) -> SubscriptionIndex:
    by_key: dict[tuple[str, str], list[tuple[str, frozenset[str]]]] = {}
    for sub in subs:
        if not sub.active:
            continue
        types = frozenset(sub.event_types.split())
        flags = [f for f, on in (("create", sub.subscribe_create), ("change", sub.subscribe_change),
                                 ("delete", sub.subscribe_delete)) if on]
        for flag in [*flags, "*"]:
            by_key.setdefault((sub.entity_type, flag), []).append((sub.id, types))
    return SubscriptionIndex(version=version, by_key=by_key)


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
