"""Subscriptions delivered to SQS and SNS on a moto server (real HTTP, real boto3)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import dramatiq
import pytest

from config.runtime import build_runtime
from infra.broker.queues import DELIVER_QUEUE, PERSIST_QUEUE
from tenants.auth import create_tenant
from tests.conftest import Caller, as_posted, make_settings, mint, order_event
from tests.support.aws import FaultProxy, MotoServer

pytestmark = pytest.mark.integration

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
ACCESS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETzz"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    proxy = FaultProxy(moto.port)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", proxy.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", moto.url)
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto.url)
    sns = boto3.client("sns", region_name="us-east-1", endpoint_url=moto.url)
    yield {"proxy": proxy, "sqs": sqs, "sns": sns, "moto": moto}
    proxy.stop()


@pytest.fixture
def stack(pg_url: str, redis_url: str, aws: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """App + in-process persist and deliver workers on PostgreSQL, Redis and moto."""
    from api.app import create_app
    from workers.main import declare_actors

    settings = make_settings(pg_url, redis_url, secret_key=_fernet(),
                             delivery_retry_schedule=(0.2, 0.4),
                             subscription_failing_window_seconds=3600,
                             aws_endpoint_sqs=aws["proxy"].url, aws_endpoint_sns=aws["moto"].url)
    runtime = build_runtime(settings)
    declare_actors(runtime)
    tenants = [f"s-{uuid.uuid4().hex[:6]}", f"s-{uuid.uuid4().hex[:6]}"]
    with runtime.sessions() as session:
        for t in tenants:
            create_tenant(session, t)
        session.commit()
    app = create_app(runtime=runtime)
    app.testing = True
    worker = dramatiq.Worker(runtime.broker, worker_threads=4, worker_timeout=50)
    worker.start()
    try:
        yield {"runtime": runtime, "a": Caller(app.test_client(), tenants[0], mint(tenants[0])),
               "b": Caller(app.test_client(), tenants[1], mint(tenants[1])), **aws}
    finally:
        worker.stop()
        runtime.close()


def _fernet() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _queue(stack: dict[str, Any], name: str, **attrs: str) -> tuple[str, str]:
    """Create a queue on moto; return (its URL via the proxy endpoint, its direct URL)."""
    url = stack["sqs"].create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    path = url.split("/", 3)[3]
    return f"{stack['proxy'].url}/{path}", url


def _subscription(url: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "active": True, "entityType": "ORDER", "subscribeCreate": True,
        "subscribeChange": False, "subscribeDelete": False,
        "destination": {"type": "SQS", "sqs": {"queueUrl": url, "region": "us-east-1",
                                               "accessKey": ACCESS_KEY,
                                               "accessSecret": ACCESS_SECRET}},
    }
    body.update(overrides)
    return body


def _create(caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    r = caller.client.post("/api/v1/event-subscription", json=body, headers=caller.headers())
    assert r.status_code == 201, r.json
    return r.json


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


def _receive(sqs: Any, url: str, expect: int, timeout: float = 15) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   MessageAttributeNames=["All"], AttributeNames=["All"])
        for m in resp.get("Messages", []):
            got.append(m)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return got


def _attempts(caller: Caller, sub_id: str, **params: Any) -> list[dict[str, Any]]:
    r = caller.get(f"/api/v1/event-subscription/{sub_id}/deliveries", query_string=params)
    assert r.status_code == 200, r.json
    return r.json["deliveries"]


def test_sqs_subscription_receives_matching_events_as_get_returns_them(stack: dict[str, Any]) -> None:
    a = stack["a"]
    via_proxy, direct = _queue(stack, f"orders-{uuid.uuid4().hex[:6]}")
    # Given an SQS subscription for ORDER creates, with keys
    sub = _create(a, _subscription(via_proxy))
    assert sub["destination"]["sqs"]["accessSecret"] == "********"
    assert sub["destination"]["sqs"]["accessKey"] == "****" + ACCESS_KEY[-4:]
    # When a matching create, a non-matching update, a FAULT and a CUSTOMER event are posted
    created = a.post_event(order_event(id=f"o-{uuid.uuid4().hex}")).json
    a.post_event(order_event(event_payload={**order_event()["event_payload"], "operation": "UPDATE"}))
    a.post_event(order_event(event_type="FAULT"))
    a.post_event(order_event(entity_name="CUSTOMER"))
    _settle(stack)
    # Then exactly the create arrives, its body equal to GET, with the attributes
    messages = _receive(stack["sqs"], direct, expect=2, timeout=4)
    assert len(messages) == 1
    got = messages[0]
    assert json.loads(got["Body"]) == as_posted(a.get(f"/api/v1/events/{created['id']}").json,
                                                "stored")
    attrs = {k: v["StringValue"] for k, v in got["MessageAttributes"].items()}
    assert attrs == {"tenant": a.tenant, "event_type": "ENTITY_EVENT", "entity_name": "ORDER",
                     "operation": "CREATE", "event_id": created["id"]}
    # And the attempt log shows one success with SQS's message id
    log = _attempts(a, sub["id"])
    assert [(x["status"], x["eventId"]) for x in log] == [("succeeded", created["id"])]
    assert log[0]["messageId"] == got["MessageId"]


def test_a_batch_of_events_goes_out_in_send_message_batch_calls(stack: dict[str, Any]) -> None:
    a = stack["a"]
    via_proxy, direct = _queue(stack, f"bulk-{uuid.uuid4().hex[:6]}")
    sub = _create(a, _subscription(via_proxy))
    calls_before = stack["proxy"].calls
    # When 25 matching events arrive in one batch request
    events = [order_event(id=f"b-{i}-{uuid.uuid4().hex[:8]}") for i in range(25)]
    r = a.client.post("/api/v1/events/batch", json={"events": events}, headers=a.headers())
    assert r.status_code == 200 and r.json["accepted"] == 25, r.json
    _settle(stack)
    # Then every one arrives exactly once, in three SendMessageBatch calls (10 + 10 + 5)
    messages = _receive(stack["sqs"], direct, expect=26, timeout=4)
    assert sorted(json.loads(m["Body"])["id"] for m in messages) == sorted(e["id"] for e in events)
    assert stack["proxy"].calls - calls_before == 3
    # And the attempt log has one success per event, each with its own SQS message id
    log = _attempts(a, sub["id"], per_page=100)
    assert sorted(x["eventId"] for x in log) == sorted(e["id"] for e in events)
    assert {x["status"] for x in log} == {"succeeded"}
    assert {x["messageId"] for x in log} == {m["MessageId"] for m in messages}


def test_fifo_queue_gets_group_and_deduplication_ids(stack: dict[str, Any]) -> None:
    a = stack["a"]
    via_proxy, direct = _queue(stack, f"orders-{uuid.uuid4().hex[:6]}.fifo", FifoQueue="true")
    _create(a, _subscription(via_proxy))
    event = a.post_event(order_event(id=f"f-{uuid.uuid4().hex}", entity_id="order-77")).json
    _settle(stack)
    [msg] = _receive(stack["sqs"], direct, expect=1)
    assert msg["Attributes"]["MessageGroupId"] == f"{a.tenant}:order-77"
    assert msg["Attributes"]["MessageDeduplicationId"] == event["id"]
    assert json.loads(msg["Body"])["id"] == event["id"]


def test_sns_topic_fans_out_to_an_sqs_queue(stack: dict[str, Any]) -> None:
    a = stack["a"]
    sns, sqs = stack["sns"], stack["sqs"]
    topic = sns.create_topic(Name=f"orders-{uuid.uuid4().hex[:6]}")["TopicArn"]
    _, direct = _queue(stack, f"fan-{uuid.uuid4().hex[:6]}")
    queue_arn = sqs.get_queue_attributes(QueueUrl=direct, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    sub = _create(a, _subscription("", destination={"type": "SNS", "sns": {
        "topicArn": topic, "region": "us-east-1", "accessKey": ACCESS_KEY,
        "accessSecret": ACCESS_SECRET}}))
    assert sub["destination"]["sns"]["accessKey"] == "****" + ACCESS_KEY[-4:]
    event = a.post_event(order_event(id=f"n-{uuid.uuid4().hex}")).json
    _settle(stack)
    [msg] = _receive(sqs, direct, expect=1)
    envelope = json.loads(msg["Body"])
    assert json.loads(envelope["Message"]) == as_posted(
        a.get(f"/api/v1/events/{event['id']}").json, "stored")
    attrs = {k: v["Value"] for k, v in envelope["MessageAttributes"].items()}
    assert attrs["tenant"] == a.tenant and attrs["event_id"] == event["id"]
    assert attrs["entity_name"] == "ORDER" and attrs["operation"] == "CREATE"


def test_transient_errors_back_off_then_deliver(stack: dict[str, Any]) -> None:
    a = stack["a"]
    via_proxy, direct = _queue(stack, f"flaky-{uuid.uuid4().hex[:6]}")
    sub = _create(a, _subscription(via_proxy))
    # Given the endpoint answers 503 to the next three calls
    stack["proxy"].fail_next = 3
    event = a.post_event(order_event(id=f"r-{uuid.uuid4().hex}")).json
    # When the deliver pool retries on its schedule
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
            x["status"] == "succeeded" for x in _attempts(a, sub["id"])):
        time.sleep(0.2)
    # Then the event arrives once and the log shows the three retries first
    log = _attempts(a, sub["id"])
    assert [x["status"] for x in log] == ["retrying"] * 3 + ["succeeded"]
    assert {x["errorCode"] for x in log[:3]} == {"ServiceUnavailable"}
    assert [x["attempt"] for x in log] == [1, 2, 3, 4]
    [msg] = _receive(stack["sqs"], direct, expect=1)
    assert json.loads(msg["Body"])["id"] == event["id"]
    assert a.get(f"/api/v1/event-subscription/{sub['id']}").json["active"] is True


def test_missing_queue_fails_fast_and_deactivates(stack: dict[str, Any]) -> None:
    a = stack["a"]
    sub = _create(a, _subscription(f"{stack['proxy'].url}/123456789012/no-such-queue"))
    a.post_event(order_event())
    _settle(stack)
    log = _attempts(a, sub["id"])
    assert len(log) == 1 and log[0]["status"] == "failed"
    assert "NonExistentQueue" in log[0]["errorCode"] or "QueueDoesNotExist" in log[0]["errorCode"]
    shown = a.get(f"/api/v1/event-subscription/{sub['id']}").json
    assert shown["active"] is False and shown["deactivatedAt"]
    assert "permanent delivery error" in shown["deactivationReason"]
    # A deactivated subscription is not listed by default, but is with include_inactive
    assert sub["id"] not in [s["id"] for s in a.get("/api/v1/event-subscription").json]
    listed = a.get("/api/v1/event-subscription", query_string={"include_inactive": "true"}).json
    assert sub["id"] in [s["id"] for s in listed]


def test_subscription_that_keeps_failing_is_deactivated(stack: dict[str, Any]) -> None:
    a = stack["a"]
    stack["runtime"].retry_policy = type(stack["runtime"].retry_policy)(
        schedule=(0.2,), give_up_after=3600, failing_window=1.0)
    from workers.main import declare_actors

    stack["runtime"].broker.actors.clear()
    declare_actors(stack["runtime"])
    via_proxy, _ = _queue(stack, f"down-{uuid.uuid4().hex[:6]}")
    sub = _create(a, _subscription(via_proxy))
    stack["proxy"].fail_always = True
    a.post_event(order_event())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and a.get(
            f"/api/v1/event-subscription/{sub['id']}").json["active"]:
        time.sleep(0.2)
    stack["proxy"].fail_always = False
    shown = a.get(f"/api/v1/event-subscription/{sub['id']}").json
    assert shown["active"] is False
    assert shown["deactivationReason"].startswith("deliveries failing for")
    assert len(_attempts(a, sub["id"], status="retrying")) >= 2


def test_deactivated_subscription_receives_nothing_and_replay_redelivers(stack: dict[str, Any]) -> None:
    a = stack["a"]
    via_proxy, direct = _queue(stack, f"off-{uuid.uuid4().hex[:6]}")
    sub = _create(a, _subscription(via_proxy))
    r = a.client.put(f"/api/v1/event-subscription/{sub['id']}/deactivate", headers=a.headers())
    assert r.status_code == 200
    assert r.json == {"body": {}, "statusCode": "ACCEPTED", "statusCodeValue": 202}
    start = datetime.now(UTC) - timedelta(seconds=1)
    ids = [a.post_event(order_event(id=f"d-{i}-{uuid.uuid4().hex[:6]}")).json["id"]
           for i in range(3)]
    _settle(stack)
    assert _receive(stack["sqs"], direct, expect=1, timeout=2) == []
    # When it is reactivated and the range replayed, the three events arrive
    body = _subscription(via_proxy, id=sub["id"])
    body["destination"]["sqs"]["accessKey"] = sub["destination"]["sqs"]["accessKey"]
    body["destination"]["sqs"]["accessSecret"] = "********"
    put = a.client.put("/api/v1/event-subscription", json=body, headers=a.headers())
    assert put.status_code == 200 and put.json["active"] is True, put.json
    end = datetime.now(UTC) + timedelta(seconds=1)
    replay = a.client.post(f"/api/v1/event-subscription/{sub['id']}/replay", headers=a.headers(),
                           json={"since": start.isoformat(), "until": end.isoformat()})
    assert replay.status_code == 202 and replay.json == {"queued": 3, "deferred": False}
    _settle(stack)
    got = _receive(stack["sqs"], direct, expect=3)
    assert sorted(json.loads(m["Body"])["id"] for m in got) == sorted(ids)
    # The kept key still signs requests (moto accepted them) and a test send works
    probe = a.client.post(f"/api/v1/event-subscription/{sub['id']}/test", headers=a.headers())
    assert probe.status_code == 200 and probe.json["ok"] is True, probe.json


def test_tenants_cannot_see_or_change_each_others_subscriptions(stack: dict[str, Any]) -> None:
    a, b = stack["a"], stack["b"]
    via_proxy, _ = _queue(stack, f"iso-{uuid.uuid4().hex[:6]}")
    sub = _create(a, _subscription(via_proxy))
    base = f"/api/v1/event-subscription/{sub['id']}"
    hb = b.headers()
    assert b.client.get(base, headers=hb).status_code == 404
    assert b.client.put(base, json=_subscription(via_proxy), headers=hb).status_code == 404
    assert b.client.put(base + "/deactivate", headers=hb).status_code == 404
    assert b.client.get(base + "/deliveries", headers=hb).status_code == 404
    assert b.client.post(base + "/test", headers=hb).status_code == 404
    assert b.client.post(base + "/replay", headers=hb, json={
        "since": "2020-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z"}).status_code == 404
    assert b.client.delete(base, headers=hb).status_code == 404
    assert sub["id"] not in [s["id"] for s in b.get("/api/v1/event-subscription").json]
    assert a.get(base).json["active"] is True
    # B's events never reach A's subscription
    b.post_event(order_event())
    _settle(stack)
    assert _attempts(a, sub["id"]) == []


def test_secrets_never_appear_in_responses_or_logs(stack: dict[str, Any],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    a = stack["a"]
    via_proxy, _ = _queue(stack, f"sec-{uuid.uuid4().hex[:6]}")
    texts = []
    created = a.client.post("/api/v1/event-subscription", json=_subscription(via_proxy),
                            headers=a.headers())
    texts.append(created.get_data(as_text=True))
    sub_id = created.json["id"]
    texts.append(a.get(f"/api/v1/event-subscription/{sub_id}").get_data(as_text=True))
    texts.append(a.get("/api/v1/event-subscription").get_data(as_text=True))
    a.post_event(order_event())
    _settle(stack)
    texts.append(a.get(f"/api/v1/event-subscription/{sub_id}/deliveries").get_data(as_text=True))
    bad = _subscription(via_proxy)
    bad["destination"]["sqs"]["accessKey"] = "not a key"
    texts.append(a.client.post("/api/v1/event-subscription", json=bad,
                               headers=a.headers()).get_data(as_text=True))
    everything = "\n".join(texts) + "\n".join(r.getMessage() for r in caplog.records)
    assert ACCESS_SECRET not in everything
    assert ACCESS_KEY not in everything
    with stack["runtime"].sessions() as session:
        from sqlalchemy import text

        stored = session.execute(text("SELECT access_secret_enc FROM subscriptions WHERE id = :i"),
                                 {"i": sub_id}).scalar_one()
    assert stored and ACCESS_SECRET not in stored


def _signing_leaks(text: str) -> list[str]:
    found = [name for name, value in (("key id", ACCESS_KEY), ("secret", ACCESS_SECRET))
             if value in text]
    found += [m for m in ("Credential=AKIA", "Signature=0", "Signature=1", "Signature=2",
                          "Signature=3", "Signature=4", "Signature=5", "Signature=6",
                          "Signature=7", "Signature=8", "Signature=9", "Signature=a",
                          "Signature=b", "Signature=c", "Signature=d", "Signature=e",
                          "Signature=f", "AWS4-HMAC-SHA256 Credential") if m in text]
    return found


def test_an_sdk_error_carrying_signed_headers_reaches_no_answer_log_or_line(
        stack: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """A region with a newline made boto3's error quote the Authorization header (key id,
    credential scope, signature); it was returned by the test send and kept in the attempt log.
    Validation now refuses such a region; a row stored before that must still leak nothing."""
    from sqlalchemy import update

    from subscriptions.models import Subscription

    caplog.set_level(logging.DEBUG)
    a = stack["a"]
    via_proxy, _ = _queue(stack, f"scrub-{uuid.uuid4().hex[:6]}")
    # Given a subscription with keys, whose stored region ends with a newline
    sub = _create(a, _subscription(via_proxy))
    refused = _subscription(via_proxy)
    refused["destination"]["sqs"]["region"] = "us-east-1\n"
    r = a.client.post("/api/v1/event-subscription", json=refused, headers=a.headers())
    assert r.status_code == 400, r.json  # (validation refuses it now)
    with stack["runtime"].sessions() as session:
        session.execute(update(Subscription).where(Subscription.id == sub["id"])
                        .values(region="us-east-1\n"))
        session.commit()
    # When it is test-sent, and an event is delivered to it (real boto3, moto behind the proxy)
    test = a.client.post(f"/api/v1/event-subscription/{sub['id']}/test", headers=a.headers())
    a.post_event(order_event(id=f"sc-{uuid.uuid4().hex}"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _attempts(a, sub["id"]):
        time.sleep(0.2)
    log = a.get(f"/api/v1/event-subscription/{sub['id']}/deliveries")
    shown = a.get(f"/api/v1/event-subscription/{sub['id']}")
    # Then the send failed, saying why, and no answer, attempt or log line carries the key id,
    # the secret, the credential or the signature
    assert test.status_code == 200 and test.json["ok"] is False, test.json
    assert test.json["errorCode"] == "HTTPClientError"
    assert "[redacted]" in test.json["errorMessage"]
    assert log.json["deliveries"], log.json
    assert log.json["deliveries"][0]["errorCode"] == "HTTPClientError"
    texts = [test.get_data(as_text=True), log.get_data(as_text=True),
             shown.get_data(as_text=True)]
    lines = [r.getMessage() + " " + (r.exc_text or "") for r in caplog.records]
    assert [_signing_leaks(t) for t in texts] == [[], [], []], texts
    assert [line for line in lines if _signing_leaks(line)] == []


def test_seed_002_example_gets_a_400_that_says_what_to_send(stack: dict[str, Any]) -> None:
    a = stack["a"]
    seed = {"active": True, "destination": {"sqs": {"accessKey": "string", "accessSecret": "string",
                                                    "queueUrl": "string", "region": "string"},
                                            "type": "SNS"},
            "entityType": "CUSTOMER", "id": "string", "subscribeChange": True,
            "subscribeCreate": True, "subscribeDelete": True}
    r = a.client.post("/api/v1/event-subscription", json=seed, headers=a.headers())
    assert r.status_code == 400
    messages = " ".join(d["message"] for d in r.json["error"]["details"])
    assert "type is SNS but the destination holds an \"sqs\" block" in messages
    assert "topicArn" in messages
    no_flags = _subscription(f"{stack['proxy'].url}/123456789012/x", subscribeCreate=False)
    r = a.client.post("/api/v1/event-subscription", json=no_flags, headers=a.headers())
    assert r.status_code == 400 and "at least one of subscribeCreate" in r.get_data(as_text=True)
    r = a.client.post("/api/v1/event-subscription", headers=a.headers(), json=_subscription(
        "https://example.com/queue"))
    assert r.status_code == 400 and r.json["error"]["details"][0]["field"] == "destination.sqs"


def _platform(url: str) -> dict[str, Any]:
    body = _subscription(url)
    body["destination"]["sqs"] = {"queueUrl": url, "region": "us-east-1", "credentials": "platform"}
    return body


def test_platform_credentials_need_an_opt_in_for_the_queues_account_then_deliver(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    pg_url: str, redis_url: str,
) -> None:
    from cli.main import main as cli
    from tests.conftest import SECRET

    a = stack["a"]
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("EC_TOKEN_SECRET", SECRET)
    via_proxy, direct = _queue(stack, f"plat-{uuid.uuid4().hex[:6]}")  # moto's account 123456789012
    # Given tenant A is not opted in: a keyless (platform) subscription is a 400
    r = a.client.post("/api/v1/event-subscription", json=_platform(via_proxy), headers=a.headers())
    assert r.status_code == 400 and "not allowed for this tenant" in r.json["error"]["message"]
    # And opted in for another account only, the queue's account is refused by name
    assert cli(["tenant", "allow-platform-credentials", a.tenant, "--accounts", "210987654321"]) == 0
    r = a.client.post("/api/v1/event-subscription", json=_platform(via_proxy), headers=a.headers())
    assert r.status_code == 400 and "123456789012 is not one" in r.json["error"]["message"]
    assert a.get("/api/v1/event-subscription", query_string={"include_inactive": "true"}).json == []
    # When the operator allows the queue's account
    assert cli(["tenant", "allow-platform-credentials", a.tenant, "--accounts", "123456789012"]) == 0
    sub = _create(a, _platform(via_proxy))
    assert sub["destination"]["sqs"]["credentials"] == "platform"
    event = a.post_event(order_event(id=f"p-{uuid.uuid4().hex}")).json
    _settle(stack)
    # Then the event is delivered with the platform's credentials (the deliver pool's own chain)
    [msg] = _receive(stack["sqs"], direct, expect=1)
    assert json.loads(msg["Body"])["id"] == event["id"]
    probe = a.client.post(f"/api/v1/event-subscription/{sub['id']}/test", headers=a.headers())
    assert probe.json["ok"] is True, probe.json
    _receive(stack["sqs"], direct, expect=1)
    capsys.readouterr()
    # When the opt-in is revoked
    assert cli(["tenant", "revoke-platform-credentials", a.tenant]) == 0
    assert sub["id"] in capsys.readouterr().out
    # Then the subscription is deactivated with the reason, and nothing more is sent
    shown = a.get(f"/api/v1/event-subscription/{sub['id']}").json
    assert shown["active"] is False
    assert shown["deactivationReason"] == ("platform credentials are no longer allowed for this "
                                           "tenant: use keys or a role")
    calls = stack["proxy"].calls
    a.post_event(order_event(id=f"p-{uuid.uuid4().hex}"))
    _settle(stack)
    probe = a.client.post(f"/api/v1/event-subscription/{sub['id']}/test", headers=a.headers())
    assert (probe.json["ok"], probe.json["errorCode"]) == (False, "NotAllowed")
    assert stack["proxy"].calls == calls  # no AWS call at all
    assert _receive(stack["sqs"], direct, expect=1, timeout=2) == []
    assert cli(["tenant", "show", a.tenant, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["id"] for s in report["deactivatedByPlatformRule"]] == [sub["id"]]


def test_end_to_end_over_the_procfile_web_persist_and_deliver_processes(
    pg_url: str, redis_url: str, moto: MotoServer, tmp_path: Any
) -> None:
    import subprocess
    import sys
    from pathlib import Path

    import requests

    from tests.conftest import SECRET, free_port
    from tests.support.procs import Proc, procfile_command, wait_http

    port = free_port()
    env = {"DATABASE_URL": pg_url.replace("postgresql+psycopg://", "postgres://"),
           "REDIS_URL": redis_url, "EC_TOKEN_SECRET": SECRET, "EC_SECRET_KEY": _fernet(),
           "PORT": str(port), "WEB_BIND": "127.0.0.1", "WEB_CONCURRENCY": "1",
           "PERSIST_PROCESSES": "1", "DELIVER_PROCESSES": "1", "LOG_LEVEL": "WARNING",
           "AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    release = Proc("release", procfile_command("release"), env, tmp_path)
    assert release.popen.wait(60) == 0, release.log()
    procs = [Proc(name, procfile_command(name), env, tmp_path)
             for name in ("web", "persist", "deliver")]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", procs[0])
        # Given a tenant (CLI) and a token (token endpoint)
        import os

        out = subprocess.run(
            [str(Path(sys.executable).parent / "eventcollector"), "tenant", "create",
             f"e2e-{uuid.uuid4().hex[:6]}", "--json"], env={**os.environ, **env},
            capture_output=True, text=True, check=True)
        creds = json.loads(out.stdout)
        token = requests.post(base + "/api/v1/auth/token", data={
            "grant_type": "client_credentials", "client_id": creds["client_id"],
            "client_secret": creds["client_secret"]}, timeout=10).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "X-TWC-Tenant": creds["tenant"]}
        sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto.url,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        url = sqs.create_queue(QueueName=f"e2e-{uuid.uuid4().hex[:6]}")["QueueUrl"]
        # When an SQS subscription for ORDER creates exists and 20 ORDER CREATEs are posted
        sub = requests.post(base + "/api/v1/event-subscription", headers=headers, timeout=10,
                            json=_subscription(url)).json()
        assert sub["active"] is True, sub
        ids = [requests.post(base + "/api/v1/events", headers=headers, timeout=10,
                             json=order_event(id=f"e2e-{i}")).json()["id"] for i in range(20)]
        # Then each arrives in the queue once, as GET returns it, and the log shows 20 successes
        got = _receive(sqs, url, expect=20, timeout=60)
        bodies = {json.loads(m["Body"])["id"]: json.loads(m["Body"]) for m in got}
        assert sorted(bodies) == sorted(ids) and len(got) == 20
        one = requests.get(f"{base}/api/v1/events/{ids[0]}", headers=headers, timeout=10).json()
        assert bodies[ids[0]] == as_posted(one, "stored")
        log = requests.get(f"{base}/api/v1/event-subscription/{sub['id']}/deliveries",
                           headers=headers, params={"status": "succeeded", "per_page": 100},
                           timeout=10).json()
        assert log["total"] == 20
        assert all(p.alive() for p in procs)
    finally:
        for p in procs:
            p.stop()
    for p in procs:
        assert ACCESS_SECRET not in p.log()
