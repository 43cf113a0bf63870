"""Job quotas: how many live jobs a tenant may hold."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs.models import Job
from tenants.quotas import QuotaExceeded, Quotas, lock_tenant, tenant_quotas


def check_jobs(session: Session, tenant: str, defaults: Quotas) -> None:
    """Before creating a job: the tenant holds fewer than its quota (deleted jobs not counted)."""
    lock_tenant(session, tenant)
    limit = tenant_quotas(session, tenant, defaults).jobs
    held = session.execute(select(func.count()).select_from(Job)
                           .where(Job.tenant == tenant, Job.deleted.is_(False))).scalar_one()
    if held >= limit:
        raise QuotaExceeded("jobs", limit,
                            f"the tenant holds {held} jobs, its quota is {limit}: delete one first")


def count_jobs(session: Session, tenant: str) -> int:
    """The jobs the tenant holds (deleted jobs not counted: what its quota counts)."""
    return int(session.execute(select(func.count()).select_from(Job).where(
        Job.tenant == tenant, Job.deleted.is_(False))).scalar_one())
