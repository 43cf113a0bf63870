"""Notification jobs: the input model, storage, computed run times, and firing (scheduler tick)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from store.db import begin_write
from store.domain import ClientId, format_time, new_event_id
from store.limits import (
    INT64_MAX,
    INT64_MIN,
    ITEMS_IN_EMAIL_MAX,
    JOB_PARAM_KEY_MAX,
    JOB_PARAMS_MAX,
    JOB_TEXT_MAX,
    TIMEZONE_MAX,
)
from store.models import Job, JobRun
from store.revocation import disabled_tenant_names
from store.schedules import Schedule, ScheduleError, parse_schedule, zone


class Notification(StrEnum):
    REMINDER = "REMINDER"
    PRICE_DROP = "PRICE_DROP"
    LOW_STOCK = "LOW_STOCK"
    BACK_IN_STOCK = "BACK_IN_STOCK"


class JobError(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class JobExists(JobError):
    pass


# A parameter value is read back with orjson (64-bit integers, finite floats) and must say what
# it was written as.
ParamValue = (str | Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
              | Annotated[float, Field(allow_inf_nan=False)] | bool)


class JobIn(BaseModel):
    """A job as clients send it (seed 002's fields, plus ``timezone``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: ClientId | None = None
    deleted: bool = False
    is_active: bool = True
    is_scheduled: bool = True
    job_parameters: dict[Annotated[str, StringConstraints(min_length=1,
                                                          max_length=JOB_PARAM_KEY_MAX)],
                         ParamValue] = Field(default_factory=dict, max_length=JOB_PARAMS_MAX)
    notification: Notification
    number_of_items_in_email: int = Field(-1, ge=-1, le=ITEMS_IN_EMAIL_MAX,
                                          description="-1 = the whole wishlist, else 1..1000")
    schedule: Annotated[str, StringConstraints(max_length=JOB_TEXT_MAX)] | None = None
    scheduleExpression: Annotated[str, StringConstraints(max_length=JOB_TEXT_MAX)] | None = None
    template_id: Annotated[str, StringConstraints(min_length=1, max_length=JOB_TEXT_MAX)]
    timezone: Annotated[str, StringConstraints(max_length=TIMEZONE_MAX)] = "UTC"

    @field_validator("notification", mode="before")
    @classmethod
    def _notification(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return Notification(value)
            except ValueError:
                raise ValueError("must be one of REMINDER, PRICE_DROP, LOW_STOCK, BACK_IN_STOCK") from None
        return value

    @field_validator("number_of_items_in_email")
    @classmethod
    def _count(cls, value: int) -> int:
        if value != -1 and not 1 <= value <= 1000:
            raise ValueError("must be -1 (the whole wishlist) or 1 to 1000")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zone(value)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            from store.schedules import check_cron

            try:
                return check_cron(value)
            except ScheduleError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("scheduleExpression")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_schedule(None, value, "UTC", datetime.now(UTC))
            except ScheduleError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("job_parameters")
    @classmethod
    def _params(cls, value: dict[str, ParamValue]) -> dict[str, ParamValue]:
        threshold = value.get("low_stock_threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int)
                                      or threshold < 0):
            raise ValueError("low_stock_threshold must be a non-negative integer")
        for key in ("campaign_id", "utm_medium", "utm_source", "utm_campaign"):
            if key in value and not isinstance(value[key], str):
                raise ValueError(f"{key} must be a string")
        return value

    @model_validator(mode="after")
    def _has_schedule(self) -> JobIn:
        if not self.schedule and not self.scheduleExpression:
            raise ValueError("a job needs a schedule (5-field cron) or a scheduleExpression")
        return self


def schedule_of(job: Job) -> Schedule:
    return parse_schedule(job.schedule, job.schedule_expression, job.timezone,
                          _aware(job.created_at))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


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
    begin_write(session)
    now = datetime.now(UTC)
    job_id = data.id or new_event_id()
    if get_job(session, tenant, job_id) is not None:
        raise JobExists(f"a job with id {job_id!r} already exists", "id")
    job = Job(id=job_id, tenant=tenant, created_at=now)
    _apply(job, data, now)
    session.add(job)
    session.commit()
    return job


def update_job(session: Session, tenant: str, job_id: str, data: JobIn) -> Job | None:
    begin_write(session)
    job = get_job(session, tenant, job_id)
    if job is None:
        return None
    _apply(job, data, datetime.now(UTC))
    session.commit()
    return job


def delete_job(session: Session, tenant: str, job_id: str) -> bool:
    """Soft delete: the job stays visible with ``deleted=true`` and never fires again."""
    begin_write(session)
    job = get_job(session, tenant, job_id)
    if job is None:
        return False
    job.deleted = True
    job.next_run_at = None
    job.updated_at = datetime.now(UTC)
    session.commit()
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


def _time(moment: datetime | None) -> str | None:
    return format_time(moment) if moment else None


def to_api(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "deleted": job.deleted,
        "is_active": job.is_active,
        "is_scheduled": job.is_scheduled,
        "job_parameters": dict(job.job_parameters or {}),
        "notification": job.notification,
        "number_of_items_in_email": job.number_of_items_in_email,
        "schedule": job.schedule,
        "scheduleExpression": job.schedule_expression,
        "template_id": job.template_id,
        "timezone": job.timezone,
        "next_run_at": _time(job.next_run_at),
        "last_run_at": _time(job.last_run_at),
        "created_at": _time(job.created_at),
        "updated_at": _time(job.updated_at),
    }


def run_to_api(run: JobRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "fire_time": _time(run.fire_time),
        "trigger": run.trigger,
        "status": run.status,
        "created_at": _time(run.created_at),
        "finished_at": _time(run.finished_at),
        "recipients": run.recipients,
        "sent": run.sent,
        "failed": run.failed,
        "skipped": run.skipped,
        "attempts": run.attempts,
        "error": run.error,
    }


def list_runs(session: Session, job: Job, *, limit: int = 100) -> list[JobRun]:
    return list(session.execute(
        select(JobRun).where(JobRun.job_pk == job.pk).order_by(JobRun.fire_time.desc()).limit(limit)
    ).scalars())


def _insert_run(session: Session, job: Job, fire_time: datetime, trigger: str,
                now: datetime) -> int | None:
    """Insert the run for (job, fire_time) unless it exists; return its id if new."""
    values = {"tenant": job.tenant, "job_pk": job.pk, "fire_time": fire_time, "trigger": trigger,
              "status": "queued", "created_at": now, "recipients": 0, "sent": 0, "failed": 0,
              "skipped": 0, "attempts": 0}
    dialect = session.get_bind().dialect.name
    ins = pg_insert(JobRun) if dialect == "postgresql" else sqlite_insert(JobRun)
    stmt = ins.values(**values).on_conflict_do_nothing(index_elements=["job_pk", "fire_time"])
    row = session.execute(stmt.returning(JobRun.id)).first()
    return int(row[0]) if row else None


def run_now(session: Session, job: Job) -> int:
    """A manual run (POST /jobs/{id}/run); committed, to be enqueued by the caller."""
    begin_write(session)
    now = datetime.now(UTC)
    run_id = _insert_run(session, job, now, "manual", now)
    if run_id is None:  # two manual runs in the same microsecond
        run_id = _insert_run(session, job, now + timedelta(microseconds=1), "manual", now)
    assert run_id is not None
    session.commit()
    return run_id


@dataclass(frozen=True)
class TickResult:
    fired: list[int]  # new run ids to enqueue
    stale: list[int]  # runs created earlier but never marked enqueued (a crash in between)


def tick(session: Session, now: datetime, *, batch: int = 100,
         stale_after: timedelta = timedelta(seconds=30)) -> TickResult:
    """Fire every due job once for its latest slot (missed slots coalesce) and commit.

    Several schedulers may run this at once: rows are claimed with SKIP LOCKED on PostgreSQL,
    and a run is unique per (job, fire time), so each slot fires exactly once.
    """
    begin_write(session)
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
        if slot is not None and (job.last_fire_time is None or slot > _aware(job.last_fire_time)):
            run_id = _insert_run(session, job, slot, "schedule", now)
            if run_id is not None:
                fired.append(run_id)
            job.last_fire_time = slot
            job.last_run_at = now
        job.next_run_at = schedule.next_after(now)
    session.commit()
    stale = list(session.execute(
        select(JobRun.id).where(JobRun.status == "queued", JobRun.enqueued_at.is_(None),
                                JobRun.created_at < now - stale_after).limit(batch)
    ).scalars())
    session.rollback()
    return TickResult(fired=fired, stale=stale)


def mark_enqueued(session: Session, run_ids: list[int]) -> None:
    if not run_ids:
        return
    session.execute(update(JobRun).where(JobRun.id.in_(run_ids), JobRun.enqueued_at.is_(None))
                    .values(enqueued_at=datetime.now(UTC)))
    session.commit()


