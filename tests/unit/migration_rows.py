"""Rows as a database at revision 0005 holds them, and what migration 0007 must make of them.

Used on SQLite (tests/unit/test_aws_identity.py) and PostgreSQL
(tests/integration/test_aws_identity.py).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import text

from infra.db import make_engine, upgrade

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TENANTS = ["old-a", "old-b", "old-c"]
# (tenant, id, access key, secret token): keyless rows used the platform's credentials.
SUBSCRIPTIONS = [
    ("old-a", "with-keys", "AKIAIOSFODNN7EXAMPLE", "gAAAA-fernet-token"),
    ("old-a", "keyless", None, None),
    ("old-b", "keyless-too", None, None),
    ("old-c", "inactive-keyless", None, None),
]


def seed_0005(url: str, secret_enc: str = "gAAAA-fernet-token") -> None:
    """Migrate ``url`` to 0005 and insert TENANTS and SUBSCRIPTIONS (``secret_enc`` as the keyed
    row's encrypted secret)."""
    upgrade(url, "0005")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for name in TENANTS:
                conn.execute(text("INSERT INTO tenants (name, created_at, subscriptions_version) "
                                  "VALUES (:n, :t, 0)"), {"n": name, "t": NOW})
            for tenant, sub_id, key, secret in SUBSCRIPTIONS:
                conn.execute(text(
                    "INSERT INTO subscriptions (id, tenant, active, entity_type, subscribe_create,"
                    " subscribe_change, subscribe_delete, event_types, destination_type, target,"
                    " region, access_key, access_secret_enc, created_at, updated_at) VALUES "
                    "(:id, :tenant, :active, 'ORDER', true, false, false, 'ENTITY_EVENT', 'SQS',"
                    " 'https://sqs.us-east-1.amazonaws.com/123456789012/q', 'us-east-1', :key,"
                    " :secret, :t, :t)"),
                    {"id": sub_id, "tenant": tenant, "active": not sub_id.startswith("inactive"),
                     "key": key, "secret": secret_enc if secret else None, "t": NOW})
    finally:
        engine.dispose()


def check_migrated(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ids = dict(conn.execute(text("SELECT name, external_id FROM tenants")).all())
            subs = {r[0]: r[1:] for r in conn.execute(text(
                "SELECT id, credentials, role_arn, access_key, active FROM subscriptions")).all()}
            allowed = conn.execute(text("SELECT count(*) FROM tenants "
                                        "WHERE platform_accounts IS NOT NULL")).scalar_one()
    finally:
        engine.dispose()
    # Every existing tenant got its own ExternalId
    assert set(ids) == set(TENANTS)
    assert all(re.fullmatch(r"ec-[A-Za-z0-9_-]{32}", v or "") for v in ids.values()), ids
    assert len(set(ids.values())) == len(TENANTS)
    # Rows with keys are "keys"; rows without are "platform" (kept as they were, to be re-checked
    # by the deliver pool); nobody is opted in by the migration
    assert subs["with-keys"][:3] == ("keys", None, "AKIAIOSFODNN7EXAMPLE")
    for sub_id in ("keyless", "keyless-too", "inactive-keyless"):
        assert subs[sub_id][:3] == ("platform", None, None), subs
    assert bool(subs["keyless"][3]) is True and bool(subs["inactive-keyless"][3]) is False
    assert allowed == 0
