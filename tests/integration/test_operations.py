"""Operator tools over real Redis and PostgreSQL: dead letters, metrics, readiness."""

from __future__ import annotations

import json
import time
from typing import Any

import dramatiq
import pytest

from broker.queues import PERSIST_ACTOR, PERSIST_QUEUE
from cli.main import main as cli
from config.runtime import build_runtime
from tests.conftest import SECRET, make_settings

pytestmark = pytest.mark.integration


def test_dead_letters_can_be_listed_retried_and_purged(
        pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Given a persist message with data the actor cannot take (dead-lettered at once)
    from workers.main import declare_actors

    runtime = build_runtime(make_settings(pg_url, redis_url))
    declare_actors(runtime)
    worker = dramatiq.Worker(runtime.broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        runtime.broker.enqueue(dramatiq.Message(
            queue_name=PERSIST_QUEUE, actor_name=PERSIST_ACTOR,
            args=("dlq-tenant", [{"no": "id", "secret-ish": "x" * 10}]), kwargs={}, options={}))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and \
                runtime.redis_client.zcard(f"dramatiq:{PERSIST_QUEUE}.XQ") == 0:
            time.sleep(0.1)
    finally:
        worker.stop()
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("EC_TOKEN_SECRET", SECRET)
    # When an operator lists them
    assert cli(["dlq", "list", "--queue", "persist"]) == 0
    out = capsys.readouterr()
    [line] = [json.loads(x) for x in out.out.splitlines() if x.strip()]
    # Then the dead letter is shown with its actor and a summary, not the event bodies
    assert line["actor"] == PERSIST_ACTOR and line["queue"] == PERSIST_QUEUE
    assert line["args"][0] == "dlq-tenant" and line["args"][1]["events"] == 1
    assert "xxxxxxxxxx" not in out.out
    assert "1 dead-lettered" in out.err
    # And a retry puts it back on the queue (and out of the dead letters)
    assert cli(["dlq", "retry", "--queue", "persist"]) == 0
    assert runtime.redis_client.zcard(f"dramatiq:{PERSIST_QUEUE}.XQ") == 0
    assert runtime.redis_client.llen(f"dramatiq:{PERSIST_QUEUE}") == 1
    # And purge needs --yes, then empties the dead letters
    runtime.redis_client.zadd(f"dramatiq:{PERSIST_QUEUE}.XQ", {"x": 1})
    assert cli(["dlq", "purge", "--queue", "persist"]) == 1
    assert cli(["dlq", "purge", "--queue", "persist", "--yes"]) == 0
    assert runtime.redis_client.zcard(f"dramatiq:{PERSIST_QUEUE}.XQ") == 0
    runtime.close()


def test_metrics_report_requests_ingest_outcomes_and_queue_depth(
        pg_url: str, redis_url: str) -> None:
    from api.app import create_app
    from store.auth import create_tenant, tenant_exists
    from tests.conftest import Caller, mint, order_event

    runtime = build_runtime(make_settings(pg_url, redis_url))
    with runtime.sessions() as session:
        if not tenant_exists(session, "metrics-t"):
            create_tenant(session, "metrics-t")
    app = create_app(runtime=runtime)
    caller = Caller(app.test_client(), "metrics-t", mint("metrics-t"))
    assert caller.post_event(order_event()).status_code == 201
    assert caller.post_event({"bad": 1}).status_code == 400
    resp = caller.client.get("/metrics", headers={"X-Request-ID": "req-123"})
    text: Any = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.headers["X-Request-ID"] == "req-123"
    assert 'ec_events_ingested_total{outcome="accepted"}' in text
    assert 'ec_events_ingested_total{outcome="rejected"}' in text
    assert 'ec_queue_depth{queue="persist"} 1.0' in text
    assert 'ec_dead_letters{queue="persist"}' in text
    assert 'ec_http_requests_total{method="POST",route="/api/v1/events",status="201"}' in text
    runtime.close()
