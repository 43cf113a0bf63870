"""Attempting one delivery: send, record the attempt, then succeed, retry later, or fail."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy.orm import Session

from events.repository import get_events, to_document
from infra.crypto import SecretBox, SecretsUnavailable
from infra.limits import full_pattern
from infra.retry import RetryPolicy
from subscriptions.contract import target_account
from subscriptions.deliveries import lock_deliveries, record_attempt
from subscriptions.models import AttemptStatus, Delivery, DeliveryStatus, Subscription
from subscriptions.repository import deactivate_subscription, get_subscription
from subscriptions.senders.base import Destination, OutgoingMessage, Sender, SendResult
from tenants.aws_identity import PLATFORM_NOT_ALLOWED, TenantAws, role_session_name, tenant_aws
from tenants.revocation import PAUSE_RECHECK_SECONDS, disabled_tenants

log = logging.getLogger(__name__)
_SAFE_ID = full_pattern(r"[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}")


@dataclass(frozen=True)
class DeliveryRetryPolicy(RetryPolicy):
    """The published delivery retry schedule (infra.retry), and the subscription's limit.

    Attributes:
        schedule: seconds before retry 1, 2, …; the last value repeats.
        give_up_after: seconds after the first attempt when a delivery is failed for good.
        failing_window: seconds of continuous failure after which a subscription is deactivated.
        jitter: ± fraction applied to each delay.
    """

    schedule: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600)
    give_up_after: float | None = 86400
    failing_window: float = 6 * 3600


class Outcome(StrEnum):
    """What one call did to a delivery (attempt_deliveries' answer; the workers log it): a
    DeliveryStatus it ended in, or one of these."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRYING = "retrying"  # still pending, its next attempt scheduled
    SCHEDULED = "scheduled"  # not yet due: a stale duplicate message, ignored
    PAUSED = "paused"  # its tenant is disabled
    MISSING = "missing"  # no such delivery


def _fifo_id(value: str) -> str:
    return value if _SAFE_ID.fullmatch(value) else hashlib.sha256(value.encode()).hexdigest()


def _replay_stamp(delivery: Delivery) -> int:
    """What tells a replay's message apart from the original and from other replays, the same
    on every retry: when the replay was recorded (microseconds), not the delivery's internal id,
    which would tell the tenant's queue consumers how many deliveries all tenants have."""
    created = delivery.created_at
    if created is None:
        return 0
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return int(created.timestamp() * 1_000_000)


def build_message(tenant: str, document: dict[str, Any], delivery: Delivery) -> OutgoingMessage:
    """The event exactly as GET returns it, with attributes for SNS filter policies."""
    payload = document.get("event_payload") or {}
    attributes = {
        "tenant": tenant,
        "event_type": document.get("event_type"),
        "entity_name": document.get("entity_name"),
        "operation": payload.get("operation"),
        "event_id": document["id"],
    }
    dedup = document["id"] if not delivery.replay else f"{document['id']}:replay:{_replay_stamp(delivery)}"
    return OutgoingMessage(
        body=orjson.dumps(document).decode(),
        attributes={k: v for k, v in attributes.items() if v},
        group_id=_fifo_id(f"{tenant}:{document.get('entity_id') or document['id']}"),
        deduplication_id=_fifo_id(dedup),
    )


class NotAllowed(Exception):
    """The tenant may not (or no longer) reach this destination with these credentials."""


# What the attempt log and the test-send say about a destination the tenant may not use with
# the platform's credentials: nothing about the queue or topic itself, and no AWS call is made.
NOT_ALLOWED = SendResult(False, error_code="NotAllowed",
                         error_message="not allowed: " + PLATFORM_NOT_ALLOWED, transient=False,
                         deactivation_reason=PLATFORM_NOT_ALLOWED)


def destination_of(sub: Subscription, box: SecretBox, tenant: TenantAws | None) -> Destination:
    """Where and as whom ``sub`` sends. ``tenant`` (its tenant's identity; only read for role
    and platform destinations) decides: a platform destination outside the tenant's opt-in
    raises NotAllowed, before any AWS call."""
    base = {"kind": sub.destination_type, "target": sub.target, "region": sub.region}
    if sub.credentials == "keys":
        secret = box.decrypt(sub.access_secret_enc) if sub.access_secret_enc else None
        return Destination(**base, credentials="keys", access_key=sub.access_key,
                           access_secret=secret)
    if tenant is None:
        raise NotAllowed(sub.tenant)
    if sub.credentials == "role":
        return Destination(**base, credentials="role", role_arn=sub.role_arn,
                           external_id=tenant.external_id,
                           session_name=role_session_name(sub.tenant, sub.id))
    if sub.credentials == "platform" and tenant.platform_allows(
            target_account(sub.destination_type, sub.target)):
        return Destination(**base, credentials="platform")
    raise NotAllowed(sub.tenant)


def attempt_deliveries(
    session: Session,
    delivery_ids: list[int],
    *,
    senders: Mapping[str, Sender],
    box: SecretBox,
    policy: DeliveryRetryPolicy,
    schedule_retry: Callable[[list[int], float], None],
) -> dict[int, str]:
    """Try each delivery once (one batch call per subscription); return id → status.

    Runs inside the caller's writer unit of work, which commits right after (on SQLite it began
    IMMEDIATE). The rows stay locked from the check to that commit, so two messages for one
    delivery never send it twice at once. ``schedule_retry(ids, seconds)`` is called before
    the commit when another attempt is due, so a crash between the two re-sends rather than
    forgets. A message that arrives before the delivery's next attempt is due (a stale
    duplicate: a later message owns it) is ignored.
    """
    now = datetime.now(UTC)
    statuses: dict[int, str] = {i: Outcome.MISSING for i in delivery_ids}
    groups: dict[tuple[str, str], list[Delivery]] = {}
    for delivery in lock_deliveries(session, delivery_ids):
        due_at = delivery.next_attempt_at
        if delivery.status != DeliveryStatus.PENDING:
            statuses[delivery.id] = delivery.status
        elif due_at is not None and due_at > now + timedelta(seconds=1):
            statuses[delivery.id] = Outcome.SCHEDULED
        else:
            groups.setdefault((delivery.tenant, delivery.subscription_id), []).append(delivery)
    if not groups:
        return statuses
    _pause_disabled(session, groups, statuses, now, schedule_retry)
    if not groups:
        return statuses
    retrying: list[tuple[Delivery, SendResult]] = []
    identities: dict[str, TenantAws | None] = {}
    for (tenant, sub_id), deliveries in groups.items():
        sub = get_subscription(session, tenant, sub_id)
        rows = get_events(session, tenant, [d.event_id for d in deliveries])
        sendable = []
        for delivery in deliveries:
            row = rows.get(delivery.event_id)
            if sub is None or not sub.active or row is None:
                delivery.cancel("subscription inactive" if sub is not None and row is not None
                                else "subscription or event gone")
                statuses[delivery.id] = Outcome.CANCELLED
            else:
                sendable.append((delivery, row))
        if not sendable or sub is None:
            continue
        started = time.monotonic()
        try:
            identity = None
            if sub.credentials != "keys":
                if tenant not in identities:
                    identities[tenant] = tenant_aws(session, tenant)
                identity = identities[tenant]
            destination = destination_of(sub, box, identity)
            messages = [build_message(tenant, to_document(row), d) for d, row in sendable]
            results = senders[destination.kind].send_batch(destination, messages)
        except SecretsUnavailable as exc:
            results = [SendResult(False, error_code="SecretUnavailable",
                                  error_message=str(exc))] * len(sendable)
        except NotAllowed:
            log.warning("subscription %s of tenant %s: %s; deactivating it", sub_id, tenant,
                        PLATFORM_NOT_ALLOWED)
            results = [NOT_ALLOWED] * len(sendable)
        latency_ms = int((time.monotonic() - started) * 1000)
        for (delivery, _row), result in zip(sendable, results, strict=True):
            status = _record_outcome(session, delivery, sub, result, now, latency_ms, policy)
            statuses[delivery.id] = status
            if status == Outcome.RETRYING:
                retrying.append((delivery, result))
    if retrying:
        attempts = max(d.attempts for d, _ in retrying)
        hint = max((r.retry_after or 0.0) for _, r in retrying) or None
        delay = policy.delay(attempts, hint)
        for delivery, _ in retrying:
            delivery.schedule_retry(now + timedelta(seconds=delay))
        schedule_retry([d.id for d, _ in retrying], delay)
    return statuses


def _pause_disabled(session: Session, groups: dict[tuple[str, str], list[Delivery]],
                    statuses: dict[int, str], now: datetime,
                    schedule_retry: Callable[[list[int], float], None]) -> None:
    """Take the deliveries of disabled tenants out of ``groups``: nothing is sent and no
    attempt is counted; they stay pending, due again in PAUSE_RECHECK_SECONDS (``tenant
    enable`` makes them due at once)."""
    disabled = disabled_tenants(session, {tenant for tenant, _ in groups})
    paused = [d for key in list(groups) if key[0] in disabled for d in groups.pop(key)]
    if not paused:
        return
    for delivery in paused:
        delivery.schedule_retry(now + timedelta(seconds=PAUSE_RECHECK_SECONDS))
        statuses[delivery.id] = Outcome.PAUSED
    schedule_retry([d.id for d in paused], PAUSE_RECHECK_SECONDS)


def _record_outcome(session: Session, delivery: Delivery, sub: Subscription, result: SendResult,
                    now: datetime, latency_ms: int, policy: DeliveryRetryPolicy) -> str:
    """Apply one attempt's result to the delivery, its attempt log and its subscription."""
    delivery.start_attempt(now)
    if result.ok:
        delivery.mark_delivered(result.message_id, now)
        sub.recovered()
        record_attempt(session, delivery, status=AttemptStatus.SUCCEEDED, at=now,
                       latency_ms=latency_ms, message_id=result.message_id)
        return Outcome.SUCCEEDED

    error = f"{result.error_code}: {result.error_message or ''}".strip()
    delivery.note_error(error)
    first = delivery.first_attempt_at or now
    if result.transient and policy.may_retry(delivery.attempts, (now - first).total_seconds()):
        failing_for = (now - sub.failing(now)).total_seconds()
        if failing_for >= policy.failing_window:
            record_attempt(session, delivery, status=AttemptStatus.FAILED, at=now,
                           latency_ms=latency_ms, error_code=result.error_code,
                           error_message=result.error_message)
            if sub.active:
                deactivate_subscription(
                    session, sub, f"deliveries failing for {int(failing_for)} s; last error: "
                    f"{error}", now)
            delivery.cancel()
            return Outcome.CANCELLED
        record_attempt(session, delivery, status=AttemptStatus.RETRYING, at=now,
                       latency_ms=latency_ms, error_code=result.error_code,
                       error_message=result.error_message)
        return Outcome.RETRYING

    delivery.give_up()
    record_attempt(session, delivery, status=AttemptStatus.FAILED, at=now, latency_ms=latency_ms,
                   error_code=result.error_code, error_message=result.error_message)
    if not result.transient and sub.active:
        deactivate_subscription(session, sub, result.deactivation_reason or
                                f"permanent delivery error: {error}", now)
    log.warning("delivery %s failed: %s", delivery.id, result.error_code)
    return Outcome.FAILED
