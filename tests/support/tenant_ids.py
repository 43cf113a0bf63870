"""Per-tenant event numbers (migration 0009, store.events.TENANT_SEQ_BASE): checks run on SQLite
(tests/unit/test_quotas.py) and PostgreSQL (tests/integration/test_tenant_ids.py)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from events.models import EventRecord
from events.repository import TENANT_SEQ_BASE as B
from events.repository import EventQuery, get_event_by_number, list_events, lock_sequence, save_events
from infra.db import UnitOfWork, make_engine, make_session_factory, upgrade

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Events as a database at revision 0007 holds them: two tenants interleaved in the global seq.
LEGACY = [("old-a", "a-0"), ("old-b", "b-0"), ("old-a", "a-1"), ("old-a", "a-2"),
          ("old-b", "b-1"), ("old-a", "a-3")]


def seed_0007(url: str) -> dict[str, int]:
    """Migrate ``url`` to 0007, insert LEGACY; return each event's global ``seq`` (the numbers
    clients saw as ``id`` / ``fromId`` / ``next_from_id``)."""
    upgrade(url, "0007")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for i, (tenant, event_id) in enumerate(LEGACY):
                conn.execute(text(
                    "INSERT INTO events (tenant, event_id, event_source, event_type, "
                    "key_attributes, body_hash, received_at, stored_at) VALUES (:t, :id, "
                    "'CONNECTOR', 'FAULT', :attrs, :h, :at, :at)"),
                    {"t": tenant, "id": event_id, "attrs": json.dumps({}), "h": "0" * 64,
                     "at": T0 + timedelta(seconds=i)})
            return dict(conn.execute(text("SELECT event_id, seq FROM events")).all())
    finally:
        engine.dispose()


def _doc(event_id: str, i: int = 0) -> dict[str, object]:
    return {"id": event_id, "event_source": "CONNECTOR", "event_type": "FAULT",
            "event_payload": {"key_attributes": {}},
            "received_at": (T0 + timedelta(days=1, seconds=i)).isoformat()}


def persist(sessions: sessionmaker[Session], tenant: str, event_ids: list[str]) -> list[str]:
    """What the persist pool does for one message: a writer unit of work (write lock), sequence
    lock, save, commit."""
    with UnitOfWork(sessions, write=True) as uow:
        lock_sequence(uow.session)
        new = save_events(uow.session, tenant, [_doc(e) for e in event_ids])
        uow.commit()
    return new


def check_migrated(url: str, legacy_seq: dict[str, int]) -> None:
    """Upgrade to head: each tenant's events are numbered B+1.. in their old order, legacy
    numbers still find and page from the same events, new events continue the tenant's own
    numbering."""
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    try:
        with sessions() as session:
            numbers = dict(session.execute(select(EventRecord.event_id,
                                                  EventRecord.tenant_seq)).all())
            assert numbers == {"a-0": B + 1, "a-1": B + 2, "a-2": B + 3, "a-3": B + 4,
                               "b-0": B + 1, "b-1": B + 2}
            # A number a client was shown before still names the same event (and only its own)
            for tenant, event_id in LEGACY:
                found = get_event_by_number(session, tenant, legacy_seq[event_id])
                assert found is not None and found.event_id == event_id
            assert get_event_by_number(session, "old-b", legacy_seq["a-1"]) is None
            # A legacy cursor pages from the same place as before: from a-1's old seq on ...
            page = list_events(session, "old-a", EventQuery(from_seq=legacy_seq["a-1"]))
            assert [r.event_id for r in page.rows] == ["a-1", "a-2", "a-3"]
            # ... the cursor a client got after the last page (old seq + 1) misses nothing new
            after_last = legacy_seq["a-3"] + 1
            down = list_events(session, "old-a", EventQuery(from_seq=legacy_seq["a-2"],
                                                            descending=True))
            assert [r.event_id for r in down.rows] == ["a-2", "a-1", "a-0"]
        assert persist(sessions, "old-a", ["a-new"]) == ["a-new"]
        with sessions() as session:
            page = list_events(session, "old-a", EventQuery(from_seq=after_last))
            assert [(r.event_id, r.tenant_seq) for r in page.rows] == [("a-new", B + 5)]
            # and its next_from_id is the tenant's own number, which pages on from there
            assert page.next_from_seq == B + 6
            mixed = list_events(session, "old-a", EventQuery(from_seq=B + 3, per_page=2))
            assert [r.event_id for r in mixed.rows] == ["a-2", "a-3"]
            assert mixed.next_from_seq == B + 5
    finally:
        engine.dispose()


def check_concurrent_numbering(url: str, threads: int = 8, per_thread: int = 25,
                               *, gapless: bool = False) -> None:
    """Persist workers storing at once for two tenants (and repeating some ids): each tenant's
    numbers start at B+1, are unique and grow with the global seq. ``gapless``: exactly
    B+1..B+n (SQLite leaves stored ids out first; PostgreSQL may skip the number of an id that
    was already stored, a gap in the tenant's own numbers)."""
    engine = make_engine(url, pool_size=threads)
    sessions = make_session_factory(engine)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                tenant = "conc-a" if (t + i) % 3 else "conc-b"
                # an id another thread may store too (a redelivered message)
                persist(sessions, tenant, [f"{tenant}-{t}-{i}", f"{tenant}-dup-{i % 5}"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors[:3]
    try:
        with sessions() as session:
            for tenant in ("conc-a", "conc-b"):
                rows = session.execute(select(EventRecord.seq, EventRecord.tenant_seq)
                                       .where(EventRecord.tenant == tenant)
                                       .order_by(EventRecord.seq)).all()
                numbers = [r[1] for r in rows]
                assert numbers[0] == B + 1 and numbers == sorted(set(numbers)), tenant
                if gapless:
                    assert numbers == list(range(B + 1, B + 1 + len(rows))), tenant
                # a gap only where an already stored id was sent again (5 repeated ids)
                assert numbers[-1] - B - len(rows) <= threads * per_thread, tenant
    finally:
        engine.dispose()
