"""The event pipeline over real PostgreSQL and Redis with real Dramatiq workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dramatiq
import psycopg
import pytest
import redis
import requests
from sqlalchemy import select

from config.runtime import build_runtime
from events.models import EventRecord
from infra.broker.queues import PERSIST_QUEUE
from tenants.auth import create_tenant
from tests.conftest import SECRET, Caller, as_posted, free_port, make_settings, mint, order_event
from tests.integration.procs import Proc, RedisServer, procfile_command, wait_http

pytestmark = pytest.mark.integration


def _app(settings: Any) -> Any:
    from api.app import create_app

    runtime = build_runtime(settings)
    app = create_app(runtime=runtime)
    app.testing = True
    return app, runtime


def _ensure_tenant(runtime: Any, name: str) -> None:
    from tenants.auth import tenant_exists

    with runtime.sessions() as session:
        if not tenant_exists(session, name):
            create_tenant(session, name)
        session.commit()


def _stored(runtime: Any, tenant: str) -> list[str]:
    with runtime.sessions() as session:
        return list(session.execute(
            select(EventRecord.event_id).where(EventRecord.tenant == tenant)).scalars())


def test_redis_intake_feeds_a_real_dramatiq_worker_into_postgres(pg_url: str,
                                                                  redis_url: str) -> None:
    # Given an app and an in-process Dramatiq worker on real Redis and PostgreSQL
    from workers.main import declare_actors

    app, runtime = _app(make_settings(pg_url, redis_url))
    declare_actors(runtime)
    _ensure_tenant(runtime, "it-acme")
    caller = Caller(app.test_client(), "it-acme", mint("it-acme"))
    worker = dramatiq.Worker(runtime.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        # When a single event and a batch are posted, one of them a retry
        single = caller.post_event(order_event(id=f"single-{uuid.uuid4().hex}"))
        retry = caller.post_event(order_event(id=single.json["id"]))
        batch = caller.client.post("/api/v1/events/batch", headers=caller.headers(), json={
            "events": [order_event(entity_id=f"b-{i}") for i in range(50)] + [{"bad": 1}]})
        # Then read-your-writes works before the worker runs, and the worker stores them all
        assert single.status_code == 201, single.json
        assert retry.status_code == 200 and retry.json == single.json
        # (accepted: the intake's record; or already stored if the worker was quick)
        assert as_posted(caller.get(f"/api/v1/events/{single.json['id']}").json) == single.json
        assert batch.status_code == 200 and batch.json["accepted"] == 50
        assert batch.json["rejected"] == 1
        runtime.broker.join(PERSIST_QUEUE, timeout=20_000)
        worker.join()
        ids = _stored(runtime, "it-acme")
        expected = {single.json["id"]} | {
            r["id"] for r in batch.json["results"] if r["status"] == 201}
        assert set(ids) >= expected and len(ids) == len(set(ids))
        listed = caller.get("/api/v1/events", query_string={"per_page": 100}).json
        assert {e["id"] for e in listed["events"]} >= expected
        assert as_posted(caller.get(f"/api/v1/events/{single.json['id']}").json,
                         "stored") == single.json
    finally:
        worker.stop()
        runtime.close()


def test_redis_down_answers_503_and_enqueues_nothing_then_recovers(pg_url: str,
                                                                    tmp_path: Path) -> None:
    # Given an app on a private Redis that is then stopped
    server = RedisServer(free_port(), tmp_path)
    server.start()
    app, runtime = _app(make_settings(pg_url, server.url))
    _ensure_tenant(runtime, "it-down")
    caller = Caller(app.test_client(), "it-down", mint("it-down"))
    try:
        assert caller.post_event(order_event()).status_code == 201
        server.stop()
        # When events are posted while Redis is down
        down = [caller.post_event(order_event(id=f"down-{i}")) for i in range(3)]
        # Then each answer is 503 with Retry-After and the error shape, never 201
        for r in down:
            assert r.status_code == 503
            assert r.headers["Retry-After"].isdigit()
            assert r.json["error"]["code"] == "unavailable"
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 503 and ready.json["checks"]["broker"] is False
        # And when Redis is back the same app accepts again by itself
        server.start()
        deadline = time.monotonic() + 15
        while True:
            again = caller.post_event(order_event(id="down-0"))
            if again.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert again.status_code == 201
        # Nothing from the outage is in the (fresh) broker: exactly the one message just sent
        client = redis.Redis(port=server.port)
        assert client.llen(f"dramatiq:{PERSIST_QUEUE}") == 1
        assert client.get("ec:intake:it-down:down-1") is None
    finally:
        runtime.close()
        server.stop()


def test_persist_actor_retries_until_the_database_exists(redis_url: str) -> None:
    # Given a worker whose database does not exist yet
    from infra.db import upgrade
    from workers.main import declare_actors

    name = f"ec_late_{uuid.uuid4().hex[:8]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    late_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    app, runtime = _app(make_settings(late_url, redis_url))
    declare_actors(runtime)
    worker = dramatiq.Worker(runtime.broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        from events.contract import EventIn
        from events.service import prepare
        from infra.broker.intake import Pending

        event = EventIn.model_validate(order_event(id="late-1"))
        pending: Pending = prepare(event, datetime.now(UTC))
        runtime.intake.accept("it-late", [pending])
        time.sleep(2)  # When the worker has failed a few times against the missing database
        # and the database then appears with its schema at once (built under another name and
        # renamed: a worker retrying into a half-migrated database would rightly give up)
        building = f"{name}_build"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{building}"')
        upgrade(late_url.replace(name, building))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        # Then the retried message lands once the database is there
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _stored(runtime, "it-late"):
            time.sleep(0.3)
        assert _stored(runtime, "it-late") == ["late-1"]
    finally:
        worker.stop()
        runtime.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP DATABASE IF EXISTS "{name}_build" WITH (FORCE)')


@pytest.fixture
def procfile_stack(pg_url: str, redis_url: str, tmp_path: Path) -> Any:
    """The Procfile's release, web and persist commands on PostgreSQL and Redis."""
    port = free_port()
    env = {"DATABASE_URL": pg_url.replace("postgresql+psycopg://", "postgres://"),
           "REDIS_URL": redis_url, "EC_TOKEN_SECRET": SECRET, "PORT": str(port),
           "WEB_BIND": "127.0.0.1", "WEB_CONCURRENCY": "2", "PERSIST_PROCESSES": "1",
           "PERSIST_THREADS": "4", "LOG_LEVEL": "WARNING"}
    release = Proc("release", procfile_command("release"), env, tmp_path)
    assert release.popen.wait(60) == 0, release.log()
    web = Proc("web", procfile_command("web"), env, tmp_path)
    persist = Proc("persist", procfile_command("persist"), env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", web)
        yield base, web, persist
    finally:
        assert web.stop() is not None
        persist.stop()


def _count(pg_url: str, tenant: str) -> tuple[int, int]:
    url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events WHERE tenant = %s", (tenant,)
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_thousand_events_through_procfile_web_and_persist_stored_exactly_once(
    procfile_stack: Any, pg_url: str
) -> None:
    base, web, persist = procfile_stack
    # Given a tenant created with the CLI and a token from the token endpoint
    env = {"DATABASE_URL": pg_url, "EC_TOKEN_SECRET": SECRET}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "eventcollector"), "tenant", "create",
         f"it-{uuid.uuid4().hex[:6]}", "--json"],
        env={**os.environ, **env}, capture_output=True, text=True, check=True)
    creds = json.loads(out.stdout)
    token = requests.post(base + "/api/v1/auth/token", data={
        "grant_type": "client_credentials", "client_id": creds["client_id"],
        "client_secret": creds["client_secret"]}, timeout=10).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "X-TWC-Tenant": creds["tenant"]}
    session = requests.Session()

    def post(i: int) -> tuple[int, str]:
        r = session.post(base + "/api/v1/events", json=order_event(id=f"ev-{i:04d}"),
                         headers=headers, timeout=10)
        return r.status_code, r.json()["id"]

    # When 1,000 events are posted concurrently, and 100 of them retried
    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(post, range(1000)))
        retries = list(pool.map(post, range(0, 1000, 10)))
    # Then every first post was accepted, every retry answered 200 with the same id
    assert [s for s, _ in first] == [201] * 1000
    assert {s for s, _ in retries} == {200}
    # And the persist pool stores each exactly once
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and _count(pg_url, creds["tenant"])[0] < 1000:
        time.sleep(0.5)
    assert _count(pg_url, creds["tenant"]) == (1000, 1000), persist.log()[-3000:]
    listed = session.get(base + "/api/v1/events", headers=headers,
                         params={"per_page": 100}, timeout=10).json()
    assert listed["total"] == 1000 and len(listed["events"]) == 100
    assert persist.alive() and web.alive()


def test_pagination_on_postgres_skips_and_repeats_nothing_while_events_arrive(
    pg_url: str, redis_url: str
) -> None:
    # Given four persist threads storing single-event messages concurrently
    from workers.main import declare_actors

    app, runtime = _app(make_settings(pg_url, redis_url))
    declare_actors(runtime)
    _ensure_tenant(runtime, "it-page")
    caller = Caller(app.test_client(), "it-page", mint("it-page"))
    worker = dramatiq.Worker(runtime.broker, worker_threads=4, worker_timeout=20)
    worker.start()
    import threading

    posted: list[str] = []
    done = threading.Event()

    def writer() -> None:
        client = Caller(app.test_client(), "it-page", caller.token)
        for i in range(300):
            r = client.post_event(order_event(entity_id=f"p-{i}"))
            posted.append(r.json["id"])
        done.set()

    try:
        thread = threading.Thread(target=writer)
        thread.start()
        # When a reader pages through with per_page=7 while they arrive, resuming at the end
        seen: list[str] = []
        cursor: int | None = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            params: dict[str, Any] = {"per_page": 7}
            if cursor is not None:
                params["from_id"] = cursor
            page = caller.get("/api/v1/events", query_string=params).json
            seen.extend(e["id"] for e in page["events"])
            if page["next_from_id"] is not None:
                cursor = page["next_from_id"]
            elif done.is_set() and runtime.broker.do_qsize(PERSIST_QUEUE) == 0 and \
                    len(seen) >= len(posted):
                break
            else:
                time.sleep(0.05)
        thread.join()
        # Then it saw every event exactly once, in storage order
        assert len(seen) == len(set(seen)) == 300
        assert set(seen) == set(posted)
        with runtime.sessions() as session:
            in_order = list(session.execute(
                select(EventRecord.event_id).where(EventRecord.tenant == "it-page")
                .order_by(EventRecord.seq)).scalars())
        assert seen == in_order
    finally:
        worker.stop()
        runtime.close()


def _set_limits(runtime: Any, tenant: str, per_second: float, burst: int) -> None:
    from tenants.models import Tenant

    with runtime.sessions() as session:
        session.query(Tenant).filter(Tenant.name == tenant).update(
            {Tenant.rate_per_second: per_second, Tenant.rate_burst: burst})
        session.commit()


def test_the_rate_limit_is_shared_by_web_processes_and_costs_no_extra_round_trip(
        pg_url: str, tmp_path: Path) -> None:
    # Given two web processes (two runtimes) on one private Redis, and a tenant allowed a burst
    # of 4 requests refilled at one per 100 s; another tenant with the default limits
    server = RedisServer(free_port(), tmp_path)
    server.start()
    tenant, other = f"rl-{uuid.uuid4().hex[:6]}", f"rl-{uuid.uuid4().hex[:6]}"
    apps = [_app(make_settings(pg_url, server.url)) for _ in range(2)]
    for name in (tenant, other):
        _ensure_tenant(apps[0][1], name)
    _set_limits(apps[0][1], tenant, 0.01, 4)
    callers = [Caller(app.test_client(), tenant, mint(tenant)) for app, _ in apps]
    stats = redis.Redis.from_url(server.url)
    try:
        for app, _ in apps:  # each process loads its script once
            warm = Caller(app.test_client(), other, mint(other))
            assert warm.post_event(order_event()).status_code == 201
        stats.config_resetstat()
        # When five single events are posted, alternating between the processes
        answers = [callers[i % 2].post_event(order_event(id=f"rl-{i}")) for i in range(5)]
        # Then the first four are accepted and the fifth is a 429 with Retry-After
        assert [a.status_code for a in answers] == [201, 201, 201, 201, 429]
        limited = answers[4]
        assert limited.json["error"]["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        # And each POST cost one Redis call: the charge (HMGET of the bucket) rides in the
        # intake's script (commands a script runs are counted too, hence the list)
        commands = {k.removeprefix("cmdstat_"): v["calls"] for k, v in
                    stats.info("commandstats").items()}
        assert commands.get("evalsha") == 5 and commands.get("hmget") == 5, commands
        in_scripts = {"time", "hmget", "hset", "expire", "get", "set", "rpush"}
        assert set(commands) <= in_scripts | {"evalsha", "info", "config|resetstat"}, commands
        # And the refused event was not accepted (reads are charged too, so ask Redis)
        assert stats.exists(f"ec:intake:{tenant}:rl-3") == 1
        assert stats.exists(f"ec:intake:{tenant}:rl-4") == 0
        assert stats.llen(f"dramatiq:{PERSIST_QUEUE}") == 4 + 2  # + the two warm-up events
        # And a batch is refused too (every request costs at least one)
        batch = callers[1].client.post("/api/v1/events/batch", headers=callers[1].headers(),
                                       json={"events": [order_event(id="rl-b")]})
        assert batch.status_code == 429, batch.json
        # And once refused, a process refuses the tenant until Retry-After without asking Redis
        stats.config_resetstat()
        again = callers[0].client.post("/api/v1/events/batch", headers=callers[0].headers(),
                                       json={"events": [order_event(id="rl-c")] * 2})
        assert again.status_code == 429 and int(again.headers["Retry-After"]) >= 1
        assert "cmdstat_evalsha" not in stats.info("commandstats")
        # And another tenant is not affected
        fine = Caller(apps[0][0].test_client(), other, mint(other))
        assert fine.post_event(order_event(id="rl-other")).status_code == 201
    finally:
        for _, runtime in apps:
            runtime.close()
        server.stop()


def test_requests_that_never_reach_the_intake_are_charged_too(pg_url: str, redis_url: str) -> None:
    # Given a tenant allowed a burst of 2 requests
    tenant = f"rl-{uuid.uuid4().hex[:6]}"
    app, runtime = _app(make_settings(pg_url, redis_url))
    _ensure_tenant(runtime, tenant)
    _set_limits(runtime, tenant, 0.01, 2)
    caller = Caller(app.test_client(), tenant, mint(tenant))
    try:
        # When two invalid bodies are posted (each a 400, not a 429)
        for body in ({"bad": 1}, {"events": "no"}):
            assert caller.client.post("/api/v1/events", headers=caller.headers(),
                                      json=body).status_code == 400
        # Then the bucket is empty: a valid event is refused
        assert caller.post_event(order_event()).status_code == 429
        # And from then on even an invalid body gets the 429 (it is not read)
        assert caller.client.post("/api/v1/events", headers=caller.headers(),
                                  json={"bad": 1}).status_code == 429
    finally:
        runtime.close()
