"""The quarantine on real PostgreSQL, Redis, a Dramatiq worker, moto (real boto3) and the CLI.

Validation and the schema agree (tests/unit/test_limits.py), so to make the database refuse a
row these tests change their own private database the way a schema drift would: a column
narrowed, an index no entry may exceed. Each test gets a fresh database of its own, migrated,
dropped at the end.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import dramatiq
import psycopg
import pytest
from sqlalchemy import text

from config.runtime import build_runtime
from infra.broker.queues import DELIVER_QUEUE, PERSIST_QUEUE
from tenants.auth import create_tenant
from tenants.aws_identity import allow_platform_credentials
from tests.conftest import (
    PG_ADMIN_URL,
    SECRET,
    Caller,
    make_settings,
    migrated_database,
    mint,
    order_event,
)
from tests.support.aws import MotoServer
from tests.support.migration_rows import check_migration_0006

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_pg(pg_url: str) -> Iterator[str]:
    """A database of this test's own (pg_url first: PostgreSQL is there), migrated."""
    with migrated_database("ec_test_q") as url:
        yield url


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def stack(private_pg: str, redis_url: str, moto: MotoServer,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The app and in-process persist + deliver workers (a real Dramatiq worker on Redis) on the
    private database, delivering to moto."""
    from api.app import create_app
    from workers.main import declare_actors

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", moto.url)):
        monkeypatch.setenv(name, value)
    settings = make_settings(private_pg, redis_url, delivery_retry_schedule=(0.2, 0.4),
                             aws_endpoint_sqs=moto.url, aws_endpoint_sns=moto.url)
    runtime = build_runtime(settings)
    declare_actors(runtime)
    tenant = f"q-{uuid.uuid4().hex[:6]}"
    with runtime.sessions() as session:
        create_tenant(session, tenant)
        session.commit()
    with runtime.sessions() as session:  # moto's queues are in its default account
        allow_platform_credentials(session, tenant, ["123456789012"])
        session.commit()
    app = create_app(runtime=runtime)
    app.testing = True
    worker = dramatiq.Worker(runtime.broker, worker_threads=4, worker_timeout=50)
    worker.start()
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto.url)
    try:
        yield {"runtime": runtime, "caller": Caller(app.test_client(), tenant, mint(tenant)),
               "sqs": sqs, "url": private_pg, "redis_url": redis_url, "moto": moto}
    finally:
        worker.stop()
        runtime.close()


def _alter(url: str, statement: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()


def _settle(stack: dict[str, Any], seconds: float = 20) -> None:
    broker = stack["runtime"].broker
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        broker.join(PERSIST_QUEUE, timeout=int(seconds * 1000))
        broker.join(DELIVER_QUEUE, timeout=int(seconds * 1000))
        if broker.do_qsize(PERSIST_QUEUE) == 0 and broker.do_qsize(DELIVER_QUEUE) == 0:
            time.sleep(0.3)
            if broker.do_qsize(DELIVER_QUEUE) == 0:
                return
    raise TimeoutError("queues did not drain")


def _receive(sqs: Any, url: str, expect: int, timeout: float = 15) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in resp.get("Messages", []):
            got.append(json.loads(m["Body"])["id"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return got


def _cli(stack: dict[str, Any], *argv: str) -> subprocess.CompletedProcess[str]:
    """``eventcollector`` as an operator runs it, in its own process."""
    env = {**os.environ, "DATABASE_URL": stack["url"], "REDIS_URL": stack["redis_url"],
           "EC_TOKEN_SECRET": SECRET, "AWS_ENDPOINT_URL": stack["moto"].url}
    exe = Path(sys.executable).parent / "eventcollector"
    return subprocess.run([str(exe), *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_one_refused_event_is_quarantined_the_batch_is_stored_and_a_redrive_stores_it(
        stack: dict[str, Any]) -> None:
    caller: Caller = stack["caller"]
    tenant = caller.tenant
    redis_client = stack["runtime"].redis_client
    queue = stack["sqs"].create_queue(QueueName=f"q-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    sub = {"entityType": "ORDER", "subscribeCreate": True,
           "destination": {"type": "SQS", "sqs": {"queueUrl": queue, "region": "us-east-1",
                                                  "credentials": "platform"}}}
    assert caller.client.post("/api/v1/event-subscription", json=sub,
                              headers=caller.headers()).status_code == 201
    # Given the database holds less than the contract accepts (a column narrowed: schema drift)
    _alter(stack["url"], "ALTER TABLE events ALTER COLUMN entity_id TYPE varchar(20)")
    good = [order_event(id=f"good-{i}", entity_id=f"order-{i}") for i in range(4)]
    bad = order_event(id="too-long", entity_id="o" * 40)  # valid: up to 255 characters
    # When one batch carries four events that fit and one that does not
    resp = caller.client.post("/api/v1/events/batch", json={"events": [*good[:2], bad, *good[2:]]},
                              headers=caller.headers())
    assert resp.status_code == 200 and resp.json["accepted"] == 5, resp.json
    _settle(stack)
    # Then the four are stored and delivered, the refused one is neither
    assert sorted(_receive(stack["sqs"], queue, expect=5, timeout=6)) == [f"good-{i}"
                                                                          for i in range(4)]
    for event in good:
        got = caller.get(f"/api/v1/events/{event['id']}").json
        assert got["status"] == "stored", got
    listed = caller.get("/api/v1/events", query_string={"per_page": 100}).json
    assert sorted(e["id"] for e in listed["events"]) == [e["id"] for e in good]
    # And the refused one is quarantined: GET answers 200 with the accepted document, the
    # status and the database's reason
    held = caller.get("/api/v1/events/too-long")
    assert held.status_code == 200
    body = held.json
    assert body["status"] == "quarantined" and body["entity_id"] == "o" * 40
    assert body["quarantine"]["error"] == "StringDataRightTruncation"
    assert "value too long" in body["quarantine"]["reason"]
    assert body["quarantine"]["retries"] == 0
    # And the tenant's quarantine list shows it
    page = caller.get("/api/v1/quarantine").json
    assert [e["id"] for e in page["events"]] == ["too-long"] and page["total"] == 1
    assert page["events"][0] == body
    # And the persist message was neither retried nor dead-lettered
    assert redis_client.zcard(f"dramatiq:{PERSIST_QUEUE}.XQ") == 0
    assert redis_client.llen(f"dramatiq:{PERSIST_QUEUE}.DQ") == 0

    # When an operator lists the quarantine
    listed_cli = _cli(stack, "quarantine", "list", "--tenant", tenant)
    assert listed_cli.returncode == 0, listed_cli.stderr
    [line] = _lines(listed_cli.stdout)
    assert (line["tenant"], line["event_id"], line["error"]) == \
        (tenant, "too-long", "StringDataRightTruncation")
    assert "document" not in line
    # And re-drives it before the cause is fixed: it stays, with one more retry (exit 1)
    again = _cli(stack, "quarantine", "retry", "--tenant", tenant)
    assert again.returncode == 1, again.stderr
    assert _lines(again.stdout)[0]["status"] == "quarantined"
    assert "value too long" in _lines(again.stdout)[0]["reason"]
    held = caller.get("/api/v1/events/too-long").json
    assert held["status"] == "quarantined" and held["quarantine"]["retries"] == 1
    assert held["quarantine"]["last_retry_at"]

    # When the column is widened again and the operator re-drives it
    _alter(stack["url"], "ALTER TABLE events ALTER COLUMN entity_id TYPE varchar(255)")
    fixed = _cli(stack, "quarantine", "retry", "--id", "too-long")
    # Then it is stored (as accepted: same received_at), delivered, and out of the quarantine
    assert fixed.returncode == 0, fixed.stderr
    assert _lines(fixed.stdout) == [{"tenant": tenant, "event_id": "too-long",
                                     "status": "stored"}]
    stored = caller.get("/api/v1/events/too-long").json
    assert stored["status"] == "stored"
    assert {k: v for k, v in stored.items() if k != "status"} == \
        {k: v for k, v in body.items() if k not in ("status", "quarantine")}
    assert _receive(stack["sqs"], queue, expect=1) == ["too-long"]
    assert caller.get("/api/v1/quarantine").json == {"events": [], "total": 0,
                                                      "next_from_id": None}
    assert _lines(_cli(stack, "quarantine", "list").stdout) == []
    # And a second re-drive finds nothing to do; purge asks for --yes
    assert _cli(stack, "quarantine", "retry").returncode == 0
    assert _cli(stack, "quarantine", "purge").returncode == 1


def test_a_value_too_large_for_an_index_is_quarantined_not_retried(stack: dict[str, Any]) -> None:
    """PostgreSQL reports an index entry over 2,704 bytes as ProgramLimitExceeded, which the
    driver classes as an OperationalError: it used to be retried as if the database were down,
    up to EC_PERSIST_MAX_RETRIES (about 16 hours), with its message's other events held back."""
    caller: Caller = stack["caller"]
    redis_client = stack["runtime"].redis_client
    # Given an index no entry may exceed (a btree index on the payload)
    _alter(stack["url"], "CREATE INDEX ix_test_payload ON events (payload_b64)")
    blob = base64.b64encode(os.urandom(12_000)).decode()  # incompressible, ~16 KB
    big = order_event(id="big-one")
    big["event_payload"]["base64_encoded_payload_json"] = base64.b64encode(
        json.dumps({"blob": blob}).encode()).decode()
    events = [order_event(id="small-1"), big, order_event(id="small-2")]
    resp = caller.client.post("/api/v1/events/batch", json={"events": events},
                              headers=caller.headers())
    assert resp.json["accepted"] == 3, resp.json
    _settle(stack)
    # Then the small ones are stored, the big one quarantined with the reason, at once
    assert caller.get("/api/v1/events/small-1").json["status"] == "stored"
    assert caller.get("/api/v1/events/small-2").json["status"] == "stored"
    held = caller.get("/api/v1/events/big-one").json
    assert held["status"] == "quarantined", held
    assert held["quarantine"]["error"] == "ProgramLimitExceeded"
    assert "SQLSTATE 54000" in held["quarantine"]["reason"]
    assert redis_client.llen(f"dramatiq:{PERSIST_QUEUE}.DQ") == 0
    assert redis_client.zcard(f"dramatiq:{PERSIST_QUEUE}.XQ") == 0
    # And once the index is gone a re-drive stores it
    _alter(stack["url"], "DROP INDEX ix_test_payload")
    assert _cli(stack, "quarantine", "retry").returncode == 0
    assert caller.get("/api/v1/events/big-one").json["status"] == "stored"


def test_the_migrated_schema_holds_what_the_contract_accepts(private_pg: str) -> None:
    """The columns the input models land in have, in the migrated PostgreSQL database, the
    lengths store/models.py declares (tests/unit/test_limits.py checks those against the
    models): a migration that forgot a change fails here."""
    from sqlalchemy import String, create_engine

    from infra.db import Base

    engine = create_engine(private_pg)
    with engine.connect() as conn:
        actual = {(t, c): n for t, c, n in conn.execute(text(
            "SELECT table_name, column_name, character_maximum_length "
            "FROM information_schema.columns WHERE table_schema = 'public'"))}
        indexes = dict(conn.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'")).all())
    engine.dispose()
    wrong = []
    for table in Base.metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, String) and column.type.length is not None:
                got = actual.get((table.name, column.name))
                if got != column.type.length:
                    wrong.append(f"{table.name}.{column.name}: {got} != {column.type.length}")
    assert wrong == []
    assert "USING hash (correlation_id)" in indexes["ix_events_correlation"]
    assert "ix_events_tenant_correlation" not in indexes


def test_migration_0006_on_a_postgresql_database_that_holds_rows(pg_url: str) -> None:
    from config.settings import normalize_database_url

    name = f"ec_test_m_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        check_migration_0006(normalize_database_url(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"))
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
