"""Per-tenant quotas: how many subscriptions and jobs a tenant may hold, how many events one
replay may cover, and one replay queued per subscription at a time.

The deployment's defaults come from the settings (``EC_QUOTA_*``); a tenant's own values are
the nullable ``tenants.quota_*`` columns (NULL = the default), set by ``eventcollector tenant
quota``. A refusal is :class:`QuotaExceeded`, which the API answers 409 ``quota_exceeded``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from infra.limits import QUOTA_MAX, Quotas
from tenants.models import Tenant

__all__ = ["QUOTA_MAX", "Quotas"]  # re-exported: they live in infra/limits.py (no database imports)

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


def lock_tenant(session: Session, tenant: str) -> None:
    """Serialise counting-then-creating per tenant (PostgreSQL row lock; SQLite's writers are
    already serialised by BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Tenant.id).where(Tenant.name == tenant).with_for_update())


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


def quota_report(session: Session, tenant: str, defaults: Quotas,
                 used: dict[str, int | None]) -> dict[str, Any]:
    """Each quota: its effective limit, whether it is the tenant's own, and ``used`` (the use
    today, counted by the features that hold the rows; None where nothing is held)."""
    row = session.execute(select(Tenant).where(Tenant.name == tenant)).scalar_one()
    effective = tenant_quotas(session, tenant, defaults)
    return {name: {"limit": effective.get(name),
                   "source": "tenant" if getattr(row, column) is not None else "default",
                   "used": used.get(name)}
            for name, column in QUOTA_COLUMNS.items()}
