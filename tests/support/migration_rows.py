"""Rows as a database at revision 0005 holds them, and what migration 0007 must make of them.

Used on SQLite (tests/unit/test_aws_identity.py) and PostgreSQL
(tests/integration/test_aws_identity.py).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

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


def _events_row(conn: Any, event_id: str, correlation: str,
                tenant_seq: int | None = None) -> None:
    """A raw events row; ``tenant_seq`` from revision 0009 on (the column is required there)."""
    extra = (", tenant_seq", ", :tseq") if tenant_seq is not None else ("", "")
    conn.execute(text(
        "INSERT INTO events (tenant, event_id, event_source, event_type, key_attributes, "
        f"correlation_id, body_hash, received_at, stored_at{extra[0]}) VALUES ('acme', :id, "
        "'CONNECTOR', 'FAULT', :attrs, :corr, :h, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP"
        f"{extra[1]})"),
        {"id": event_id, "attrs": json.dumps({"correlationId": correlation}), "corr": correlation,
         "h": "0" * 64, "tseq": tenant_seq})


def check_migration_0006(url: str) -> None:
    """Upgrade a database holding events from 0005 to 0006: the rows
    stay, a 2,048-character correlationId then fits and is found by the filter, the quarantine
    takes rows."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from events.quarantine import list_quarantined, quarantine
    from events.repository import EventQuery, list_events
    from infra.db import upgrade

    upgrade(url, "0005")
    engine = create_engine(url)
    with engine.begin() as conn:
        for i in range(3):
            _events_row(conn, f"old-{i}", f"corr-{i}")
    upgrade(url)
    long_corr = "".join(chr(0x10000 + (i * 7919) % 0xFFFF) for i in range(2048))
    with engine.begin() as conn:
        _events_row(conn, "new-long", long_corr, tenant_seq=10**12 + 4)
    with Session(engine) as session:
        assert [r.event_id for r in list_events(session, "acme", EventQuery(per_page=10)).rows] \
            == ["old-0", "old-1", "old-2", "new-long"]
        found = list_events(session, "acme", EventQuery(correlation_id=long_corr)).rows
        assert [r.event_id for r in found] == ["new-long"]
        assert [r.event_id for r in list_events(session, "acme",
                                                EventQuery(correlation_id="corr-1")).rows] \
            == ["old-1"]
        quarantine(session, "acme", {"id": "q-1", "x": "\x00"}, ValueError("refused"),
                   retried=False)
        session.commit()
        assert [r.event_id for r in list_quarantined(session, tenant="acme").rows] == ["q-1"]
    engine.dispose()
