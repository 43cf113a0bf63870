"""Issue 13, fairness, on real Redis and PostgreSQL: a batch of N events costs N from the bucket
that all web processes share; a batch past the burst is a 413."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from broker.ratelimit import bucket_key
from tests.conftest import Caller, make_settings, mint, order_event
from tests.integration.test_pipeline import _app, _ensure_tenant, _set_limits

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
        assert float(client.hget(bucket_key(tenant), "tokens")) == pytest.approx(6, abs=0.05)
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
