"""The state machines of deliveries, subscriptions and job runs, and the retry policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from infra.retry import RetryPolicy
from infra.states import IllegalTransition
from jobs.models import JobRun, RunStatus
from jobs.notifications import RETRY
from subscriptions.models import Delivery, DeliveryStatus, Subscription, SubscriptionState
from subscriptions.service import DeliveryRetryPolicy

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_stored_values_are_the_strings_the_database_already_holds() -> None:
    assert [s.value for s in DeliveryStatus] == ["pending", "succeeded", "failed", "cancelled"]
    assert [s.value for s in RunStatus] == ["queued", "running", "retrying", "done", "failed",
                                            "cancelled"]
    assert [s.value for s in SubscriptionState] == ["active", "inactive"]
    assert DeliveryStatus.PENDING == "pending"


# --- deliveries ---------------------------------------------------------------------------------

def _delivery(status: str = DeliveryStatus.PENDING) -> Delivery:
    return Delivery(tenant="acme", subscription_id="s", event_id="e", status=status, attempts=0)


def test_a_delivery_counts_attempts_and_is_delivered_once() -> None:
    d = _delivery()
    d.start_attempt(NOW)
    d.note_error("Throttling: slow down")
    d.schedule_retry(NOW + timedelta(seconds=5))
    assert (d.status, d.attempts, d.next_attempt_at) == ("pending", 1, NOW + timedelta(seconds=5))
    later = NOW + timedelta(seconds=6)
    d.start_attempt(later)
    d.mark_delivered("m-1", later)
    assert (d.status, d.attempts, d.first_attempt_at, d.last_attempt_at) == (
        DeliveryStatus.SUCCEEDED, 2, NOW, later)
    assert (d.delivered_at, d.message_id, d.next_attempt_at, d.last_error) == (later, "m-1", None,
                                                                               None)


def test_giving_up_and_cancelling_end_a_delivery_and_keep_why() -> None:
    failed = _delivery()
    failed.start_attempt(NOW)
    failed.note_error("x" * 2000)
    failed.give_up()
    assert (failed.status, failed.next_attempt_at, len(failed.last_error or "")) == (
        "failed", None, 1024)
    cancelled = _delivery()
    cancelled.next_attempt_at = NOW
    cancelled.cancel("subscription inactive")
    assert (cancelled.status, cancelled.last_error, cancelled.next_attempt_at) == (
        "cancelled", "subscription inactive", None)


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_a_finished_delivery_cannot_move(status: str) -> None:
    d = _delivery(status)
    for move in (lambda: d.start_attempt(NOW), lambda: d.mark_delivered("m", NOW),
                 lambda: d.schedule_retry(NOW), d.give_up, d.cancel):
        with pytest.raises(IllegalTransition, match=f"delivery: cannot .* from '{status}'"):
            move()
    assert d.status == status


# --- subscriptions ------------------------------------------------------------------------------

def test_a_subscription_is_deactivated_with_a_reason_and_reactivated_clean() -> None:
    sub = Subscription(active=True)
    assert sub.state is SubscriptionState.ACTIVE
    assert sub.failing(NOW) == NOW
    assert sub.failing(NOW + timedelta(hours=1)) == NOW  # failing since the first failure
    sub.deactivate("y" * 2000, NOW)
    assert (sub.state, sub.deactivated_at, sub.updated_at) == ("inactive", NOW, NOW)
    assert len(sub.deactivation_reason or "") == 1024
    with pytest.raises(IllegalTransition):
        sub.deactivate("again", NOW)
    sub.activate()
    assert (sub.state, sub.deactivated_at, sub.deactivation_reason, sub.failing_since) == (
        SubscriptionState.ACTIVE, None, None, None)


def test_a_new_subscription_can_start_inactive_and_a_success_clears_the_failure_clock() -> None:
    sub = Subscription()
    sub.deactivate("created inactive", NOW)
    assert sub.state is SubscriptionState.INACTIVE
    live = Subscription(active=True, failing_since=NOW)
    live.recovered()
    assert live.failing_since is None


# --- job runs -----------------------------------------------------------------------------------

LEASE = timedelta(minutes=5)


def _run(status: str = RunStatus.QUEUED) -> JobRun:
    return JobRun(status=status, attempts=0, sent=0, failed=0)


def test_a_run_starts_under_a_lease_retries_and_completes() -> None:
    run = _run()
    run.start(NOW, LEASE)
    assert (run.status, run.attempts, run.lease_until) == ("running", 1, NOW + LEASE)
    assert run.leased(NOW) and not run.leased(NOW + LEASE)
    with pytest.raises(IllegalTransition, match="leased"):
        run.start(NOW, LEASE)  # another worker holds it
    run.retry_later("429: " + "z" * 2000)
    assert (run.status, run.lease_until, len(run.error or "")) == ("retrying", None, 1024)
    run.start(NOW + LEASE, LEASE)
    run.renew(NOW + 2 * LEASE, LEASE)
    assert (run.attempts, run.lease_until) == (2, NOW + 3 * LEASE)
    run.sent = 3
    run.complete(NOW + 2 * LEASE)
    assert (run.status, run.finished_at, run.lease_until) == ("done", NOW + 2 * LEASE, None)


def test_an_expired_lease_is_taken_over() -> None:
    run = _run(RunStatus.RUNNING)
    run.lease_until = NOW - timedelta(seconds=1)
    run.start(NOW, LEASE)
    assert run.lease_until == NOW + LEASE


@pytest.mark.parametrize(("sent", "failed", "status"), [(0, 0, "done"), (2, 1, "done"),
                                                         (0, 1, "failed")])
def test_a_run_is_done_unless_it_only_failed(sent: int, failed: int, status: str) -> None:
    run = _run(RunStatus.RUNNING)
    run.sent, run.failed = sent, failed
    run.complete(NOW)
    assert run.status == status


@pytest.mark.parametrize("status", ["done", "failed", "cancelled"])
def test_a_finished_run_cannot_move(status: str) -> None:
    run = _run(status)
    for move in (lambda: run.start(NOW, LEASE), lambda: run.renew(NOW, LEASE),
                 lambda: run.retry_later("e"), lambda: run.complete(NOW),
                 lambda: run.cancel("why", NOW)):
        with pytest.raises(IllegalTransition, match=f"job run: cannot .* from '{status}'"):
            move()
    assert run.status == status


def test_only_a_running_run_retries_or_completes_and_any_unfinished_run_cancels() -> None:
    for move in (lambda r: r.retry_later("e"), lambda r: r.complete(NOW),
                 lambda r: r.renew(NOW, LEASE)):
        with pytest.raises(IllegalTransition):
            move(_run(RunStatus.QUEUED))
    for status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.RETRYING):
        run = _run(status)
        run.cancel("tenant disabled", NOW)
        assert (run.status, run.error, run.finished_at) == ("cancelled", "tenant disabled", NOW)


# --- retry policies -----------------------------------------------------------------------------

def test_notification_runs_keep_their_schedule_and_stop_after_eight_attempts() -> None:
    assert RETRY.schedule == (5.0, 30.0, 120.0, 600.0, 1800.0)
    assert (RETRY.jitter, RETRY.max_attempts, RETRY.give_up_after) == (0.2, 8, None)
    assert [RETRY.may_retry(n) for n in (1, 7, 8, 9)] == [True, True, False, False]
    assert all(1800 * 0.8 <= RETRY.delay(n) <= 1800 * 1.2 for n in (5, 7))


def test_deliveries_stop_by_time_not_by_count() -> None:
    policy = DeliveryRetryPolicy()
    assert isinstance(policy, RetryPolicy) and policy.max_attempts is None
    assert policy.may_retry(10_000, 86399.0)
    assert not policy.may_retry(1, 86400.0)
