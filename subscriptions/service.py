"""Attempting one delivery: send, record the attempt, then succeed, retry later, or fail."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any

import orjson
from sqlalchemy.orm import Session, sessionmaker

from events.repository import get_events, to_document
from infra.crypto import SecretBox, SecretsUnavailable
from infra.db import UnitOfWork, keyed_lookups
from infra.limits import full_pattern
from infra.retry import RetryPolicy
from subscriptions.contract import target_account
from subscriptions.deliveries import (
    attempt_row,
    claim_deliveries,
    held_back,
    next_in_groups,
    record_outcomes,
    unclaimed_states,
)
from subscriptions.matching import message_group
from subscriptions.models import AttemptStatus, Delivery, DeliveryStatus, Subscription
from subscriptions.repository import deactivate_subscription, get_subscription, get_subscriptions
from subscriptions.senders.base import (
    MAX_BATCH,
    Destination,
    OutgoingMessage,
    Sender,
    SendResult,
)
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
    CLAIMED = "claimed"  # an attempt in flight has it: looked at again when its claim ends
    HELD = "held"  # FIFO: an earlier delivery of its message group is still pending


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
        group_id=_fifo_id(f"{tenant}:{message_group(document)}"),
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


# How long a claimed delivery is left to the attempt that claimed it. An attempt takes at
# most a few calls of connect 3 s + read 10 s (senders/aws.py) and two short transactions; if
# its process dies, the delivery is claimed again once this has passed (the broker brings the
# message back after its heartbeat timeout, and a message finding the delivery claimed is
# re-sent for when the claim ends).
CLAIM_SECONDS = 30.0

Task = Callable[[], object]


def run_in_turn(tasks: list[Task]) -> None:
    """Run the sends of one attempt one after another (the default; the deliver pool runs them
    concurrently, workers/deliver.py)."""
    for task in tasks:
        task()


@dataclass
class _Share:
    """One subscription's share of an attempt: what it sends, and what came back."""

    sub: Subscription
    deliveries: list[Delivery] = field(default_factory=list)
    messages: list[OutgoingMessage] = field(default_factory=list)
    results: list[SendResult | None] = field(default_factory=list)  # None: not sent (held)
    latency_ms: list[int] = field(default_factory=list)


def attempt_deliveries(
    sessions: sessionmaker[Session],
    delivery_ids: list[int],
    *,
    senders: Mapping[str, Sender],
    box: SecretBox,
    policy: DeliveryRetryPolicy,
    schedule_retry: Callable[[list[int], float], None],
    run: Callable[[list[Task]], None] = run_in_turn,
    lease: float = CLAIM_SECONDS,
) -> dict[int, str]:
    """Try each delivery once; return id → what happened (an Outcome or the status it had).

    Three short units of work around the sends, none held open through them:

    1. **claim** (writer): one UPDATE … RETURNING takes the deliveries that are pending, due and
       not claimed by an attempt in flight, for ``lease`` seconds. Those of disabled tenants
       are put off (PAUSE_RECHECK_SECONDS) and released. Two messages for one delivery never
       send it twice at once: the second finds it claimed, and is sent again for when the
       claim ends (in case the first attempt's process died).
    2. **send** (no transaction): one batch call per ten messages of a subscription, run by
       ``run`` (concurrently in the deliver pool). A FIFO subscription's deliveries go in
       rounds, one per message group each, in the order they were stored; a delivery that
       fails holds back the later ones of its group, and a delivery that an earlier pending
       one of its group (outside this attempt) holds back is not sent at all.
    3. **record** (writer): every delivery's transition and every attempt row in one statement
       each, the subscriptions' failure clocks and deactivations, and the retries scheduled
       (``schedule_retry(ids, seconds)``, before the commit, so a crash re-sends rather than
       forgets). After the commit, the deliveries a finished FIFO delivery held back are
       enqueued (``schedule_retry(ids, 0)``).

    A process that dies between the send and the record leaves the delivery claimed; it is
    attempted again once the claim lapses (at least once: the destination may get it twice).
    """
    token = secrets.token_hex(8)
    now = datetime.now(UTC)
    statuses: dict[int, str] = {i: Outcome.MISSING for i in delivery_ids}
    with UnitOfWork(sessions, write=True) as uow:
        keyed_lookups(uow.session)
        claimed = claim_deliveries(uow.session, delivery_ids, token=token, now=now, lease=lease)
        _note_unclaimed(uow.session, delivery_ids, claimed, statuses, now, schedule_retry)
        claimed = _pause_disabled(uow.session, claimed, statuses, now, schedule_retry)
        uow.commit()
    if not claimed:
        return statuses

    with UnitOfWork(sessions) as uow:
        keyed_lookups(uow.session)
        shares, cancelled, held, identities = _prepare(uow.session, claimed, statuses)
        uow.session.expunge_all()  # the rows read stay readable once the unit of work ends
    tasks = [task for share in shares for task in _send_tasks(share, senders, box, identities)]
    run(tasks)

    released: list[int] = []
    with UnitOfWork(sessions, write=True) as uow:
        keyed_lookups(uow.session)
        released = _record(uow.session, shares, cancelled, held, statuses, now, policy,
                           schedule_retry)
        uow.commit()
    if released:
        schedule_retry(released, 0)
    return statuses


def _note_unclaimed(session: Session, delivery_ids: list[int], claimed: list[Delivery],
                    statuses: dict[int, str], now: datetime,
                    schedule_retry: Callable[[list[int], float], None]) -> None:
    """Say why the claim left a delivery out; one claimed by an attempt in flight is sent again
    for when that claim ends."""
    taken = {d.id for d in claimed}
    others = [i for i in dict.fromkeys(delivery_ids) if i not in taken]
    recheck: dict[float, list[int]] = {}
    for delivery_id, (status, due_at, claimed_until) in unclaimed_states(session, others).items():
        if status != DeliveryStatus.PENDING:
            statuses[delivery_id] = status
        elif due_at is not None and due_at > now + timedelta(seconds=1):
            statuses[delivery_id] = Outcome.SCHEDULED  # a stale duplicate: a later one owns it
        else:
            statuses[delivery_id] = Outcome.CLAIMED
            left = (claimed_until - now).total_seconds() if claimed_until is not None else 0.0
            recheck.setdefault(max(left, 0.0) + 1.0, []).append(delivery_id)
    for seconds, ids in recheck.items():
        schedule_retry(ids, seconds)


def _pause_disabled(session: Session, claimed: list[Delivery], statuses: dict[int, str],
                    now: datetime, schedule_retry: Callable[[list[int], float], None]
                    ) -> list[Delivery]:
    """Put off the deliveries of disabled tenants: nothing is sent and no attempt is counted;
    they stay pending, due again in PAUSE_RECHECK_SECONDS (``tenant enable`` makes them due at
    once). Returns the others."""
    disabled = disabled_tenants(session, {d.tenant for d in claimed})
    paused = [d for d in claimed if d.tenant in disabled]
    if not paused:
        return claimed
    for delivery in paused:
        delivery.schedule_retry(now + timedelta(seconds=PAUSE_RECHECK_SECONDS))
        statuses[delivery.id] = Outcome.PAUSED
    record_outcomes(session, paused, [])
    schedule_retry([d.id for d in paused], PAUSE_RECHECK_SECONDS)
    return [d for d in claimed if d.tenant not in disabled]


def _prepare(session: Session, claimed: list[Delivery], statuses: dict[int, str]
             ) -> tuple[list[_Share], list[Delivery], list[Delivery], dict[str, TenantAws | None]]:
    """Read what the sends need: the subscriptions, the events as GET returns them and the
    tenants' identities. Returns the shares to send, the deliveries to cancel (subscription
    inactive or gone, event gone), those held back and the identities."""
    by_tenant: dict[str, list[Delivery]] = {}
    for delivery in claimed:
        by_tenant.setdefault(delivery.tenant, []).append(delivery)
    shares: dict[tuple[str, str], _Share] = {}
    cancelled: list[Delivery] = []
    identities: dict[str, TenantAws | None] = {}
    held_ids = held_back(session, claimed)
    held = [d for d in claimed if d.id in held_ids]
    for delivery in held:
        statuses[delivery.id] = Outcome.HELD
    for tenant, deliveries in by_tenant.items():
        subs = get_subscriptions(session, tenant, sorted({d.subscription_id for d in deliveries}))
        rows = get_events(session, tenant, [d.event_id for d in deliveries])
        if any(s.credentials != "keys" for s in subs.values()):
            identities[tenant] = tenant_aws(session, tenant)
        for delivery in deliveries:
            if delivery.id in held_ids:
                continue
            sub = subs.get(delivery.subscription_id)
            row = rows.get(delivery.event_id)
            if sub is None or not sub.active or row is None:
                delivery.cancel("subscription inactive" if sub is not None and row is not None
                                else "subscription or event gone")
                statuses[delivery.id] = Outcome.CANCELLED
                cancelled.append(delivery)
                continue
            share = shares.get((tenant, sub.id))
            if share is None:
                share = shares[(tenant, sub.id)] = _Share(sub)
            share.deliveries.append(delivery)
            share.messages.append(build_message(tenant, to_document(row), delivery))
    for share in shares.values():
        share.results = [None] * len(share.deliveries)
        share.latency_ms = [0] * len(share.deliveries)
    return list(shares.values()), cancelled, held, identities


def _send_tasks(share: _Share, senders: Mapping[str, Sender], box: SecretBox,
                identities: Mapping[str, TenantAws | None]) -> list[Task]:
    """The calls that send one share: one per ten messages, or one for the rounds of a FIFO
    subscription. A destination the tenant may not reach, or a secret that cannot be read,
    settles the share without a call."""
    sub = share.sub
    try:
        destination = destination_of(sub, box, identities.get(sub.tenant))
    except SecretsUnavailable as exc:
        share.results = [SendResult(False, error_code="SecretUnavailable",
                                    error_message=str(exc))] * len(share.deliveries)
        return []
    except NotAllowed:
        log.warning("subscription %s of tenant %s: %s; deactivating it", sub.id, sub.tenant,
                    PLATFORM_NOT_ALLOWED)
        share.results = [NOT_ALLOWED] * len(share.deliveries)
        return []
    sender = senders[destination.kind]

    def send(positions: list[int]) -> list[SendResult]:
        started = time.monotonic()
        results = sender.send_batch(destination, [share.messages[p] for p in positions])
        latency = int((time.monotonic() - started) * 1000)
        for p, result in zip(positions, results, strict=True):
            share.results[p] = result
            share.latency_ms[p] = latency
        return results

    if not destination.fifo:
        positions = list(range(len(share.deliveries)))
        return [partial(send, positions[i:i + MAX_BATCH])
                for i in range(0, len(positions), MAX_BATCH)]

    def rounds() -> None:
        # Each message group's deliveries in id order (the order they were stored in); every
        # round sends the next one of each group still going, ten groups per call.
        groups: dict[str | None, list[int]] = {}
        for p, message in enumerate(share.messages):
            groups.setdefault(message.group_id, []).append(p)
        while groups:
            heads = {key: queue.pop(0) for key, queue in groups.items()}
            positions = list(heads.values())
            outcomes: dict[int, SendResult] = {}
            for i in range(0, len(positions), MAX_BATCH):
                chunk = positions[i:i + MAX_BATCH]
                outcomes.update(zip(chunk, send(chunk), strict=True))
            # A group whose delivery failed stops here: the rest wait for it (held).
            groups = {key: queue for key, queue in groups.items()
                      if queue and outcomes[heads[key]].ok}

    return [rounds]


def _record(session: Session, shares: list[_Share], cancelled: list[Delivery],
            held: list[Delivery], statuses: dict[int, str], now: datetime,
            policy: DeliveryRetryPolicy,
            schedule_retry: Callable[[list[int], float], None]) -> list[int]:
    """Apply every result, write the deliveries and attempts back, schedule the retries; return
    the deliveries that finished FIFO deliveries held back (to enqueue after the commit)."""
    attempts: list[dict[str, Any]] = []
    written: list[Delivery] = [*cancelled, *held]
    finished: list[Delivery] = list(cancelled)
    waiting: set[tuple[str, str, str | None]] = set()  # FIFO groups with a retry to come
    for share in shares:
        sub = share.sub
        if sub.failing_since is not None or any(r is None or not r.ok for r in share.results):
            # Its failure clock (or deactivation) changes: the row itself, in this transaction.
            sub = get_subscription(session, sub.tenant, sub.id) or sub
        retrying: list[tuple[Delivery, SendResult]] = []
        for delivery, result, latency in zip(share.deliveries, share.results, share.latency_ms,
                                             strict=True):
            written.append(delivery)
            if result is None:  # a FIFO delivery behind a failed one of its group
                statuses[delivery.id] = Outcome.HELD
                continue
            status = _apply_outcome(session, delivery, sub, result, now, latency, policy,
                                    attempts)
            statuses[delivery.id] = status
            if status == Outcome.RETRYING:
                retrying.append((delivery, result))
                waiting.add((delivery.tenant, delivery.subscription_id, delivery.group_key))
            elif delivery.group_key is not None:
                finished.append(delivery)
        if retrying:
            attempts_made = max(d.attempts for d, _ in retrying)
            hint = max((r.retry_after or 0.0) for _, r in retrying) or None
            delay = policy.delay(attempts_made, hint)
            for delivery, _ in retrying:
                delivery.schedule_retry(now + timedelta(seconds=delay))
            schedule_retry([d.id for d, _ in retrying], delay)
    if record_outcomes(session, written, attempts) < len(written):
        log.warning("some deliveries were claimed again while this attempt ran (it took longer "
                    "than the claim); their new attempt records them")
    finished = [d for d in finished
                if (d.tenant, d.subscription_id, d.group_key) not in waiting]
    return next_in_groups(session, finished) if finished else []


def _apply_outcome(session: Session, delivery: Delivery, sub: Subscription, result: SendResult,
                   now: datetime, latency_ms: int, policy: DeliveryRetryPolicy,
                   attempts: list[dict[str, Any]]) -> str:
    """Apply one attempt's result to the delivery, its attempt log and its subscription."""
    delivery.start_attempt(now)
    if result.ok:
        delivery.mark_delivered(result.message_id, now)
        sub.recovered()
        attempts.append(attempt_row(delivery, status=AttemptStatus.SUCCEEDED, at=now,
                                    latency_ms=latency_ms, message_id=result.message_id))
        return Outcome.SUCCEEDED

    error = f"{result.error_code}: {result.error_message or ''}".strip()
    delivery.note_error(error)
    first = delivery.first_attempt_at or now
    failed = attempt_row(delivery, status=AttemptStatus.FAILED, at=now, latency_ms=latency_ms,
                         error_code=result.error_code, error_message=result.error_message)
    if result.transient and policy.may_retry(delivery.attempts, (now - first).total_seconds()):
        failing_for = (now - sub.failing(now)).total_seconds()
        if failing_for >= policy.failing_window:
            attempts.append(failed)
            if sub.active:
                deactivate_subscription(
                    session, sub, f"deliveries failing for {int(failing_for)} s; last error: "
                    f"{error}", now)
            delivery.cancel()
            return Outcome.CANCELLED
        attempts.append({**failed, "status": AttemptStatus.RETRYING})
        return Outcome.RETRYING

    delivery.give_up()
    attempts.append(failed)
    if not result.transient and sub.active:
        deactivate_subscription(session, sub, result.deactivation_reason or
                                f"permanent delivery error: {error}", now)
    log.warning("delivery %s failed: %s", delivery.id, result.error_code)
    return Outcome.FAILED
