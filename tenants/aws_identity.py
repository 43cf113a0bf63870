"""Which AWS identity a tenant's deliveries may use: the tenant's ExternalId (for roles), and the
operator's opt-in to the platform's own credentials, per AWS account.

A destination authenticates in exactly one of three ways (``Subscription.credentials``):

- ``keys``: the tenant's own access key (stored encrypted);
- ``role``: a role of the tenant's, assumed with STS passing the tenant's ``external_id``, which
  we generate and never accept from the tenant (AWS's guidance against the confused deputy);
- ``platform``: the platform's own identity, only for tenants an operator opted in, and only
  for queues and topics in the AWS accounts listed for them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from infra.limits import full_pattern
from tenants.models import Tenant

CREDENTIAL_MODES = ("keys", "role", "platform")
ACCOUNT_RE = full_pattern(r"[0-9]{12}")
# The reason a platform-credential subscription is deactivated with once its tenant may no
# longer use the platform's identity for its destination (revoked, or never granted: migrated).
PLATFORM_NOT_ALLOWED = ("platform credentials are no longer allowed for this tenant: use keys "
                        "or a role")
_SESSION_CHARS = re.compile(r"[^\w+=,.@-]", re.ASCII)


class UnknownTenant(Exception):
    pass


class InvalidAccount(ValueError):
    pass


def role_session_name(tenant: str, subscription_id: str) -> str:
    """The RoleSessionName naming tenant and subscription (STS: ``[\\w+=,.@-]{2,64}``), so the
    tenant's CloudTrail shows which subscription assumed its role."""
    full = f"ec.{tenant}.{subscription_id}"
    name = _SESSION_CHARS.sub("-", full)
    if len(name) <= 64 and name == full:
        return name
    # Too long, or characters replaced: keep it readable and unique with a digest of the original.
    return name[:51] + "." + hashlib.sha256(full.encode()).hexdigest()[:12]


def parse_accounts(values: list[str]) -> list[str]:
    """Twelve-digit AWS account ids from ``values`` (each may be comma-separated)."""
    accounts = [a.strip() for v in values for a in v.split(",") if a.strip()]
    bad = [a for a in accounts if not ACCOUNT_RE.fullmatch(a)]
    if bad or not accounts:
        raise InvalidAccount("AWS account ids are 12 digits, comma-separated: got "
                             + (", ".join(repr(b) for b in bad) or "none"))
    return sorted(set(accounts))


@dataclass(frozen=True)
class TenantAws:
    """What the deliver pool and the API need to know about a tenant's AWS identity.

    Attributes:
        external_id: passed to STS AssumeRole for the tenant's role subscriptions.
        platform_accounts: AWS accounts whose queues/topics the tenant may reach with the
            platform's credentials; None when the tenant is not opted in.
    """

    external_id: str
    platform_accounts: frozenset[str] | None

    def platform_allows(self, account: str | None) -> bool:
        return self.platform_accounts is not None and account in self.platform_accounts


def _accounts(raw: str | None) -> frozenset[str] | None:
    return frozenset(raw.split()) if raw is not None else None


def tenant_aws(session: Session, tenant: str) -> TenantAws | None:
    row = session.execute(select(Tenant.external_id, Tenant.platform_accounts)
                          .where(Tenant.name == tenant)).first()
    return TenantAws(row[0], _accounts(row[1])) if row is not None else None


def _tenant(session: Session, tenant: str) -> Tenant:
    row = session.execute(select(Tenant).where(Tenant.name == tenant)).scalar_one_or_none()
    if row is None:
        raise UnknownTenant(f"no tenant named {tenant!r}")
    return row


def allow_platform_credentials(session: Session, tenant: str, accounts: list[str]) -> list[str]:
    """Opt ``tenant`` in to the platform's credentials for ``accounts`` (added to those already
    allowed); return the accounts now allowed."""
    row = _tenant(session, tenant)
    allowed = sorted(set(_accounts(row.platform_accounts) or ()) | set(parse_accounts(accounts)))
    row.platform_accounts = " ".join(allowed)
    return allowed


def tenant_row(session: Session, tenant: str) -> Tenant:
    """The tenant's row; UnknownTenant when there is none."""
    return _tenant(session, tenant)


def platform_accounts(row: Tenant) -> frozenset[str] | None:
    """The AWS accounts the tenant may use the platform's identity for; None: not opted in."""
    return _accounts(row.platform_accounts)


def remove_platform_accounts(session: Session, tenant: str, accounts: list[str] | None) -> set[str]:
    """Take ``accounts`` (None: all) out of the tenant's opt-in; return the accounts left."""
    row = _tenant(session, tenant)
    left = set(_accounts(row.platform_accounts) or ())
    left = left - set(parse_accounts(accounts)) if accounts is not None else set()
    row.platform_accounts = " ".join(sorted(left)) if left else None
    return left
