"""Which events match which subscriptions: build_index / SubscriptionIndex.match, IndexCache,
and the persist pool's fan-out on the StubSender app."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update

from events.contract import EntityName
from subscriptions.contract import SubscriptionIn
from subscriptions.deliveries import create_deliveries
from subscriptions.matching import IndexCache, build_index
from subscriptions.models import Delivery, Subscription
from subscriptions.repository import create_subscription
from subscriptions.senders.stub import StubSender
from tenants.models import Tenant
from tests.conftest import Caller, Services, b64, order_event
from tests.support.apps import runtime_of
from tests.support.subscriptions import BASE, QUEUE_URL, create, settle, sqs_body

# conftest's ``embedded`` (and so ``acme``/``globex``) is the StubSender app; ``stub`` its sender.
pytestmark = pytest.mark.embedded("sender")

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def sub(sub_id: str, entity: str = "ORDER", *, create: bool = False, change: bool = False,
        delete: bool = False, types: str = "ENTITY_EVENT", active: bool = True) -> Subscription:
    """A plain (never stored) Subscription row."""
    return Subscription(
        id=sub_id, tenant="acme", active=active, entity_type=entity, subscribe_create=create,
        subscribe_change=change, subscribe_delete=delete, event_types=types,
        destination_type="SQS", target=QUEUE_URL, region="us-east-1", credentials="platform",
        created_at=NOW, updated_at=NOW,
    )


def doc(entity: str | None = "ORDER", operation: str | None = "CREATE",
        event_type: str = "ENTITY_EVENT", event_id: str = "e-1") -> dict[str, Any]:
    """An event document as the persist pool sees it."""
    return {"id": event_id, "entity_id": "order-1", "entity_name": entity, "event_source": "APPLICATION",
            "event_type": event_type,
            "event_payload": {"base64_encoded_payload_json": None, "base64_encoded_fault_json": None,
                              "entity_id": "order-1", "key_attributes": {}, "operation": operation}}


# --- pure matching ------------------------------------------------------------------------------

FLAG_SUBS = [sub("c", create=True), sub("u", change=True), sub("d", delete=True),
             sub("all", create=True, change=True, delete=True)]


@pytest.mark.parametrize(("operation", "expected"), [
    ("CREATE", ["c", "all"]),
    ("BULK_CREATE", ["c", "all"]),
    ("UPDATE", ["u", "all"]),
    ("BULK_UPDATE", ["u", "all"]),
    ("DELETE", ["d", "all"]),
    ("READ", []),
])
def test_the_operation_selects_the_flag(operation: str, expected: list[str]) -> None:
    # Given subscriptions to ORDER creates, changes, deletes, and all three
    index = build_index(FLAG_SUBS, version=3)
    # When an ORDER entity event with this operation is matched
    matched = index.match(doc(operation=operation))
    # Then exactly the subscriptions whose flag fits the operation match, in creation order
    assert matched == expected


def test_the_index_carries_its_version_and_knows_when_it_is_empty() -> None:
    assert build_index(FLAG_SUBS, version=7).version == 7
    assert not build_index(FLAG_SUBS, version=7).empty
    assert build_index([], version=0).empty
    assert build_index([sub("off", create=True, active=False)], version=1).empty


@pytest.mark.parametrize("entity", ["CUSTOMER", "ORDER_ENTRY", "PRODUCT", None])
def test_another_entity_or_none_matches_nothing(entity: str | None) -> None:
    index = build_index(FLAG_SUBS, version=1)
    for operation in ("CREATE", "UPDATE", "DELETE"):
        assert index.match(doc(entity=entity, operation=operation)) == []


def test_an_entity_event_without_an_operation_matches_nothing() -> None:
    index = build_index(FLAG_SUBS, version=1)
    assert index.match(doc(operation=None)) == []
    assert index.match(doc(operation="MERGE")) == []


def test_fault_and_warning_events_match_only_subscriptions_that_opted_in() -> None:
    # Given a default subscription (ENTITY_EVENT only), one opted into FAULT, one into WARNING
    index = build_index([
        sub("plain", create=True, change=True, delete=True),
        sub("faults", create=True, types="ENTITY_EVENT FAULT"),
        sub("warnings", change=True, types="WARNING"),
    ], version=1)
    # Then an entity event reaches the subscriptions with ENTITY_EVENT and the flag
    assert index.match(doc(operation="CREATE")) == ["plain", "faults"]
    assert index.match(doc(operation="UPDATE")) == ["plain"]
    # And a FAULT reaches only the FAULT subscription, when its operation fits the flag
    assert index.match(doc(event_type="FAULT", operation="CREATE")) == ["faults"]
    assert index.match(doc(event_type="FAULT", operation="UPDATE")) == []
    # And a FAULT without an operation reaches every FAULT subscription of the entity
    assert index.match(doc(event_type="FAULT", operation=None)) == ["faults"]
    # And a FAULT on a READ matches nothing (READ has no flag)
    assert index.match(doc(event_type="FAULT", operation="READ")) == []
    # And WARNINGs reach only the WARNING subscription
    assert index.match(doc(event_type="WARNING", operation="UPDATE")) == ["warnings"]
    assert index.match(doc(event_type="WARNING", operation=None)) == ["warnings"]
    assert index.match(doc(event_type="WARNING", operation="CREATE")) == []
    # And SYSTEM events, opted into by nobody, match nothing
    assert index.match(doc(event_type="SYSTEM", operation=None)) == []
    # And a FAULT of another entity matches nothing
    assert index.match(doc(entity="CUSTOMER", event_type="FAULT", operation=None)) == []


def test_inactive_subscriptions_never_match() -> None:
    # Given an inactive subscription to everything of ORDER, FAULTs included, and an active one
    index = build_index([
        sub("off", create=True, change=True, delete=True, types="ENTITY_EVENT FAULT WARNING",
            active=False),
        sub("on", delete=True),
    ], version=1)
    # Then no event ever matches the inactive one
    for event_type, operation in itertools.product(
            ("ENTITY_EVENT", "FAULT", "WARNING"), ("CREATE", "UPDATE", "DELETE", "READ", None)):
        assert "off" not in index.match(doc(event_type=event_type, operation=operation))
    assert index.match(doc(operation="DELETE")) == ["on"]


def _crowd(n: int = 1000) -> list[Subscription]:
    """``n`` subscriptions on entity types other than ORDER, to every operation and event type."""
    others = [e.value for e in EntityName if e is not EntityName.ORDER]
    return [sub(f"other-{i}", others[i % len(others)], create=True, change=True, delete=True,
                types="ENTITY_EVENT FAULT WARNING") for i in range(n)]


def test_one_right_subscription_among_1000_on_other_entity_types() -> None:
    # Given 1,000 subscriptions on other entity types, an inactive ORDER one, and one ORDER
    # create subscription in the middle
    crowd = _crowd()
    subs = [*crowd[:500], sub("off", create=True, active=False), sub("the-one", create=True),
            *crowd[500:]]
    index = build_index(subs, version=1)
    # When ORDER events are matched, Then exactly the one fitting subscription matches
    assert index.match(doc(operation="CREATE")) == ["the-one"]
    assert index.match(doc(operation="BULK_CREATE")) == ["the-one"]
    assert index.match(doc(operation="UPDATE")) == []
    assert index.match(doc(event_type="FAULT", operation=None)) == []
    # And a CUSTOMER create matches exactly the CUSTOMER subscriptions of the crowd
    customers = [s.id for s in crowd if s.entity_type == "CUSTOMER"]
    assert len(customers) == 67
    assert index.match(doc(entity="CUSTOMER", operation="CREATE")) == customers


def test_create_deliveries_inserts_one_pending_row_per_matching_pair(services: Services) -> None:
    # Given acme's index with two ORDER-create subscriptions and one CUSTOMER one
    index = build_index([sub("a", create=True), sub("b", create=True, change=True),
                         sub("c", "CUSTOMER", create=True)], version=1)
    docs = [doc(event_id="e-1"), doc(operation="UPDATE", event_id="e-2"),
            doc(operation="READ", event_id="e-3")]
    with services.sessions() as session:
        # When deliveries are created for three events
        count = create_deliveries(session, "acme", docs, index, replay=True)
        session.commit()
        rows = session.execute(select(Delivery).order_by(Delivery.id)).scalars().all()
    # Then e-1 goes to a and b, e-2 to b, e-3 nowhere; all pending, never attempted
    assert count == 3
    assert [(r.event_id, r.subscription_id) for r in rows] == [("e-1", "a"), ("e-1", "b"), ("e-2", "b")]
    assert {(r.tenant, r.status, r.attempts, r.replay) for r in rows} == {("acme", "pending", 0, True)}


# --- IndexCache -----------------------------------------------------------------------------------

def _version(app: Any, tenant: str) -> int:
    """The tenant's subscriptions version, in ``app``'s database (or ``services``')."""
    sessions = app.sessions if isinstance(app, Services) else runtime_of(app).sessions
    with sessions() as session:
        return int(session.execute(select(Tenant.subscriptions_version)
                                   .where(Tenant.name == tenant)).scalar_one())


def test_index_cache_reuses_the_index_until_the_version_moves(services: Services) -> None:
    cache = IndexCache()
    runtime = services
    with runtime.sessions() as session:
        # Given acme's cached index, built while it had no subscriptions
        first = cache.get(session, "acme")
        assert first.empty and first.version == _version(services, "acme")
        # When nothing changed, Then the same index is returned
        assert cache.get(session, "acme") is first
        # When a subscription is created (which bumps the version)
        data = SubscriptionIn.model_validate(sqs_body(id="s-1"))
        create_subscription(session, "acme", data, runtime.box)
        # Then the next get reloads and matches it
        second = cache.get(session, "acme")
        assert second.version == first.version + 1
        assert second.match(doc()) == ["s-1"]
        assert cache.get(session, "acme") is second
        # And another tenant's index is separate and empty
        assert cache.get(session, "globex").empty
        # And an unknown tenant gets an empty index with version -1
        assert cache.get(session, "nobody").version == -1
        assert cache.get(session, "nobody").empty


def test_every_subscription_change_bumps_the_version(acme: Caller) -> None:
    app = acme.client.application
    v0 = _version(app, "acme")
    created = create(acme, sqs_body())
    assert _version(app, "acme") == v0 + 1
    acme.client.put(f"{BASE}/{created['id']}", json=sqs_body(subscribeChange=True),
                    headers=acme.headers())
    assert _version(app, "acme") == v0 + 2
    acme.client.put(f"{BASE}/{created['id']}/deactivate", headers=acme.headers())
    assert _version(app, "acme") == v0 + 3
    acme.client.delete(f"{BASE}/{created['id']}", headers=acme.headers())
    assert _version(app, "acme") == v0 + 4
    assert _version(app, "globex") == 0


# --- the persist pool's fan-out -----------------------------------------------------------------

def _sent_ids(sender: StubSender) -> list[tuple[str, str]]:
    """(event id, destination target) of every message sent so far, sorted."""
    return sorted((m.attributes["event_id"], d.target) for d, m in sender.sent)


def test_a_subscription_created_after_an_event_was_matched_gets_the_next_event(
    acme: Caller, stub: StubSender
) -> None:
    app = acme.client.application
    # Given subscription A, and an event already matched and sent to it (index cached)
    create(acme, sqs_body())
    acme.post_event(order_event(id="evt-1"))
    settle(app)
    assert _sent_ids(stub) == [("evt-1", QUEUE_URL)]
    # When subscription B is created through the API
    create(acme, sqs_body(QUEUE_URL + "-b"))
    # And a new event is posted
    acme.post_event(order_event(id="evt-2"))
    settle(app)
    # Then the new event reaches both A and B, and the old one was not resent to B
    assert _sent_ids(stub) == [("evt-1", QUEUE_URL), ("evt-2", QUEUE_URL), ("evt-2", QUEUE_URL + "-b")]


def test_a_deactivated_subscription_stops_matching_at_once(acme: Caller, stub: StubSender) -> None:
    app = acme.client.application
    created = create(acme, sqs_body())
    acme.post_event(order_event(id="evt-1"))
    settle(app)
    acme.client.put(f"{BASE}/{created['id']}/deactivate", headers=acme.headers())
    acme.post_event(order_event(id="evt-2"))
    settle(app)
    assert _sent_ids(stub) == [("evt-1", QUEUE_URL)]
    with runtime_of(app).sessions() as session:
        assert session.execute(select(func.count()).select_from(Delivery)).scalar_one() == 1


def test_posted_events_reach_exactly_the_fitting_subscriptions(acme: Caller, globex: Caller,
                                                               stub: StubSender) -> None:
    app = acme.client.application
    # Given acme subscriptions: creates (default types), deletes with FAULT opted in, and an
    # inactive one to everything; and globex's subscription to ORDER creates
    create(acme, sqs_body(QUEUE_URL + "-create"))
    create(acme, sqs_body(QUEUE_URL + "-faults", subscribeCreate=False,
                          subscribeDelete=True, eventTypes=["ENTITY_EVENT", "FAULT"]))
    create(acme, sqs_body(QUEUE_URL + "-off", active=False, subscribeChange=True,
                          subscribeDelete=True, eventTypes=["ENTITY_EVENT", "FAULT", "WARNING"]))
    create(globex, sqs_body(QUEUE_URL + "-globex"))
    payload = order_event()["event_payload"]
    # When acme posts a create, a read, a delete, a FAULT on a create, a FAULT without an
    # operation, a WARNING, and a CUSTOMER create
    posts = [
        order_event(id="create"),
        order_event(id="read", event_payload={**payload, "operation": "READ"}),
        order_event(id="delete", event_payload={**payload, "operation": "DELETE"}),
        order_event(id="fault-create", event_type="FAULT"),
        order_event(id="fault-bare", event_type="FAULT",
                    event_payload={"base64_encoded_fault_json": b64({"status": 500}),
                                   "key_attributes": {}}),
        order_event(id="warning", event_type="WARNING"),
        order_event(id="customer", entity_name="CUSTOMER"),
    ]
    for event in posts:
        resp = acme.post_event(event)
        assert resp.status_code == 201, resp.get_data(as_text=True)
    settle(app)
    # Then each reached exactly the fitting acme subscriptions, and nothing reached globex's
    assert _sent_ids(stub) == sorted([
        ("create", QUEUE_URL + "-create"),
        ("delete", QUEUE_URL + "-faults"),
        ("fault-bare", QUEUE_URL + "-faults"),
    ])


def test_1000_stored_subscriptions_on_other_entities_still_match_exactly_one(
    acme: Caller, stub: StubSender
) -> None:
    app = acme.client.application
    # Given 1,000 stored acme subscriptions on other entity types (inserted in one go)
    with runtime_of(app).sessions() as session:
        session.add_all(_crowd())
        session.execute(update(Tenant).where(Tenant.name == "acme")
                        .values(subscriptions_version=Tenant.subscriptions_version + 1,
                                quota_subscriptions=2000))  # above the default quota
        session.commit()
    # And one ORDER create subscription made through the API
    the_one = create(acme, sqs_body(QUEUE_URL + "-one"))
    # When an ORDER create is posted
    acme.post_event(order_event(id="evt-order"))
    settle(app)
    # Then exactly one delivery exists, to that subscription, and one message was sent
    with runtime_of(app).sessions() as session:
        rows = session.execute(select(Delivery.subscription_id, Delivery.status)).all()
    assert [tuple(r) for r in rows] == [(the_one["id"], "succeeded")]
    assert _sent_ids(stub) == [("evt-order", QUEUE_URL + "-one")]


# --- one rule, two uses: the live index (Python) and a replay's query (SQL) ---------------------

GRID_SUBS = [*FLAG_SUBS, sub("none"), sub("fault", create=True, types="FAULT_EVENT WARNING_EVENT"),
             sub("cust", "CUSTOMER", change=True, types="ENTITY_EVENT FAULT_EVENT")]
GRID_DOCS = [doc(entity, operation, event_type, event_id=f"e-{n}")
             for n, (entity, operation, event_type) in enumerate(itertools.product(
                 ["ORDER", "CUSTOMER", None],
                 ["CREATE", "BULK_CREATE", "UPDATE", "BULK_UPDATE", "DELETE", "READ", None],
                 ["ENTITY_EVENT", "FAULT_EVENT", "WARNING_EVENT"]))]


def _sql_matches(subscription: Subscription) -> set[str]:
    """The event ids a replay's WHERE clause selects from the grid, on SQLite."""
    from sqlalchemy import create_engine, insert

    from events.models import EventRecord
    from subscriptions.matching import MatchRule

    engine = create_engine("sqlite://")
    EventRecord.__table__.create(engine)  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(insert(EventRecord), [
            {"tenant": "acme", "event_id": d["id"], "entity_name": d["entity_name"],
             "event_source": "APPLICATION", "event_type": d["event_type"],
             "operation": d["event_payload"]["operation"], "key_attributes": {},
             "body_hash": "0" * 64, "received_at": NOW, "stored_at": NOW, "tenant_seq": n}
            for n, d in enumerate(GRID_DOCS)])
        rule = MatchRule.of(subscription)
        return set(conn.execute(select(EventRecord.event_id).where(
            *rule.where(EventRecord.entity_name, EventRecord.event_type, EventRecord.operation)
        )).scalars())


@pytest.mark.parametrize("subscription", GRID_SUBS, ids=lambda s: s.id)
def test_the_index_the_rule_and_the_replay_query_match_the_same_events(
        subscription: Subscription) -> None:
    from subscriptions.matching import MatchRule

    rule = MatchRule.of(subscription)
    index = build_index([subscription], version=1)
    by_index = {d["id"] for d in GRID_DOCS if index.match(d) == [subscription.id]}
    by_rule = {d["id"] for d in GRID_DOCS
               if rule.matches(d["entity_name"], d["event_type"], d["event_payload"]["operation"])}
    assert by_index == by_rule == _sql_matches(subscription)
    assert by_index or subscription.id == "none"  # the others each take something


def test_the_replay_query_follows_the_rule_for_an_event_without_an_operation() -> None:
    # A FAULT event without an operation goes to every ORDER subscription that takes FAULT
    # events, whatever its flags; an ENTITY_EVENT without one to none
    fault_none = {d["id"] for d in GRID_DOCS if d["entity_name"] == "ORDER"
                  and d["event_type"] == "FAULT_EVENT" and d["event_payload"]["operation"] is None}
    entity_none = {d["id"] for d in GRID_DOCS if d["event_type"] == "ENTITY_EVENT"
                   and d["event_payload"]["operation"] is None}
    fault = _sql_matches(sub("fault", types="FAULT_EVENT"))
    assert fault_none <= fault and len(fault_none) == 1
    assert not entity_none & _sql_matches(sub("none", create=True, change=True, delete=True))
