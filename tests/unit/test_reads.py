"""GET /api/v1/events (filters, sorting, cursor pagination), /api/event, and the service routes."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from events.repository import TENANT_SEQ_BASE as B
from tests.conftest import Caller, drain, order_event
from tests.support.events import assert_error, ol_get, post_many


def page(caller: Caller, **params: Any) -> dict[str, Any]:
    resp = caller.get("/api/v1/events", query_string=params)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def ids(body: dict[str, Any]) -> list[str]:
    return [e["id"] for e in body["events"]]


def numbered(n: int, prefix: str = "e") -> list[dict[str, Any]]:
    return [order_event(id=f"{prefix}-{i:03d}", entity_id=f"o-{i}") for i in range(n)]


# --- page size, direction, sort ----------------------------------------------------------------

def test_per_page_defaults_to_10(acme: Caller) -> None:
    # Given 12 stored events
    posted = post_many(acme, numbered(12))
    # When the list is read without parameters
    first = page(acme)
    # Then the first 10 come in posting order, total counts all 12, and the cursor leads on
    assert ids(first) == posted[:10]
    assert first["total"] == 12
    assert isinstance(first["next_from_id"], int)
    second = page(acme, from_id=first["next_from_id"])
    assert ids(second) == posted[10:]
    assert second["total"] == 12


def test_per_page_100_is_the_maximum(acme: Caller) -> None:
    # Given 105 stored events
    posted = post_many(acme, numbered(105))
    # When 100 are asked for, then 101
    hundred = page(acme, per_page=100)
    too_many = acme.get("/api/v1/events", query_string={"per_page": 101})
    # Then 100 come back, and 101 is a 400 naming per_page
    assert ids(hundred) == posted[:100]
    error = assert_error(too_many, 400, "invalid_query")
    assert [d["field"] for d in error["details"]] == ["per_page"]


@pytest.mark.parametrize("params", [
    {"per_page": 0}, {"per_page": -1}, {"per_page": "ten"}, {"from_id": 0}, {"from_id": "x"},
    {"direction": "UP"}, {"event_type": "ORDER"}, {"operation": "UPSERT"},
    {"entity_name": "string"}, {"since": "yesterday"}, {"until": "2024-13-01T00:00:00Z"},
])
def test_invalid_query_parameters_are_a_400_naming_them(acme: Caller, params: dict[str, Any]) -> None:
    # Given a query parameter with an invalid value
    # When the list is read with it
    resp = acme.get("/api/v1/events", query_string=params)
    # Then 400 naming that parameter
    error = assert_error(resp, 400, "invalid_query")
    assert [d["field"] for d in error["details"]] == list(params)


def test_a_repeated_parameter_is_a_400(acme: Caller) -> None:
    # Given per_page given twice
    # When the list is read
    resp = acme.get("/api/v1/events?per_page=5&per_page=6")
    # Then 400 naming it
    error = assert_error(resp, 400, "invalid_query")
    assert [d["field"] for d in error["details"]] == ["per_page"]


@pytest.mark.parametrize("direction", ["DESC", "desc"])
def test_direction_desc_lists_newest_first(acme: Caller, direction: str) -> None:
    # Given 5 stored events
    posted = post_many(acme, numbered(5))
    # When the list is read in descending order
    body = page(acme, direction=direction)
    # Then newest first
    assert ids(body) == list(reversed(posted))
    assert body["total"] == 5


@pytest.mark.parametrize("sort", ["name", "entity_id", "seq", "received_at desc"])
def test_sort_only_accepts_id_and_received_at(acme: Caller, sort: str) -> None:
    # Given a sort column other than id / received_at
    # When the list is read with it
    resp = acme.get("/api/v1/events", query_string={"sort": sort})
    # Then 400 naming sort
    error = assert_error(resp, 400, "invalid_query")
    assert [d["field"] for d in error["details"]] == ["sort"]


def test_sort_by_received_at(acme: Caller) -> None:
    # Given three events received one after the other
    posted = []
    for i in range(3):
        posted.append(acme.post_event(order_event(id=f"t-{i}")).get_json()["id"])
        time.sleep(0.003)
    drain(acme.client.application)
    # When sorted by received_at both ways
    # Then the order follows arrival
    assert ids(page(acme, sort="received_at")) == posted
    assert ids(page(acme, sort="received_at", direction="DESC")) == list(reversed(posted))


# --- filters -----------------------------------------------------------------------------------

def _event(event_id: str, *, event_type: str = "ENTITY_EVENT", entity_name: str | None = None,
           operation: str | None = None, entity_id: str, corr: str,
           source: str = "APPLICATION") -> dict[str, Any]:
    event = order_event(id=event_id, event_type=event_type, entity_name=entity_name,
                        entity_id=entity_id, event_source=source)
    event["event_payload"]["operation"] = operation
    event["event_payload"]["key_attributes"] = {"correlationId": corr}
    return event


FILTER_FIXTURE = [
    _event("order-create", entity_name="ORDER", operation="CREATE", entity_id="o-1", corr="c-1"),
    _event("customer-update", entity_name="CUSTOMER", operation="UPDATE", entity_id="cu-1",
           corr="c-2", source="CONNECTOR"),
    _event("fault", event_type="FAULT", entity_id="o-1", corr="c-1", source="SYSTEM"),
    _event("order-delete", entity_name="ORDER", operation="DELETE", entity_id="o-2", corr="c-3"),
    _event("warning", event_type="WARNING", entity_name="ORDER", operation="UPDATE",
           entity_id="o-2", corr="c-2", source="SERVERLESS"),
]


@pytest.mark.parametrize(("params", "expected"), [
    ({"event_type": "FAULT"}, ["fault"]),
    ({"event_type": "ENTITY_EVENT"}, ["order-create", "customer-update", "order-delete"]),
    ({"entity_name": "ORDER"}, ["order-create", "order-delete", "warning"]),
    ({"entity_id": "o-1"}, ["order-create", "fault"]),
    ({"operation": "DELETE"}, ["order-delete"]),
    ({"operation": "UPDATE"}, ["customer-update", "warning"]),
    ({"correlation_id": "c-2"}, ["customer-update", "warning"]),
    ({"event_source": "CONNECTOR"}, ["customer-update"]),
    ({"entity_name": "ORDER", "operation": "CREATE"}, ["order-create"]),
    ({"entity_id": "o-2", "direction": "DESC"}, ["warning", "order-delete"]),
    ({"entity_id": "nobody"}, []),
])
def test_filters(acme: Caller, params: dict[str, Any], expected: list[str]) -> None:
    # Given five events of different types, entities, operations, sources and correlations
    post_many(acme, FILTER_FIXTURE)
    # When the list is filtered
    body = page(acme, **params)
    # Then exactly the matching events come back and total counts them
    assert ids(body) == expected
    assert body["total"] == len(expected)


def test_since_and_until(acme: Caller) -> None:
    # Given three events received at distinct moments
    stamps = []
    for i in range(3):
        stamps.append(acme.post_event(order_event(id=f"at-{i}")).get_json()["received_at"])
        time.sleep(0.005)
    drain(acme.client.application)
    assert len(set(stamps)) == 3
    # When filtered by since (inclusive) and until (exclusive)
    # Then the window holds the events received in it
    assert ids(page(acme, since=stamps[1])) == ["at-1", "at-2"]
    assert ids(page(acme, until=stamps[1])) == ["at-0"]
    assert ids(page(acme, since=stamps[0], until=stamps[2])) == ["at-0", "at-1"]
    assert page(acme, since=stamps[1])["total"] == 2
    # And an offset time means the same instant
    moment = datetime.fromisoformat(stamps[1].replace("Z", "+00:00"))
    shifted = moment.astimezone(datetime.now().astimezone().tzinfo).isoformat()
    plus_two = (moment + timedelta(hours=2)).replace(tzinfo=None).isoformat() + "+02:00"
    assert ids(page(acme, since=shifted)) == ["at-1", "at-2"]
    assert ids(page(acme, since=plus_two)) == ["at-1", "at-2"]


def test_sql_text_in_sort_and_filters_is_refused_or_matches_nothing(acme: Caller) -> None:
    # Given two stored events
    post_many(acme, numbered(2))
    cases = [
        ({"sort": "id; DROP TABLE events"}, 400),
        ({"sort": "(SELECT 1)"}, 400),
        ({"direction": "ASC; DELETE FROM events"}, 400),
        ({"per_page": "10; DELETE FROM events"}, 400),
        ({"from_id": "1 OR 1=1"}, 400),
        ({"entity_name": "ORDER' OR '1'='1"}, 400),
        ({"since": "2020-01-01' OR '1'='1"}, 400),
        ({"entity_id": "' OR '1'='1"}, 200),
        ({"entity_id": "o-0' --"}, 200),
        ({"correlation_id": "x' OR 1=1; DROP TABLE events; --"}, 200),
    ]
    for params, status in cases:
        # When the list is read with SQL text in a parameter
        resp = acme.get("/api/v1/events", query_string=params)
        # Then it is refused with a 400 naming the parameter, or matches nothing, never a 500
        assert resp.status_code == status, (params, resp.get_data(as_text=True))
        if status == 400:
            error = assert_error(resp, 400, "invalid_query")
            assert [d["field"] for d in error["details"]] == list(params), params
        else:
            assert (resp.get_json()["events"], resp.get_json()["total"]) == ([], 0), params
    # And both events are still there
    assert page(acme)["total"] == 2
    # And the Open Loyalty list refuses SQL in sort too
    assert_error(ol_get(acme, "/api/event", sort="id; DROP TABLE events"), 400, "invalid_query")


# --- cursor pagination -------------------------------------------------------------------------

def _walk(caller: Caller, params: dict[str, Any], between: Any = None) -> list[str]:
    """Follow next_from_id until a page is empty or has no cursor; call ``between`` each time."""
    seen: list[str] = []
    query = dict(params)
    for turn in range(50):
        body = page(caller, **query)
        seen += ids(body)
        if not body["events"] or body["next_from_id"] is None:
            return seen
        if between is not None:
            between(turn)
        query = {**params, "from_id": body["next_from_id"]}
    raise AssertionError("pagination did not end")


def test_cursor_pagination_skips_and_repeats_nothing_while_events_arrive(acme: Caller) -> None:
    # Given 25 stored events
    originals = post_many(acme, numbered(25, "orig"))
    arrivals: list[str] = []

    def arrive(turn: int) -> None:
        if turn < 4:
            arrivals.extend(post_many(acme, numbered(3, f"new{turn}")))

    # When a client pages through with per_page=10 while 3 new events arrive between the first
    # pages (a tailing client following the cursor past the end only stops when none arrive)
    seen = _walk(acme, {"per_page": 10}, arrive)
    # Then every event is seen exactly once, in order: the 25 originals, then the arrivals
    assert len(seen) == len(set(seen))
    assert len(arrivals) >= 9
    assert seen == originals + arrivals


def test_descending_cursor_pagination_while_events_arrive(acme: Caller) -> None:
    # Given 25 stored events
    originals = post_many(acme, numbered(25, "orig"))

    def arrive(turn: int) -> None:
        if turn < 4:
            post_many(acme, numbered(3, f"new{turn}"))

    # When a client pages newest-first while new events arrive
    seen = _walk(acme, {"per_page": 10, "direction": "DESC"}, arrive)
    # Then it sees every original once, newest first, and none of the later arrivals
    assert seen == list(reversed(originals))


def test_cursor_pagination_sorted_by_received_at_with_ties(acme: Caller) -> None:
    # Given 25 events accepted in one batch (one received_at for all)
    originals = post_many(acme, numbered(25))
    stamps = {e["received_at"] for e in page(acme, per_page=100)["events"]}
    assert len(stamps) == 1
    # When paging by received_at both ways
    asc = _walk(acme, {"per_page": 10, "sort": "received_at"})
    desc = _walk(acme, {"per_page": 10, "sort": "received_at", "direction": "DESC"})
    # Then ties are broken by arrival and nothing is skipped or repeated
    assert asc == originals
    assert desc == list(reversed(originals))


def test_cursor_pagination_with_a_filter(acme: Caller) -> None:
    # Given 30 events, every third one a CUSTOMER event
    events = [order_event(id=f"m-{i:02d}", entity_name="CUSTOMER" if i % 3 == 0 else "ORDER")
              for i in range(30)]
    post_many(acme, events)
    # When the customers are paged 4 at a time
    seen = _walk(acme, {"per_page": 4, "entity_name": "CUSTOMER"})
    # Then exactly those 10 come, in order
    assert seen == [f"m-{i:02d}" for i in range(0, 30, 3)]


# --- Open Loyalty reads (seed 003) -------------------------------------------------------------

def test_open_loyalty_list_shape_paging_and_sorting(acme: Caller) -> None:
    # Given an entity event and a FAULT with only a fault payload
    fault = order_event(id="ol-fault", event_type="FAULT", entity_name=None)
    fault["event_payload"] = {"base64_encoded_fault_json": "eyJzdGF0dXMiOjUwM30=",
                              "key_attributes": {}}
    [entity_id, fault_id] = post_many(acme, [order_event(id="ol-entity"), fault])
    # When /api/event is read
    resp = ol_get(acme, "/api/event")
    # Then each event has the Open Loyalty shape: own sequence number, uuid, payload, type
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["total"] == 2
    first, second = body["events"]
    assert set(first) == {"id", "uuid", "payload", "type", "recorderOn"}
    assert (first["id"], first["uuid"], first["type"]) == (B + 1, entity_id, "ENTITY_EVENT.ORDER.CREATE")
    assert first["payload"] == {"id": "order-1", "total": 10}
    assert (second["id"], second["uuid"], second["type"]) == (B + 2, fault_id, "FAULT")
    assert second["payload"] == {"status": 503}
    assert datetime.fromisoformat(first["recorderOn"].replace("Z", "+00:00")).tzinfo is not None
    # And perPage, fromId, direction and sort=recorderOn work
    assert [e["id"] for e in ol_get(acme, "/api/event", perPage=1).get_json()["events"]] == [B + 1]
    assert [e["id"] for e in ol_get(acme, "/api/event", fromId=B + 2).get_json()["events"]] == [B + 2]
    assert [e["id"] for e in ol_get(acme, "/api/event", direction="DESC").get_json()["events"]] \
        == [B + 2, B + 1]
    assert [e["id"] for e in ol_get(acme, "/api/event", sort="recorderOn",
                                    direction="DESC").get_json()["events"]] == [B + 2, B + 1]


@pytest.mark.parametrize("params", [{"perPage": 101}, {"perPage": 0}, {"fromId": 0},
                                    {"sort": "size"}, {"direction": "SIDEWAYS"}])
def test_open_loyalty_list_rejects_bad_parameters(acme: Caller, params: dict[str, Any]) -> None:
    # Given a bad Open Loyalty query parameter
    # When /api/event is read with it
    resp = ol_get(acme, "/api/event", **params)
    # Then 400 naming it
    error = assert_error(resp, 400, "invalid_query")
    assert [d["field"] for d in error["details"]] == list(params)


def test_open_loyalty_get_by_sequence_or_uuid(acme: Caller) -> None:
    # Given two stored events
    [a, b] = post_many(acme, numbered(2))
    # When each is fetched by sequence number and by uuid
    # Then both ways give the same document; unknown ones are a 404
    assert ol_get(acme, f"/api/event/{B + 2}").get_json()["uuid"] == b
    assert ol_get(acme, f"/api/event/{a}").get_json()["id"] == B + 1
    assert ol_get(acme, f"/api/event/{B + 1}").get_json() == ol_get(acme, f"/api/event/{a}").get_json()
    # And a number shown before the per-tenant numbers (the global sequence) still finds it
    assert ol_get(acme, "/api/event/1").get_json()["uuid"] == a
    for unknown in ("3", str(B + 3), "no-such-event", "99999999999999999999"):
        assert_error(ol_get(acme, f"/api/event/{unknown}"), 404, "not_found")


def test_v1_get_of_an_unknown_id_is_a_404(acme: Caller) -> None:
    # Given no events
    # When unknown ids are fetched, including odd ones
    # Then each is a 404 with the error shape
    for event_id in ("nope", "a%00b", "x" * 300):
        assert_error(acme.get(f"/api/v1/events/{event_id}"), 404, "not_found")


# --- service routes ----------------------------------------------------------------------------

def test_healthz_and_readyz(embedded: Any) -> None:
    client = embedded.test_client()
    # Given the embedded app
    # When the probes are called without credentials
    health = client.get("/healthz")
    ready = client.get("/readyz")
    # Then both are 200 and readyz reports its checks
    assert (health.status_code, health.get_json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "checks": {"database": True, "broker": True}}


def test_openapi_document(embedded: Any) -> None:
    # Given the embedded app
    # When /openapi.json is fetched
    resp = embedded.test_client().get("/openapi.json")
    # Then it is OpenAPI 3.1 describing every event route and the token endpoint
    assert resp.status_code == 200
    spec = resp.get_json()
    assert spec["openapi"].startswith("3.1")
    assert {"/api/v1/events", "/api/v1/events/{event_id}", "/api/v1/events/batch",
            "/api/v1/auth/token", "/api/event", "/api/event/{event_id}"} <= set(spec["paths"])
    assert set(spec["paths"]["/api/v1/events"]) == {"get", "post"}
    assert "EventIn" in spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    # And every $ref points at a schema that exists
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(spec)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in spec["components"]["schemas"], ref


def test_swagger_ui_is_served_offline(embedded: Any) -> None:
    client = embedded.test_client()
    # Given the embedded app
    # When /docs and its script are fetched
    docs = client.get("/docs")
    bundle = client.get("/docs/static/js/swagger-ui-bundle.js")
    # Then the page is HTML pointing at local assets and the bundle is served
    assert docs.status_code == 200
    assert docs.mimetype == "text/html"
    html = docs.get_data(as_text=True)
    assert "/docs/static/js/swagger-ui-bundle.js" in html
    assert "/openapi.json" in html
    assert "https://" not in html
    assert bundle.status_code == 200
    assert len(bundle.data) > 100_000
    assert b"SwaggerUIBundle" in bundle.data
    bundle.close()
    assert_error(client.get("/docs/static/../../../app.py"), 404, "not_found")


@pytest.mark.parametrize(("method", "path"), [
    ("delete", "/api/v1/events"), ("put", "/api/v1/events/batch"),
    ("delete", "/api/v1/events/some-id"),
    ("get", "/api/v1/auth/token"), ("post", "/api/event"),
])
def test_a_wrong_method_is_a_405_with_the_error_shape(acme: Caller, method: str, path: str) -> None:
    # Given a route called with a method it does not take
    # When it is called
    resp = getattr(acme.client, method)(path, headers=acme.headers())
    # Then 405 with the error shape and an Allow header
    assert_error(resp, 405, "method_not_allowed")
    assert method.upper() not in resp.headers["Allow"]


def test_an_unknown_route_is_a_404_with_the_error_shape(embedded: Any) -> None:
    # Given a path that is no route
    # When it is fetched
    resp = embedded.test_client().get("/api/v2/events")
    # Then 404 with the error shape
    assert_error(resp, 404, "not_found")
