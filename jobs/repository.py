"""Job storage, computed run times, runs, and firing (the scheduler's tick)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from events.contract import new_event_id
from jobs.contract import JobExists, JobIn, JobOut, JobRunOut
from jobs.models import Job, JobRun, RunStatus, RunTrigger
from jobs.schedules import Schedule, parse_schedule
from tenants.revocation import disabled_tenant_names


def schedule_of(job: Job) -> Schedule:
    return parse_schedule(job.schedule, job.schedule_expression, job.timezone,
                          job.created_at)


def fires(job: Job) -> bool:
    return job.is_active and job.is_scheduled and not job.deleted


def _apply(job: Job, data: JobIn, now: datetime) -> None:
    job.deleted = data.deleted
    job.is_active = data.is_active
    job.is_scheduled = data.is_scheduled
    job.job_parameters = dict(data.job_parameters)
    job.notification = data.notification.value
    job.number_of_items_in_email = data.number_of_items_in_email
    job.schedule = data.schedule
    job.schedule_expression = data.scheduleExpression
    job.timezone = data.timezone
    job.template_id = data.template_id
    job.updated_at = now
    job.next_run_at = schedule_of(job).next_after(now) if fires(job) else None


def create_job(session: Session, tenant: str, data: JobIn) -> Job:
    now = datetime.now(UTC)
    job_id = data.id or new_event_id()
    if get_job(session, tenant, job_id) is not None:
        raise JobExists(f"a job with id {job_id!r} already exists", "id")
    job = Job(id=job_id, tenant=tenant, created_at=now)
    _apply(job, data, now)
    session.add(job)
    session.flush()  # its pk, as a commit would give it
    return job


def update_job(session: Session, tenant: str, job_id: str, data: JobIn) -> Job | None:
    job = get_job(session, tenant, job_id)
    if job is None:
        return None
    _apply(job, data, datetime.now(UTC))
    return job


def delete_job(session: Session, tenant: str, job_id: str) -> bool:
    """Soft delete: the job stays visible with ``deleted=true`` and never fires again."""
    job = get_job(session, tenant, job_id)
    if job is None:
        return False
    job.deleted = True
    job.next_run_at = None
    job.updated_at = datetime.now(UTC)
    return True


def get_job(session: Session, tenant: str, job_id: str) -> Job | None:
    return session.execute(
        select(Job).where(Job.tenant == tenant, Job.id == job_id)
    ).scalar_one_or_none()


def list_jobs(session: Session, tenant: str, *, include_deleted: bool,
              from_pk: int | None = None, limit: int | None = None) -> list[Job]:
    """In creation order; from internal key ``from_pk`` on, at most ``limit``."""
    stmt = select(Job).where(Job.tenant == tenant)
    if not include_deleted:
        stmt = stmt.where(Job.deleted.is_(False))
    if from_pk is not None:
        stmt = stmt.where(Job.pk >= from_pk)
    return list(session.execute(stmt.order_by(Job.pk).limit(limit)).scalars())


def to_api(job: Job) -> JobOut:
    return JobOut.from_row(job)


def run_to_api(run: JobRun) -> JobRunOut:
    return JobRunOut.from_row(run)


def list_runs(session: Session, job: Job, *, limit: int = 100) -> list[JobRun]:
    return list(session.execute(
        select(JobRun).where(JobRun.job_pk == job.pk).order_by(JobRun.fire_time.desc()).limit(limit)
    ).scalars())


def _insert_run(session: Session, job: Job, fire_time: datetime, trigger: str,
                now: datetime) -> int | None:
    """Insert the run for (job, fire_time) unless it exists; return its id if new."""
    values = {"tenant": job.tenant, "job_pk": job.pk, "fire_time": fire_time, "trigger": trigger,
              "status": RunStatus.QUEUED, "created_at": now, "recipients": 0, "sent": 0, "failed": 0,
              "skipped": 0, "attempts": 0}
    dialect = session.get_bind().dialect.name
    ins = pg_insert(JobRun) if dialect == "postgresql" else sqlite_insert(JobRun)
    stmt = ins.values(**values).on_conflict_do_nothing(index_elements=["job_pk", "fire_time"])
    row = session.execute(stmt.returning(JobRun.id)).first()
    return int(row[0]) if row else None


def run_now(session: Session, job: Job) -> int:
    """A manual run (POST /jobs/{id}/run), to be enqueued by the caller once committed."""
    now = datetime.now(UTC)
    run_id = _insert_run(session, job, now, RunTrigger.MANUAL, now)
    if run_id is None:  # two manual runs in the same microsecond
        run_id = _insert_run(session, job, now + timedelta(microseconds=1), RunTrigger.MANUAL,
                                now)
    assert run_id is not None
    return run_id


@dataclass(frozen=True)
class TickResult:
    fired: list[int]  # new run ids to enqueue
    stale: list[int]  # runs created earlier but never marked enqueued (a crash in between)


def tick(session: Session, now: datetime, *, batch: int = 100,
         stale_after: timedelta = timedelta(seconds=30)) -> TickResult:
    """Fire every due job once for its latest slot (missed slots coalesce); the caller commits.

    Several schedulers may run this at once: rows are claimed with SKIP LOCKED on PostgreSQL,
    and a run is unique per (job, fire time), so each slot fires exactly once.
    """
    stmt = select(Job).where(
        Job.next_run_at.is_not(None), Job.next_run_at <= now, Job.deleted.is_(False),
        Job.is_active.is_(True), Job.is_scheduled.is_(True),
        Job.tenant.not_in(disabled_tenant_names()),  # paused while disabled (store.revocation)
    ).order_by(Job.next_run_at).limit(batch)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    fired: list[int] = []
    for job in session.execute(stmt).scalars():
        schedule = schedule_of(job)
        slot = schedule.latest_at_or_before(now)
        if slot is not None and (job.last_fire_time is None or slot > job.last_fire_time):
            run_id = _insert_run(session, job, slot, RunTrigger.SCHEDULE, now)
            if run_id is not None:
                fired.append(run_id)
            job.last_fire_time = slot
            job.last_run_at = now
        job.next_run_at = schedule.next_after(now)
    stale = list(session.execute(
        select(JobRun.id).where(JobRun.status == RunStatus.QUEUED, JobRun.enqueued_at.is_(None),
                                JobRun.created_at < now - stale_after).limit(batch)
    ).scalars())
    return TickResult(fired=fired, stale=stale)


def mark_enqueued(session: Session, run_ids: list[int]) -> None:
    if not run_ids:
        return
    session.execute(update(JobRun).where(JobRun.id.in_(run_ids), JobRun.enqueued_at.is_(None))
                    .values(enqueued_at=datetime.now(UTC)))
