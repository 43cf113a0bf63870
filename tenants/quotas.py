"""Per-tenant quotas: how many subscriptions and jobs a tenant may hold, how many events one
replay may cover, and one replay queued per subscription at a time.

The deployment's defaults come from the settings (``EC_QUOTA_*``); a tenant's own values are
the nullable ``tenants.quota_*`` columns (NULL = the default), set by ``eventcollector tenant
quota``. A refusal is :class:`QuotaExceeded`, which the API answers 409 ``quota_exceeded``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from infra.limits import QUOTA_MAX, Quotas
from jobs.models import Job
from subscriptions.models import Delivery, Subscription
from tenants.models import Tenant

__all__ = ["QUOTA_MAX", "Quotas"]  # re-exported: they live in store/limits.py (no database imports)

# Quota name (as the API and the CLI say it) -> the tenants column holding the override.
QUOTA_COLUMNS = {
    "subscriptions": "quota_subscriptions",
    "jobs": "quota_jobs",
    "replay_events": "quota_replay_events",
}


class QuotaExceeded(Exception):
    """The tenant is at ``quota``'s ``limit``; the message says what to do."""

    def __init__(self, quota: str, limit: int, message: str) -> None:
        super().__init__(message)
        self.quota = quota
        self.limit = limit


class InvalidQuota(ValueError):
    pass


def tenant_quotas(session: Session, tenant: str, defaults: Quotas) -> Quotas:
    """The tenant's effective quotas: its overrides where set, else ``defaults``."""
    row = session.execute(select(*[getattr(Tenant, c) for c in QUOTA_COLUMNS.values()])
                          .where(Tenant.name == tenant)).first()
    if row is None:
        return defaults
    values = {name: (row[i] if row[i] is not None else defaults.get(name))
              for i, name in enumerate(QUOTA_COLUMNS)}
    return Quotas(**values)


def _lock_tenant(session: Session, tenant: str) -> None:
    """Serialise counting-then-creating per tenant (PostgreSQL row lock; SQLite's writers are
    already serialised by BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Tenant.id).where(Tenant.name == tenant).with_for_update())


def check_subscriptions(session: Session, tenant: str, defaults: Quotas) -> None:
    """Before creating a subscription: the tenant holds fewer than its quota (active or not)."""
    _lock_tenant(session, tenant)
    limit = tenant_quotas(session, tenant, defaults).subscriptions
    held = session.execute(select(func.count()).select_from(Subscription)
                           .where(Subscription.tenant == tenant)).scalar_one()
    if held >= limit:
        raise QuotaExceeded("subscriptions", limit,
                            f"the tenant holds {held} subscriptions, its quota is {limit}: "
                            "delete one first")


def check_jobs(session: Session, tenant: str, defaults: Quotas) -> None:
    """Before creating a job: the tenant holds fewer than its quota (deleted jobs not counted)."""
    _lock_tenant(session, tenant)
    limit = tenant_quotas(session, tenant, defaults).jobs
    held = session.execute(select(func.count()).select_from(Job)
                           .where(Job.tenant == tenant, Job.deleted.is_(False))).scalar_one()
    if held >= limit:
        raise QuotaExceeded("jobs", limit,
                            f"the tenant holds {held} jobs, its quota is {limit}: delete one first")


def check_no_queued_replay(session: Session, sub: Subscription) -> None:
    """One replay per subscription at a time: none of its replay deliveries may be pending
    (queued, being sent, or waiting for a retry). The caller holds the subscription's lock."""
    pending = session.execute(select(func.count()).select_from(Delivery).where(
        Delivery.tenant == sub.tenant, Delivery.subscription_id == sub.id,
        Delivery.replay == true(), Delivery.status == "pending")).scalar_one()
    if pending:
        raise QuotaExceeded("queued_replays", 1,
                            f"a replay of this subscription is still queued or running "
                            f"({pending} deliveries pending): wait for it to finish")


def lock_subscription(session: Session, sub: Subscription) -> None:
    """Hold the subscription's row until the transaction ends (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Subscription.pk).where(Subscription.pk == sub.pk)
                        .with_for_update())


def set_quotas(session: Session, tenant: str, values: dict[str, int | None]) -> None:
    """Set (an int) or reset to the default (None) each quota named in ``values``."""
    row = session.execute(select(Tenant).where(Tenant.name == tenant)).scalar_one_or_none()
    if row is None:
        from tenants.auth import UnknownTenant

        raise UnknownTenant(f"no tenant named {tenant!r}")
    for name, value in values.items():
        if name not in QUOTA_COLUMNS:
            raise InvalidQuota(f"no quota named {name!r}")
        if value is not None and not 0 <= value <= QUOTA_MAX:
            raise InvalidQuota(f"--{name.replace('_', '-')} must be 0 to {QUOTA_MAX}")
        setattr(row, QUOTA_COLUMNS[name], value)


def quota_report(session: Session, tenant: str, defaults: Quotas) -> dict[str, Any]:
    """Each quota: its effective limit, whether it is the tenant's own, and the use today."""
    row = session.execute(select(Tenant).where(Tenant.name == tenant)).scalar_one()
    effective = tenant_quotas(session, tenant, defaults)
    used = {
        "subscriptions": session.execute(select(func.count()).select_from(Subscription)
                                         .where(Subscription.tenant == tenant)).scalar_one(),
        "jobs": session.execute(select(func.count()).select_from(Job).where(
            Job.tenant == tenant, Job.deleted.is_(False))).scalar_one(),
        "replay_events": None,
    }
    return {name: {"limit": effective.get(name),
                   "source": "tenant" if getattr(row, column) is not None else "default",
                   "used": used[name]}
            for name, column in QUOTA_COLUMNS.items()}
