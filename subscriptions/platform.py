"""The platform-credential rule applied to a tenant's subscriptions: revoking the opt-in
deactivates the subscriptions it no longer allows, and the report ``eventcollector tenant show``
prints (the tenant's opt-in lives in tenants.aws_identity)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from subscriptions.contract import target_account
from subscriptions.models import Subscription
from subscriptions.repository import deactivate_subscription
from tenants.aws_identity import (
    CREDENTIAL_MODES,
    PLATFORM_NOT_ALLOWED,
    platform_accounts,
    remove_platform_accounts,
    tenant_row,
)


def revoke_platform_credentials(session: Session, tenant: str,
                                accounts: list[str] | None) -> list[str]:
    """Take ``accounts`` (None: all) out of the tenant's opt-in, and deactivate at once, with
    ``PLATFORM_NOT_ALLOWED``, its active platform-credential subscriptions no longer allowed;
    return their ids (the caller commits; the deliver pool re-checks before each send as well)."""
    left = remove_platform_accounts(session, tenant, accounts)
    now = datetime.now(UTC)
    stopped = []
    for sub in session.execute(select(Subscription).where(
            Subscription.tenant == tenant, Subscription.credentials == "platform",
            Subscription.active.is_(True)).order_by(Subscription.pk)).scalars():
        if target_account(sub.destination_type, sub.target) not in left:
            deactivate_subscription(session, sub, PLATFORM_NOT_ALLOWED, now)
            stopped.append(sub.id)
    return stopped


def tenant_report(session: Session, tenant: str) -> dict[str, Any]:
    """What ``eventcollector tenant show`` prints: identity, opt-in, subscription counts, the
    subscriptions the platform-credential rule deactivated, and those it will."""
    row = tenant_row(session, tenant)
    allowed = platform_accounts(row)
    counts: dict[str, dict[str, int]] = {m: {"active": 0, "inactive": 0} for m in CREDENTIAL_MODES}
    for mode, active, n in session.execute(
            select(Subscription.credentials, Subscription.active, func.count())
            .where(Subscription.tenant == tenant)
            .group_by(Subscription.credentials, Subscription.active)).all():
        counts.setdefault(mode, {"active": 0, "inactive": 0})
        counts[mode]["active" if active else "inactive"] += int(n)
    subs = list(session.execute(select(Subscription).where(
        Subscription.tenant == tenant, Subscription.credentials == "platform")
        .order_by(Subscription.pk)).scalars())
    deactivated = [{"id": s.id, "type": s.destination_type, "target": s.target,
                    "deactivatedAt": s.deactivated_at.isoformat() if s.deactivated_at else None,
                    "reason": s.deactivation_reason}
                   for s in subs if not s.active and s.deactivation_reason == PLATFORM_NOT_ALLOWED]
    at_risk = [{"id": s.id, "type": s.destination_type, "target": s.target}
               for s in subs if s.active and (allowed is None or
                                              target_account(s.destination_type, s.target)
                                              not in allowed)]
    return {
        "tenant": row.name,
        "createdAt": row.created_at.isoformat(),
        "externalId": row.external_id,
        "platformCredentials": {"allowed": allowed is not None,
                                "accounts": sorted(allowed or ())},
        "subscriptions": counts,
        "deactivatedByPlatformRule": deactivated,
        "platformNotAllowedYetActive": at_risk,
    }
