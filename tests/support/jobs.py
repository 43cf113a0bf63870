"""Notification-job bodies, HTTP helpers and event builders for the StubMailer app
(``pytest.mark.embedded("mailer")``)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import dramatiq

from infra.broker.queues import NOTIFY_QUEUE, PERSIST_QUEUE
from tests.conftest import Caller, b64
from tests.support.apps import runtime_of

BASE = "/api/v1/jobs"


def settle(app: Any) -> None:
    """Run a worker thread until the persist and notifications queues (delayed messages
    included) are empty, then stop it."""
    broker = runtime_of(app).broker
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=10)
    worker.start()
    try:
        for queue in (PERSIST_QUEUE, NOTIFY_QUEUE, PERSIST_QUEUE):
            broker.join(queue, timeout=10_000)
        worker.join()
    finally:
        worker.stop()


def call(caller: Caller, method: str, path: str, body: Any = None) -> Any:
    kw: dict[str, Any] = {} if body is None else {"json": body}
    return caller.client.open(path, method=method, headers=caller.headers(), **kw)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def job_body(**overrides: Any) -> dict[str, Any]:
    """A valid job: a daily REMINDER at 09:00 UTC."""
    body: dict[str, Any] = {
        "is_active": True,
        "is_scheduled": True,
        "job_parameters": {"campaign_id": "spring-sale", "utm_medium": "email"},
        "notification": "REMINDER",
        "number_of_items_in_email": -1,
        "schedule": "0 9 * * *",
        "template_id": "d-0123456789abcdef0123456789abcdef",
    }
    body.update(overrides)
    return body


def create_job(caller: Caller, **overrides: Any) -> dict[str, Any]:
    resp = call(caller, "POST", BASE, job_body(**overrides))
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return dict(resp.get_json())


def get_job(caller: Caller, job_id: str) -> dict[str, Any]:
    resp = caller.get(f"{BASE}/{job_id}")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return dict(resp.get_json())


def runs_of(caller: Caller, job_id: str) -> list[dict[str, Any]]:
    resp = caller.get(f"{BASE}/{job_id}/runs")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return list(resp.get_json()["runs"])


def wait_for_run(caller: Caller, job_id: str, run_id: int, *, deadline_s: float = 10.0
                 ) -> dict[str, Any]:
    """Poll the run history until run ``run_id`` is finished (a transient failure re-enqueues it
    with a delay, so one join may not be enough); fails after the deadline."""
    give_up = time.monotonic() + deadline_s
    while True:
        settle(caller.client.application)
        run = next(r for r in runs_of(caller, job_id) if r["id"] == run_id)
        if run["status"] in FINISHED:
            return run
        assert time.monotonic() < give_up, f"run {run_id} still {run['status']}"
        time.sleep(0.02)


def run_job(caller: Caller, job_id: str) -> dict[str, Any]:
    """POST /jobs/{id}/run and wait until that run is finished; return it."""
    resp = call(caller, "POST", f"{BASE}/{job_id}/run")
    assert resp.status_code == 202, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["status"] == "queued"
    return wait_for_run(caller, job_id, int(body["run_id"]))


def entity_event(entity_name: str, entity_id: str, payload: Any, operation: str = "CREATE",
                 **extra: Any) -> dict[str, Any]:
    """An ENTITY_EVENT whose base64_encoded_payload_json decodes to ``payload``."""
    event: dict[str, Any] = {
        "entity_id": entity_id,
        "entity_name": entity_name,
        "event_payload": {
            "base64_encoded_payload_json": b64(payload),
            "entity_id": entity_id,
            "key_attributes": {"correlationId": f"corr-{entity_id}"},
            "operation": operation,
        },
        "event_source": "CONNECTOR",
        "event_type": "ENTITY_EVENT",
    }
    event.update(extra)
    return event


def post_events(caller: Caller, *events: dict[str, Any]) -> list[dict[str, Any]]:
    """Post each event (each must get a 201), then let the persist pool store and project them."""
    stored = []
    for event in events:
        resp = caller.post_event(event)
        assert resp.status_code == 201, resp.get_data(as_text=True)
        stored.append(resp.get_json())
    settle(caller.client.application)
    return stored


def item(product_id: str, price: float | None = 100.0, **extra: Any) -> dict[str, Any]:
    """A wishlist item as DESIGN.md's "Notification payloads" documents it."""
    doc: dict[str, Any] = {
        "product_id": product_id, "variant_id": f"v-{product_id}", "title": f"Item {product_id}",
        "url": f"https://shop.example/{product_id}", "image_url": f"https://cdn.example/{product_id}.jpg",
        "price": price, "currency": "EUR",
    }
    doc.update(extra)
    return doc


def customer(customer_id: str, email: str | None = "default", first_name: str | None = None
             ) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": customer_id}
    if email is not None:
        doc["email"] = f"{customer_id}@example.com" if email == "default" else email
    doc["first_name"] = first_name or customer_id.upper()
    return doc


def wishlist(wishlist_id: str, cust: dict[str, Any], items: list[dict[str, Any]],
             operation: str = "CREATE") -> dict[str, Any]:
    return entity_event("WISHLIST", wishlist_id, {"customer": cust, "items": items}, operation)


def stock(product_id: str, available: Any, variant: str | None = "auto") -> dict[str, Any]:
    payload: dict[str, Any] = {"product_id": product_id, "available": available}
    if variant is not None:
        payload["variant_id"] = f"v-{product_id}" if variant == "auto" else variant
    return entity_event("INVENTORY_LEVEL", f"inv-{product_id}", payload, "UPDATE")


def price(product_id: str, amount: Any, entity: str = "PRICE") -> dict[str, Any]:
    payload = {"product_id": product_id, "variant_id": f"v-{product_id}", "price": amount,
               "currency": "EUR"}
    return entity_event(entity, f"price-{product_id}", payload, "UPDATE")


FINISHED = ("done", "failed", "cancelled")
