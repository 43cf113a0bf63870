"""The deliver pool's claims on real PostgreSQL: one statement finds its deliveries by id (never
by scanning the pending ones), and concurrent attempts of the same deliveries send each once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, event, insert, select
from sqlalchemy.orm import Session, sessionmaker

from events.contract import EventIn
from events.repository import save_events
from events.service import prepare
from infra.crypto import SecretBox
from infra.db import keyed_lookups
from subscriptions.contract import SubscriptionIn
from subscriptions.deliveries import claim_deliveries, create_deliveries
from subscriptions.matching import build_index
from subscriptions.models import Delivery
from subscriptions.repository import create_subscription, list_subscriptions
from subscriptions.senders.stub import StubSender
from subscriptions.service import DeliveryRetryPolicy, attempt_deliveries
from tenants.auth import create_tenant
from tests.conftest import migrated_database, order_event, require_service, run_concurrently
from tests.support.subscriptions import sqs_body


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    """A database of its own: its tables have no planner statistics yet, as after a burst."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    with migrated_database("ec_claims") as url:
        yield url


def test_the_claim_finds_its_deliveries_by_id_even_among_many_pending(fresh_pg: str) -> None:
    engine = create_engine(fresh_pg)
    sessions = sessionmaker(engine)
    now = datetime.now(UTC)
    with sessions() as session:
        session.execute(insert(Delivery), [
            {"tenant": "t", "subscription_id": "s", "event_id": f"e{i}", "status": "pending",
             "attempts": 0, "replay": False, "created_at": now} for i in range(5000)])
        session.commit()
        ids = list(session.execute(select(Delivery.id).order_by(Delivery.id)
                                   .offset(2000).limit(100)).scalars())
    seen: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", note)
    with sessions() as session:
        keyed_lookups(session)  # as attempt_deliveries does
        claimed = claim_deliveries(session, ids, token="tok", now=now, lease=30)
        [(statement, parameters)] = seen
        plan = "\n".join(r[0] for r in session.connection().exec_driver_sql(
            "EXPLAIN " + statement, parameters))
        session.rollback()
    event.remove(engine, "before_cursor_execute", note)
    assert [d.id for d in claimed] == ids
    # The primary key, not the (status, next_attempt_at) index over every pending delivery
    assert "deliveries_pkey" in plan, plan
    assert "ix_deliveries_status" not in plan, plan


def _setup(session: Session, box: SecretBox, n: int) -> list[int]:
    create_tenant(session, "acme")
    create_subscription(session, "acme", SubscriptionIn.model_validate(sqs_body()), box)
    docs = [prepare(EventIn.model_validate(order_event(id=f"evt-{i}", entity_id=f"o-{i}")),
                    datetime.now(UTC)).document for i in range(n)]
    save_events(session, "acme", docs)
    index = build_index(list_subscriptions(session, "acme", include_inactive=False), 0)
    create_deliveries(session, "acme", docs, index)
    session.commit()
    return list(session.execute(select(Delivery.id).order_by(Delivery.id)).scalars())


def test_concurrent_attempts_of_the_same_deliveries_send_each_once(fresh_pg: str) -> None:
    sessions = sessionmaker(create_engine(fresh_pg, pool_size=10))
    box = SecretBox(Fernet.generate_key().decode())
    with sessions() as session:
        ids = _setup(session, box, 60)
    sender = StubSender()
    rechecks: list[list[int]] = []

    def attempt(_: int) -> dict[int, str]:
        return attempt_deliveries(sessions, ids, senders={"SQS": sender, "SNS": sender}, box=box,
                                  policy=DeliveryRetryPolicy(),
                                  schedule_retry=lambda retry, _s: rechecks.append(retry))

    results = run_concurrently(attempt, list(range(8)))
    assert not [r for r in results if isinstance(r, BaseException)], results
    # Every delivery was sent by exactly one of the eight attempts
    bodies = [m.body for _, m in sender.sent]
    assert len(bodies) == 60 == len(set(bodies))
    winners = [sum(1 for r in results if r[i] == "succeeded") for i in ids]
    assert winners == [1] * 60
    with sessions() as session:
        rows = session.execute(select(Delivery.status, Delivery.attempts, Delivery.claim)).all()
    assert set(rows) == {("succeeded", 1, None)}
