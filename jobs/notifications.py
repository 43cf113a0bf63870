"""Running one job run: plan recipients, send in batches of 1,000, remember what was mailed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from infra.db import UnitOfWork
from infra.retry import RetryPolicy
from jobs.compose import Planned, plan
from jobs.mailers.base import MAX_PERSONALIZATIONS, Mailer, Recipient
from jobs.models import Job, JobRun, RecipientStatus, RunRecipient, RunStatus, RunTrigger
from jobs.repository import fires
from tenants.revocation import disabled_tenants

log = logging.getLogger(__name__)

# A run is tried at most 8 times; a retry waits 5 s, 30 s, 2 min, 10 min, then 30 min (± 20 %).
RETRY = RetryPolicy(schedule=(5.0, 30.0, 120.0, 600.0, 1800.0), max_attempts=8)
LEASE = timedelta(minutes=5)


class RunBusy(Exception):
    """Another worker holds the run's lease: try again later (Dramatiq retries this)."""


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
    if run is None or RunStatus(run.status).finished:
        return run.status if run else "missing"
    job = session.get(Job, run.job_pk)
    if job is None or job.deleted or (run.trigger == RunTrigger.SCHEDULE and not fires(job)):
        run.cancel("job deleted or inactive", datetime.now(UTC))
        uow.commit()
        return RunStatus.CANCELLED
    if disabled_tenants(session, {job.tenant}):  # store.revocation: its jobs pause
        run.cancel("tenant disabled", datetime.now(UTC))
        uow.commit()
        return RunStatus.CANCELLED
    now = datetime.now(UTC)
    if run.leased(now):
        raise RunBusy(f"run {run_id} is being carried out by another worker")
    run.start(now, LEASE)
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
        run.renew(now, LEASE)
        if result.ok:
            for p in chunk:
                session.add(RunRecipient(run_id=run.id, customer_id=p.customer_id, email=p.email,
                                         status=RecipientStatus.SENT, items=len(p.picks),
                                         at=now))
                for pick in p.picks:
                    pick.remember(pick.item)
            run.sent += len(chunk)
            uow.commit()
            continue
        if result.transient and RETRY.may_retry(run.attempts):
            delay = RETRY.delay(run.attempts, result.retry_after)
            run.retry_later(result.error)
            schedule_retry(delay)
            uow.commit()
            log.warning("run %s: mail send failed (%s), retrying in %.0f s", run_id, result.error,
                        delay)
            return RunStatus.RETRYING
        for p in chunk:
            session.add(RunRecipient(run_id=run.id, customer_id=p.customer_id, email=p.email,
                                     status=RecipientStatus.FAILED, items=len(p.picks),
                                     at=now))
        run.failed += len(chunk)
        run.error = (result.error or "")[:1024]
        uow.commit()
    run = _lock_run(session, run_id)
    assert run is not None
    run.complete(datetime.now(UTC))
    uow.commit()
    return run.status
