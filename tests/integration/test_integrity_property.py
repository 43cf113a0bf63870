"""Property: any event the validator accepts is stored by the real persist path on PostgreSQL, and
reads back exactly as it was accepted (issue 11, "what the API accepts, the store stores").

Events are generated across the whole accepted space, boundaries included: every string field
up to its maximum length, in awkward Unicode (astral characters of 4 UTF-8 bytes, combining
marks, right-to-left and zero-width characters, U+FFFF and U+10FFFF, escapes that JSON and SQL
treat specially); up to 64 key attributes with keys of 128 and values (the correlationId among
them) of 2,048 characters; payloads that decode to any JSON (64-bit integers, deep nesting) or
to the wishlist shape the read models project, with ids as long as they may be. Each generated
body goes the way a client's does: JSON bytes, ``EventIn.model_validate_json`` and the ENTITY_EVENT
rule (only what the API would answer 201 is kept), the intake's document, the Redis / Dramatiq
round trip (orjson out, json in), then the persist actor's GroupCommit against PostgreSQL, with
a subscription so the fan-out runs too. Nothing may be quarantined or fail.
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import func, select

from config.runtime import Runtime, build_runtime
from events.contract import EntityName, EventIn, EventSource, EventType, Operation, entity_event_problems
from events.models import QuarantinedEvent
from events.service import prepare
from infra import limits
from infra.limits import EVENT_ID_PATTERN
from subscriptions.matching import IndexCache
from subscriptions.models import Delivery
from tests.conftest import make_settings
from workers.persist import GroupCommit

pytestmark = pytest.mark.integration

PROPERTY = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])

# Characters a client may send (no NUL, no lone surrogates: both are refused at the door), with
# the awkward ones over-represented.
AWKWARD = ["😀", "𝟘", "\U0010ffff", "\uffff", "\u200b", "\u202e", "\u0301", "é", "'", '"', "\\",
           "\n", "\t", "\u2028", "%", "_", "{", "$", ";", "\x7f", "\x01"]
CHARS = st.one_of(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                  st.sampled_from(AWKWARD))


def texts(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Any accepted text, and often one exactly at the limit (4-byte characters included)."""
    at_limit = st.sampled_from(["😀", "a", "é", "\U0010ffff"]).map(lambda c: c * max_size)
    # random 4-byte characters at the limit: 4 bytes each, incompressible (an index entry of
    # repeated ones would be compressed below PostgreSQL's 2,704-byte btree limit)
    astral = st.randoms(use_true_random=False).map(
        lambda r: "".join(chr(r.randrange(0x10000, 0x110000)) for _ in range(max_size)))
    return st.one_of(st.text(CHARS, min_size=min_size, max_size=min(max_size, 40)), at_limit,
                     astral,
                     st.text(CHARS, min_size=max(min_size, max_size - 3), max_size=max_size))


JSON_SCALARS = (st.none() | st.booleans() | st.integers(limits.INT64_MIN, 2**64 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(CHARS, max_size=30))
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(CHARS, max_size=10), inner, max_size=4),
                    max_leaves=20)


def b64_json(value: Any) -> str:
    return base64.b64encode(orjson.dumps(value)).decode()


ID = st.one_of(st.none(), st.from_regex(EVENT_ID_PATTERN, fullmatch=True),
               st.just("A" * limits.EVENT_ID_MAX))
LONG_ID = texts(limits.ENTITY_ID_MAX, min_size=1)
WISHLIST = st.fixed_dictionaries({
    "customer": st.fixed_dictionaries({"id": LONG_ID, "email": texts(320)}),
    "items": st.lists(st.fixed_dictionaries({"product_id": LONG_ID, "variant_id": LONG_ID,
                                             "title": texts(1024), "price": st.floats(0, 1e9)}),
                      max_size=3)})
KEY_ATTRIBUTES = st.one_of(
    st.dictionaries(texts(limits.ATTR_KEY_MAX, min_size=1), texts(limits.ATTR_VALUE_MAX),
                    max_size=4),
    st.builds(lambda v: {"correlationId": v}, texts(limits.ATTR_VALUE_MAX)),
    st.builds(lambda n, c: {f"{'k' * (limits.ATTR_KEY_MAX - 3)}{i:03d}": c * limits.ATTR_VALUE_MAX
                            for i in range(n)},
              st.integers(1, limits.MAX_KEY_ATTRIBUTES), st.sampled_from(["😀", "a"])),
)


@st.composite
def bodies(draw: Any) -> dict[str, Any]:
    """An event body as a client could post it (most of them valid)."""
    entity = draw(st.none() | st.sampled_from([e.value for e in EntityName]))
    payload = draw(st.none() | JSON.map(b64_json) | WISHLIST.map(b64_json))
    event_payload: dict[str, Any] = {
        "base64_encoded_payload_json": payload,
        "base64_encoded_fault_json": draw(st.none() | JSON.map(b64_json)),
        "entity_id": draw(st.none() | LONG_ID),
        "key_attributes": draw(KEY_ATTRIBUTES),
        "operation": draw(st.none() | st.sampled_from([o.value for o in Operation])),
    }
    body: dict[str, Any] = {
        "entity_id": draw(st.none() | LONG_ID),
        "entity_name": entity,
        "event_source": draw(st.sampled_from([s.value for s in EventSource])),
        "event_type": draw(st.sampled_from([t.value for t in EventType])),
        "event_payload": {k: v for k, v in event_payload.items()
                          if v is not None or draw(st.booleans())},
    }
    event_id = draw(ID)
    if event_id is not None:
        body["id"] = event_id
    return body


def accepted(body: dict[str, Any]) -> dict[str, Any] | None:
    """The stored document the API would answer 201 with, or None if it refuses the body."""
    try:
        event = EventIn.model_validate_json(orjson.dumps(body))
    except ValidationError:
        return None
    if entity_event_problems(event):
        return None
    return prepare(event, datetime.now(UTC)).document


@pytest.fixture
def runtime(pg_url: str) -> Iterator[Runtime]:
    rt = build_runtime(make_settings(pg_url))
    yield rt
    rt.close()


def _subscribe(runtime: Runtime, tenant: str) -> None:
    from infra.crypto import SecretBox
    from subscriptions.contract import SubscriptionIn
    from subscriptions.repository import create_subscription
    from tenants.auth import create_tenant

    with runtime.sessions() as session:
        create_tenant(session, tenant)
        session.commit()
    data = SubscriptionIn.model_validate({
        "entityType": "ORDER", "subscribeCreate": True, "subscribeChange": True,
        "eventTypes": ["ENTITY_EVENT", "FAULT", "WARNING", "SYSTEM"],
        "destination": {"type": "SQS", "sqs": {
            "queueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
            "credentials": "role", "roleArn": "arn:aws:iam::123456789012:role/ec"}}})
    with runtime.sessions() as session:
        create_subscription(session, tenant, data, SecretBox(None))
        session.commit()


def test_every_event_the_validator_accepts_is_stored_and_reads_back_equal(
        runtime: Runtime) -> None:
    from events.repository import get_event, to_document

    run = uuid.uuid4().hex[:6]
    counter = itertools.count()
    group = GroupCommit(runtime.sessions, IndexCache())
    seen = {"accepted": 0, "refused": 0}

    @PROPERTY
    @given(batch=st.lists(bodies(), min_size=1, max_size=4))
    def store(batch: list[dict[str, Any]]) -> None:
        docs = [d for d in (accepted(b) for b in batch) if d is not None]
        seen["refused"] += len(batch) - len(docs)
        if not docs:
            return
        seen["accepted"] += len(docs)
        # (a tenant of each example's own, at the longest name allowed every other time)
        n = next(counter)
        tenant = f"p{run}-{n}".ljust(limits.TENANT_MAX if n % 2 else 0, "x")
        _subscribe(runtime, tenant)
        # Given what the intake enqueued, as the persist actor receives it from Dramatiq
        wire = [json.loads(orjson.dumps(d)) for d in docs]
        # When the persist actor stores the message
        stored, due = group.submit(tenant, wire)
        # Then every event (the first of a repeated id) is stored, none quarantined
        first: dict[str, dict[str, Any]] = {}
        for doc in docs:
            first.setdefault(doc["id"], doc)
        assert stored == len(first)
        with runtime.sessions() as session:
            for event_id, doc in first.items():
                row = get_event(session, tenant, event_id)
                assert row is not None, event_id
                # And reads back exactly as it was accepted
                assert to_document(row) == doc
            assert session.execute(select(func.count()).where(
                QuarantinedEvent.tenant == tenant)).scalar_one() == 0
            # And the fan-out ran: one delivery per matching event
            deliveries = session.execute(select(func.count()).where(
                Delivery.tenant == tenant)).scalar_one()
        matching = [d for d in first.values() if d["entity_name"] == "ORDER"
                    and (d["event_payload"]["operation"] in ("CREATE", "BULK_CREATE", "UPDATE",
                                                             "BULK_UPDATE")
                         or (d["event_payload"]["operation"] is None
                             and d["event_type"] != "ENTITY_EVENT"))]
        assert deliveries == len(matching) == len(due)

    store()
    # (the generator reached the accepted space, not only refusals)
    assert seen["accepted"] >= 60, seen
