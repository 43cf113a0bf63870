"""What PostgreSQL spends per delivery on each statement of a deliver attempt, alone.

    .venv/bin/python -m bench.deliver_statements [N]     # N pending deliveries (default 20,000)

Makes a fresh database on this machine's server (EC_BENCH_PG_ADMIN), fills ``deliveries``,
then runs each statement of ``subscriptions.service.attempt_deliveries`` over the backlog, 100
deliveries per transaction, one thread, and prints microseconds per delivery (client time
included). A diagnostic for the B4 profile, not a benchmark with a target.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from bench.stack import PG_ADMIN
from config.settings import normalize_database_url
from infra.db import keyed_lookups, make_engine, make_session_factory, upgrade
from subscriptions import deliveries as repo
from subscriptions.models import Delivery, DeliveryAttempt


def main(n: int) -> None:
    name = f"ec_statements_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = normalize_database_url(PG_ADMIN.rsplit("/", 1)[0] + "/" + name)
        upgrade(url)
        sessions = make_session_factory(make_engine(url))
        now = datetime.now(UTC)
        with sessions() as session:
            session.execute(insert(Delivery), [
                {"tenant": "t", "subscription_id": "s", "event_id": f"e{i}", "status": "pending",
                 "attempts": 0, "replay": False, "created_at": now} for i in range(n)])
            session.commit()
            ids = list(session.execute(select(Delivery.id).order_by(Delivery.id)).scalars())
        chunks = [ids[i:i + 100] for i in range(0, n, 100)]
        claimed: dict[int, list[Delivery]] = {}

        def timed(label: str, step: Callable[[Session, list[int]], Any]) -> None:
            started = time.perf_counter()
            for chunk in chunks:
                with sessions() as session:
                    keyed_lookups(session)
                    step(session, chunk)
                    session.commit()
            print(f"{label:44s} {(time.perf_counter() - started) / n * 1e6:7.1f} µs/delivery")

        def claim(session: Session, chunk: list[int]) -> None:
            claimed[chunk[0]] = repo.claim_deliveries(session, chunk, token="t", lease=30,
                                                      now=datetime.now(UTC))

        def record(session: Session, chunk: list[int]) -> None:
            at = datetime.now(UTC)
            for d in claimed[chunk[0]]:
                d.start_attempt(at)
                d.mark_delivered("m", at)
            repo.record_outcomes(session, claimed[chunk[0]], [
                repo.attempt_row(d, status="succeeded", at=at, latency_ms=1, message_id="m")
                for d in claimed[chunk[0]]])

        def attempts_only(session: Session, chunk: list[int]) -> None:
            session.execute(insert(DeliveryAttempt), [
                {"tenant": "t", "subscription_id": "s", "delivery_id": i, "event_id": "e",
                 "attempt": 1, "attempted_at": now, "status": "succeeded", "latency_ms": 1}
                for i in chunk])

        def one_update(session: Session, chunk: list[int]) -> None:
            session.execute(update(Delivery).where(Delivery.id.in_(chunk))
                            .values(attempts=Delivery.attempts + 1)
                            .execution_options(synchronize_session=False))

        timed("claim: UPDATE … RETURNING", claim)
        timed("record: lock, UPDATE per row, INSERT attempts", record)
        timed("INSERT of the attempt rows alone", attempts_only)
        timed("one UPDATE of 100 rows (for comparison)", one_update)
        timed("an empty transaction", lambda session, chunk: session.execute(select(1)).all())
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
