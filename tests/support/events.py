"""Event bodies, error-shape assertions and read helpers shared by the ingest/read test modules."""

from __future__ import annotations

from typing import Any

from tests.conftest import Caller, drain

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


def stored_total(caller: Caller) -> int:
    """How many events the tenant has once the persist pool caught up."""
    drain(caller.client.application)
    resp = caller.get("/api/v1/events")
    assert resp.status_code == 200
    return int(resp.get_json()["total"])


def post_many(caller: Caller, events: list[dict[str, Any]]) -> list[str]:
    """Post ``events`` as one batch, wait until stored; return their ids in order."""
    resp = caller.client.post("/api/v1/events/batch", json={"events": events},
                              headers=caller.headers())
    assert resp.status_code == 200, resp.get_data(as_text=True)
    results = resp.get_json()["results"]
    assert [r["status"] for r in results] == [201] * len(events)
    drain(caller.client.application)
    return [r["id"] for r in results]


def ol_get(caller: Caller, path: str, **params: Any) -> Any:
    return caller.client.get(path, query_string=params,
                             headers={"Authorization": f"Bearer {caller.token}"})
