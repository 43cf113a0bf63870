"""Fairness between tenants: quotas (409 quota_exceeded), paged resource lists (Link rel=next),
and ids that reveal nothing of other tenants' volume (per-tenant event numbers, opaque attempt,
delivery and run ids) — on the embedded app (SQLite + StubBroker, StubSender)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select, update

from events.repository import TENANT_SEQ_BASE as B
from subscriptions.models import Delivery
from subscriptions.senders.base import SendResult
from tenants.quotas import set_quotas
from tests.conftest import Caller, drain, internal_id, mint, order_event
from tests.support.apps import copy_db, runtime_of, stub_app
from tests.support.events import assert_error
from tests.support.subscriptions import BASE, sqs_body

# conftest's ``embedded`` is the StubSender app, with a retry an hour away: a transiently failed
# delivery stays pending for the whole test.
pytestmark = pytest.mark.embedded("sender", delivery_retry_schedule=(3600.0,))

JOBS = "/api/v1/jobs"
UNAVAILABLE = SendResult(False, error_code="ServiceUnavailable", error_message="later",
                         transient=True)


def job_body(**overrides: Any) -> dict[str, Any]:
    return {"is_active": True, "is_scheduled": True, "job_parameters": {},
            "notification": "REMINDER", "number_of_items_in_email": -1, "schedule": "0 9 * * *",
            "template_id": "d-1", **overrides}


@pytest.fixture
def app(embedded: Any) -> Any:
    """conftest's ``embedded`` (see pytestmark), under the name these tests use."""
    return embedded


def quota(app: Any, tenant: str, **values: int | None) -> None:
    with runtime_of(app).sessions() as session:
        set_quotas(session, tenant, values)
        session.commit()


def post(caller: Caller, path: str, body: Any) -> Any:
    return caller.client.post(path, json=body, headers=caller.headers())


def assert_quota(resp: Any, name: str, limit: int) -> dict[str, Any]:
    error = assert_error(resp, 409, "quota_exceeded")
    assert error["details"] == [{"field": name, "message": f"quota {name} is {limit}",
                                 "type": "quota_exceeded"}]
    return error


# --- quotas ---------------------------------------------------------------------------------

def test_the_subscription_quota_refuses_one_more_with_409_naming_it_per_tenant(
        app: Any, acme: Caller, globex: Caller) -> None:
    # Given acme's subscription quota set to 2 (an inactive one counts too)
    quota(app, "acme", subscriptions=2)
    assert post(acme, BASE, sqs_body(id="s-1")).status_code == 201
    assert post(acme, BASE, sqs_body(id="s-2", active=False)).status_code == 201
    # When a third is created, Then 409 quota_exceeded naming the quota and its limit
    assert_quota(post(acme, BASE, sqs_body(id="s-3")), "subscriptions", 2)
    assert acme.get(f"{BASE}/s-3").status_code == 404
    # And globex, on the default (100), is not affected
    assert post(globex, BASE, sqs_body(id="g-1")).status_code == 201
    # When one is deleted, Then there is room again
    assert acme.client.delete(f"{BASE}/s-1", headers=acme.headers()).status_code == 204
    assert post(acme, BASE, sqs_body(id="s-3")).status_code == 201
    # And back on the default, the limit is the deployment's again
    quota(app, "acme", subscriptions=None)
    assert post(acme, BASE, sqs_body(id="s-4")).status_code == 201


def test_the_default_quotas_come_from_the_settings(template_db: Path, tmp_path: Path) -> None:
    with stub_app(copy_db(template_db, tmp_path), quota_subscriptions=1, quota_jobs=0) as app:
        acme = Caller(app.test_client(), "acme", mint("acme"))
        assert post(acme, BASE, sqs_body()).status_code == 201
        assert_quota(post(acme, BASE, sqs_body()), "subscriptions", 1)
        assert_quota(post(acme, JOBS, job_body()), "jobs", 0)
        # A tenant's own quota wins over the default
        quota(app, "acme", jobs=1)
        assert post(acme, JOBS, job_body()).status_code == 201


def test_the_job_quota_counts_jobs_not_deleted(app: Any, acme: Caller) -> None:
    quota(app, "acme", jobs=1)
    assert post(acme, JOBS, job_body(id="j-1")).status_code == 201
    assert_quota(post(acme, JOBS, job_body(id="j-2")), "jobs", 1)
    assert acme.client.delete(f"{JOBS}/j-1", headers=acme.headers()).status_code == 204
    assert post(acme, JOBS, job_body(id="j-2")).status_code == 201


def _stored_orders(acme: Caller, n: int) -> tuple[datetime, datetime]:
    since = datetime.now(UTC) - timedelta(seconds=1)
    for i in range(n):
        assert acme.post_event(order_event(id=f"o-{i}")).status_code == 201
    drain(acme.client.application)
    return since, datetime.now(UTC) + timedelta(seconds=1)


def _replay(acme: Caller, sub_id: str, since: datetime, until: datetime) -> Any:
    return post(acme, f"{BASE}/{sub_id}/replay", {"since": since.isoformat(),
                                                   "until": until.isoformat()})


def test_a_replay_over_the_tenants_event_quota_is_a_409_and_queues_nothing(
        app: Any, acme: Caller) -> None:
    since, until = _stored_orders(acme, 3)
    sub = post(acme, BASE, sqs_body()).get_json()
    quota(app, "acme", replay_events=2)
    error = assert_quota(_replay(acme, sub["id"], since, until), "replay_events", 2)
    assert "more than 2 events match" in error["message"]
    with runtime_of(app).sessions() as session:
        assert session.execute(select(Delivery)).first() is None
    quota(app, "acme", replay_events=3)
    assert _replay(acme, sub["id"], since, until).status_code == 202


def test_a_second_replay_while_one_is_queued_is_a_409_until_it_is_done(
        app: Any, acme: Caller) -> None:
    stub = runtime_of(app).senders["SQS"]
    since, until = _stored_orders(acme, 2)
    sub = post(acme, BASE, sqs_body()).get_json()
    other = post(acme, BASE, sqs_body(id="other")).get_json()
    # Given a replay whose deliveries failed transiently (pending, next try in an hour)
    stub.failures.extend([UNAVAILABLE, UNAVAILABLE])
    first = _replay(acme, sub["id"], since, until)
    assert first.get_json() == {"queued": 2, "deferred": False}
    deadline = time.monotonic() + 10
    while True:
        with runtime_of(app).sessions() as session:
            tried = session.execute(select(Delivery.attempts).where(
                Delivery.subscription_id == sub["id"])).scalars().all()
        if tried and all(tried):
            break
        assert time.monotonic() < deadline, tried
        time.sleep(0.02)
    # When the same replay is asked again, Then 409 quota_exceeded (one queued replay at a time)
    error = assert_quota(_replay(acme, sub["id"], since, until), "queued_replays", 1)
    assert "2 deliveries pending" in error["message"]
    # And another subscription may replay meanwhile
    assert _replay(acme, other["id"], since, until).status_code == 202
    # When the first replay's deliveries are done, Then the subscription may replay again
    with runtime_of(app).sessions() as session:
        session.execute(update(Delivery).where(Delivery.subscription_id == sub["id"])
                        .values(status="succeeded"))
        session.commit()
    assert _replay(acme, sub["id"], since, until).status_code == 202


# --- paged lists ----------------------------------------------------------------------------

def _follow(caller: Caller, path: str, **params: Any) -> tuple[list[list[str]], list[str]]:
    """Pages of ids, following Link rel=next; and every Link seen."""
    pages, links = [], []
    resp = caller.get(path, query_string=params)
    while True:
        assert resp.status_code == 200, resp.get_data(as_text=True)
        body = resp.get_json()
        assert isinstance(body, list)
        pages.append([x["id"] for x in body])
        link = resp.headers.get("Link")
        if link is None:
            return pages, links
        links.append(link)
        found = re.fullmatch(r'<([^>]+)>; rel="next"', link)
        assert found, link
        resp = caller.get(found.group(1))


@pytest.mark.parametrize("path,body,flag", [(BASE, sqs_body, "include_inactive"),
                                            (JOBS, job_body, "include_deleted")])
def test_lists_page_with_per_page_and_a_link_to_the_next_page(
        app: Any, acme: Caller, globex: Caller, path: str, body: Any, flag: str) -> None:
    quota(app, "acme", subscriptions=10, jobs=10)
    ids = [f"x-{i}" for i in range(5)]
    for n, item_id in enumerate(ids):
        assert post(acme, path, body(id=item_id)).status_code == 201
        if n == 1:
            assert post(globex, path, body(id="theirs")).status_code == 201
    # Without per_page: the whole list, as before, no Link
    whole = acme.get(path)
    assert [x["id"] for x in whole.get_json()] == ids and "Link" not in whole.headers
    # With per_page 2: pages of 2, 2, 1 in creation order, chained by Link, the other
    # parameters kept
    pages, links = _follow(acme, path, per_page=2, **{flag: "true"})
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    for link in links:
        query = parse_qs(urlsplit(link[1:link.index(">")]).query)
        assert query["per_page"] == ["2"] and query[flag] == ["true"]
        assert urlsplit(link[1:link.index(">")]).path == path
    # A page exactly as long as what is left has no Link
    assert _follow(acme, path, per_page=5)[0] == [ids]
    # Another tenant's cursor reads only the caller's own rows
    cursor = parse_qs(urlsplit(links[0][1:links[0].index(">")]).query)["from_id"][0]
    assert [x["id"] for x in globex.get(path, query_string={"from_id": cursor}).get_json()] \
        in ([], ["theirs"])


@pytest.mark.parametrize("path", [BASE, JOBS])
@pytest.mark.parametrize("params,field", [
    ({"per_page": 0}, "per_page"), ({"per_page": 501}, "per_page"), ({"per_page": "x"}, "per_page"),
    ({"from_id": 0}, "from_id"), ({"from_id": "abc"}, "from_id"),
    ({"from_id": 2**52 + 1}, "from_id"), ({"from_id": "١"}, "from_id"),
])
def test_bad_paging_values_are_a_400_naming_the_field(acme: Caller, path: str,
                                                      params: dict[str, Any], field: str) -> None:
    error = assert_error(acme.get(path, query_string=params), 400, "invalid_query")
    assert [d["field"] for d in error["details"]] == [field]


# --- ids that reveal nothing ------------------------------------------------------------------

def test_event_numbers_are_per_tenant_and_do_not_interleave(app: Any, acme: Caller,
                                                            globex: Caller) -> None:
    # Given events posted by two tenants, interleaved
    for i in range(3):
        assert acme.post_event(order_event(id=f"a-{i}")).status_code == 201
        assert globex.post_event(order_event(id=f"g-{i}")).status_code == 201
        assert globex.post_event(order_event(id=f"g-{i}-bis")).status_code == 201
    drain(app)

    def ol(caller: Caller, **params: Any) -> dict[str, Any]:
        return caller.client.get("/api/event", query_string=params,
                                 headers={"Authorization": f"Bearer {caller.token}"}).get_json()

    # Then each tenant's numbers are its own 1, 2, 3 ... (from 10^12): nothing of the other's
    assert [e["id"] for e in ol(acme)["events"]] == [B + 1, B + 2, B + 3]
    assert [e["id"] for e in ol(globex, perPage=6)["events"]] == [B + n for n in range(1, 7)]
    # And the v1 cursor is the tenant's own number too
    page = acme.get("/api/v1/events", query_string={"per_page": 2}).get_json()
    assert page["next_from_id"] == B + 3
    rest = acme.get("/api/v1/events", query_string={"from_id": B + 3}).get_json()
    assert [e["id"] for e in rest["events"]] == ["a-2"] and rest["next_from_id"] == B + 4
    # And fromId pages on the tenant's own numbers, both directions
    assert [e["uuid"] for e in ol(acme, fromId=B + 2)["events"]] == ["a-1", "a-2"]
    assert [e["uuid"] for e in ol(acme, fromId=B + 2, direction="DESC")["events"]] \
        == ["a-1", "a-0"]


def test_attempt_delivery_and_run_ids_are_opaque_and_their_cursor_pages(
        app: Any, acme: Caller, globex: Caller) -> None:
    stub = runtime_of(app).senders["SQS"]
    subs = {c.tenant: post(c, BASE, sqs_body()).get_json() for c in (acme, globex)}
    for i in range(3):
        for caller in (acme, globex):
            assert caller.post_event(order_event(id=f"e-{i}")).status_code == 201
    drain(app)
    deadline = time.monotonic() + 10
    while len(stub.sent) < 6:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    log = acme.get(f"{BASE}/{subs['acme']['id']}/deliveries").get_json()
    shown = [a["id"] for a in log["deliveries"]]
    internal = [internal_id("attempt", a) for a in shown]
    # The shown ids are not the internal sequence (which interleaves the tenants) ...
    assert set(shown).isdisjoint(range(1, 1000)) and internal == sorted(internal)
    # ... are integers a JavaScript client holds exactly, and their differences say nothing
    assert all(isinstance(a, int) and 0 < a <= 2**52 for a in shown)
    assert sorted(abs(a - b) for a, b in zip(shown, shown[1:], strict=False))[0] > 1000
    # And the attempt log's cursor still pages through them
    first = acme.get(f"{BASE}/{subs['acme']['id']}/deliveries",
                     query_string={"per_page": 2}).get_json()
    second = acme.get(f"{BASE}/{subs['acme']['id']}/deliveries",
                      query_string={"per_page": 2, "from_id": first["next_from_id"]}).get_json()
    assert [a["id"] for a in first["deliveries"] + second["deliveries"]] == shown
    # And a job run's id is opaque too, and the same in the run list
    assert post(acme, JOBS, job_body(id="j")).status_code == 201
    run = post(acme, f"{JOBS}/j/run", None)
    assert run.status_code == 202
    run_id = run.get_json()["run_id"]
    assert run_id > 1000
    runs = acme.get(f"{JOBS}/j/runs").get_json()["runs"]
    assert [r["id"] for r in runs] == [run_id]


def test_quarantine_entry_ids_are_opaque_and_page(app: Any, acme: Caller) -> None:
    from events.quarantine import quarantine

    # Given three quarantined events of acme (entries 1, 2, 3 of the global sequence)
    with runtime_of(app).sessions() as session:
        for i in range(3):
            quarantine(session, "acme", {**order_event(id=f"q-{i}"),
                                         "received_at": "2026-01-01T00:00:00.000Z"},
                       ValueError("refused"), retried=False)
        session.commit()
    listed = acme.get("/api/v1/quarantine").get_json()
    shown = [e["quarantine"]["id"] for e in listed["events"]]
    # Then the ids shown are not the sequence, GET /api/v1/events/{id} shows the same one
    assert [internal_id("quarantine", q) for q in shown] == [1, 2, 3]
    assert set(shown).isdisjoint(range(1, 1000))
    assert acme.get("/api/v1/events/q-1").get_json()["quarantine"]["id"] == shown[1]
    # And the cursor pages
    first = acme.get("/api/v1/quarantine", query_string={"per_page": 2}).get_json()
    rest = acme.get("/api/v1/quarantine", query_string={"per_page": 2,
                                                        "from_id": first["next_from_id"]})
    assert [e["quarantine"]["id"] for e in first["events"] + rest.get_json()["events"]] == shown


# --- migration 0009 and concurrent numbering on SQLite ---------------------------------------

def test_migration_0009_renumbers_events_per_tenant_and_keeps_legacy_cursors_on_sqlite(
        tmp_path: Path) -> None:
    from tests.support.tenant_ids import check_migrated, seed_0007

    url = f"sqlite:///{tmp_path / 'm.db'}"
    check_migrated(url, seed_0007(url))


def test_concurrent_persist_transactions_number_each_tenant_without_gaps_on_sqlite(
        tmp_path: Path) -> None:
    from infra.db import upgrade
    from tests.support.tenant_ids import check_concurrent_numbering

    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    check_concurrent_numbering(url, threads=4, per_thread=10, gapless=True)


# --- the operator's command -------------------------------------------------------------------

def test_tenant_quota_sets_shows_and_resets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main

    for name in ("DATABASE_URL", "REDIS_URL", "EC_TOKEN_SECRET", "EC_QUOTA_JOBS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EC_QUOTA_JOBS", "7")
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    assert run("tenant", "create", "shop", "--json")[0] == 0
    code, out, err = run("tenant", "quota", "shop", "--subscriptions", "3", "--replay-events",
                         "500")
    assert code == 0, err
    assert "subscriptions 3 (tenant, 0 used)" in out and "jobs 7 (default, 0 used)" in out
    shown = json.loads(run("tenant", "show", "shop", "--json")[1])["quotas"]
    assert shown == {"subscriptions": {"limit": 3, "source": "tenant", "used": 0},
                     "jobs": {"limit": 7, "source": "default", "used": 0},
                     "replay_events": {"limit": 500, "source": "tenant", "used": None}}
    assert "replay_events 500 (tenant)" in run("tenant", "show", "shop")[1]
    # 'default' puts one back on the deployment's value; --reset all of them
    assert run("tenant", "quota", "shop", "--subscriptions", "default")[0] == 0
    shown = json.loads(run("tenant", "show", "shop", "--json")[1])["quotas"]
    assert shown["subscriptions"] == {"limit": 100, "source": "default", "used": 0}
    assert shown["replay_events"]["source"] == "tenant"
    assert run("tenant", "quota", "shop", "--reset")[0] == 0
    shown = json.loads(run("tenant", "show", "shop", "--json")[1])["quotas"]
    assert {q["source"] for q in shown.values()} == {"default"}
    # Bad values and unknown tenants exit 1 with a message
    for argv in (("shop", "--jobs", "-1"), ("shop", "--jobs", "many"), ("shop",),
                 ("nobody", "--jobs", "1"), ("shop", "--jobs", str(10**9)),
                 ("shop", "--jobs", "٥"), ("shop", "--jobs", "5\n")):
        code, _, err = run("tenant", "quota", *argv)
        assert code == 1 and err.startswith("error: "), (argv, err)
