"""Tables of notification jobs, their runs and each run's recipients."""

from __future__ import annotations

from datetime import datetime
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
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)  # schedule | manual
    status: Mapped[str] = mapped_column(String(16), nullable=False)
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
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # sent | failed
    items: Mapped[int] = mapped_column(Integer, nullable=False)
    at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    __table_args__ = (UniqueConstraint("run_id", "customer_id", name="uq_run_recipients"),)
