"""Per-tenant event numbers on PostgreSQL: migration 0009 on a database that holds events, and
the numbering under concurrent persist transactions (tests/unit/tenant_ids.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests import conftest


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    conftest.require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"ec_ids_{uuid.uuid4().hex[:8]}"
    admin = conftest.PG_ADMIN_URL
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield "postgresql+psycopg://" + admin.split("://", 1)[1].rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migration_0009_renumbers_events_per_tenant_and_keeps_legacy_cursors_on_postgresql(
        fresh_pg: str) -> None:
    from tests.support.tenant_ids import check_migrated, seed_0007

    check_migrated(fresh_pg, seed_0007(fresh_pg))


def test_concurrent_persist_transactions_number_each_tenant_without_gaps_on_postgresql(
        pg_url: str) -> None:
    from tests.support.tenant_ids import check_concurrent_numbering

    check_concurrent_numbering(pg_url)
