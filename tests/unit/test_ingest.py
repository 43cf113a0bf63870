"""POST /api/v1/events and /api/v1/events/batch on the embedded app (SQLite + StubBroker)."""

from __future__ import annotations

import base64
import copy
import io
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dramatiq
import orjson
import pytest

from events.repository import TENANT_SEQ_BASE
from tests.conftest import Caller, as_posted, b64, drain, make_settings, mint, order_event

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# Seed 000's "Create Event" request, verbatim (without the stray shell quote after it).
SEED_000_REQUEST: dict[str, Any] = {
    "entity_id": "string",
    "event_payload": {
        "base64_encoded_payload_json": "ewoiaWQiOiIxMiIsCiJyZWZlcmVuY2UiOiIxMjEyMyIKfQ==",
        "key_attributes": {
            "correlationId": "123123123-123123-123123123",
            "referenceId": "referenceId",
            "timestamp": "time at error occured",
            "additionalKey1": "value1",
            "additionalKey2": "value2",
            "additionalKeyN": "valueN",
        },
        "operation": "BULK_CREATE or BULK_UPDATE or CREATE or DELETE or READ or UPDATE",
        "base64_encoded_fault_json": "eyJpZCI6IjEyXCJ9",
    },
    "event_source": "APPLICATION",
    "event_type": "FAULT",
}

# Seed 002's "Create Event" request, verbatim.
SEED_002_EVENT: dict[str, Any] = {
    "entity_id": "string",
    "entity_name": "string",
    "event_payload": {
        "base64_encoded_fault_json": "string",
        "base64_encoded_payload_json": "string",
        "entity_id": "string",
        "key_attributes": {
            "additionalProp1": "string",
            "additionalProp2": "string",
            "additionalProp3": "string",
        },
        "operation": "BULK_CREATE",
    },
    "event_source": "APPLICATION",
    "event_type": "ENTITY_EVENT",
    "id": "string",
}


def seed_002_with_real_values() -> dict[str, Any]:
    """Seed 002's example with values that mean something (valid name, real base64 JSON)."""
    event = copy.deepcopy(SEED_002_EVENT)
    event["id"] = "evt-002-order-1001"
    event["entity_id"] = "order-1001"
    event["entity_name"] = "ORDER"
    event["event_payload"]["entity_id"] = "order-1001"
    event["event_payload"]["base64_encoded_payload_json"] = b64({"id": "order-1001", "total": 99.5})
    event["event_payload"]["base64_encoded_fault_json"] = b64({"status": 502, "error": "Bad Gateway"})
    return event


def assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    """The response is ``status`` with exactly the documented error shape and ``code``."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    return error


def fields(error: dict[str, Any]) -> set[str]:
    return {d["field"] for d in error["details"]}


def stored_total(caller: Caller) -> int:
    """How many events the tenant has once the persist pool caught up."""
    drain(caller.client.application)
    resp = caller.get("/api/v1/events")
    assert resp.status_code == 200
    return int(resp.get_json()["total"])


def post_raw(caller: Caller, data: Any, content_type: str = "application/json",
             path: str = "/api/v1/events", **kw: Any) -> Any:
    return caller.client.post(path, data=data,
                              headers=caller.headers(**{"Content-Type": content_type}), **kw)


@contextmanager
def running_app(db_path: Path, *, migrate: bool = True, **settings_kw: Any) -> Iterator[Any]:
    """An embedded app like conftest's ``embedded``, with chosen settings and database file."""
    from api.app import create_app
    from config.runtime import build_runtime
    from infra.db import upgrade
    from workers.main import declare_actors

    settings = make_settings(f"sqlite:///{db_path}", **settings_kw)
    if migrate:
        upgrade(settings.database_url)
    runtime = build_runtime(settings)
    declare_actors(runtime)
    # A short poll (conftest uses 50 ms) makes worker.stop() in teardown quicker.
    worker = dramatiq.Worker(runtime.broker, worker_threads=1, worker_timeout=10)
    worker.start()
    app = create_app(runtime=runtime)
    app.testing = True
    try:
        yield app
    finally:
        worker.stop()
        runtime.close()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file holding tenants acme and globex, built once per session."""
    from infra.db import make_engine, make_session_factory, upgrade
    from tenants.auth import create_tenant

    path = tmp_path_factory.mktemp("template") / "ec.db"
    upgrade(f"sqlite:///{path}")
    engine = make_engine(f"sqlite:///{path}")
    with make_session_factory(engine)() as session:
        create_tenant(session, "acme")
        create_tenant(session, "globex")
        session.commit()
    engine.dispose()  # the last connection checkpoints the WAL into the file
    return path


@pytest.fixture
def embedded(template_db: Path, tmp_path: Path) -> Iterator[Any]:
    """conftest's ``embedded`` (same app, runtime, StubBroker and persist worker thread), on a
    copy of a pre-migrated database: migrating and hashing two tenant secrets for every test
    would make this suite several times slower. conftest's ``acme``/``globex`` use it."""
    db = tmp_path / "ec.db"
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{template_db}{suffix}")
        if source.exists():
            shutil.copyfile(source, f"{db}{suffix}")
    with running_app(db, migrate=False) as app:
        yield app


# --- seeds posted verbatim --------------------------------------------------------------------

def test_seed_000_request_verbatim_is_rejected_naming_only_its_operation(acme: Caller) -> None:
    # Given seed 000's request as printed: operation is the prose "BULK_CREATE or ... UPDATE"
    # and base64_encoded_fault_json decodes to the invalid JSON '{"id":"12\"}' (a fault is what
    # an upstream said: its content need not be JSON)
    assert base64.b64decode(SEED_000_REQUEST["event_payload"]["base64_encoded_fault_json"]) \
        == b'{"id":"12\\"}'
    # When it is posted verbatim
    resp = acme.post_event(SEED_000_REQUEST)
    # Then it is a 400 whose details name exactly the operation
    error = assert_error(resp, 400, "invalid_event")
    assert fields(error) == {"event_payload.operation"}
    by_field = {d["field"]: d["message"] for d in error["details"]}
    assert "CREATE" in by_field["event_payload.operation"]
    # And nothing is stored
    assert stored_total(acme) == 0


def test_seed_000_request_with_a_real_operation_and_fault_is_accepted(acme: Caller) -> None:
    # Given seed 000's request with one operation and a fault that decodes to JSON
    event = copy.deepcopy(SEED_000_REQUEST)
    event["event_payload"]["operation"] = "CREATE"
    event["event_payload"]["base64_encoded_fault_json"] = b64({"id": "12", "status": 503})
    # When it is posted
    resp = acme.post_event(event)
    # Then the FAULT (which needs no entity_name) is accepted as sent
    assert resp.status_code == 201, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["event_type"] == "FAULT"
    assert body["entity_name"] is None
    assert body["event_payload"]["key_attributes"] == event["event_payload"]["key_attributes"]
    assert stored_total(acme) == 1


def test_seed_002_event_verbatim_is_rejected_naming_entity_name_and_base64_fields(
    acme: Caller,
) -> None:
    # Given seed 002's event example verbatim: entity_name "string", base64 fields "string"
    # When it is posted
    resp = acme.post_event(SEED_002_EVENT)
    # Then 400 names entity_name and both base64 fields (and nothing else: "string" is a valid id)
    error = assert_error(resp, 400, "invalid_event")
    assert fields(error) == {
        "entity_name",
        "event_payload.base64_encoded_payload_json",
        "event_payload.base64_encoded_fault_json",
    }
    # And nothing is stored, not even under id "string"
    assert stored_total(acme) == 0
    assert acme.get("/api/v1/events/string").status_code == 404


def test_seed_002_event_with_real_values_is_accepted_read_back_and_listed(acme: Caller) -> None:
    # Given seed 002's example with real values
    event = seed_002_with_real_values()
    before = datetime.now(UTC)
    # When it is posted
    resp = acme.post_event(event)
    # Then 201, a Location for it, and the event as sent plus received_at
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.headers["Location"] == "/api/v1/events/evt-002-order-1001"
    body = resp.get_json()
    received_at = body.pop("received_at")
    assert body == event
    assert RFC3339_MS.match(received_at)
    moment = datetime.fromisoformat(received_at.replace("Z", "+00:00"))
    assert abs((moment - before).total_seconds()) < 5
    created = {**body, "received_at": received_at}

    # When it is read back at once (read-your-writes)
    got = acme.get(resp.headers["Location"])
    # Then it is the same document (accepted, or already stored)
    assert got.status_code == 200
    assert as_posted(got.get_json()) == created

    # When the persist pool has stored it
    drain(acme.client.application)
    # Then the v1 list holds exactly that document
    listed = acme.get("/api/v1/events").get_json()
    assert (listed["events"], listed["total"]) == ([created], 1)
    # And the Open Loyalty list shows it with a sequence id, the uuid and the decoded payload
    ol = acme.client.get("/api/event", headers={"Authorization": f"Bearer {acme.token}"})
    assert ol.status_code == 200
    expected_ol = {
        "id": TENANT_SEQ_BASE + 1,
        "uuid": "evt-002-order-1001",
        "payload": {"id": "order-1001", "total": 99.5},
        "type": "ENTITY_EVENT.ORDER.BULK_CREATE",
        "recorderOn": received_at,
    }
    assert ol.get_json() == {"events": [expected_ol], "total": 1}
    assert isinstance(ol.get_json()["events"][0]["id"], int)
    # And /api/event/{id} finds it by sequence number and by uuid
    for key in ("1", "evt-002-order-1001"):
        one = acme.client.get(f"/api/event/{key}",
                              headers={"Authorization": f"Bearer {acme.token}"})
        assert one.status_code == 200
        assert one.get_json() == expected_ol


def test_seed_002_form_entity_name_sent_as_event_type_is_an_entity_event(acme: Caller) -> None:
    # Given seed 002's form: the entity name under event_type and no entity_name
    event = order_event(event_type="ORDER")
    del event["entity_name"]
    # When it is posted
    resp = acme.post_event(event)
    # Then it is stored as an ENTITY_EVENT of entity ORDER
    assert resp.status_code == 201, resp.get_data(as_text=True)
    body = resp.get_json()
    assert (body["event_type"], body["entity_name"]) == ("ENTITY_EVENT", "ORDER")
    drain(acme.client.application)
    [stored] = acme.get("/api/v1/events").get_json()["events"]
    assert (stored["event_type"], stored["entity_name"]) == ("ENTITY_EVENT", "ORDER")
    assert stored["id"] == body["id"]


def test_seed_002_form_with_an_explicit_entity_name_is_not_rewritten(acme: Caller) -> None:
    # Given event_type "ORDER" while entity_name is also given
    event = order_event(event_type="ORDER", entity_name="CUSTOMER")
    # When it is posted
    resp = acme.post_event(event)
    # Then event_type is simply invalid: nothing is silently reinterpreted
    error = assert_error(resp, 400, "invalid_event")
    assert fields(error) == {"event_type"}


def test_server_assigns_a_uuid7_id_when_the_client_sends_none(acme: Caller) -> None:
    # Given an event without id
    # When it is posted
    resp = acme.post_event(order_event())
    # Then the server chose a UUIDv7 and the Location points at it
    assert resp.status_code == 201
    event_id = resp.get_json()["id"]
    assert uuid.UUID(event_id).version == 7
    assert resp.headers["Location"] == f"/api/v1/events/{event_id}"


# --- invalid events: a 4xx with the error shape, nothing stored --------------------------------

def _with_payload(**changes: Any) -> dict[str, Any]:
    event = order_event()
    event["event_payload"].update(changes)
    return event


INVALID_EVENTS = [
    ("payload not base64", _with_payload(base64_encoded_payload_json="not base64!!"),
     "event_payload.base64_encoded_payload_json"),
    ("payload urlsafe base64", _with_payload(base64_encoded_payload_json="eyJhIjoi-_8ifQ=="),
     "event_payload.base64_encoded_payload_json"),
    ("payload base64 without its padding", _with_payload(base64_encoded_payload_json="eyJhIjoxfQ"),
     "event_payload.base64_encoded_payload_json"),
    ("fault base64 with a space", _with_payload(base64_encoded_fault_json="eyJh IjoxfQ=="),
     "event_payload.base64_encoded_fault_json"),
    ("number as entity_id", order_event(entity_id=12345), "entity_id"),
    ("number as key attribute", _with_payload(key_attributes={"correlationId": 7}),
     "event_payload.key_attributes.correlationId"),
    ("number as payload entity_id", _with_payload(entity_id=1.5), "event_payload.entity_id"),
    ("bool as event_source", order_event(event_source=True), "event_source"),
    ("NUL in entity_id", order_event(entity_id="order\x00-1"), "entity_id"),
    ("NUL in key attribute", _with_payload(key_attributes={"correlationId": "c\x00"}),
     "event_payload.key_attributes.correlationId"),
    ("65 key attributes", _with_payload(key_attributes={f"k{i}": "v" for i in range(65)}),
     "event_payload.key_attributes"),
    ("unknown top-level field", order_event(tenant="globex"), "tenant"),
    ("unknown payload field", _with_payload(payload="x"), "event_payload.payload"),
    ("unknown event_type", order_event(event_type="BOGUS"), "event_type"),
    ("unknown operation", _with_payload(operation="UPSERT"), "event_payload.operation"),
    ("entity_id over 255", order_event(entity_id="x" * 256), "entity_id"),
    ("id with a slash", order_event(id="a/b"), "id"),
    ("id over 128", order_event(id="x" * 129), "id"),
]


@pytest.mark.parametrize(("event", "field"), [c[1:] for c in INVALID_EVENTS],
                         ids=[c[0] for c in INVALID_EVENTS])
def test_invalid_event_is_a_400_naming_the_field_and_stores_nothing(
    acme: Caller, event: dict[str, Any], field: str
) -> None:
    # Given an event with one bad field
    # When it is posted
    resp = acme.post_event(event)
    # Then 400 invalid_event names that field, and only that field
    error = assert_error(resp, 400, "invalid_event")
    assert fields(error) == {field}
    # And nothing was accepted
    assert stored_total(acme) == 0


def test_64_key_attributes_are_allowed(acme: Caller) -> None:
    # Given exactly 64 key attributes (the limit)
    event = _with_payload(key_attributes={f"k{i}": "v" for i in range(64)})
    # When it is posted
    resp = acme.post_event(event)
    # Then it is accepted with all of them
    assert resp.status_code == 201
    assert len(resp.get_json()["event_payload"]["key_attributes"]) == 64


MALFORMED_BODIES = [
    ("truncated", b'{"event_source": "APPLICATION", '),
    ("trailing comma", b'{"event_source": "APPLICATION",}'),
    ("invalid utf-8", b'{"event_source":"APPLICATION","event_type":"FAULT","entity_id":"\xff\xfe"}'),
    ("nested 10000 deep", b'{"event_source":"APPLICATION","event_type":"FAULT","entity_id":'
     + b"[" * 10_000 + b"]" * 10_000 + b"}"),
    ("bare nesting 10000 deep", b"[" * 10_000 + b"]" * 10_000),
    ("empty body", b""),
]


@pytest.mark.parametrize("body", [c[1] for c in MALFORMED_BODIES],
                         ids=[c[0] for c in MALFORMED_BODIES])
def test_malformed_json_is_a_400_and_stores_nothing(acme: Caller, body: bytes) -> None:
    # Given a body that is not valid JSON
    # When it is posted as application/json
    resp = post_raw(acme, body)
    # Then 400 malformed_json, and nothing stored
    assert_error(resp, 400, "malformed_json")
    assert stored_total(acme) == 0


@pytest.mark.parametrize("body", [b"null", b"[]", b'"event"', b"42"])
def test_json_that_is_not_an_object_is_a_400(acme: Caller, body: bytes) -> None:
    # Given valid JSON that is not an object
    # When it is posted
    resp = post_raw(acme, body)
    # Then 400 invalid_event saying the body must be an object
    error = assert_error(resp, 400, "invalid_event")
    assert fields(error) == {"body"}
    assert error["details"][0]["type"] == "model_type"


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "application/xml", None,
])
def test_a_body_that_is_not_json_is_a_415(acme: Caller, content_type: str | None) -> None:
    # Given a valid event sent with another (or no) Content-Type
    headers = acme.headers()
    if content_type:
        headers["Content-Type"] = content_type
    # When it is posted
    resp = acme.client.post("/api/v1/events", data=orjson.dumps(order_event()), headers=headers)
    # Then 415 and nothing stored
    assert_error(resp, 415, "unsupported_media_type")
    assert stored_total(acme) == 0


def test_a_json_suffix_media_type_is_accepted(acme: Caller) -> None:
    # Given a +json media type with a charset parameter
    # When a valid event is posted with it
    resp = post_raw(acme, orjson.dumps(order_event()), "application/vnd.event+json; charset=utf-8")
    # Then it is accepted
    assert resp.status_code == 201


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Caller]:
    """An embedded app whose limits are 2 KiB per event and 4 KiB per batch."""
    with running_app(tmp_path / "small.db", max_event_bytes=2048, max_batch_bytes=4096) as app:
        yield Caller(app.test_client(), "acme", mint("acme"))


def test_an_event_over_the_size_limit_is_a_413(small: Caller) -> None:
    # Given an otherwise valid event of more than max_event_bytes (2048)
    event = _with_payload(base64_encoded_payload_json=b64({"blob": "x" * 3000}))
    assert len(orjson.dumps(event)) > 2048
    # When it is posted
    resp = small.post_event(event)
    # Then 413 with the error shape, and nothing stored
    assert_error(resp, 413, "payload_too_large")
    assert stored_total(small) == 0
    # And an event under the limit still goes through
    assert small.post_event(order_event()).status_code == 201


def test_a_chunked_event_over_the_size_limit_is_a_413(small: Caller) -> None:
    # Given a body without Content-Length (chunked, as gunicorn hands it over) over the limit
    body = orjson.dumps(_with_payload(base64_encoded_payload_json=b64({"blob": "x" * 3000})))
    # When it is posted
    resp = small.client.post(
        "/api/v1/events", input_stream=io.BytesIO(body),
        headers=small.headers(**{"Content-Type": "application/json"}),
        environ_overrides={"wsgi.input_terminated": True},
    )
    # Then 413 and nothing stored
    assert_error(resp, 413, "payload_too_large")
    assert stored_total(small) == 0


def test_a_batch_over_the_batch_size_limit_is_a_413(small: Caller) -> None:
    # Given a batch body over max_batch_bytes (4096) made of small valid events
    events = [order_event(entity_id=f"o-{i}") for i in range(20)]
    assert len(orjson.dumps({"events": events})) > 4096
    # When it is posted
    resp = small.client.post("/api/v1/events/batch", json={"events": events},
                             headers=small.headers())
    # Then 413 and none of them is stored
    assert_error(resp, 413, "payload_too_large")
    assert stored_total(small) == 0


# --- ENTITY_EVENT needs an entity and an operation ---------------------------------------------

@pytest.mark.parametrize(("missing", "named"), [
    ("entity_name", "entity_name"),
    ("operation", "event_payload.operation"),
])
def test_entity_event_without_entity_name_or_operation_is_a_400(
    acme: Caller, missing: str, named: str
) -> None:
    # Given an ENTITY_EVENT lacking entity_name (or event_payload.operation)
    event = order_event()
    if missing == "entity_name":
        del event["entity_name"]
    else:
        del event["event_payload"]["operation"]
    # When it is posted
    resp = acme.post_event(event)
    # Then 400 whose details name the missing field, and nothing stored
    error = assert_error(resp, 400, "invalid_event")
    assert len(error["details"]) == 1
    assert error["details"][0]["field"] == named
    assert "ENTITY_EVENT" in error["details"][0]["message"]
    assert stored_total(acme) == 0


def test_entity_event_without_entity_name_and_operation_names_both_fields(acme: Caller) -> None:
    # Given an ENTITY_EVENT with neither entity_name nor operation
    event = order_event()
    del event["entity_name"]
    del event["event_payload"]["operation"]
    # When it is posted
    resp = acme.post_event(event)
    # Then the details name each missing field
    error = assert_error(resp, 400, "invalid_event")
    assert fields(error) == {"entity_name", "event_payload.operation"}


# --- idempotency -------------------------------------------------------------------------------

def test_same_id_and_body_is_a_200_with_the_first_event_and_nothing_duplicated(
    acme: Caller,
) -> None:
    # Given an event with a client-chosen id that was accepted
    event = order_event(id="retry-1")
    first = acme.post_event(event)
    assert first.status_code == 201
    time.sleep(0.005)  # a later retry would get a later received_at if it were re-accepted
    # When the client retries with the same id and body
    again = acme.post_event(event)
    # Then 200 with the same event (same received_at) and the same Location
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == "/api/v1/events/retry-1"
    # And one event is stored, with the first received_at
    assert stored_total(acme) == 1
    assert acme.get("/api/v1/events").get_json()["events"][0] == first.get_json()


def test_same_id_after_storing_is_still_a_200(acme: Caller) -> None:
    # Given an event that is already stored
    event = order_event(id="retry-2")
    first = acme.post_event(event).get_json()
    drain(acme.client.application)
    # When it is posted again
    again = acme.post_event(event)
    # Then 200 with the stored event, and still one row
    assert again.status_code == 200
    assert again.get_json() == first
    assert stored_total(acme) == 1


def test_same_id_with_a_different_body_is_a_409_and_the_first_body_stays(acme: Caller) -> None:
    # Given an accepted event with id "dup-1"
    first = acme.post_event(order_event(id="dup-1")).get_json()
    # When another body is posted under the same id
    resp = acme.post_event(order_event(id="dup-1", entity_id="order-2"))
    # Then 409 naming the id, and the first body is what is kept and returned
    error = assert_error(resp, 409, "id_conflict")
    assert fields(error) == {"id"}
    assert stored_total(acme) == 1
    assert as_posted(acme.get("/api/v1/events/dup-1").get_json()) == first


def test_idempotency_covers_the_normalised_seed_002_form(acme: Caller) -> None:
    # Given an event accepted in seed 002's form (entity name under event_type)
    short = order_event(id="norm-1", event_type="ORDER")
    del short["entity_name"]
    first = acme.post_event(short)
    assert first.status_code == 201
    # When the same event is retried in the canonical form
    resp = acme.post_event(order_event(id="norm-1"))
    # Then it is recognised as the same event
    assert resp.status_code == 200
    assert resp.get_json() == first.get_json()


def test_events_without_id_are_never_merged(acme: Caller) -> None:
    # Given one body without id
    event = order_event()
    # When it is posted twice
    a = acme.post_event(event)
    b = acme.post_event(event)
    # Then two events with distinct ids are accepted and stored
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.get_json()["id"] != b.get_json()["id"]
    assert stored_total(acme) == 2


def test_the_same_id_in_two_tenants_is_two_events(acme: Caller, globex: Caller) -> None:
    # Given acme accepted id "shared-1"
    assert acme.post_event(order_event(id="shared-1")).status_code == 201
    # When globex posts a different body with the same id
    resp = globex.post_event(order_event(id="shared-1", entity_id="g-1"))
    # Then it is a new event for globex, and each tenant sees its own
    assert resp.status_code == 201
    assert acme.get("/api/v1/events/shared-1").get_json()["entity_id"] == "order-1"
    assert globex.get("/api/v1/events/shared-1").get_json()["entity_id"] == "g-1"
    assert stored_total(acme) == 1
    assert stored_total(globex) == 1


def test_a_retry_after_a_restart_never_stores_a_second_row(tmp_path: Path) -> None:
    # Given an event stored by one process
    with running_app(tmp_path / "ec.db") as app:
        caller = Caller(app.test_client(), "acme", mint("acme"))
        assert caller.post_event(order_event(id="restart-1")).status_code == 201
        drain(app)
    # When a new process (empty intake cache) gets the same id again
    with running_app(tmp_path / "ec.db") as app:
        caller = Caller(app.test_client(), "acme", mint("acme"))
        caller.post_event(order_event(id="restart-1"))
        # Then the store still holds one row
        assert stored_total(caller) == 1


def test_a_retry_after_a_restart_is_a_200_with_the_stored_event(tmp_path: Path) -> None:
    # Given an event accepted and stored by one process
    with running_app(tmp_path / "ec.db") as app:
        caller = Caller(app.test_client(), "acme", mint("acme"))
        first = caller.post_event(order_event(id="restart-2")).get_json()
        drain(app)
    # When the client retries the same id and body against a restarted process
    with running_app(tmp_path / "ec.db") as app:
        caller = Caller(app.test_client(), "acme", mint("acme"))
        resp = caller.post_event(order_event(id="restart-2"))
        # Then it is the same event: 200, first received_at
        assert resp.status_code == 200
        assert resp.get_json() == first


def test_a_different_body_under_a_stored_id_after_a_restart_is_a_409(tmp_path: Path) -> None:
    # Given an event accepted and stored by one process
    with running_app(tmp_path / "ec.db") as app:
        caller = Caller(app.test_client(), "acme", mint("acme"))
        first = caller.post_event(order_event(id="restart-3")).get_json()
        drain(app)
    # When another body is posted under that id to a restarted process
    with running_app(tmp_path / "ec.db") as app:
        caller = Caller(app.test_client(), "acme", mint("acme"))
        resp = caller.post_event(order_event(id="restart-3", entity_id="other"))
        # Then 409, and GET keeps answering the stored body
        assert_error(resp, 409, "id_conflict")
        assert as_posted(caller.get("/api/v1/events/restart-3").get_json(), "stored") == first


# --- batch -------------------------------------------------------------------------------------

def post_batch(caller: Caller, events: Any) -> Any:
    return caller.client.post("/api/v1/events/batch", json={"events": events},
                              headers=caller.headers())


def test_batch_with_mixed_items_answers_each_and_stores_the_valid_ones(acme: Caller) -> None:
    # Given a batch: a valid event, seed 002 verbatim (invalid), a seed-002-form event,
    # a non-object item
    seed_form = order_event(id="batch-c", event_type="CUSTOMER", entity_id="cust-1")
    del seed_form["entity_name"]
    items = [order_event(id="batch-a"), SEED_002_EVENT, seed_form, 17]
    # When it is posted
    resp = post_batch(acme, items)
    # Then 200 with per-item statuses in order and counts
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert [r["status"] for r in body["results"]] == [201, 400, 201, 400]
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3]
    assert (body["accepted"], body["duplicates"], body["conflicts"], body["rejected"]) \
        == (2, 0, 0, 2)
    assert body["results"][0]["id"] == "batch-a"
    assert body["results"][0]["event"]["entity_id"] == "order-1"
    assert body["results"][2]["event"]["entity_name"] == "CUSTOMER"
    bad = body["results"][1]["error"]
    assert bad["code"] == "invalid_event"
    assert fields(bad) == {"entity_name", "event_payload.base64_encoded_payload_json",
                           "event_payload.base64_encoded_fault_json"}
    assert body["results"][3]["error"]["details"][0]["type"] == "model_type"
    # And exactly the valid ones are stored
    assert stored_total(acme) == 2
    assert acme.get("/api/v1/events/batch-a").status_code == 200
    assert acme.get("/api/v1/events/batch-c").get_json()["entity_name"] == "CUSTOMER"
    assert acme.get("/api/v1/events/string").status_code == 404


def test_batch_of_1000_is_accepted_and_stored(acme: Caller) -> None:
    # Given 1000 valid events (the maximum)
    events = [order_event(id=f"b-{i}") for i in range(1000)]
    # When they are posted as one batch
    resp = post_batch(acme, events)
    # Then all are accepted, and stored
    assert resp.status_code == 200
    assert resp.get_json()["accepted"] == 1000
    assert stored_total(acme) == 1000


def test_batch_of_more_than_1000_is_a_400_and_stores_nothing(acme: Caller) -> None:
    # Given 1001 valid events
    events = [order_event() for _ in range(1001)]
    # When posted as one batch
    resp = post_batch(acme, events)
    # Then 400 naming events, nothing stored
    error = assert_error(resp, 400, "invalid_batch")
    assert fields(error) == {"events"}
    assert stored_total(acme) == 0


@pytest.mark.parametrize(("body", "named"), [
    ({"events": []}, "events"),
    ({"events": {"id": "x"}}, "events"),
    ({}, "events"),
    ([order_event()], "events"),
    ({"events": [order_event()], "extra": 1}, "extra"),
])
def test_a_batch_of_the_wrong_shape_is_a_400(acme: Caller, body: Any, named: str) -> None:
    # Given a batch body that is empty, not a list, missing, a bare list or with extra fields
    # When it is posted
    resp = acme.client.post("/api/v1/events/batch", json=body, headers=acme.headers())
    # Then 400 naming the offending field, nothing stored
    error = assert_error(resp, 400, "invalid_batch")
    assert fields(error) == {named}
    assert stored_total(acme) == 0


def test_batch_malformed_json_and_wrong_content_type(acme: Caller) -> None:
    # Given a malformed batch body, and a batch sent as text/plain
    # When each is posted
    malformed = post_raw(acme, b'{"events": [', path="/api/v1/events/batch")
    wrong_type = post_raw(acme, orjson.dumps({"events": [order_event()]}), "text/plain",
                          path="/api/v1/events/batch")
    # Then 400 malformed_json and 415, nothing stored
    assert_error(malformed, 400, "malformed_json")
    assert_error(wrong_type, 415, "unsupported_media_type")
    assert stored_total(acme) == 0


def test_duplicate_ids_inside_one_batch(acme: Caller) -> None:
    # Given one batch holding the same id twice with the same body, then with another body
    items = [order_event(id="in-batch"), order_event(id="in-batch"),
             order_event(id="in-batch", entity_id="order-2")]
    # When it is posted
    body = post_batch(acme, items).get_json()
    # Then the first is accepted, the repeat is a duplicate, the different body a conflict
    assert [r["status"] for r in body["results"]] == [201, 200, 409]
    assert (body["accepted"], body["duplicates"], body["conflicts"]) == (1, 1, 1)
    assert body["results"][1]["event"] == body["results"][0]["event"]
    assert body["results"][2]["error"]["code"] == "id_conflict"
    # And one event is stored, with the first body
    assert stored_total(acme) == 1
    assert acme.get("/api/v1/events/in-batch").get_json()["entity_id"] == "order-1"


def test_batch_and_single_posts_share_idempotency(acme: Caller) -> None:
    # Given an event accepted through the single-event endpoint
    first = acme.post_event(order_event(id="cross-1")).get_json()
    # When the same event and a conflicting one come in a batch
    body = post_batch(acme, [order_event(id="cross-1"),
                             order_event(id="cross-1", entity_id="x")]).get_json()
    # Then they are a duplicate (same event) and a conflict
    assert [r["status"] for r in body["results"]] == [200, 409]
    assert body["results"][0]["event"] == first
    assert stored_total(acme) == 1


# --- broker unavailable ------------------------------------------------------------------------

def test_broker_down_is_a_503_with_retry_after_and_nothing_is_accepted(
    acme: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = acme.client.application.extensions["ec.runtime"].broker

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise ConnectionError("broker down")

    # Given a broker that refuses every message
    monkeypatch.setattr(broker, "enqueue", refuse)
    # When an event and a batch are posted
    single = acme.post_event(order_event(id="down-1"))
    batch = post_batch(acme, [order_event(id="down-2")])
    # Then both are 503 with Retry-After, and neither id is known
    for resp in (single, batch):
        assert_error(resp, 503, "unavailable")
        assert int(resp.headers["Retry-After"]) > 0
    assert acme.get("/api/v1/events/down-1").status_code == 404
    # When the broker is back and the client retries
    monkeypatch.undo()
    retry = acme.post_event(order_event(id="down-1"))
    # Then the event is accepted as new (201, not a 200 for an event that was never enqueued)
    assert retry.status_code == 201
    assert stored_total(acme) == 1


def test_embedded_rate_limit_refuses_without_accepting(tmp_path: Path) -> None:
    # Given the embedded app (in-memory intake and limiter) with a burst of 2 requests
    with running_app(tmp_path / "rl.db", rate_limit_per_second=0.001, rate_limit_burst=2) as app:
        intake = app.extensions["ec.runtime"].intake
        caller = Caller(app.test_client(), "acme", mint("acme"))
        # When three events are posted
        answers = [caller.post_event(order_event(id=f"e-{i}")) for i in range(3)]
        # Then the third is a 429 with Retry-After and was not accepted
        assert [a.status_code for a in answers] == [201, 201, 429]
        assert answers[2].get_json()["error"]["code"] == "rate_limited"
        assert int(answers[2].headers["Retry-After"]) >= 1
        assert intake.lookup("acme", "e-2") is None
        assert intake.lookup("acme", "e-1") is not None
