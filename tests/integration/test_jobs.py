"""Notification jobs over PostgreSQL and Redis: real scheduler processes, real Dramatiq workers,
and the real sendgrid library talking to a local stand-in."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import psycopg
import pytest
import redis
from sqlalchemy import select, update

from config.runtime import build_runtime
from infra.broker.queues import NOTIFY_QUEUE, PERSIST_QUEUE
from jobs.mailers.sendgrid import SendGridMailer
from jobs.models import Job, JobRun
from tenants.auth import create_tenant
from tests.conftest import SECRET, Caller, make_settings, mint
from tests.support.e2e_jobs import entity, item, wishlist
from tests.support.procs import Proc, procfile_command
from tests.support.sendgrid_standin import SendGridStandIn

pytestmark = pytest.mark.integration


@pytest.fixture
def standin() -> Iterator[SendGridStandIn]:
    server = SendGridStandIn()
    yield server
    server.stop()


@pytest.fixture
def shop(pg_url: str, redis_url: str, standin: SendGridStandIn) -> Iterator[dict[str, Any]]:
    """Web app + persist and notify workers on PostgreSQL and Redis; mail via the stand-in."""
    from api.app import create_app
    from workers.main import declare_actors

    settings = make_settings(pg_url, redis_url)
    mailer = SendGridMailer("SG.test-key", "shop@example.com", standin.url, timeout=5)
    runtime = build_runtime(settings, mailer=mailer)
    declare_actors(runtime)
    tenant = f"j-{uuid.uuid4().hex[:6]}"
    with runtime.sessions() as session:
        create_tenant(session, tenant)
        session.commit()
    app = create_app(runtime=runtime)
    app.testing = True
    worker = dramatiq.Worker(runtime.broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        yield {"runtime": runtime, "caller": Caller(app.test_client(), tenant, mint(tenant))}
    finally:
        worker.stop()
        runtime.close()


def post_all(shop: dict[str, Any], events: list[dict[str, Any]]) -> None:
    caller = shop["caller"]
    for e in events:
        assert caller.post_event(e).status_code == 201
    shop["runtime"].broker.join(PERSIST_QUEUE, timeout=20_000)
    time.sleep(0.2)


def create_job(shop: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"notification": "REMINDER", "schedule": "0 9 * * *", "template_id": "d-tpl",
            "job_parameters": {"campaign_id": "wl-1", "utm_medium": "email",
                               "utm_source": "shop"}, **fields}
    caller = shop["caller"]
    r = caller.client.post("/api/v1/jobs", json=body, headers=caller.headers())
    assert r.status_code == 201, r.json
    return r.json


def run_job(shop: dict[str, Any], job_id: str, timeout: float = 20) -> dict[str, Any]:
    caller = shop["caller"]
    r = caller.client.post(f"/api/v1/jobs/{job_id}/run", headers=caller.headers())
    assert r.status_code == 202, r.json
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = caller.get(f"/api/v1/jobs/{job_id}/runs").json["runs"]
        run = next(x for x in runs if x["id"] == r.json["run_id"])
        if run["status"] in ("done", "failed", "cancelled"):
            return run
        time.sleep(0.1)
    raise TimeoutError("run did not finish")


def personalizations(standin: SendGridStandIn) -> dict[str, dict[str, Any]]:
    out = {}
    for body in standin.accepted:
        for p in body["personalizations"]:
            out[p["to"][0]["email"]] = p["dynamic_template_data"]
    return out


def test_reminder_mails_each_wishlist_through_the_real_sendgrid_library(
        shop: dict[str, Any], standin: SendGridStandIn) -> None:
    # Given two customers' wishlists
    post_all(shop, [
        wishlist("w-1", "ann", "ann@example.com", [item("p-1", 100.0, "v-1"), item("p-2", 20.0)]),
        wishlist("w-2", "bob", "bob@example.com", [item("p-3", 5.0)]),
    ])
    job = create_job(shop, notification="REMINDER", number_of_items_in_email=-1)
    # When the job runs
    run = run_job(shop, job["id"])
    # Then one request, one personalization per customer, with the template and UTM links
    assert run["sent"] == 2 and run["recipients"] == 2
    [body] = standin.accepted
    assert body["template_id"] == "d-tpl" and body["from"] == {"email": "shop@example.com"}
    assert standin.headers_seen[0]["Authorization"] == "Bearer SG.test-key"
    data = personalizations(standin)
    assert [i["product_id"] for i in data["ann@example.com"]["items"]] == ["p-1", "p-2"]
    assert data["ann@example.com"]["first_name"] == "Ann"
    url = data["ann@example.com"]["items"][0]["url"]
    assert url == ("https://shop.example/p-1?ref=wl&utm_source=shop&utm_medium=email"
                   "&utm_campaign=wl-1")
    assert [i["product_id"] for i in data["bob@example.com"]["items"]] == ["p-3"]


def test_price_drop_mails_cheaper_items_once_and_caps_the_count(
        shop: dict[str, Any], standin: SendGridStandIn) -> None:
    post_all(shop, [
        wishlist("w-1", "ann", "ann@example.com",
                 [item("p-1", 100.0, "v-1"), item("p-2", 50.0), item("p-3", 30.0)]),
        entity("PRICE", "UPDATE", {"product_id": "p-1", "variant_id": "v-1", "price": 80.0,
                                   "currency": "EUR"}, "p-1"),
        entity("PRODUCT", "UPDATE", {"product_id": "p-2", "price": 40.0}, "p-2"),
        entity("PRICE", "UPDATE", {"product_id": "p-3", "price": 35.0}, "p-3"),
    ])
    job = create_job(shop, notification="PRICE_DROP", number_of_items_in_email=1)
    first = run_job(shop, job["id"])
    items = personalizations(standin)["ann@example.com"]["items"]
    assert first["sent"] == 1 and len(items) == 1
    assert items[0]["product_id"] == "p-1" and items[0]["price"] == 80.0
    assert items[0]["old_price"] == 100.0
    # The capped-out p-2 comes next time; p-1 is not mailed again at the same price
    second = run_job(shop, job["id"])
    assert second["sent"] == 1
    assert [i["product_id"] for i in personalizations(standin)["ann@example.com"]["items"]] == ["p-2"]
    third = run_job(shop, job["id"])
    assert third["sent"] == 0 and len(standin.accepted) == 2


def test_back_in_stock_and_low_stock(shop: dict[str, Any], standin: SendGridStandIn) -> None:
    post_all(shop, [
        entity("INVENTORY_LEVEL", "UPDATE", {"product_id": "p-1", "available": 0}, "p-1"),
        entity("INVENTORY_LEVEL", "UPDATE", {"product_id": "p-2", "available": 50}, "p-2"),
        wishlist("w-1", "ann", "ann@example.com", [item("p-1", 10.0), item("p-2", 10.0)]),
    ])
    post_all(shop, [
        entity("INVENTORY_LEVEL", "UPDATE", {"product_id": "p-1", "available": 7}, "p-1"),
        entity("INVENTORY_LEVEL", "UPDATE", {"product_id": "p-2", "available": 3}, "p-2"),
    ])
    back = create_job(shop, notification="BACK_IN_STOCK")
    low = create_job(shop, notification="LOW_STOCK", job_parameters={"low_stock_threshold": 5})
    assert run_job(shop, back["id"])["sent"] == 1
    assert [i["product_id"] for i in personalizations(standin)["ann@example.com"]["items"]] == ["p-1"]
    assert run_job(shop, low["id"])["sent"] == 1
    low_items = personalizations(standin)["ann@example.com"]["items"]
    assert [(i["product_id"], i["available"]) for i in low_items] == [("p-2", 3)]
    # Each change is mailed once
    assert run_job(shop, back["id"])["sent"] == 0
    assert run_job(shop, low["id"])["sent"] == 0


def test_rate_limited_then_accepted_mails_each_customer_once(
        shop: dict[str, Any], standin: SendGridStandIn) -> None:
    post_all(shop, [wishlist(f"w-{i}", f"c{i}", f"c{i}@example.com", [item("p-1", 10.0)])
                    for i in range(3)])
    job = create_job(shop, notification="REMINDER")
    # Given SendGrid answers 429 (with a reset in 1 s) to the first request
    standin.rate_limit_once(1)
    run = run_job(shop, job["id"], timeout=30)
    # Then the run retried and each customer got exactly one mail
    assert len(standin.requests) == 2 and len(standin.accepted) == 1
    emails = [p["to"][0]["email"] for p in standin.accepted[0]["personalizations"]]
    assert sorted(emails) == ["c0@example.com", "c1@example.com", "c2@example.com"]
    assert run["status"] == "done" and run["sent"] == 3 and run["attempts"] == 2


def _pg(pg_url: str) -> str:
    return pg_url.replace("postgresql+psycopg://", "postgresql://")


def test_two_scheduler_processes_fire_each_slot_exactly_once(
        pg_url: str, redis_url: str, tmp_path: Path) -> None:
    # Given 60 due jobs (and deleted/inactive/unscheduled ones) in one PostgreSQL
    settings = make_settings(pg_url, redis_url)
    runtime = build_runtime(settings)
    tenant = f"sch-{uuid.uuid4().hex[:6]}"
    with runtime.sessions() as session:
        create_tenant(session, tenant)
        session.commit()
    from jobs.contract import JobIn
    from jobs.repository import create_job as store_create

    past = datetime.now(UTC) - timedelta(minutes=3, seconds=10)
    ids, never = [], []
    with runtime.sessions() as session:
        for _ in range(60):
            job = store_create(session, tenant, JobIn.model_validate(
                {"notification": "REMINDER", "schedule": "* * * * *", "template_id": "d-x"}))
            ids.append(job.pk)
        for flags in ({"deleted": True}, {"is_active": False}, {"is_scheduled": False}):
            job = store_create(session, tenant, JobIn.model_validate(
                {"notification": "REMINDER", "schedule": "* * * * *", "template_id": "d-x",
                 **flags}))
            never.append(job.pk)
        # (as if the schedulers had been down over three slots)
        session.execute(update(Job).where(Job.tenant == tenant).values(next_run_at=past))
        session.commit()
    env = {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, "EC_TOKEN_SECRET": SECRET,
           "EC_SCHEDULER_TICK_SECONDS": "1", "LOG_LEVEL": "INFO"}
    started = datetime.now(UTC)
    # When two scheduler processes (the Procfile's command) run side by side
    procs = [Proc(f"scheduler{i}", procfile_command("scheduler"), env, tmp_path) for i in (1, 2)]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with runtime.sessions() as session:
                fired = session.execute(select(JobRun).where(JobRun.tenant == tenant)).scalars().all()
            if len({r.job_pk for r in fired}) >= 60:
                break
            time.sleep(0.5)
        time.sleep(2.5)  # more ticks from both: nothing may fire twice
    finally:
        # a slot that starts later than this may rightly be left to the next scheduler (they
        # tick every second and are about to stop)
        handled_until = datetime.now(UTC) - timedelta(seconds=2)
        codes = [p.stop() for p in procs]
    # Then every due job fired once per slot (the missed slots coalesced into the latest one)
    with runtime.sessions() as session:
        runs = session.execute(select(JobRun).where(JobRun.tenant == tenant)).scalars().all()
    by_job: dict[int, list[JobRun]] = {}
    for r in runs:
        by_job.setdefault(r.job_pk, []).append(r)
    assert set(by_job) == set(ids), "deleted/inactive/unscheduled jobs must never fire"
    slot = started.replace(second=0, microsecond=0)
    for pk in ids:
        times = sorted(r.fire_time for r in by_job[pk])
        assert len(times) == len(set(times))
        # the coalesced slot is the latest minute at or before the first tick, at most once
        assert sum(1 for t in times if t <= slot) == 1, times
        assert len(times) <= 2  # a minute boundary during the test adds one legitimate slot
    # And each run was enqueued once: the notifications queue holds exactly one message per run
    client = redis.Redis.from_url(redis_url)
    assert client.llen(f"dramatiq:{NOTIFY_QUEUE}") == len(runs)
    # And SIGTERM stopped both cleanly
    assert codes == [0, 0], [p.log()[-500:] for p in procs]
    with psycopg.connect(_pg(pg_url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM jobs WHERE tenant = %s AND next_run_at <= %s "
            "AND NOT (pk = ANY(%s))", (tenant, handled_until, never)).fetchone()
    assert row is not None and row[0] == 0
    runtime.close()


def test_price_drop_over_the_procfile_web_persist_notify_and_scheduler_processes(
        pg_url: str, redis_url: str, standin: SendGridStandIn, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    import requests

    from tests.conftest import free_port
    from tests.support.procs import wait_http

    port = free_port()
    env = {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, "EC_TOKEN_SECRET": SECRET,
           "PORT": str(port), "WEB_BIND": "127.0.0.1", "WEB_CONCURRENCY": "1",
           "PERSIST_PROCESSES": "1", "NOTIFY_PROCESSES": "1", "LOG_LEVEL": "INFO",
           "SENDGRID_API_KEY": "SG.e2e-key", "SENDGRID_FROM_EMAIL": "shop@example.com",
           "SENDGRID_API_HOST": standin.url, "EC_SCHEDULER_TICK_SECONDS": "1"}
    release = Proc("release", procfile_command("release"), env, tmp_path)
    assert release.popen.wait(60) == 0, release.log()
    procs = [Proc(n, procfile_command(n), env, tmp_path)
             for n in ("web", "persist", "notify", "scheduler")]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", procs[0])
        out = subprocess.run([str(Path(sys.executable).parent / "eventcollector"), "tenant",
                              "create", f"je-{uuid.uuid4().hex[:6]}", "--json"],
                             env={**os.environ, **env}, capture_output=True, text=True, check=True)
        tenant = json.loads(out.stdout)["tenant"]
        h = {"Authorization": f"Bearer {mint(tenant)}", "X-TWC-Tenant": tenant}
        for e in (wishlist("w-1", "ann", "ann@example.com", [item("p-1", 100.0)]),
                  entity("PRICE", "UPDATE", {"product_id": "p-1", "price": 70.0}, "p-1")):
            assert requests.post(base + "/api/v1/events", json=e, headers=h,
                                 timeout=10).status_code == 201
            time.sleep(0.5)  # let the wishlist be projected before the price
        job = requests.post(base + "/api/v1/jobs", headers=h, timeout=10, json={
            "notification": "PRICE_DROP", "schedule": "* * * * *", "template_id": "d-e2e"}).json()
        # Make its first slot due now (rather than wait for the next minute)
        with psycopg.connect(_pg(pg_url), autocommit=True) as conn:
            conn.execute("UPDATE jobs SET next_run_at = now() - interval '1 second' "
                         "WHERE tenant = %s", (tenant,))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not standin.accepted:
            time.sleep(0.2)
        [body] = standin.accepted
        [p] = body["personalizations"]
        assert p["to"][0]["email"] == "ann@example.com"
        assert [(i["product_id"], i["price"], i["old_price"])
                for i in p["dynamic_template_data"]["items"]] == [("p-1", 70.0, 100.0)]
        runs = requests.get(f"{base}/api/v1/jobs/{job['id']}/runs", headers=h, timeout=10).json()
        assert [(r["trigger"], r["sent"]) for r in runs["runs"]][-1] == ("schedule", 1)
    finally:
        codes = {p.name: p.stop() for p in procs}
    assert codes["scheduler"] == 0
    assert all("SG.e2e-key" not in p.log() for p in procs)
