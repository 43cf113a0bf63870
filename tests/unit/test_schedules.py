"""Job schedules (store/schedules.py) and the scheduler tick (scheduler/loop.py tick_once).

The tick tests create jobs through /api/v1/jobs on the StubMailer app (``embedded("mailer")``) and
call ``tick_once`` with chosen ``now`` values, so no test waits for a clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from jobs.models import Job
from jobs.schedules import Schedule, ScheduleError, check_cron, parse_schedule, zone
from scheduler.loop import tick_once
from tests.conftest import Caller, internal_id
from tests.support.apps import runtime_of
from tests.support.jobs import BASE, call, create_job, get_job, job_body, runs_of, settle, ts

# conftest's ``embedded`` (and so ``acme``/``globex``) is the StubMailer app; ``stub`` its mailer.
pytestmark = pytest.mark.embedded("mailer")

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ANCHOR = datetime(2026, 1, 1, 12, 34, 56, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def fire_times(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time strictly after ``start`` and before ``end``, by repeated next_after."""
    times = []
    moment = schedule.next_after(start)
    while moment < end:
        times.append(moment)
        moment = schedule.next_after(moment)
    return times


# --- 5-field cron ----------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "normalized"), [
    ("0 9 * * *", "0 9 * * *"),
    ("*/5 * * * *", "*/5 * * * *"),
    ("0 9 * * MON-FRI", "0 9 * * MON-FRI"),
    ("30 2 1,15 * *", "30 2 1,15 * *"),
    ("  0   9 * *  1 ", "0 9 * * 1"),
])
def test_a_valid_five_field_cron_is_accepted_and_normalized(expr: str, normalized: str) -> None:
    assert check_cron(expr) == normalized


@pytest.mark.parametrize("expr", [
    "", "0 9 * *", "0 9 * * * *", "61 * * * *", "0 24 * * *", "0 9 32 * *", "0 9 * 13 *",
    "0 9 * * 8", "*/0 * * * *", "@daily", "every day at nine", "H 9 * * *",
])
def test_an_invalid_cron_is_a_schedule_error_saying_how_to_write_it(expr: str) -> None:
    with pytest.raises(ScheduleError, match="5-field cron") as caught:
        check_cron(expr)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ValueError):
        parse_schedule(expr, None, "UTC", ANCHOR)


@pytest.mark.parametrize("expr", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4 *"])
def test_a_cron_that_can_never_fire_is_rejected(expr: str) -> None:
    # Given valid syntax naming a day that never comes, Then it is rejected up front
    with pytest.raises(ScheduleError, match="never fires"):
        check_cron(expr)
    with pytest.raises(ScheduleError):
        parse_schedule(None, f"cron({expr[:-1]}? *)", "UTC", ANCHOR)


def test_a_rare_but_real_date_is_found() -> None:
    # Given 29 February (only in leap years), When the next fire time is asked for in 2026
    schedule = parse_schedule("0 0 29 2 *", None, "UTC", ANCHOR)
    # Then it is 2028-02-29
    assert schedule.next_after(utc(2026, 3, 1)) == utc(2028, 2, 29)


def test_cron_is_evaluated_in_the_jobs_time_zone() -> None:
    schedule = parse_schedule("0 9 * * *", None, "Europe/Berlin", ANCHOR)
    # 09:00 in Berlin in winter (CET, +01:00) is 08:00 UTC; in summer (CEST, +02:00) 07:00 UTC
    assert schedule.next_after(utc(2026, 1, 10)) == utc(2026, 1, 10, 8)
    assert schedule.next_after(utc(2026, 7, 10)) == utc(2026, 7, 10, 7)


def test_next_after_is_strict_and_latest_at_or_before_includes_the_slot() -> None:
    schedule = parse_schedule("*/5 * * * *", None, "UTC", ANCHOR)
    slot = utc(2026, 5, 1, 10, 5)
    assert schedule.next_after(slot) == utc(2026, 5, 1, 10, 10)
    assert schedule.next_after(slot - timedelta(microseconds=1)) == slot
    assert schedule.latest_at_or_before(slot) == slot
    assert schedule.latest_at_or_before(slot - timedelta(microseconds=1)) == utc(2026, 5, 1, 10, 0)
    assert schedule.latest_at_or_before(utc(2026, 5, 1, 10, 21, 30)) == utc(2026, 5, 1, 10, 20)


# --- DST -------------------------------------------------------------------------------------

def test_berlin_spring_forward_a_nonexistent_local_time_fires_once_at_the_end_of_the_gap() -> None:
    # Given a daily job at 02:30 Berlin time; on 2026-03-29 clocks jump 02:00 CET → 03:00 CEST,
    # so 02:30 does not exist that day
    schedule = parse_schedule("30 2 * * *", None, "Europe/Berlin", ANCHOR)
    # When the fire times from 28 to 31 March are listed
    times = fire_times(schedule, utc(2026, 3, 28, 12), utc(2026, 3, 31, 12))
    # Then the 29th fires exactly once, at 03:00 CEST (01:00 UTC), the first minute after the gap;
    # the days around it fire at 02:30 local
    assert times == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]
    local = [t.astimezone(BERLIN) for t in times]
    assert [(t.day, t.hour, t.minute) for t in local] == [(29, 3, 0), (30, 2, 30), (31, 2, 30)]
    # And coalescing agrees with it anywhere inside and after the gap
    for minute in (0, 10, 45, 59):
        moment = utc(2026, 3, 29, 1, minute)
        assert schedule.latest_at_or_before(moment) == utc(2026, 3, 29, 1)
    assert schedule.latest_at_or_before(utc(2026, 3, 29, 0, 59)) == utc(2026, 3, 28, 1, 30)


def test_berlin_fall_back_a_repeated_local_time_first_fires_at_its_first_occurrence() -> None:
    # Given a daily job at 02:30 Berlin time; on 2026-10-25 clocks go back 03:00 CEST → 02:00 CET,
    # so 02:30 happens twice (00:30 UTC and 01:30 UTC). (01:30 local happens only once there:
    # it is before the change.)
    schedule = parse_schedule("30 2 * * *", None, "Europe/Berlin", ANCHOR)
    first = schedule.next_after(utc(2026, 10, 24, 12))
    # Then the first fire that day is the first 02:30 (CEST, 00:30 UTC)
    assert first == utc(2026, 10, 25, 0, 30)
    assert first.astimezone(BERLIN).utcoffset() == timedelta(hours=2)
    # And coalescing returns the same slot for any moment up to the second 02:30
    assert schedule.latest_at_or_before(utc(2026, 10, 25, 1, 29)) == first
    # And 01:30 local, which happens once, fires once (23:30 UTC the day before)
    once = parse_schedule("30 1 * * *", None, "Europe/Berlin", ANCHOR)
    assert fire_times(once, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12)) == [
        utc(2026, 10, 24, 23, 30), utc(2026, 10, 26, 0, 30)]


def test_berlin_fall_back_a_daily_job_fires_once_that_day() -> None:
    schedule = parse_schedule("30 2 * * *", None, "Europe/Berlin", ANCHOR)
    times = fire_times(schedule, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert [t.astimezone(BERLIN).date().day for t in times] == [25, 26]


def test_berlin_fall_back_a_frequent_job_keeps_real_time_spacing() -> None:
    # Given a job every 15 minutes, When the local hour 02:00–03:00 repeats on 2026-10-25
    schedule = parse_schedule("*/15 * * * *", None, "Europe/Berlin", ANCHOR)
    times = fire_times(schedule, utc(2026, 10, 24, 23, 50), utc(2026, 10, 25, 2, 5))
    # Then it fires every 15 real minutes through both local 02:xx hours, none skipped or doubled
    assert times == [utc(2026, 10, 25, 0, 0) + timedelta(minutes=15 * i) for i in range(9)]
    # And coalescing never goes backwards across the change
    for t in times:
        assert schedule.latest_at_or_before(t + timedelta(minutes=1)) == t


def test_new_york_daily_0900_stays_0900_local_across_the_november_change() -> None:
    # Given a daily job at 09:00 America/New_York; EDT (-4) ends on 2026-11-01 (EST, -5)
    schedule = parse_schedule("0 9 * * *", None, "America/New_York", ANCHOR)
    # When four days around the change are listed
    times = fire_times(schedule, utc(2026, 10, 30), utc(2026, 11, 3))
    # Then the UTC hour moves 13 → 14 while the local time stays 09:00
    assert [(t.day, t.hour) for t in times] == [(30, 13), (31, 13), (1, 14), (2, 14)]
    assert {(t.astimezone(NEW_YORK).hour, t.astimezone(NEW_YORK).minute) for t in times} == {(9, 0)}


# --- expressions -----------------------------------------------------------------------------

def test_rate_minutes_is_anchored_at_the_minute_of_creation() -> None:
    # Given rate(5 minutes) for a job created at 12:34:56
    schedule = parse_schedule(None, "rate(5 minutes)", "UTC", ANCHOR)
    assert (schedule.cron, schedule.every) == (None, timedelta(minutes=5))
    assert schedule.anchor == utc(2026, 1, 1, 12, 34)
    # Then it fires every 5 minutes from 12:34
    assert schedule.next_after(ANCHOR) == utc(2026, 1, 1, 12, 39)
    assert schedule.next_after(utc(2026, 1, 1, 12, 39)) == utc(2026, 1, 1, 12, 44)
    assert schedule.next_after(utc(2026, 1, 1, 12, 0)) == utc(2026, 1, 1, 12, 34)
    # And coalescing picks the latest 5-minute step, none before the anchor
    assert schedule.latest_at_or_before(utc(2026, 1, 1, 13, 0)) == utc(2026, 1, 1, 12, 59)
    assert schedule.latest_at_or_before(utc(2026, 1, 1, 12, 0)) is None


@pytest.mark.parametrize(("text", "every"), [
    ("rate(1 day)", timedelta(days=1)),
    ("rate(2 days)", timedelta(days=2)),
    ("rate(1 minute)", timedelta(minutes=1)),
    ("rate(3 hours)", timedelta(hours=3)),
    ("rate( 10  minutes )", timedelta(minutes=10)),
])
def test_rate_units(text: str, every: timedelta) -> None:
    schedule = parse_schedule(None, text, "UTC", ANCHOR)
    assert schedule.every == every
    assert schedule.next_after(utc(2026, 2, 1)) - schedule.latest_at_or_before(utc(2026, 2, 1)) \
        == every  # type: ignore[operator]


def test_rate_1_day_fires_at_the_same_utc_time_every_day() -> None:
    schedule = parse_schedule(None, "rate(1 day)", "Europe/Berlin", ANCHOR)
    times = fire_times(schedule, utc(2026, 3, 27), utc(2026, 3, 31))
    assert times == [utc(2026, 3, day, 12, 34) for day in (27, 28, 29, 30)]


def test_aws_cron_form_is_read_as_five_field_cron() -> None:
    schedule = parse_schedule(None, "cron(0 9 * * ? *)", "UTC", ANCHOR)
    assert schedule.cron == "0 9 * * *"
    assert schedule.next_after(utc(2026, 6, 1, 9)) == utc(2026, 6, 2, 9)
    weekly = parse_schedule(None, "cron(0 9 ? * MON *)", "UTC", ANCHOR)
    assert weekly.cron == "0 9 * * MON"
    assert weekly.next_after(utc(2026, 11, 22)).weekday() == 0  # a Monday
    five = parse_schedule(None, "cron(*/10 * * * *)", "UTC", ANCHOR)
    assert five.cron == "*/10 * * * *"


def test_aws_cron_numeric_day_of_week_is_the_aws_day() -> None:
    schedule = parse_schedule(None, "cron(0 9 ? * 2 *)", "UTC", ANCHOR)
    assert schedule.next_after(utc(2026, 11, 22)).weekday() == 0  # AWS 2 = Monday


def test_a_plain_five_field_cron_is_accepted_as_schedule_expression() -> None:
    schedule = parse_schedule(None, "0 9 * * *", "America/New_York", ANCHOR)
    assert schedule.cron == "0 9 * * *"
    assert schedule.tz == NEW_YORK


def test_schedule_expression_wins_over_schedule() -> None:
    schedule = parse_schedule("0 9 * * *", "rate(5 minutes)", "UTC", ANCHOR)
    assert (schedule.cron, schedule.every) == (None, timedelta(minutes=5))
    cron = parse_schedule("0 9 * * *", "cron(30 6 * * ? *)", "UTC", ANCHOR)
    assert cron.cron == "30 6 * * *"
    # An empty expression does not win
    assert parse_schedule("0 9 * * *", "", "UTC", ANCHOR).cron == "0 9 * * *"


@pytest.mark.parametrize(("schedule", "expression", "tz", "message"), [
    ("0 9 * * *", None, "Mars/Olympus_Mons", "IANA time zone"),
    ("0 9 * * *", None, "", "IANA time zone"),
    ("0 9 * * *", None, "Europe/Berlin ", "IANA time zone"),
    ("0 9 * * *", None, "../../etc/passwd", "IANA time zone"),
    (None, None, "UTC", "needs a schedule"),
    ("", None, "UTC", "needs a schedule"),
    (None, "rate(0 minutes)", "UTC", "positive"),
    (None, "rate(5 seconds)", "UTC", "scheduleExpression must be"),
    (None, "rate(5 weeks)", "UTC", "scheduleExpression must be"),
    (None, "at(2026-12-24T18:00:00)", "UTC", "scheduleExpression must be"),
    (None, "string", "UTC", "scheduleExpression must be"),
    (None, "cron(0 9 * * ? 2027)", "UTC", "specific year"),
    (None, "cron(0 9 * *)", "UTC", "5-field cron"),
    (None, "cron(0 25 * * ? *)", "UTC", "5-field cron"),
])
def test_invalid_schedules_are_schedule_errors(schedule: str | None, expression: str | None,
                                               tz: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message.replace("(", r"\(")):
        parse_schedule(schedule, expression, tz, ANCHOR)


def test_zone_names_a_known_iana_zone() -> None:
    assert zone("Europe/Berlin") == BERLIN
    with pytest.raises(ValueError, match="Europe/Berlin"):
        zone("Berlin")


# --- the scheduler tick (tick_once with explicit now values) ---------------------------------


def tick(caller: Caller, now: datetime) -> list[int]:
    """One scheduler tick at ``now``: the run ids it committed and enqueued."""
    runtime = runtime_of(caller.client.application)
    return tick_once(runtime.sessions, runtime.broker, now=now)


def run_ids(caller: Caller, job_id: str) -> list[int]:
    """The job's run ids, internal (the API shows them opaque)."""
    return [internal_id("run", r["id"]) for r in runs_of(caller, job_id)]


def test_a_job_fires_once_per_slot_and_missed_slots_coalesce(acme: Caller) -> None:
    # Given a job every 5 minutes, its first slot N in the future
    job = create_job(acme, id="job-5", schedule="*/5 * * * *")
    slot = ts(job["next_run_at"])
    assert slot > datetime.now(UTC) and slot.minute % 5 == 0 and slot.second == 0
    # When the scheduler ticks just before N, Then nothing fires
    assert tick(acme, slot - timedelta(seconds=1)) == []
    # When it ticks at N, Then exactly one run fires, for slot N
    fired = tick(acme, slot)
    assert len(fired) == 1
    runs = runs_of(acme, "job-5")
    assert [(internal_id("run", r["id"]), ts(r["fire_time"]), r["trigger"]) for r in runs] \
        == [(fired[0], slot, "schedule")]
    # When it ticks again at the same moment, and a minute later, Then nothing more fires
    assert tick(acme, slot) == []
    assert tick(acme, slot + timedelta(minutes=1)) == []
    assert run_ids(acme, "job-5") == fired
    after_first = get_job(acme, "job-5")
    assert ts(after_first["next_run_at"]) == slot + timedelta(minutes=5)
    assert ts(after_first["last_run_at"]) == slot
    # When the scheduler was stopped over three slots (N+5, N+10, N+15) and ticks at N+16
    later = slot + timedelta(minutes=16)
    coalesced = tick(acme, later)
    # Then exactly one run fires, for the latest slot N+15
    assert len(coalesced) == 1
    runs = runs_of(acme, "job-5")
    assert [ts(r["fire_time"]) for r in runs] == [slot + timedelta(minutes=15), slot]
    assert internal_id("run", runs[0]["id"]) == coalesced[0]
    # And next_run_at is in the future of that tick: N+20
    job = get_job(acme, "job-5")
    assert ts(job["next_run_at"]) == slot + timedelta(minutes=20)
    assert ts(job["next_run_at"]) > later
    assert tick(acme, later) == []


def test_a_fired_run_is_carried_out_by_the_notify_pool(acme: Caller) -> None:
    # Given a job that fired at its slot (no wishlists: nobody to mail)
    job = create_job(acme, id="job-carried", schedule="*/5 * * * *")
    fired = tick(acme, ts(job["next_run_at"]))
    assert runs_of(acme, "job-carried")[0]["status"] == "queued"
    # When the notify pool has handled the enqueued run
    settle(acme.client.application)
    # Then it is done with no recipients
    [run] = runs_of(acme, "job-carried")
    assert (internal_id("run", run["id"]), run["status"], run["recipients"], run["sent"]) \
        == (fired[0], "done", 0, 0)


def test_deleted_inactive_and_unscheduled_jobs_never_fire(acme: Caller) -> None:
    # Given four jobs every 5 minutes: one normal, one deleted, one inactive, one not scheduled
    create_job(acme, id="job-on", schedule="*/5 * * * *")
    create_job(acme, id="job-deleted", schedule="*/5 * * * *")
    assert call(acme, "DELETE", f"{BASE}/job-deleted").status_code == 204
    create_job(acme, id="job-inactive", schedule="*/5 * * * *", is_active=False)
    create_job(acme, id="job-unscheduled", schedule="*/5 * * * *", is_scheduled=False)
    created_deleted = create_job(acme, id="job-born-deleted", schedule="*/5 * * * *", deleted=True)
    assert created_deleted["next_run_at"] is None
    # And, as if another writer had left one behind, a next_run_at on each of them in the database
    runtime = runtime_of(acme.client.application)
    with runtime.sessions() as session:
        session.execute(update(Job).where(Job.id != "job-on")
                        .values(next_run_at=datetime.now(UTC) - timedelta(hours=1)))
        session.commit()
    # When the scheduler ticks a day later, and again a week later
    now = datetime.now(UTC)
    first = tick(acme, now + timedelta(days=1))
    second = tick(acme, now + timedelta(days=7))
    # Then only the normal job fired, once per tick
    assert len(first) == 1 and len(second) == 1
    assert sorted(run_ids(acme, "job-on")) == sorted(first + second)
    for job_id in ("job-deleted", "job-inactive", "job-unscheduled", "job-born-deleted"):
        assert runs_of(acme, job_id) == [], job_id


def test_a_job_changed_by_put_is_picked_up_without_restart(acme: Caller) -> None:
    # Given a daily 09:00 job the scheduler has already seen (a tick before its slot)
    create_job(acme, id="job-change", schedule="0 9 * * *")
    assert tick(acme, datetime.now(UTC)) == []
    # When it is changed to every 5 minutes through the API
    before = datetime.now(UTC)
    resp = call(acme, "PUT", f"{BASE}/job-change", job_body(schedule="*/5 * * * *"))
    assert resp.status_code == 200
    slot = ts(resp.get_json()["next_run_at"])
    assert before < slot <= before + timedelta(minutes=5)
    # Then the next tick at the new slot fires it, for that slot
    fired = tick(acme, slot)
    assert len(fired) == 1
    assert [ts(r["fire_time"]) for r in runs_of(acme, "job-change")] == [slot]
    # When it is deactivated through the API, Then a later tick no longer fires it
    assert call(acme, "PUT", f"{BASE}/job-change",
                job_body(schedule="*/5 * * * *", is_active=False)).status_code == 200
    assert tick(acme, slot + timedelta(hours=1)) == []


def test_a_rate_job_fires_on_its_steps(acme: Caller) -> None:
    job = create_job(acme, id="job-rate", schedule=None, scheduleExpression="rate(5 minutes)")
    created = ts(job["created_at"]).replace(second=0, microsecond=0)
    slot = ts(job["next_run_at"])
    assert slot == created + timedelta(minutes=5)
    # Stopped for an hour and a bit: one run, for the latest step
    fired = tick(acme, slot + timedelta(minutes=62))
    assert len(fired) == 1
    assert [ts(r["fire_time"]) for r in runs_of(acme, "job-rate")] == [slot + timedelta(minutes=60)]
    assert ts(get_job(acme, "job-rate")["next_run_at"]) == slot + timedelta(minutes=65)


def test_a_year_of_downtime_fires_once(acme: Caller) -> None:
    job = create_job(acme, id="job-year", schedule="0 9 * * *", timezone="Europe/Berlin")
    fired = tick(acme, ts(job["next_run_at"]) + timedelta(days=365, hours=1))
    assert len(fired) == 1
    [run] = runs_of(acme, "job-year")
    fire = ts(run["fire_time"]).astimezone(BERLIN)
    assert (fire.hour, fire.minute) == (9, 0)


# DST through the tick: the 2026 changes are behind the clock these tests run on, so these use
# the 2027 ones (Europe/Berlin: 28 March and 31 October; America/New_York: 7 November).

def test_tick_berlin_spring_forward_fires_once_at_the_end_of_the_gap(acme: Caller) -> None:
    create_job(acme, id="job-spring", schedule="30 2 * * *", timezone="Europe/Berlin")
    # The slot before the change (02:30 CET on 27 March, 01:30 UTC) coalesces a long wait
    assert len(tick(acme, utc(2027, 3, 28, 0, 59))) == 1
    assert ts(get_job(acme, "job-spring")["next_run_at"]) == utc(2027, 3, 28, 1)
    # Ticks through the gap fire once, at 03:00 CEST (01:00 UTC)
    fired = [run for minute in (0, 0, 15, 30, 45) for run in tick(acme, utc(2027, 3, 28, 1, minute))]
    assert len(fired) == 1
    assert [ts(r["fire_time"]) for r in runs_of(acme, "job-spring")] == [
        utc(2027, 3, 28, 1), utc(2027, 3, 27, 1, 30)]
    assert ts(get_job(acme, "job-spring")["next_run_at"]) == utc(2027, 3, 29, 0, 30)


def test_tick_berlin_fall_back_never_fires_twice_for_one_fire_time(acme: Caller) -> None:
    create_job(acme, id="job-fall", schedule="30 2 * * *", timezone="Europe/Berlin")
    # At the first 02:30 (CEST, 00:30 UTC) it fires once, however often the scheduler ticks
    fired = [run for minute in (30, 30, 31, 45, 59) for run in tick(acme, utc(2027, 10, 31, 0, minute))]
    assert len(fired) == 1
    [run] = runs_of(acme, "job-fall")
    assert ts(run["fire_time"]) == utc(2027, 10, 31, 0, 30)
    # And each later fire time fires at most once, too
    for moment in (utc(2027, 10, 31, 1, 30), utc(2027, 10, 31, 1, 30), utc(2027, 10, 31, 2, 0)):
        tick(acme, moment)
    fire_times_ = [ts(r["fire_time"]) for r in runs_of(acme, "job-fall")]
    assert len(fire_times_) == len(set(fire_times_))
    assert ts(get_job(acme, "job-fall")["next_run_at"]) == utc(2027, 11, 1, 1, 30)


def test_tick_berlin_fall_back_a_daily_job_fires_once_that_day(acme: Caller) -> None:
    create_job(acme, id="job-fall-2", schedule="30 2 * * *", timezone="Europe/Berlin")
    for moment in (utc(2027, 10, 31, 0, 30), utc(2027, 10, 31, 1, 30), utc(2027, 10, 31, 2, 0)):
        tick(acme, moment)
    assert [ts(r["fire_time"]) for r in runs_of(acme, "job-fall-2")] == [utc(2027, 10, 31, 0, 30)]


def test_tick_new_york_0900_local_moves_from_13_to_14_utc(acme: Caller) -> None:
    create_job(acme, id="job-ny", schedule="0 9 * * *", timezone="America/New_York")
    # 6 November 2027 (EDT): 09:00 local is 13:00 UTC
    assert len(tick(acme, utc(2027, 11, 6, 13))) == 1
    assert ts(get_job(acme, "job-ny")["next_run_at"]) == utc(2027, 11, 7, 14)
    # 7 November (EST from 06:00 UTC): 13:00 UTC is 08:00 local, nothing fires; 14:00 UTC fires
    assert tick(acme, utc(2027, 11, 7, 13)) == []
    assert len(tick(acme, utc(2027, 11, 7, 14))) == 1
    times = [ts(r["fire_time"]) for r in runs_of(acme, "job-ny")]
    assert times == [utc(2027, 11, 7, 14), utc(2027, 11, 6, 13)]
    assert {(t.astimezone(NEW_YORK).hour, t.astimezone(NEW_YORK).minute) for t in times} == {(9, 0)}
