"""Subscription quotas: how many a tenant may hold, and one queued replay per subscription."""

from __future__ import annotations

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from subscriptions.models import Delivery, DeliveryStatus, Subscription
from tenants.quotas import QuotaExceeded, Quotas, lock_tenant, tenant_quotas


def check_subscriptions(session: Session, tenant: str, defaults: Quotas) -> None:
    """Before creating a subscription: the tenant holds fewer than its quota (active or not)."""
    lock_tenant(session, tenant)
    limit = tenant_quotas(session, tenant, defaults).subscriptions
    held = session.execute(select(func.count()).select_from(Subscription)
                           .where(Subscription.tenant == tenant)).scalar_one()
    if held >= limit:
        raise QuotaExceeded("subscriptions", limit,
                            f"the tenant holds {held} subscriptions, its quota is {limit}: "
                            "delete one first")


def check_no_queued_replay(session: Session, sub: Subscription) -> None:
    """One replay per subscription at a time: none of its replay deliveries may be pending
    (queued, being sent, or waiting for a retry). The caller holds the subscription's lock."""
    pending = session.execute(select(func.count()).select_from(Delivery).where(
        Delivery.tenant == sub.tenant, Delivery.subscription_id == sub.id,
        Delivery.replay == true(), Delivery.status == DeliveryStatus.PENDING)).scalar_one()
    if pending:
        raise QuotaExceeded("queued_replays", 1,
                            f"a replay of this subscription is still queued or running "
                            f"({pending} deliveries pending): wait for it to finish")


def lock_subscription(session: Session, sub: Subscription) -> None:
    """Hold the subscription's row until the transaction ends (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Subscription.pk).where(Subscription.pk == sub.pk)
                        .with_for_update())


def count_subscriptions(session: Session, tenant: str) -> int:
    """The subscriptions the tenant holds, active or not (what its quota counts)."""
    return int(session.execute(select(func.count()).select_from(Subscription)
                               .where(Subscription.tenant == tenant)).scalar_one())
