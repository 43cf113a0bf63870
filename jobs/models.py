"""Tables of notification jobs, their runs and each run's recipients."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base, JsonType, SequenceType, UtcDateTime
from infra.limits import (
    EVENT_ID_MAX,
    JOB_TEXT_MAX,
    TENANT_MAX,
    TIMEZONE_MAX,
)
from infra.states import IllegalTransition


class RunStatus(StrEnum):
    """A job run's ``status`` column: queued → running ⇄ retrying → done | failed, or cancelled
    before it finishes."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED)


class RunTrigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"


class RecipientStatus(StrEnum):
    SENT = "sent"
    FAILED = "failed"


class Job(Base):
    """A notification job: a cron schedule that mails wishlist items through a template."""

    __tablename__ = "jobs"

    pk: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(EVENT_ID_MAX), nullable=False)
    tenant: Mapped[str] = mapped_column(String(TENANT_MAX), nullable=False)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False)
    is_scheduled: Mapped[bool] = mapped_column(Boolean, nullable=False)
    job_parameters: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False)
    notification: Mapped[str] = mapped_column(String(16), nullable=False)
    number_of_items_in_email: Mapped[int] = mapped_column(Integer, nullable=False)
    schedule: Mapped[str | None] = mapped_column(String(JOB_TEXT_MAX))
    schedule_expression: Mapped[str | None] = mapped_column(String(JOB_TEXT_MAX))
    timezone: Mapped[str] = mapped_column(String(TIMEZONE_MAX), nullable=False)
    template_id: Mapped[str] = mapped_column(String(JOB_TEXT_MAX), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    next_run_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_run_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_fire_time: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("tenant", "id", name="uq_jobs_tenant_id"),
        Index("ix_jobs_due", "next_run_at"),
    )


class JobRun(Base):
    """One firing of a job (a cron slot or a manual run); unique per (job, fire time)."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64), nullable=False)
    job_pk: Mapped[int] = mapped_column(BigInteger, nullable=False)
    fire_time: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)  # RunTrigger
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # RunStatus
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    recipients: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    skipped: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(String(1024))
    # While a notify worker carries the run out; another message for the run waits for it.
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)

    def _require(self, action: str, *allowed: RunStatus) -> None:
        if self.status not in allowed:
            raise IllegalTransition("job run", self.status, action)

    def leased(self, now: datetime) -> bool:
        """Another worker is carrying the run out right now."""
        return (self.status == RunStatus.RUNNING and self.lease_until is not None
                and self.lease_until > now)

    def start(self, now: datetime, lease: timedelta) -> None:
        """Running under a lease until ``now + lease`` (also taking over an expired lease)."""
        self._require("start", RunStatus.QUEUED, RunStatus.RETRYING, RunStatus.RUNNING)
        if self.leased(now):
            raise IllegalTransition("job run", "running (leased)", "start")
        self.status = RunStatus.RUNNING
        self.lease_until = now + lease
        self.attempts += 1

    def renew(self, now: datetime, lease: timedelta) -> None:
        self._require("renew its lease", RunStatus.RUNNING)
        self.lease_until = now + lease

    def retry_later(self, error: str | None) -> None:
        """A transient failure: another attempt comes (the lease is let go)."""
        self._require("retry", RunStatus.RUNNING)
        self.status = RunStatus.RETRYING
        self.lease_until = None
        self.error = (error or "")[:1024]

    def complete(self, now: datetime) -> None:
        """Done when anything was sent or nothing failed, else failed."""
        self._require("complete", RunStatus.RUNNING)
        self.status = RunStatus.DONE if self.failed == 0 or self.sent > 0 else RunStatus.FAILED
        self.finished_at = now
        self.lease_until = None

    def cancel(self, reason: str, now: datetime) -> None:
        if RunStatus(self.status).finished:
            raise IllegalTransition("job run", self.status, "cancel")
        self.status = RunStatus.CANCELLED
        self.finished_at = now
        self.error = reason

    __table_args__ = (
        UniqueConstraint("job_pk", "fire_time", name="uq_job_runs_slot"),
        Index("ix_job_runs_unsent", "status", "enqueued_at"),
    )


class RunRecipient(Base):
    """A customer mailed (or failed) in one run: a retried run never mails them twice."""

    __tablename__ = "run_recipients"

    id: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    customer_id: Mapped[str] = mapped_column(String(255), nullable=False)
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # RecipientStatus
    items: Mapped[int] = mapped_column(Integer, nullable=False)
    at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    __table_args__ = (UniqueConstraint("run_id", "customer_id", name="uq_run_recipients"),)
