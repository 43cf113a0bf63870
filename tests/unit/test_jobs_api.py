"""/api/v1/jobs on the embedded app (SQLite + StubBroker + StubMailer).

This module also holds the StubMailer-backed app and the helpers that test_schedules.py,
test_readmodels.py and test_notifications.py import (those are the only other modules that use
them: each module overrides conftest's ``embedded`` with :func:`notify_app`).
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dramatiq
import pytest

from infra.broker.queues import NOTIFY_QUEUE, PERSIST_QUEUE
from jobs.mailers.base import Mailer
from jobs.mailers.stub import StubMailer
from tests.conftest import Caller, b64, internal_id, make_settings, mint

BASE = "/api/v1/jobs"
FINISHED = ("done", "failed", "cancelled")

# Seed 002's "Create Notification Job" request, verbatim.
SEED_002_JOB: dict[str, Any] = {
    "deleted": True,
    "id": "string",
    "is_active": True,
    "is_scheduled": True,
    "job_parameters": {
        "campaign_id": "string",
        "utm_medium": "string",
    },
    "notification": "BACK_IN_STOCK",
    "number_of_items_in_email": 0,
    "schedule": "string",
    "scheduleExpression": "string",
    "template_id": "string",
}


# --- the StubMailer app (shared with the other notification-job modules) ---------------------

_TEMPLATES: dict[Path, Path] = {}


def template_db_path(factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file holding tenants acme and globex, built once per test session
    (whichever of the four notification-job modules runs first builds it)."""
    from infra.db import make_engine, make_session_factory, upgrade
    from tenants.auth import create_tenant

    key = factory.getbasetemp()
    if key in _TEMPLATES:
        return _TEMPLATES[key]
    path = factory.mktemp("jobs-template") / "ec.db"
    upgrade(f"sqlite:///{path}")
    engine = make_engine(f"sqlite:///{path}")
    with make_session_factory(engine)() as session:
        create_tenant(session, "acme")
        create_tenant(session, "globex")
        session.commit()
    engine.dispose()  # the last connection checkpoints the WAL into the file
    _TEMPLATES[key] = path
    return path


def copy_template(factory: pytest.TempPathFactory, dest: Path) -> Path:
    template = template_db_path(factory)
    db = dest / "ec.db"
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{template}{suffix}")
        if source.exists():
            shutil.copyfile(source, f"{db}{suffix}")
    return db


@contextmanager
def notify_app(db: Path, mailer: Mailer) -> Iterator[Any]:
    """conftest's ``embedded`` app, built with ``build_runtime(settings, mailer=mailer)``.

    Unlike conftest's, its worker thread (persist, deliveries and notifications queues) runs only
    inside :func:`settle`: what the API or a scheduler tick enqueues stays queued until a test
    settles, so a test decides exactly what the workers have seen (e.g. an accepted event still
    in the persist queue when a run is planned)."""
    from api.app import create_app
    from config.runtime import build_runtime
    from workers.main import declare_actors

    settings = make_settings(f"sqlite:///{db}")
    runtime = build_runtime(settings, mailer=mailer)
    declare_actors(runtime)
    app = create_app(runtime=runtime)
    app.testing = True
    try:
        yield app
    finally:
        runtime.close()


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


@pytest.fixture
def stub() -> StubMailer:
    return StubMailer()


@pytest.fixture
def embedded(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
             stub: StubMailer) -> Iterator[Any]:
    """Overrides conftest's ``embedded``: a copy of a pre-migrated database and a StubMailer.
    conftest's ``acme``/``globex`` callers use it."""
    with notify_app(copy_template(tmp_path_factory, tmp_path), stub) as app:
        yield app


def runtime_of(app: Any) -> Any:
    return app.extensions["ec.runtime"]


# --- HTTP helpers ----------------------------------------------------------------------------

def call(caller: Caller, method: str, path: str, body: Any = None) -> Any:
    kw: dict[str, Any] = {} if body is None else {"json": body}
    return caller.client.open(path, method=method, headers=caller.headers(), **kw)


def assert_error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """``status`` with the documented error shape (and ``code`` when given)."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def fields(error: dict[str, Any]) -> set[str]:
    return {d["field"] for d in error["details"]}


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


# --- create ----------------------------------------------------------------------------------

def test_create_returns_201_with_location_and_a_future_next_run_at(acme: Caller) -> None:
    # Given a valid daily job at 09:00 Europe/Berlin
    before = datetime.now(UTC)
    body = job_body(timezone="Europe/Berlin", id="job-berlin-9")
    # When it is created
    resp = call(acme, "POST", BASE, body)
    # Then 201 with a Location for it and the job as sent
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.headers["Location"] == f"{BASE}/job-berlin-9"
    job = resp.get_json()
    for key, value in body.items():
        assert job[key] == value, key
    assert job["deleted"] is False
    assert job["scheduleExpression"] is None
    assert job["last_run_at"] is None
    # And next_run_at is the next 09:00 in Berlin, in the future, within a day
    next_run = ts(job["next_run_at"])
    assert before < next_run <= before + timedelta(days=1)
    local = next_run.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute, local.second) == (9, 0, 0)
    # And GET shows the same job, and the list holds it
    assert get_job(acme, "job-berlin-9") == job
    assert acme.get(BASE).get_json() == [job]


def test_seed_002_create_example_with_real_values_is_created(acme: Caller) -> None:
    # Given seed 002's create example with values that mean something
    body = copy.deepcopy(SEED_002_JOB)
    body.update(deleted=False, id="job-bis-1", schedule="0 9 * * *", scheduleExpression=None,
                template_id="d-5f7a2b0c9e1d4c3ba8f6e2d1c0b9a8f7", number_of_items_in_email=-1)
    body["job_parameters"] = {"campaign_id": "back-in-stock-2026", "utm_medium": "email"}
    del body["scheduleExpression"]
    # When it is posted
    resp = call(acme, "POST", BASE, body)
    # Then it is created as sent
    assert resp.status_code == 201, resp.get_data(as_text=True)
    job = resp.get_json()
    assert job["notification"] == "BACK_IN_STOCK"
    assert job["schedule"] == "0 9 * * *"
    assert job["number_of_items_in_email"] == -1
    assert job["job_parameters"] == body["job_parameters"]
    assert job["timezone"] == "UTC"
    assert ts(job["next_run_at"]).hour == 9


def test_seed_002_create_example_verbatim_is_a_400_naming_the_fields(acme: Caller) -> None:
    # Given seed 002's create example verbatim (schedule "string", number_of_items_in_email 0)
    # When it is posted
    resp = call(acme, "POST", BASE, SEED_002_JOB)
    # Then 400 naming schedule and number_of_items_in_email, with a hint how to write them
    error = assert_error(resp, 400, "invalid_job")
    named = fields(error)
    assert {"schedule", "number_of_items_in_email"} <= named
    messages = {d["field"]: d["message"] for d in error["details"]}
    assert "cron" in messages["schedule"]
    assert "-1" in messages["number_of_items_in_email"]
    # And nothing was created, not even under id "string"
    assert acme.get(f"{BASE}/string").status_code == 404
    assert acme.get(f"{BASE}?include_deleted=true").get_json() == []


def test_seed_002_create_example_verbatim_names_every_invalid_field(acme: Caller) -> None:
    # Given seed 002's create example verbatim: schedule, scheduleExpression and
    # number_of_items_in_email are all invalid. When it is posted, Then all three are named
    error = assert_error(call(acme, "POST", BASE, SEED_002_JOB), 400, "invalid_job")
    assert fields(error) == {"schedule", "scheduleExpression", "number_of_items_in_email"}


@pytest.mark.parametrize(("overrides", "field"), [
    ({"schedule": "0 9 * *"}, "schedule"),
    ({"schedule": "0 9 * * * *"}, "schedule"),
    ({"schedule": "61 * * * *"}, "schedule"),
    ({"schedule": "@daily"}, "schedule"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"timezone": "europe/berlin"}, "timezone"),
    ({"notification": "WEEKLY_DIGEST"}, "notification"),
    ({"notification": "reminder"}, "notification"),
    ({"number_of_items_in_email": 0}, "number_of_items_in_email"),
    ({"number_of_items_in_email": 1001}, "number_of_items_in_email"),
    ({"number_of_items_in_email": -2}, "number_of_items_in_email"),
    ({"number_of_items_in_email": "5"}, "number_of_items_in_email"),
    ({"job_parameters": {"low_stock_threshold": "x"}}, "job_parameters"),
    ({"job_parameters": {"low_stock_threshold": -1}}, "job_parameters"),
    ({"job_parameters": {"campaign_id": 7}}, "job_parameters"),
    ({"template_id": ""}, "template_id"),
    ({"is_active": "yes"}, "is_active"),
    ({"color": "red"}, "color"),
])
def test_an_invalid_field_is_a_400_naming_it(acme: Caller, overrides: dict[str, Any],
                                             field: str) -> None:
    # Given an otherwise valid job with one bad field
    # When it is posted
    resp = call(acme, "POST", BASE, job_body(**overrides))
    # Then 400 whose details name exactly that field
    error = assert_error(resp, 400, "invalid_job")
    assert fields(error) == {field}, error
    # And nothing was created
    assert acme.get(f"{BASE}?include_deleted=true").get_json() == []


def test_a_job_without_template_id_or_notification_is_a_400_naming_them(acme: Caller) -> None:
    body = job_body()
    del body["template_id"], body["notification"]
    error = assert_error(call(acme, "POST", BASE, body), 400, "invalid_job")
    assert fields(error) == {"template_id", "notification"}


def test_a_job_without_any_schedule_is_a_400(acme: Caller) -> None:
    body = job_body()
    del body["schedule"]
    error = assert_error(call(acme, "POST", BASE, body), 400, "invalid_job")
    assert "schedule" in error["details"][0]["message"]
    assert acme.get(f"{BASE}?include_deleted=true").get_json() == []


def test_a_job_without_any_schedule_is_a_400_naming_schedule(acme: Caller) -> None:
    body = job_body()
    del body["schedule"]
    error = assert_error(call(acme, "POST", BASE, body), 400, "invalid_job")
    assert fields(error) == {"schedule"}


@pytest.mark.parametrize("expression", ["rate(5 seconds)", "cron(0 9 * *)", "every day", "string"])
def test_an_invalid_schedule_expression_is_a_400(acme: Caller, expression: str) -> None:
    resp = call(acme, "POST", BASE, job_body(scheduleExpression=expression))
    error = assert_error(resp, 400, "invalid_job")
    assert error["details"], error
    assert acme.get(f"{BASE}?include_deleted=true").get_json() == []


def test_an_invalid_schedule_expression_is_a_400_naming_schedule_expression(acme: Caller) -> None:
    # Given a job whose scheduleExpression is a rate in seconds (not supported)
    # When it is posted, Then the 400 names scheduleExpression (not the body)
    error = assert_error(call(acme, "POST", BASE, job_body(scheduleExpression="rate(5 seconds)")),
                         400, "invalid_job")
    assert fields(error) == {"scheduleExpression"}


def test_a_cron_that_never_fires_is_a_400_not_a_500(acme: Caller) -> None:
    # Given a syntactically valid cron naming a day that never comes (31 February)
    # When it is posted (or PUT over an existing job), Then a 400 naming schedule, not a 500
    resp = call(acme, "POST", BASE, job_body(schedule="0 0 31 2 *"))
    error = assert_error(resp, 400, "invalid_job")
    assert fields(error) == {"schedule"}
    created = create_job(acme, id="job-feb")
    error = assert_error(call(acme, "PUT", f"{BASE}/job-feb", job_body(schedule="0 0 30 2 *")), 400,
                         "invalid_job")
    assert fields(error) == {"schedule"}
    assert get_job(acme, "job-feb") == created


def test_schedule_expression_wins_over_schedule(acme: Caller) -> None:
    # Given a job with both a daily cron and a 5-minute rate expression
    before = datetime.now(UTC)
    job = create_job(acme, schedule="0 9 * * *", scheduleExpression="rate(5 minutes)")
    # Then next_run_at follows the rate (within 5 minutes), not 09:00
    next_run = ts(job["next_run_at"])
    assert before < next_run <= before + timedelta(minutes=5)
    assert job["scheduleExpression"] == "rate(5 minutes)"


def test_aws_cron_expression_is_accepted(acme: Caller) -> None:
    job = create_job(acme, schedule=None, scheduleExpression="cron(0 9 * * ? *)")
    next_run = ts(job["next_run_at"])
    assert (next_run.hour, next_run.minute) == (9, 0)
    assert next_run > datetime.now(UTC)


def test_a_duplicate_id_is_a_409(acme: Caller) -> None:
    create_job(acme, id="job-dup")
    error = assert_error(call(acme, "POST", BASE, job_body(id="job-dup")), 409, "conflict")
    assert fields(error) == {"id"}


def test_non_json_and_malformed_json_bodies_are_rejected(acme: Caller) -> None:
    resp = acme.client.post(BASE, data="notification=REMINDER",
                            headers=acme.headers(**{"Content-Type": "text/plain"}))
    assert_error(resp, 415)
    resp = acme.client.post(BASE, data="{not json",
                            headers=acme.headers(**{"Content-Type": "application/json"}))
    assert_error(resp, 400, "malformed_json")


# --- update ----------------------------------------------------------------------------------

def test_put_replaces_the_job_and_recomputes_next_run_at(acme: Caller) -> None:
    # Given a daily 09:00 REMINDER job with two parameters
    created = create_job(acme, id="job-put", job_parameters={"campaign_id": "c-1", "utm_medium": "x"})
    # When it is replaced by a PRICE_DROP job every 5 minutes with one parameter
    before = datetime.now(UTC)
    new = job_body(notification="PRICE_DROP", schedule="*/5 * * * *", number_of_items_in_email=3,
                   job_parameters={"campaign_id": "c-2"}, template_id="d-new")
    resp = call(acme, "PUT", f"{BASE}/job-put", new)
    # Then 200 with the new values: parameters replaced, not merged
    assert resp.status_code == 200, resp.get_data(as_text=True)
    job = resp.get_json()
    assert job["id"] == "job-put"
    assert job["notification"] == "PRICE_DROP"
    assert job["schedule"] == "*/5 * * * *"
    assert job["number_of_items_in_email"] == 3
    assert job["template_id"] == "d-new"
    assert job["job_parameters"] == {"campaign_id": "c-2"}
    assert job["created_at"] == created["created_at"]
    # And next_run_at is recomputed: the next 5-minute slot, not 09:00
    next_run = ts(job["next_run_at"])
    assert before < next_run <= before + timedelta(minutes=5)
    assert next_run.minute % 5 == 0
    assert job["next_run_at"] != created["next_run_at"]
    # And GET shows the replaced job
    assert get_job(acme, "job-put") == job


def test_put_with_the_same_id_in_the_body_is_accepted(acme: Caller) -> None:
    create_job(acme, id="job-same")
    resp = call(acme, "PUT", f"{BASE}/job-same", job_body(id="job-same", notification="LOW_STOCK"))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["notification"] == "LOW_STOCK"


def test_put_with_a_different_id_in_the_body_is_a_400_and_changes_nothing(acme: Caller) -> None:
    created = create_job(acme, id="job-keep")
    resp = call(acme, "PUT", f"{BASE}/job-keep", job_body(id="job-other", notification="LOW_STOCK"))
    error = assert_error(resp, 400, "id_mismatch")
    assert fields(error) == {"id"}
    assert get_job(acme, "job-keep") == created
    assert acme.get(f"{BASE}/job-other").status_code == 404


def test_put_an_invalid_job_is_a_400_and_changes_nothing(acme: Caller) -> None:
    created = create_job(acme, id="job-inv")
    error = assert_error(call(acme, "PUT", f"{BASE}/job-inv", job_body(schedule="0 25 * * *")), 400,
                         "invalid_job")
    assert fields(error) == {"schedule"}
    assert get_job(acme, "job-inv") == created


def test_put_an_unknown_job_is_a_404(acme: Caller) -> None:
    assert_error(call(acme, "PUT", f"{BASE}/job-nope", job_body()), 404, "not_found")


def test_put_inactive_clears_next_run_at_and_put_active_sets_it_again(acme: Caller) -> None:
    create_job(acme, id="job-toggle")
    off = call(acme, "PUT", f"{BASE}/job-toggle", job_body(is_active=False)).get_json()
    assert (off["is_active"], off["next_run_at"]) == (False, None)
    unscheduled = call(acme, "PUT", f"{BASE}/job-toggle", job_body(is_scheduled=False)).get_json()
    assert (unscheduled["is_scheduled"], unscheduled["next_run_at"]) == (False, None)
    on = call(acme, "PUT", f"{BASE}/job-toggle", job_body()).get_json()
    assert ts(on["next_run_at"]) > datetime.now(UTC)


# --- delete ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "suffix"), [("DELETE", ""), ("POST", "/delete"), ("POST", "")],
                         ids=["DELETE", "POST-delete", "POST-seed-002"])
def test_delete_is_soft_and_hides_the_job_from_the_list(acme: Caller, method: str,
                                                        suffix: str) -> None:
    # Given two jobs
    doomed = create_job(acme, id="job-doomed")
    kept = create_job(acme, id="job-kept")
    assert doomed["next_run_at"] is not None
    # When one is deleted (DELETE, or seed 002's POST-style delete)
    resp = acme.client.open(f"{BASE}/job-doomed{suffix}", method=method, headers=acme.headers())
    # Then 204 with no body
    assert resp.status_code == 204
    assert resp.get_data() == b""
    # And the job is still readable, deleted=true with no next run
    job = get_job(acme, "job-doomed")
    assert job["deleted"] is True
    assert job["next_run_at"] is None
    # And the list leaves it out unless include_deleted=true
    assert [j["id"] for j in acme.get(BASE).get_json()] == ["job-kept"]
    listed = acme.get(f"{BASE}?include_deleted=true").get_json()
    assert [j["id"] for j in listed] == ["job-doomed", "job-kept"]
    assert listed[1] == kept
    # And deleting again is still a 204 (idempotent), an unknown id a 404
    again = acme.client.open(f"{BASE}/job-doomed{suffix}", method=method, headers=acme.headers())
    assert again.status_code == 204
    missing = acme.client.open(f"{BASE}/job-nope{suffix}", method=method, headers=acme.headers())
    assert_error(missing, 404, "not_found")


@pytest.mark.parametrize("body", [b"", b"  \n"], ids=["none", "whitespace"])
def test_seed_002_post_delete_takes_an_empty_body(acme: Caller, body: bytes) -> None:
    create_job(acme, id="job-doomed")
    resp = acme.client.post(f"{BASE}/job-doomed", data=body, headers=acme.headers())
    assert resp.status_code == 204, resp.get_data(as_text=True)
    assert get_job(acme, "job-doomed")["deleted"] is True


@pytest.mark.parametrize("body", [SEED_002_JOB, {}, job_body()], ids=["seed-002-job", "{}", "job"])
def test_seed_002_post_delete_with_a_body_is_a_400_and_deletes_nothing(
        acme: Caller, body: dict[str, Any]) -> None:
    # Given a job, When a client POSTs a body to its URL (meaning to create or update it)
    before = create_job(acme, id="job-kept")
    error = assert_error(call(acme, "POST", f"{BASE}/job-kept", body), 400, "body_not_allowed")
    # Then 400 naming the body, and the job is as it was
    assert fields(error) == {"body"}
    assert get_job(acme, "job-kept") == before


def test_include_deleted_must_be_a_boolean(acme: Caller) -> None:
    error = assert_error(acme.get(f"{BASE}?include_deleted=maybe"), 400, "invalid_query")
    assert fields(error) == {"include_deleted"}


# --- runs ------------------------------------------------------------------------------------

def test_run_now_lists_the_run_with_its_counts(acme: Caller, stub: StubMailer) -> None:
    # Given a REMINDER job and two wishlists: one customer with an e-mail, one without
    job = create_job(acme, id="job-run")
    post_events(acme,
                wishlist("w-1", customer("c-1"), [item("p-1"), item("p-2")]),
                wishlist("w-2", customer("c-2", email=None), [item("p-3")]))
    # When the job is run now
    run = run_job(acme, "job-run")
    # Then the run history lists it: manual, done, one recipient sent, one customer skipped
    assert run["trigger"] == "manual"
    assert run["status"] == "done"
    assert (run["recipients"], run["sent"], run["failed"], run["skipped"]) == (1, 1, 0, 1)
    assert run["attempts"] == 1
    assert run["error"] is None
    assert run["finished_at"] is not None
    assert ts(run["fire_time"]) <= ts(run["finished_at"])
    assert runs_of(acme, "job-run") == [run]
    # And exactly one mail request went out, for c-1
    assert len(stub.requests) == 1
    template_id, recipients, custom_args = stub.requests[0]
    assert template_id == job["template_id"]
    assert [r.email for r in recipients] == ["c-1@example.com"]
    assert custom_args == {"tenant": "acme", "job_id": "job-run", "run_id": str(run["id"])}


def test_a_job_with_no_runs_has_an_empty_history(acme: Caller) -> None:
    create_job(acme, id="job-idle")
    assert runs_of(acme, "job-idle") == []


def test_run_now_on_a_deleted_or_inactive_job_is_a_409(acme: Caller, stub: StubMailer) -> None:
    # Given a deleted job and an inactive one (and a wishlist that could be mailed)
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1")]))
    create_job(acme, id="job-deleted")
    assert call(acme, "DELETE", f"{BASE}/job-deleted").status_code == 204
    create_job(acme, id="job-inactive", is_active=False)
    # When either is run now, Then 409 and no run is recorded, no mail sent
    for job_id in ("job-deleted", "job-inactive"):
        assert_error(call(acme, "POST", f"{BASE}/{job_id}/run"), 409, "inactive")
        assert runs_of(acme, job_id) == []
    assert stub.requests == []


def test_run_now_on_an_unscheduled_active_job_runs_it(acme: Caller, stub: StubMailer) -> None:
    # Given an active job that is not scheduled (is_scheduled=false: manual runs only)
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1")]))
    create_job(acme, id="job-manual", is_scheduled=False)
    # When it is run now, Then it runs and mails
    run = run_job(acme, "job-manual")
    assert (run["status"], run["sent"]) == ("done", 1)
    assert len(stub.requests) == 1


def test_run_now_whose_enqueue_fails_is_deferred_and_sent_by_the_scheduler(
        acme: Caller, stub: StubMailer) -> None:
    import redis

    from scheduler.loop import tick_once

    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1")]))
    create_job(acme, id="job-later", is_scheduled=False)
    runtime = runtime_of(acme.client.application)
    plain_enqueue = runtime.broker.enqueue

    def broker_down(message: Any, *, delay: Any = None) -> Any:
        raise redis.ConnectionError("Error 111 connecting to redis. Connection refused.")

    # When the run's enqueue finds the broker down
    runtime.broker.enqueue = broker_down
    try:
        resp = call(acme, "POST", f"{BASE}/job-later/run")
    finally:
        runtime.broker.enqueue = plain_enqueue
    # Then it is accepted as deferred (retrying would start a second run) and nothing is mailed
    assert resp.status_code == 202, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["status"] == "deferred"
    settle(acme.client.application)
    assert stub.requests == []
    # And the scheduler re-sends the unsent run once it is stale: one mail, one run
    later = datetime.now(UTC) + timedelta(seconds=31)
    assert tick_once(runtime.sessions, runtime.broker, later, resend_after=30) \
        == [internal_id("run", body["run_id"])]
    run = wait_for_run(acme, "job-later", int(body["run_id"]))
    assert (run["status"], run["sent"]) == ("done", 1)
    assert len(stub.requests) == 1
    assert [r["id"] for r in runs_of(acme, "job-later")] == [body["run_id"]]


# --- auth and tenants ------------------------------------------------------------------------

def _every_route(job_id: str) -> list[tuple[str, str, Any]]:
    one = f"{BASE}/{job_id}"
    return [
        ("GET", BASE, None),
        ("POST", BASE, job_body()),
        ("GET", one, None),
        ("PUT", one, job_body(notification="LOW_STOCK")),
        ("GET", f"{one}/runs", None),
        ("POST", f"{one}/run", None),
        ("POST", f"{one}/delete", None),
        ("DELETE", one, None),
    ]


def test_a_token_without_the_jobs_scope_is_a_403_on_every_route(embedded: Any) -> None:
    # Given acme's job and a token of acme holding only the event scopes
    owner = Caller(embedded.test_client(), "acme", mint("acme"))
    job = create_job(owner, id="job-scoped")
    events_only = Caller(embedded.test_client(), "acme",
                         mint("acme", scopes=frozenset({"events:read", "events:write"})))
    # When it calls any job route, Then 403 insufficient_scope
    for method, path, body in _every_route("job-scoped"):
        error = assert_error(call(events_only, method, path, body), 403, "insufficient_scope")
        assert "jobs" in error["message"], (method, path)
    # And nothing changed
    assert owner.get(f"{BASE}?include_deleted=true").get_json() == [job]
    assert runs_of(owner, "job-scoped") == []


def test_a_missing_token_is_a_401_and_a_foreign_tenant_header_a_403(acme: Caller) -> None:
    create_job(acme, id="job-auth")
    for method, path, body in _every_route("job-auth"):
        resp = acme.client.open(path, method=method, json=body, headers={"X-TWC-Tenant": "acme"})
        assert_error(resp, 401)
        resp = acme.client.open(path, method=method, json=body,
                                headers={**acme.headers(), "X-TWC-Tenant": "globex"})
        assert_error(resp, 403, "tenant_mismatch")
    assert get_job(acme, "job-auth")["deleted"] is False


def test_another_tenants_job_is_a_404_on_every_route(acme: Caller, globex: Caller,
                                                     stub: StubMailer) -> None:
    # Given acme's job (and an acme wishlist it could mail)
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1")]))
    job = create_job(acme, id="job-acme")
    # When globex calls every route naming it, Then each is a 404 like an unknown id
    for method, path, body in _every_route("job-acme"):
        if path == BASE:
            continue
        resp = call(globex, method, path, body)
        assert_error(resp, 404, "not_found")
    # And globex's list is empty, while acme's job is untouched, never run, nothing mailed
    assert globex.get(f"{BASE}?include_deleted=true").get_json() == []
    assert get_job(acme, "job-acme") == job
    assert runs_of(acme, "job-acme") == []
    settle(acme.client.application)
    assert stub.requests == []


def test_the_same_job_id_may_exist_in_two_tenants(acme: Caller, globex: Caller) -> None:
    a = create_job(acme, id="job-shared", notification="REMINDER")
    g = create_job(globex, id="job-shared", notification="LOW_STOCK")
    assert get_job(acme, "job-shared") == a
    assert get_job(globex, "job-shared") == g
    assert call(globex, "DELETE", f"{BASE}/job-shared").status_code == 204
    assert get_job(acme, "job-shared")["deleted"] is False

