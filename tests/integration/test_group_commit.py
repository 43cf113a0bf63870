"""The persist pool's group commit on real PostgreSQL: concurrent messages share a transaction,
a bad message fails alone, an id in two messages is stored once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from config.runtime import Runtime, build_runtime
from events.contract import EventIn
from events.models import EventRecord
from events.service import prepare
from subscriptions.matching import IndexCache
from tests.conftest import make_settings, order_event, run_concurrently
from workers.persist import GroupCommit

pytestmark = pytest.mark.integration


@pytest.fixture
def runtime(pg_url: str) -> Iterator[Runtime]:
    rt = build_runtime(make_settings(pg_url))
    yield rt
    rt.close()


class SlowFirstSession:
    """The session factory, counting transactions; the first one starts late, so the other
    submissions pile up behind it."""

    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> Any:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            time.sleep(0.5)
        return self.sessions()


def _doc(event_id: str) -> dict[str, Any]:
    return prepare(EventIn.model_validate(order_event(id=event_id)), datetime.now(UTC)).document


def _submit_all(group: GroupCommit, messages: list[tuple[str, list[dict[str, Any]]]]
                ) -> list[Any]:
    return run_concurrently(lambda m: group.submit(*m), messages)


def _stored(runtime: Runtime, tenant: str) -> int:
    with runtime.sessions() as session:
        return int(session.execute(select(func.count()).where(EventRecord.tenant == tenant))
                   .scalar_one())


def test_concurrent_messages_share_a_transaction_and_each_learns_its_own_result(
        runtime: Runtime) -> None:
    tenant = f"gc-{uuid.uuid4().hex[:6]}"
    sessions = SlowFirstSession(runtime.sessions)
    group = GroupCommit(sessions, IndexCache())  # type: ignore[arg-type]
    messages = [(tenant, [_doc(f"gc-{i}-{uuid.uuid4().hex[:6]}")]) for i in range(16)]
    results = _submit_all(group, messages)
    assert results == [(1, [])] * 16
    assert _stored(runtime, tenant) == 16
    # 16 messages, at most 3 transactions (one without grouping would take 16)
    assert sessions.calls <= 3, sessions.calls


def _quarantined(runtime: Runtime, tenant: str) -> dict[str, Any]:
    from events.models import QuarantinedEvent

    with runtime.sessions() as session:
        return {r.event_id: r for r in session.execute(
            select(QuarantinedEvent).where(QuarantinedEvent.tenant == tenant)).scalars()}


def test_a_bad_event_is_quarantined_and_the_rest_of_its_group_is_stored(runtime: Runtime) -> None:
    tenant = f"gc-{uuid.uuid4().hex[:6]}"
    sessions = SlowFirstSession(runtime.sessions)
    group = GroupCommit(sessions, IndexCache())  # type: ignore[arg-type]
    bad = _doc("gc-bad")
    del bad["received_at"]
    messages = [(tenant, [_doc(f"gc-ok-{i}")]) for i in range(5)] + [(tenant, [bad])]
    # When six messages sharing a transaction include an event the store cannot take
    results = _submit_all(group, messages)
    # Then every message succeeds (none is retried or dead-lettered): five events are stored and
    # the bad one is quarantined with the reason
    assert results == [(1, [])] * 5 + [(0, [])]
    assert _stored(runtime, tenant) == 5
    held = _quarantined(runtime, tenant)
    assert list(held) == ["gc-bad"]
    assert held["gc-bad"].error_class == "KeyError" and "received_at" in held["gc-bad"].reason


def test_a_message_the_quarantine_cannot_hold_fails_alone(runtime: Runtime) -> None:
    tenant = f"gc-{uuid.uuid4().hex[:6]}"
    group = GroupCommit(SlowFirstSession(runtime.sessions), IndexCache())  # type: ignore[arg-type]
    # (an event without an id cannot be keyed in the quarantine: its message is dead-lettered)
    messages = [(tenant, [_doc(f"gc-ok-{i}")]) for i in range(5)] + [(tenant, [{"no": "id"}])]
    results = _submit_all(group, messages)
    assert results[:5] == [(1, [])] * 5
    assert isinstance(results[5], KeyError)
    assert _stored(runtime, tenant) == 5
    assert _quarantined(runtime, tenant) == {}


def test_one_refused_row_among_a_thousand_is_found_in_few_savepoints(runtime: Runtime) -> None:
    from sqlalchemy import event

    tenant = f"gc-{uuid.uuid4().hex[:6]}"
    docs = [_doc(f"gc-many-{i:04d}") for i in range(1000)]
    docs[500]["entity_id"] = "nul\x00inside"  # bypassing validation: PostgreSQL refuses NUL
    savepoints: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("SAVEPOINT"):
            savepoints.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", count)
    try:
        # When one message of 1,000 events holds one the database refuses
        assert GroupCommit(runtime.sessions, IndexCache()).submit(tenant, docs) == (999, [])
    finally:
        event.remove(runtime.engine, "before_cursor_execute", count)
    # Then the 999 others are stored, in the message's order, the bad one quarantined with the
    # database's reason, found by halving (not 1,000 single-row tries)
    from events.repository import EventQuery, list_events

    with runtime.sessions() as session:
        page = list_events(session, tenant, EventQuery(per_page=1000))
    assert [r.event_id for r in page.rows] == [d["id"] for i, d in enumerate(docs) if i != 500]
    held = _quarantined(runtime, tenant)
    assert list(held) == ["gc-many-0500"]
    assert held["gc-many-0500"].error_class in ("UntranslatableCharacter", "CharacterNotInRepertoire",
                                                "InvalidParameterValue"), held["gc-many-0500"].reason
    assert "\\u0000" in held["gc-many-0500"].document  # kept as accepted (escaped)
    assert len(savepoints) <= 2 * 10 + 2, len(savepoints)


def test_an_id_in_two_messages_is_stored_once(runtime: Runtime) -> None:
    tenant = f"gc-{uuid.uuid4().hex[:6]}"
    group = GroupCommit(SlowFirstSession(runtime.sessions), IndexCache())  # type: ignore[arg-type]
    same = _doc("gc-same")
    results = _submit_all(group, [(tenant, [same]), (tenant, [same]), (tenant, [same])])
    assert sorted(r[0] for r in results) == [0, 0, 1]
    assert _stored(runtime, tenant) == 1


def test_stored_documents_read_back_exactly_on_postgresql(runtime: Runtime) -> None:
    # The batched insert sends every row as one JSON parameter: awkward values must survive it.
    from events.repository import get_event, save_events, to_document

    tenant = f"t{uuid.uuid4().hex[:8]}"
    awkward = order_event(id="evt-awkward", entity_id=None)
    awkward["event_payload"]["key_attributes"] = {
        "correlationId": "c-ü-€-😀", "quote": 'say "hi"\\n', "json": "{\"a\": [1, 2.5, null]}",
        "empty": ""}
    fault = order_event(id="evt-fault", event_type="FAULT")
    docs = [prepare(EventIn.model_validate(e), datetime.now(UTC)).document
            for e in (awkward, fault, order_event(id="evt-plain"))]
    with runtime.sessions() as session:
        assert save_events(session, tenant, docs + [docs[0]]) == [d["id"] for d in docs]
        session.commit()
    with runtime.sessions() as session:
        # A second save inserts nothing twice
        assert save_events(session, tenant, docs) == []
        session.commit()
        for doc in docs:
            row = get_event(session, tenant, doc["id"])
            assert row is not None and to_document(row) == doc
    assert _stored(runtime, tenant) == 3


def test_a_read_model_key_too_large_for_its_index_skips_the_projection_not_the_event(
        runtime: Runtime) -> None:
    """A wishlist item's key (tenant, wishlist, product, variant ids of up to 255 characters
    each) can exceed the 2,704 bytes of a btree entry in 4-byte characters: PostgreSQL answers
    ProgramLimitExceeded, an OperationalError that was retried as if the database were down."""
    import base64
    import random

    import orjson

    from events.models import ProjectionSkip

    tenant = f"gc-{uuid.uuid4().hex[:6]}"
    rng = random.Random(11)  # incompressible 4-byte characters (a repeated one would compress)
    long_id = "".join(chr(rng.randrange(0x10000, 0x10FFFF)) for _ in range(255))
    payload = {"customer": {"id": "c-1", "email": "ann@example.com"},
               "items": [{"product_id": long_id, "variant_id": long_id, "price": 10.0}]}
    wishlist = order_event(id="gc-wishlist", entity_name="WISHLIST", entity_id=long_id)
    wishlist["event_payload"]["base64_encoded_payload_json"] = base64.b64encode(
        orjson.dumps(payload)).decode()
    doc = prepare(EventIn.model_validate(wishlist), datetime.now(UTC)).document
    # When it is persisted
    assert GroupCommit(runtime.sessions, IndexCache()).submit(tenant, [doc]) == (1, [])
    # Then the event is stored and the projection skip is counted
    assert _stored(runtime, tenant) == 1
    assert _quarantined(runtime, tenant) == {}
    with runtime.sessions() as session:
        skips = session.execute(select(ProjectionSkip.reason).where(
            ProjectionSkip.tenant == tenant)).scalars().all()
    assert skips == ["unexpected OperationalError"], skips
