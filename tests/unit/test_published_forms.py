"""The published forms accepted as written (issue 16): every event_source a seed lists, faults and
payloads whose content is not JSON, seed 003's sort=name."""

from __future__ import annotations

import base64

import pytest

from events.contract import EntityName, EventSource
from tests.conftest import Caller, b64, drain, order_event
from tests.support.events import SEED_000_REQUEST, ol_get, post_many

SEED_000_SOURCES = ["CUSTOMER", "INVENTORY_LEVEL", "INVENTORY_LOCATION", "ORDER", "PRICE",
                    "PRODUCT", "VARIANT_PRODUCT", "WISHLIST"]
SEED_002_SOURCES = ["SYSTEM", "CONNECTOR", "APPLICATION", "SERVERLESS"]


def raw_b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- event_source: both seeds' lists ------------------------------------------------------------

@pytest.mark.parametrize("source", SEED_000_SOURCES + SEED_002_SOURCES)
def test_every_event_source_a_seed_lists_is_accepted_stored_and_filtered(
        acme: Caller, source: str) -> None:
    # Given an event whose event_source is a value seed 000/001 or seed 002 lists
    event = order_event(event_source=source)
    # When it is posted
    [event_id] = post_many(acme, [event, order_event(entity_id="order-2")])[:1]
    # Then it is stored with event_source as sent, and the filter finds it (and only it, unless
    # the other event has the same source)
    got = acme.get(f"/api/v1/events/{event_id}").get_json()
    assert (got["status"], got["event_source"]) == ("stored", source)
    listed = acme.get(f"/api/v1/events?event_source={source}").get_json()
    expected = 2 if source == "APPLICATION" else 1
    assert listed["total"] == expected
    assert event_id in [e["id"] for e in listed["events"]]


def test_the_enum_holds_exactly_both_seeds_lists() -> None:
    assert {s.value for s in EventSource} == set(SEED_000_SOURCES) | set(SEED_002_SOURCES)
    # Every entity that seeds 000/001 list as a source is an entity name too
    assert set(SEED_000_SOURCES) <= {e.value for e in EntityName}


def test_an_entity_named_as_source_is_the_entity_when_entity_name_is_left_out(acme: Caller) -> None:
    # Given seed 000's form: the entity in event_source, no entity_name
    event = order_event(event_source="PRICE", entity_id="p-1")
    del event["entity_name"]
    # When it is posted
    [event_id] = post_many(acme, [event])
    # Then it is an entity event of PRICE: source kept as sent, entity taken from it
    got = acme.get(f"/api/v1/events/{event_id}").get_json()
    assert (got["event_source"], got["entity_name"], got["event_type"]) == \
        ("PRICE", "PRICE", "ENTITY_EVENT")
    assert acme.get("/api/v1/events?entity_name=PRICE").get_json()["total"] == 1
    # And the Open Loyalty type name carries the entity
    [ol] = ol_get(acme, "/api/event").get_json()["events"]
    assert ol["type"] == "ENTITY_EVENT.PRICE.CREATE"


def test_an_explicit_entity_name_wins_over_the_source(acme: Caller) -> None:
    [event_id] = post_many(acme, [order_event(event_source="PRICE", entity_name="ORDER")])
    got = acme.get(f"/api/v1/events/{event_id}").get_json()
    assert (got["event_source"], got["entity_name"]) == ("PRICE", "ORDER")


def test_an_unknown_event_source_is_still_a_400_listing_both_lists(acme: Caller) -> None:
    resp = acme.post_event(order_event(event_source="MAINFRAME"))
    assert resp.status_code == 400
    [detail] = resp.get_json()["error"]["details"]
    assert detail["field"] == "event_source"
    for value in SEED_000_SOURCES + SEED_002_SOURCES:
        assert value in detail["message"]


# --- faults and payloads that are not JSON -------------------------------------------------------

NOT_JSON = [
    ("seed 000's own fault", SEED_000_REQUEST["event_payload"]["base64_encoded_fault_json"],
     '{"id":"12\\"}'),
    ("an HTML 502 page", raw_b64(b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
     "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    ("plain text", raw_b64(b"upstream timed out"), "upstream timed out"),
    ("latin-1 bytes", raw_b64("caf\u00e9".encode("latin-1")), "caf\ufffd"),
]


@pytest.mark.parametrize(("raw", "text"), [c[1:] for c in NOT_JSON], ids=[c[0] for c in NOT_JSON])
def test_a_fault_that_is_not_json_is_stored_as_sent_and_shown_as_text(
        acme: Caller, raw: str, text: str) -> None:
    # Given a FAULT whose base64 fault decodes to something that is not JSON
    event = order_event(event_type="FAULT", entity_name=None)
    event["event_payload"] = {"base64_encoded_fault_json": raw, "key_attributes": {}}
    # When it is posted
    resp = acme.post_event(event)
    # Then 201, and the stored event holds the base64 exactly as sent
    assert resp.status_code == 201, resp.get_data(as_text=True)
    event_id = resp.get_json()["id"]
    drain(acme.client.application)
    got = acme.get(f"/api/v1/events/{event_id}").get_json()
    assert got["status"] == "stored"
    assert got["event_payload"]["base64_encoded_fault_json"] == raw
    # And the Open Loyalty views show its text
    [listed] = ol_get(acme, "/api/event").get_json()["events"]
    assert listed["payload"] == text
    assert ol_get(acme, f"/api/event/{event_id}").get_json()["payload"] == text


def test_a_payload_that_is_xml_is_stored_and_shown_as_text_json_still_as_json(acme: Caller) -> None:
    xml = "<order><id>o-1</id></order>"
    event = order_event(id="xml-1")
    event["event_payload"]["base64_encoded_payload_json"] = raw_b64(xml.encode())
    [xml_id, json_id] = post_many(acme, [event, order_event(id="json-1")])
    got = acme.get(f"/api/v1/events/{xml_id}").get_json()
    assert base64.b64decode(got["event_payload"]["base64_encoded_payload_json"]).decode() == xml
    shown = {e["uuid"]: e["payload"] for e in ol_get(acme, "/api/event").get_json()["events"]}
    assert shown == {xml_id: xml, json_id: {"id": "order-1", "total": 10}}


def test_base64_is_still_required(acme: Caller) -> None:
    event = order_event()
    event["event_payload"]["base64_encoded_fault_json"] = "<html>502</html>"
    resp = acme.post_event(event)
    assert resp.status_code == 400
    assert [d["field"] for d in resp.get_json()["error"]["details"]] == \
        ["event_payload.base64_encoded_fault_json"]


# --- seed 003: sort=name --------------------------------------------------------------------------

def test_sort_name_orders_by_the_type_name_then_id(acme: Caller) -> None:
    # Given events whose type names, in arrival order, are not sorted
    fault = order_event(id="t-fault", event_type="FAULT", entity_name=None)
    fault["event_payload"] = {"base64_encoded_fault_json": b64({"s": 1}), "key_attributes": {}}
    update = order_event(id="t-update")
    update["event_payload"]["operation"] = "UPDATE"
    events = [fault, order_event(id="t-price", entity_name="PRICE"), update,
              order_event(id="t-create"), order_event(id="t-entry", entity_name="ORDER_ENTRY")]
    post_many(acme, events)
    # When /api/event is read with seed 003's default sort=name (and its alias type)
    for sort in ("name", "type"):
        body = ol_get(acme, "/api/event", sort=sort).get_json()
        # Then the events come in type-name order
        types = [e["type"] for e in body["events"]]
        assert types == sorted(types), types
        assert types == ["ENTITY_EVENT.ORDER.CREATE", "ENTITY_EVENT.ORDER.UPDATE",
                         "ENTITY_EVENT.ORDER_ENTRY.CREATE", "ENTITY_EVENT.PRICE.CREATE", "FAULT"]
        # And DESC reverses it
        desc = ol_get(acme, "/api/event", sort=sort, direction="DESC").get_json()["events"]
        assert [e["type"] for e in desc] == types[::-1]
    # And paging with fromId continues from the anchor event in that order
    first = ol_get(acme, "/api/event", sort="name", perPage=2).get_json()["events"]
    third = ol_get(acme, "/api/event", sort="name", perPage=10).get_json()["events"][2]
    rest = ol_get(acme, "/api/event", sort="name", fromId=third["id"]).get_json()["events"]
    assert [e["type"] for e in first + rest] == types
