"""Running one job run: plan recipients, send in batches of 1,000, remember what was mailed."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from infra.db import UnitOfWork
from jobs.compose import Planned, plan
from jobs.mailers.base import MAX_PERSONALIZATIONS, Mailer, Recipient
from jobs.models import Job, JobRun, RunRecipient
from jobs.repository import fires
from tenants.revocation import disabled_tenants

log = logging.getLogger(__name__)

RETRY_SCHEDULE = (5.0, 30.0, 120.0, 600.0, 1800.0)
MAX_ATTEMPTS = 8
LEASE = timedelta(minutes=5)


class RunBusy(Exception):
    """Another worker holds the run's lease: try again later (Dramatiq retries this)."""


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _lock_run(session: Session, run_id: int) -> JobRun | None:
    stmt = select(JobRun).where(JobRun.id == run_id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return session.execute(stmt).scalar_one_or_none()


def _recipient(job: Job, planned: Planned) -> Recipient:
    params = dict(job.job_parameters or {})
    return Recipient(
        customer_id=planned.customer_id, email=planned.email, name=planned.first_name,
        data={
            "first_name": planned.first_name,
            "customer_id": planned.customer_id,
            "notification": job.notification,
            "campaign_id": params.get("campaign_id"),
            "items": [p.data for p in planned.picks],
            "item_count": len(planned.picks),
        },
    )


def run_notifications(
    sessions: sessionmaker[Session], run_id: int, *, mailer: Mailer,
    schedule_retry: Callable[[float], None], batch_size: int = MAX_PERSONALIZATIONS,
    shown_run_id: Callable[[int], int] = lambda run_id: run_id,
) -> str:
    """Carry out run ``run_id`` in one writer unit of work that commits the plan, then each
    batch, then the end; return the run's status.

    ``shown_run_id`` gives the run id as the API shows it to the tenant (opaque: store.opaque);
    it is the ``run_id`` custom argument SendGrid reports back to the tenant.

    Customers already mailed in this run are never mailed again: a retry plans afresh and
    leaves them out.
    """
    with UnitOfWork(sessions, write=True) as uow:
        return _carry_out(uow, run_id, mailer=mailer, schedule_retry=schedule_retry,
                          batch_size=batch_size, shown_run_id=shown_run_id)


def _carry_out(uow: UnitOfWork, run_id: int, *, mailer: Mailer,
               schedule_retry: Callable[[float], None], batch_size: int,
               shown_run_id: Callable[[int], int]) -> str:
    session = uow.session
    run = _lock_run(session, run_id)
    if run is None or run.status in ("done", "failed", "cancelled"):
        return run.status if run else "missing"
    job = session.get(Job, run.job_pk)
    if job is None or job.deleted or (run.trigger == "schedule" and not fires(job)):
        run.status, run.finished_at = "cancelled", datetime.now(UTC)
        run.error = "job deleted or inactive"
        uow.commit()
        return "cancelled"
    if disabled_tenants(session, {job.tenant}):  # store.revocation: its jobs pause
        run.status, run.finished_at = "cancelled", datetime.now(UTC)
        run.error = "tenant disabled"
        uow.commit()
        return "cancelled"
    now = datetime.now(UTC)
    lease = _aware(run.lease_until)
    if run.status == "running" and lease is not None and lease > now:
        raise RunBusy(f"run {run_id} is being carried out by another worker")
    run.status = "running"
    run.lease_until = now + LEASE
    run.attempts += 1
    planned, skipped = plan(session, job)
    done = set(session.execute(select(RunRecipient.customer_id).where(
        RunRecipient.run_id == run.id)).scalars())
    todo = [p for p in planned if p.picks and p.customer_id not in done]
    run.recipients = len(done) + len(todo)
    run.skipped = skipped
    uow.commit()

    custom_args = {"tenant": job.tenant, "job_id": job.id, "run_id": str(shown_run_id(run.id))}
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        result = mailer.send(job.template_id, [_recipient(job, p) for p in chunk], custom_args)
        run = _lock_run(session, run_id)  # a new transaction (IMMEDIATE on SQLite)
        assert run is not None
        now = datetime.now(UTC)
        run.lease_until = now + LEASE
        if result.ok:
            for p in chunk:
                session.add(RunRecipient(run_id=run.id, customer_id=p.customer_id, email=p.email,
                                         status="sent", items=len(p.picks), at=now))
                for pick in p.picks:
                    pick.remember(pick.item)
            run.sent += len(chunk)
            uow.commit()
            continue
        if result.transient and run.attempts < MAX_ATTEMPTS:
            base = RETRY_SCHEDULE[min(run.attempts, len(RETRY_SCHEDULE)) - 1]
            delay = max(base * random.uniform(0.8, 1.2), result.retry_after or 0.0)
            run.status = "retrying"
            run.lease_until = None
            run.error = (result.error or "")[:1024]
            schedule_retry(delay)
            uow.commit()
            log.warning("run %s: mail send failed (%s), retrying in %.0f s", run_id, result.error,
                        delay)
            return "retrying"
        for p in chunk:
            session.add(RunRecipient(run_id=run.id, customer_id=p.customer_id, email=p.email,
                                     status="failed", items=len(p.picks), at=now))
        run.failed += len(chunk)
        run.error = (result.error or "")[:1024]
        uow.commit()
    run = _lock_run(session, run_id)
    assert run is not None
    run.status = "done" if run.failed == 0 or run.sent > 0 else "failed"
    run.finished_at = datetime.now(UTC)
    run.lease_until = None
    uow.commit()
    return run.status
