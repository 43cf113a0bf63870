"""Job schedules: 5-field cron in an IANA time zone, or ``rate(N unit)`` / ``cron(...)`` expressions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from infra.limits import full_pattern

# Matched whole with ASCII classes (store/limits.py). A schedule is printable ASCII: cron has
# no use for a tab, a newline or a non-ASCII digit (Python's int() would read "٥" as 5).
_RATE_RE = full_pattern(r"rate\( *([0-9]{1,6}) +(minute|minutes|hour|hours|day|days) *\)")
_CRON_WRAP_RE = full_pattern(r"cron\((.*)\)")
_CRON_CHARS_RE = full_pattern(r"[ -~]*")
_DOW_NUMBER_RE = re.compile(r"(?<![#0-9])[0-9]+", re.ASCII)  # rewrites AWS day numbers
_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


class ScheduleError(ValueError):
    """The schedule cannot be understood; the message says how to write it."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown IANA time zone {name!r} (e.g. Europe/Berlin)") from None


def _printable(text: str, what: str) -> None:
    if not _CRON_CHARS_RE.fullmatch(text):
        raise ScheduleError(f"{what} may hold only printable ASCII characters and spaces")


def check_cron(expr: str) -> str:
    """A 5-field cron expression (minute hour day-of-month month day-of-week), validated."""
    _printable(expr, "a cron expression")
    fields = expr.split()
    if len(fields) != 5 or not croniter.is_valid(expr):
        raise ScheduleError("must be a 5-field cron expression, e.g. '0 9 * * 1' (09:00 Mondays)")
    try:  # valid syntax can still name a day that never comes (e.g. 31 February)
        croniter(" ".join(fields), datetime(2026, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (CroniterBadDateError, CroniterBadCronError):
        raise ScheduleError("this cron expression never fires") from None
    return " ".join(fields)


def _aws_cron(inner: str) -> str:
    """AWS EventBridge's 6-field cron (… year) with '?' → our 5-field form.

    AWS numbers days of the week 1-7 from Sunday; 5-field cron numbers them 0-6.
    """
    fields = inner.split()
    if len(fields) == 6:
        if fields[5] not in ("*", "?"):
            raise ScheduleError("cron(...) with a specific year is not supported; use '*'")
        fields = fields[:5]
    if len(fields) == 5:
        def shift(match: re.Match[str]) -> str:
            day = int(match.group(0))
            if not 1 <= day <= 7:
                raise ScheduleError("AWS cron days of the week are 1-7 (1 = Sunday)")
            return str(day - 1)

        fields[4] = _DOW_NUMBER_RE.sub(shift, fields[4])
    return check_cron(" ".join("*" if f == "?" else f for f in fields))


@dataclass(frozen=True)
class Schedule:
    """When a job fires. Either ``cron`` (local time in ``tz``) or a fixed ``every`` interval."""

    tz: ZoneInfo
    cron: str | None = None
    every: timedelta | None = None
    anchor: datetime | None = None  # start of a rate schedule

    @property
    def _wall_clock(self) -> bool:
        # Like classic cron: a job at fixed hours fires once on the day an hour repeats; one
        # that runs every hour keeps real intervals across the change.
        return self.cron is not None and self.cron.split()[1] != "*"

    def _repeat(self, instant: datetime) -> bool:
        """True for the second pass through a repeated local time (DST fall-back)."""
        return self._wall_clock and instant.astimezone(self.tz).fold == 1

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (UTC)."""
        if self.every is not None:
            assert self.anchor is not None
            if moment < self.anchor:
                return self.anchor
            steps = int((moment - self.anchor) / self.every) + 1
            return self.anchor + steps * self.every
        assert self.cron is not None
        it = croniter(self.cron, moment.astimezone(self.tz))
        while True:
            candidate = it.get_next(datetime).astimezone(UTC)
            if candidate > moment and not self._repeat(candidate):
                return candidate

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last fire time at or before ``moment`` (UTC), for coalescing missed slots."""
        if self.every is not None:
            assert self.anchor is not None
            if moment < self.anchor:
                return None
            steps = int((moment - self.anchor) / self.every)
            return self.anchor + steps * self.every
        assert self.cron is not None
        it = croniter(self.cron, (moment + timedelta(microseconds=1)).astimezone(self.tz))
        while True:
            candidate = it.get_prev(datetime).astimezone(UTC)
            if candidate <= moment and not self._repeat(candidate):
                return candidate


def parse_schedule(schedule: str | None, expression: str | None, tz_name: str,
                   anchor: datetime) -> Schedule:
    """``scheduleExpression`` wins over ``schedule`` when both are given."""
    tz = zone(tz_name)
    if expression:
        _printable(expression, "scheduleExpression")
        text = expression.strip()
        rate = _RATE_RE.fullmatch(text)
        if rate:
            count, unit = int(rate.group(1)), rate.group(2)
            if count < 1:
                raise ScheduleError("rate(...) needs a positive number")
            return Schedule(tz=tz, every=timedelta(seconds=count * _UNITS[unit]),
                            anchor=anchor.replace(second=0, microsecond=0))
        wrapped = _CRON_WRAP_RE.fullmatch(text)
        if wrapped:
            return Schedule(tz=tz, cron=_aws_cron(wrapped.group(1)))
        try:
            return Schedule(tz=tz, cron=check_cron(text))
        except ScheduleError:
            raise ScheduleError(
                "scheduleExpression must be rate(N minutes|hours|days), cron(<5 or 6 fields>) "
                "or a 5-field cron expression") from None
    if not schedule:
        raise ScheduleError("a job needs a schedule (5-field cron) or a scheduleExpression")
    return Schedule(tz=tz, cron=check_cron(schedule))
