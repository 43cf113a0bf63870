"""Operator tools over real Redis and PostgreSQL: dead letters, metrics, readiness."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import requests

from cli.main import main as cli
from config.runtime import build_runtime
from infra.broker.queues import PERSIST_ACTOR, PERSIST_QUEUE
from tests.conftest import SECRET, make_settings
from tests.support.procs import Proc, procfile_command

pytestmark = pytest.mark.integration
METRICS_TOKEN = "metrics-" + "t" * 24


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
    # as new: its retry count and traceback are gone (Message.copy would have kept them)
    [raw] = runtime.redis_client.hvals(f"dramatiq:{PERSIST_QUEUE}.msgs")
    requeued = dramatiq.Message.decode(raw)
    assert "retries" not in requeued.options and "traceback" not in requeued.options
    # And purge needs --yes, then empties the dead letters
    runtime.redis_client.zadd(f"dramatiq:{PERSIST_QUEUE}.XQ", {"x": 1})
    assert cli(["dlq", "purge", "--queue", "persist"]) == 1
    assert cli(["dlq", "purge", "--queue", "persist", "--yes"]) == 0
    assert runtime.redis_client.zcard(f"dramatiq:{PERSIST_QUEUE}.XQ") == 0
    runtime.close()


def test_metrics_report_requests_ingest_outcomes_and_queue_depth(
        pg_url: str, redis_url: str) -> None:
    from api.app import create_app
    from tenants.auth import create_tenant, tenant_exists
    from tests.conftest import Caller, mint, order_event

    runtime = build_runtime(make_settings(pg_url, redis_url, metrics_token=METRICS_TOKEN))
    with runtime.sessions() as session:
        if not tenant_exists(session, "metrics-t"):
            create_tenant(session, "metrics-t")
        session.commit()
    app = create_app(runtime=runtime)
    caller = Caller(app.test_client(), "metrics-t", mint("metrics-t"))
    assert caller.post_event(order_event()).status_code == 201
    assert caller.post_event({"bad": 1}).status_code == 400
    resp = caller.client.get("/metrics", headers={"X-Request-ID": "req-123",
                                                  "Authorization": f"Bearer {METRICS_TOKEN}"})
    text: Any = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.headers["X-Request-ID"] == "req-123"
    assert 'ec_events_ingested_total{outcome="accepted"}' in text
    assert 'ec_events_ingested_total{outcome="rejected"}' in text
    assert 'ec_queue_depth{queue="persist"} 1.0' in text
    assert 'ec_dead_letters{queue="persist"}' in text
    assert 'ec_http_requests_total{method="POST",route="/api/v1/events",status="201"}' in text
    runtime.close()


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples called ``name`` whose labels include ``labels`` (None if none)."""
    from prometheus_client.parser import text_string_to_metric_families

    values = [s.value for family in text_string_to_metric_families(text) for s in family.samples
              if s.name == name and labels.items() <= s.labels.items()]
    return sum(values) if values else None


def test_persist_pool_from_the_procfile_exports_dramatiq_metrics_per_actor(
        pg_url: str, redis_url: str, tmp_path: Path) -> None:
    from api.app import create_app
    from tenants.auth import create_tenant, tenant_exists
    from tests.conftest import Caller, free_port, mint, order_event

    # Given the Procfile's persist pool, two processes, with its metrics port set
    port = free_port()
    env = {"DATABASE_URL": pg_url.replace("postgresql+psycopg://", "postgres://"),
           "REDIS_URL": redis_url, "EC_TOKEN_SECRET": SECRET, "PERSIST_PROCESSES": "2",
           "PERSIST_THREADS": "2", "PERSIST_METRICS_PORT": str(port),
           "dramatiq_prom_host": "127.0.0.1", "TMPDIR": str(tmp_path), "LOG_LEVEL": "WARNING"}
    persist = Proc("persist", procfile_command("persist"), env, tmp_path)
    runtime = build_runtime(make_settings(pg_url, redis_url, metrics_token=METRICS_TOKEN))
    try:
        with runtime.sessions() as session:
            if not tenant_exists(session, "prom-t"):
                create_tenant(session, "prom-t")
            session.commit()
        app = create_app(runtime=runtime)
        caller = Caller(app.test_client(), "prom-t", mint("prom-t"))
        # When 12 events are posted and one message with data the actor cannot take is enqueued
        for i in range(12):
            assert caller.post_event(order_event(id=f"prom-{i}")).status_code == 201
        runtime.broker.enqueue(dramatiq.Message(
            queue_name=PERSIST_QUEUE, actor_name=PERSIST_ACTOR,
            args=("prom-t", [{"no": "id"}]), kwargs={}, options={}))
        # Then the pool's exporter, scraped over HTTP, counts all 13 messages for the persist
        # actor (summed over both processes), the error and the dead letter
        url = f"http://127.0.0.1:{port}/metrics"
        labels = {"queue_name": PERSIST_QUEUE, "actor_name": PERSIST_ACTOR}
        text, total = "", None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and total != 13:
            assert persist.alive(), persist.log()
            try:
                text = requests.get(url, timeout=2).text
            except requests.RequestException:
                text = ""
            total = _sample(text, "dramatiq_messages_total", **labels) if text else None
            time.sleep(0.3)
        assert total == 13, (text[-2000:], persist.log()[-3000:])
        assert _sample(text, "dramatiq_message_errors_total", **labels) == 1
        assert _sample(text, "dramatiq_message_rejects_total", **labels) == 1
        assert _sample(text, "dramatiq_message_duration_milliseconds_count", **labels) == 13
        assert _sample(text, "dramatiq_messages_inprogress", **labels) == 0
        # And only this pool's queue is in it (each run of a pool has its own metrics directory)
        from prometheus_client.parser import text_string_to_metric_families

        queues = {s.labels.get("queue_name") for f in text_string_to_metric_families(text)
                  for s in f.samples if s.name.startswith("dramatiq_")}
        assert queues == {PERSIST_QUEUE}
        assert [p.name for p in tmp_path.glob("ec-dramatiq-persist-*")] == [
            f"ec-dramatiq-persist-{persist.popen.pid}"]
        # And the web's /metrics shows the queue drained and the dead letter
        resp = caller.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        body = resp.get_data(as_text=True)
        assert _sample(body, "ec_queue_depth", queue=PERSIST_QUEUE) == 0
        assert _sample(body, "ec_dead_letters", queue=PERSIST_QUEUE) == 1
        assert _sample(body, "ec_dead_letters", queue="deliveries") == 0
        assert persist.alive()
    finally:
        assert persist.stop() is not None
        runtime.close()


def test_a_pool_signalled_as_a_group_stops_gracefully(pg_url: str, redis_url: str,
                                                      tmp_path: Path) -> None:
    # Given the Procfile's persist pool (two worker processes), ready
    env = {"DATABASE_URL": pg_url.replace("postgresql+psycopg://", "postgres://"),
           "REDIS_URL": redis_url, "EC_TOKEN_SECRET": SECRET, "PERSIST_PROCESSES": "2",
           "PERSIST_THREADS": "2", "PERSIST_METRICS_PORT": "0", "TMPDIR": str(tmp_path),
           "LOG_LEVEL": "INFO"}
    persist = Proc("persist", procfile_command("persist"), env, tmp_path)
    deadline = time.monotonic() + 60
    while persist.log().count("Worker process is ready for action") < 2:
        assert persist.alive() and time.monotonic() < deadline, persist.log()[-3000:]
        time.sleep(0.2)
    # When SIGTERM reaches the whole process group, as a platform stopping a dyno sends it
    # (each worker gets it twice: directly, and forwarded by dramatiq's parent process)
    os.killpg(persist.popen.pid, signal.SIGTERM)
    code = persist.popen.wait(40)
    log = persist.log()
    # Then the workers stop gracefully (finishing their messages), not killed by the repeat
    assert "Killing worker process" not in log, log[-3000:]
    assert log.count("Stopping worker process") == 2, log[-3000:]
    assert code == 0, log[-3000:]
