"""Issue 13, fairness, on real Redis and PostgreSQL: a batch of N events costs N from the bucket
that all web processes share; a batch past the burst is a 413."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from infra.broker.queues import rate_bucket_key
from tests.conftest import SECRET, Caller, free_port, make_settings, mint, order_event
from tests.support.pipeline import _app, _ensure_tenant, _set_limits
from tests.support.procs import Proc, procfile_command, wait_http

pytestmark = pytest.mark.integration


def _batch(caller: Caller, n: int, prefix: str) -> Any:
    return caller.client.post("/api/v1/events/batch", headers=caller.headers(), json={
        "events": [order_event(id=f"{prefix}-{i}") for i in range(n)]})


def test_a_batch_costs_its_events_in_the_bucket_shared_by_web_processes(
        pg_url: str, redis_url: str) -> None:
    # Given two web processes (two runtimes) on one Redis and a tenant with a burst of 10
    # events refilled at one per 100 s
    tenant = f"fb-{uuid.uuid4().hex[:6]}"
    apps = [_app(make_settings(pg_url, redis_url)) for _ in range(2)]
    _ensure_tenant(apps[0][1], tenant)
    _set_limits(apps[0][1], tenant, 0.01, 10)
    a, b = (Caller(app.test_client(), tenant, mint(tenant)) for app, _ in apps)
    client = redis.Redis.from_url(redis_url)
    try:
        # When process A accepts a batch of 4 events
        assert _batch(a, 4, "a").get_json()["accepted"] == 4
        # Then the shared bucket holds 6 (the old code charged 1: 9)
        assert float(client.hget(rate_bucket_key(tenant), "tokens")) == pytest.approx(6, abs=0.05)
        # And process B cannot fit a batch of 7 (429, nothing accepted) but fits 6
        refused = _batch(b, 7, "b")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert client.exists(f"ec:intake:{tenant}:b-0") == 0
        assert _batch(b, 6, "c").get_json()["accepted"] == 6
        # And the bucket is now empty for both processes
        assert a.post_event(order_event(id="d")).status_code == 429
    finally:
        for _, runtime in apps:
            runtime.close()
        client.close()


def test_a_batch_past_the_burst_is_a_413_on_redis(pg_url: str, redis_url: str) -> None:
    # Given a tenant with a burst of 10
    tenant = f"fb-{uuid.uuid4().hex[:6]}"
    app, runtime = _app(make_settings(pg_url, redis_url))
    _ensure_tenant(runtime, tenant)
    _set_limits(runtime, tenant, 0.01, 10)
    caller = Caller(app.test_client(), tenant, mint(tenant))
    client = redis.Redis.from_url(redis_url)
    try:
        # When it posts 11 events in one batch: a 413 naming the burst and the size, not a 429
        answer = _batch(caller, 11, "x")
        assert answer.status_code == 413, answer.json
        assert answer.json["error"]["code"] == "batch_exceeds_burst"
        assert "11 events" in answer.json["error"]["message"]
        assert "at most 10" in answer.json["error"]["message"]
        assert client.exists(f"ec:intake:{tenant}:x-0") == 0
        # And the request cost one, so 9 events still fit
        assert _batch(caller, 9, "y").get_json()["accepted"] == 9
    finally:
        runtime.close()
        client.close()


# --- the token endpoint under attack, on the Procfile's web process ---------------------------

def _tenant(pg_url: str) -> dict[str, str]:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "eventcollector"), "tenant", "create",
         f"tf-{uuid.uuid4().hex[:6]}", "--json"],
        env={**os.environ, "DATABASE_URL": pg_url, "EC_TOKEN_SECRET": SECRET},
        capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


METRICS_TOKEN = "fair-metrics-" + "f" * 24


@contextmanager
def _web(pg_url: str, redis_url: str, tmp_path: Path, **env: str) -> Iterator[str]:
    """The Procfile's web line (whatever worker class it names), two workers, behind one
    trusted proxy: the test sets X-Forwarded-For as a platform router would."""
    port = free_port()
    full = {"DATABASE_URL": pg_url.replace("postgresql+psycopg://", "postgres://"),
            "REDIS_URL": redis_url, "EC_TOKEN_SECRET": SECRET, "PORT": str(port),
            "WEB_BIND": "127.0.0.1", "WEB_CONCURRENCY": "2", "LOG_LEVEL": "WARNING",
            "EC_TRUSTED_PROXY_COUNT": "1", "EC_METRICS_TOKEN": METRICS_TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), **env}
    web = Proc("web", procfile_command("web"), full, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", web)
        yield base
        assert web.alive(), web.log()[-3000:]
    finally:
        web.stop()


def _token(session: requests.Session, base: str, creds: dict[str, str], secret: str | None = None,
           source: str = "198.51.100.2") -> requests.Response:
    return session.post(base + "/api/v1/auth/token", headers={"X-Forwarded-For": source},
                        data={"grant_type": "client_credentials",
                              "client_id": creds["client_id"],
                              "client_secret": secret or creds["client_secret"]}, timeout=30)


def _checks(base: str) -> dict[str, float]:
    """ec_token_checks_total by outcome, summed over the web workers (/metrics)."""
    text = requests.get(base + "/metrics", timeout=10,
                        headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^ec_token_checks_total\{outcome="([a-z_]+)"\} ([0-9.e+]+)$', text, re.M)}


def test_failed_secret_checks_are_limited_per_client_across_web_workers(
        pg_url: str, redis_url: str, tmp_path: Path) -> None:
    # Given the Procfile's web process (two workers, one Redis) with the default limits
    victim, bystander = _tenant(pg_url), _tenant(pg_url)
    with _web(pg_url, redis_url, tmp_path) as base:
        attacker = requests.Session()
        # When one address sends 14 wrong secrets for the victim's client id (new connections
        # each time, so both workers answer)
        answers = [_token(requests.Session(), base, victim, "wrong", "203.0.113.7").status_code
                   for _ in range(14)]
        # Then 10 (EC_TOKEN_FAILURES_PER_CLIENT) are 401 and the rest 429 with Retry-After
        assert answers == [401] * 10 + [429] * 4, answers
        limited = _token(attacker, base, victim, "wrong", "203.0.113.7")
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"] == "temporarily_unavailable"  # the OAuth form
        # And another tenant's client, from another address, gets its token
        assert _token(requests.Session(), base, bystander).status_code == 200
        checks = _checks(base)
        assert checks.get("too_many_attempts") == 5 and checks.get("ok") == 1, checks


def test_a_flood_of_wrong_secrets_does_not_stop_other_clients(
        pg_url: str, redis_url: str, tmp_path: Path) -> None:
    # Given the Procfile's web process with no failure limits (the worst case: every wrong
    # secret reaches the secret check, as from a flood spread over many addresses)
    victim, other = _tenant(pg_url), _tenant(pg_url)
    with _web(pg_url, redis_url, tmp_path, EC_TOKEN_FAILURES_PER_CLIENT="0",
              EC_TOKEN_FAILURES_PER_SOURCE="0") as base:
        # (the victim's client got a token once since the upgrade: its fingerprint is written)
        assert _token(requests.Session(), base, victim).status_code == 200
        stop = threading.Event()
        flood: list[int] = []

        def attack() -> None:
            session = requests.Session()
            while not stop.is_set():
                flood.append(_token(session, base, victim, f"wrong-{len(flood)}",
                                    "203.0.113.7").status_code)

        attackers = [threading.Thread(target=attack) for _ in range(8)]
        for t in attackers:
            t.start()
        try:
            # When, during the flood, another client asks for tokens and uses them
            session = requests.Session()
            answers: list[int] = []
            while len(flood) < 200:  # let the flood run before (and while) the client asks
                time.sleep(0.05)
            for i in range(10):
                got = _token(session, base, other)
                answers.append(got.status_code)
                headers = {"Authorization": f"Bearer {got.json().get('access_token')}",
                           "X-TWC-Tenant": other["tenant"]}
                answers.append(session.post(base + "/api/v1/events", headers=headers,
                                            json=order_event(id=f"f-{i}"),
                                            timeout=30).status_code)
                answers.append(session.get(base + "/api/v1/events/f-0", headers=headers,
                                           timeout=30).status_code)
            during = len(flood)
        finally:
            stop.set()
            for t in attackers:
                t.join(30)
        # Then every one of its requests succeeded
        assert answers == [200, 201, 200] * 10, answers
        # And the flood was refused all along (no 5xx, no token), and was running throughout
        assert set(flood) == {401}, sorted(set(flood))
        assert during > 200
        # And every wrong secret was refused by its fingerprint, without the slow hash: the
        # only slow checks were the successful ones (the old code ran scrypt for each)
        checks = _checks(base)
        assert checks.get("refused_fast") == len(flood), checks
        assert checks.get("refused_slow", 0) == 0 and checks.get("busy", 0) == 0, checks
        assert checks.get("ok") == 11, checks
        print(f"TOKEN FLOOD: {len(flood)} wrong secrets refused, "
              f"{len(answers)} ordinary requests all succeeded")


def test_migration_0010_on_postgresql(redis_url: str) -> None:
    # Given a PostgreSQL database at 0007 holding a client (no fingerprint column yet)
    import psycopg
    from sqlalchemy import text

    from infra.db import make_engine, upgrade
    from tenants.auth import hash_secret, secret_fingerprint
    from tests import conftest

    name = f"ec_mig_{uuid.uuid4().hex[:8]}"
    admin = conftest.PG_ADMIN_URL
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = "postgresql+psycopg://" + admin.split("://", 1)[1].rsplit("/", 1)[0] + f"/{name}"
    secret = "an-existing-client-secret-0123456789"
    try:
        upgrade(url, "0007")
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (name, created_at, subscriptions_version, "
                              "external_id) VALUES ('old', now(), 0, 'ec-x')"))
            conn.execute(text("INSERT INTO api_clients (client_id, tenant, secret_hash, scopes, "
                              "active, created_at) VALUES ('ec_old', 'old', :h, 'events:read', "
                              "true, now())"), {"h": hash_secret(secret)})
        # When it is upgraded: the column is there, empty
        upgrade(url)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT secret_fingerprint FROM api_clients")).all() == \
                [(None,)]
        # Then the client still gets a token, which writes its fingerprint
        app, runtime = _app(make_settings(url, redis_url))
        try:
            client = app.test_client()
            form = {"grant_type": "client_credentials", "client_id": "ec_old"}
            assert client.post("/api/v1/auth/token",
                               data={**form, "client_secret": "no"}).status_code == 401
            assert client.post("/api/v1/auth/token",
                               data={**form, "client_secret": secret}).status_code == 200
        finally:
            runtime.close()
        with engine.begin() as conn:
            assert conn.execute(text("SELECT secret_fingerprint FROM api_clients")).scalar() == \
                secret_fingerprint(SECRET, secret)
        # And it downgrades to 0007 (the column goes) and back
        from alembic import command
        from alembic.config import Config

        from infra.db import MIGRATIONS_DIR

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", url)
        command.downgrade(cfg, "0007")
        upgrade(url)
        engine.dispose()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
