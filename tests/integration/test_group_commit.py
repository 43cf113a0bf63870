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
from ingest.service import prepare
from store.domain import EventIn
from store.models import EventRecord
from store.subscriptions import IndexCache
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


def test_a_bad_message_fails_alone(runtime: Runtime) -> None:
    tenant = f"gc-{uuid.uuid4().hex[:6]}"
    sessions = SlowFirstSession(runtime.sessions)
    group = GroupCommit(sessions, IndexCache())  # type: ignore[arg-type]
    bad = _doc("gc-bad")
    del bad["received_at"]
    messages = [(tenant, [_doc(f"gc-ok-{i}")]) for i in range(5)] + [(tenant, [bad])]
    results = _submit_all(group, messages)
    assert results[:5] == [(1, [])] * 5
    assert isinstance(results[5], KeyError)
    assert _stored(runtime, tenant) == 5


def test_an_id_in_two_messages_is_stored_once(runtime: Runtime) -> None:
    tenant = f"gc-{uuid.uuid4().hex[:6]}"
    group = GroupCommit(SlowFirstSession(runtime.sessions), IndexCache())  # type: ignore[arg-type]
    same = _doc("gc-same")
    results = _submit_all(group, [(tenant, [same]), (tenant, [same]), (tenant, [same])])
    assert sorted(r[0] for r in results) == [0, 0, 1]
    assert _stored(runtime, tenant) == 1


def test_stored_documents_read_back_exactly_on_postgresql(runtime: Runtime) -> None:
    # The batched insert sends every row as one JSON parameter: awkward values must survive it.
    from store.events import get_event, save_events, to_document

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
