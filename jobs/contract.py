"""Jobs as the HTTP contract defines them: notification kinds, the input model and the response
models (jobs, their runs)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from events.contract import ClientId
from infra.contract import ResponseModel, Timestamp
from infra.limits import (
    INT64_MAX,
    INT64_MIN,
    ITEMS_IN_EMAIL_MAX,
    JOB_PARAM_KEY_MAX,
    JOB_PARAMS_MAX,
    JOB_TEXT_MAX,
    TIMEZONE_MAX,
)
from jobs.schedules import ScheduleError, parse_schedule, zone

if TYPE_CHECKING:
    from jobs.models import Job, JobRun


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
            from jobs.schedules import check_cron

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


# --- response models ---------------------------------------------------------------------------


class JobOut(ResponseModel):
    """A notification job as responses show it."""

    id: str
    deleted: bool
    is_active: bool
    is_scheduled: bool
    job_parameters: dict[str, Any]
    notification: str
    number_of_items_in_email: int
    schedule: str | None
    scheduleExpression: str | None
    template_id: str
    timezone: str
    next_run_at: Timestamp | None
    last_run_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def from_row(cls, job: Job) -> Self:
        return cls(id=job.id, deleted=job.deleted, is_active=job.is_active,
                   is_scheduled=job.is_scheduled, job_parameters=dict(job.job_parameters or {}),
                   notification=job.notification,
                   number_of_items_in_email=job.number_of_items_in_email, schedule=job.schedule,
                   scheduleExpression=job.schedule_expression, template_id=job.template_id,
                   timezone=job.timezone, next_run_at=job.next_run_at,
                   last_run_at=job.last_run_at, created_at=job.created_at,
                   updated_at=job.updated_at)


class JobRunOut(ResponseModel):
    id: int = Field(description="opaque; the run_id of POST .../run and of SendGrid's custom args")
    fire_time: Timestamp
    trigger: str
    status: str
    created_at: Timestamp
    finished_at: Timestamp | None
    recipients: int
    sent: int
    failed: int
    skipped: int
    attempts: int
    error: str | None

    @classmethod
    def from_row(cls, run: JobRun) -> Self:
        return cls(id=run.id, fire_time=run.fire_time, trigger=run.trigger, status=run.status,
                   created_at=run.created_at, finished_at=run.finished_at,
                   recipients=run.recipients, sent=run.sent, failed=run.failed,
                   skipped=run.skipped, attempts=run.attempts, error=run.error)


class JobRuns(ResponseModel):
    runs: list[JobRunOut]


class RunQueued(ResponseModel):
    run_id: int = Field(description="opaque; the id in the run history")
    status: str = Field(description="queued; or deferred when the broker could not be reached: "
                                    "the run is recorded and the scheduler sends it (do not retry)")
