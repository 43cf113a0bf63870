"""Tenant identity on AWS, through real boto3 against a moto server with IAM access control on.

moto evaluates a role's trust policy when IAM access control is on (moto/iam/access_control.py:
``IAMRequestBase.check_action_permitted`` → ``_check_role_trust_relationship`` for
``sts:AssumeRole``, whose ``StringEquals`` condition on ``sts:ExternalId`` is checked against the
request's ``ExternalId`` by ``IAMPolicyStatement._check_conditions``). So here:

- the platform is an IAM user allowed ``sts:AssumeRole`` and nothing else (it cannot send to
  any queue itself);
- tenant A's role trusts that user only with ``sts:ExternalId`` = A's ExternalId, and may send
  to A's queue;
- tenant B pointing a subscription at A's role gets B's ExternalId passed, which the trust policy
  refuses: moto answers AccessDenied, as AWS does.

One moto gap, checked below so it cannot hide a regression of ours: moto lets an AssumeRole
*without* an ExternalId through a trust policy that requires one (``TrustCondition.verify_condition``
only compares the values present). We always send one, and the unit tests check that we do.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import dramatiq
import psycopg
import pytest
from botocore.exceptions import ClientError

from config.runtime import build_runtime
from infra.broker.queues import DELIVER_QUEUE, PERSIST_QUEUE
from tenants.auth import create_tenant
from tenants.aws_identity import role_session_name, tenant_aws
from tests import conftest
from tests.conftest import Caller, make_settings, mint, order_event
from tests.support.aws import MotoServer

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


def _moto_data(url: str, model: str) -> list[dict[str, Any]]:
    """moto's own record of a model's instances (read without `requests`, whose responses the
    suite scans: this one holds the assumed roles' secrets by design)."""
    with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=10) as resp:  # noqa: S310
        data = json.loads(resp.read())
    for service in data.values():
        if model in service:
            return list(service[model])
    return []


@pytest.fixture(scope="module")
def iam_moto(pg_url: str) -> Iterator[dict[str, Any]]:
    """A moto server with IAM access control on, two tenants, the platform user, an operator
    user (for the test's own checks), tenant A's queue and A's role."""
    server = MotoServer()
    tenants = {"a": f"ida-{uuid.uuid4().hex[:6]}", "b": f"idb-{uuid.uuid4().hex[:6]}"}
    from infra.db import make_engine, make_session_factory

    engine = make_engine(pg_url)
    with make_session_factory(engine)() as session:
        for name in tenants.values():
            create_tenant(session, name)
        external = {k: tenant_aws(session, v).external_id for k, v in tenants.items()}  # type: ignore[union-attr]
        session.commit()
    engine.dispose()
    setup = {"region_name": REGION, "endpoint_url": server.url, "aws_access_key_id": "testing",
             "aws_secret_access_key": "testing"}
    iam = boto3.client("iam", **setup)
    policy = {"Version": "2012-10-17"}
    users = {}
    for name, statement in [("platform", {"Effect": "Allow", "Action": "sts:AssumeRole",
                                          "Resource": "*"}),
                            ("operator", {"Effect": "Allow", "Action": "*", "Resource": "*"})]:
        arn = iam.create_user(UserName=name)["User"]["Arn"]
        key = iam.create_access_key(UserName=name)["AccessKey"]
        iam.put_user_policy(UserName=name, PolicyName="p",
                            PolicyDocument=json.dumps({**policy, "Statement": [statement]}))
        users[name] = {"arn": arn, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    queue = boto3.client("sqs", **setup).create_queue(QueueName="tenant-a-orders")["QueueUrl"]
    trust = {**policy, "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": users["platform"]["arn"]},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": external["a"]}}}]}
    role = iam.create_role(RoleName="tenant-a-delivery",
                           AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName="tenant-a-delivery", PolicyName="send", PolicyDocument=json.dumps(
        {**policy, "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage*",
                                  "Resource": f"arn:aws:sqs:{REGION}:{ACCOUNT}:tenant-a-orders"}]}))
    # From here on every request is authenticated and authorised by moto
    with urllib.request.urlopen(urllib.request.Request(  # noqa: S310
            f"{server.url}/moto-api/reset-auth", data=b"0", method="POST",
            headers={"Content-Type": "text/plain"}), timeout=10):
        pass
    secrets = [u["secret"] for u in users.values()]
    conftest.KNOWN_SECRETS.update(secrets)  # the suite's scan now looks for these too
    try:
        yield {"server": server, "tenants": tenants, "external": external, "users": users,
               "queue": queue, "role": role}
    finally:
        conftest.KNOWN_SECRETS.difference_update(secrets)
        server.stop()


def _as(iam_moto: dict[str, Any], user: str, service: str) -> Any:
    u = iam_moto["users"][user]
    return boto3.client(service, region_name=REGION, endpoint_url=iam_moto["server"].url,
                        aws_access_key_id=u["key"], aws_secret_access_key=u["secret"])


def test_moto_really_refuses_a_wrong_external_id(iam_moto: dict[str, Any]) -> None:
    """The premise of this module: without it the tests below could not fail."""
    sts = _as(iam_moto, "platform", "sts")
    base = {"RoleArn": iam_moto["role"], "RoleSessionName": "premise"}
    with pytest.raises(ClientError) as wrong:
        sts.assume_role(**base, ExternalId=iam_moto["external"]["b"])
    assert wrong.value.response["Error"]["Code"] == "AccessDenied"
    assert sts.assume_role(**base, ExternalId=iam_moto["external"]["a"])["Credentials"]
    # The platform itself may not send to A's queue: a message there came through the role
    with pytest.raises(ClientError) as denied:
        _as(iam_moto, "platform", "sqs").send_message(QueueUrl=iam_moto["queue"], MessageBody="x")
    assert "AccessDenied" in str(denied.value)


@pytest.fixture
def stack(pg_url: str, redis_url: str, iam_moto: dict[str, Any],
          monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """App + in-process persist and deliver workers whose AWS identity is the platform user."""
    from api.app import create_app
    from workers.main import declare_actors

    platform = iam_moto["users"]["platform"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", platform["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", platform["secret"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", iam_moto["server"].url)
    for name in ("AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_SNS", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(name, raising=False)
    settings = make_settings(pg_url, redis_url, delivery_retry_schedule=(0.2, 0.4),
                             aws_endpoint_sqs=iam_moto["server"].url)
    runtime = build_runtime(settings)
    declare_actors(runtime)
    app = create_app(runtime=runtime)
    app.testing = True
    worker = dramatiq.Worker(runtime.broker, worker_threads=2, worker_timeout=50)
    worker.start()
    callers = {k: Caller(app.test_client(), t, mint(t)) for k, t in iam_moto["tenants"].items()}
    try:
        yield {"runtime": runtime, **callers, **iam_moto}
    finally:
        worker.stop()
        runtime.close()


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


def _role_subscription(caller: Caller, stack: dict[str, Any]) -> dict[str, Any]:
    r = caller.client.post("/api/v1/event-subscription", headers=caller.headers(), json={
        "entityType": "ORDER", "subscribeCreate": True, "destination": {"type": "SQS", "sqs": {
            "queueUrl": stack["queue"], "region": REGION, "credentials": "role",
            "roleArn": stack["role"]}}})
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()


def _receive(stack: dict[str, Any], expect: int, timeout: float) -> list[dict[str, Any]]:
    sqs = _as(stack, "operator", "sqs")
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        resp = sqs.receive_message(QueueUrl=stack["queue"], MaxNumberOfMessages=10,
                                   WaitTimeSeconds=1)
        for m in resp.get("Messages", []):
            got.append(m)
            sqs.delete_message(QueueUrl=stack["queue"], ReceiptHandle=m["ReceiptHandle"])
    return got


def test_the_role_form_delivers_through_assume_role_with_the_tenants_external_id(
    stack: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a = stack["a"]
    # Given tenant A's role subscription, which shows A's ExternalId
    sub = _role_subscription(a, stack)
    assert sub["destination"]["sqs"]["externalId"] == stack["external"]["a"]
    assumed_before = len(_moto_data(stack["server"].url, "AssumedRole"))
    # When an ORDER create is posted
    event = a.post_event(order_event(id=f"role-{uuid.uuid4().hex[:8]}")).get_json()
    _settle(stack)
    # Then it arrived in A's queue (which the platform user itself may not write to)
    [msg] = _receive(stack, expect=1, timeout=10)
    assert json.loads(msg["Body"])["id"] == event["id"]
    log = a.get(f"/api/v1/event-subscription/{sub['id']}/deliveries").get_json()["deliveries"]
    assert [x["status"] for x in log] == ["succeeded"]
    # And moto recorded the AssumeRole: A's role, A's ExternalId, a session naming A and the
    # subscription
    assumed = _moto_data(stack["server"].url, "AssumedRole")[assumed_before:]
    assert [(r["role_arn"], r["external_id"], r["session_name"]) for r in assumed] == [
        (stack["role"], stack["external"]["a"], role_session_name(a.tenant, sub["id"]))]
    # And the test-send goes the same way, reusing the cached credentials
    probe = a.client.post(f"/api/v1/event-subscription/{sub['id']}/test", headers=a.headers())
    assert probe.get_json()["ok"] is True, probe.get_json()
    assert len(_receive(stack, expect=1, timeout=10)) == 1
    assert len(_moto_data(stack["server"].url, "AssumedRole")) == assumed_before + 1
    # And the temporary credentials never reached a log line
    role_secrets = [x for r in assumed for x in (r["secret_access_key"], r["session_token"])]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert not [s for s in role_secrets if s in text]


def test_a_wrong_external_id_fails_the_delivery_and_deactivates_without_revealing_secrets(
    stack: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    b = stack["b"]
    # Given tenant B points a role subscription at A's role: B's ExternalId is what we pass
    sub = _role_subscription(b, stack)
    assert sub["destination"]["sqs"]["externalId"] == stack["external"]["b"]
    # When a B event is delivered
    b.post_event(order_event(id=f"wrong-{uuid.uuid4().hex[:8]}"))
    _settle(stack)
    # Then nothing reached A's queue
    assert _receive(stack, expect=1, timeout=3) == []
    # And the attempt is logged as a permanent failure of AssumeRole, and the subscription is
    # deactivated with it
    [entry] = b.get(f"/api/v1/event-subscription/{sub['id']}/deliveries").get_json()["deliveries"]
    assert (entry["status"], entry["errorCode"]) == ("failed", "AssumeRole.AccessDenied")
    shown = b.get(f"/api/v1/event-subscription/{sub['id']}").get_json()
    assert shown["active"] is False
    assert shown["deactivationReason"].startswith("permanent delivery error: AssumeRole.AccessDenied")
    # And the test-send says so, without the platform's identity or any secret
    probe = b.client.post(f"/api/v1/event-subscription/{sub['id']}/test", headers=b.headers())
    answer = probe.get_json()
    assert (answer["ok"], answer["errorCode"], answer["transient"]) \
        == (False, "AssumeRole.AccessDenied", False)
    assert "externalId" in answer["errorMessage"]
    platform = stack["users"]["platform"]
    everything = json.dumps(answer) + json.dumps(entry) + json.dumps(shown)
    for leaked in (platform["arn"], platform["key"], platform["secret"], stack["external"]["a"]):
        assert leaked not in everything
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert platform["secret"] not in logged and platform["key"] not in logged


def test_assumed_credentials_are_reused_then_renewed_before_they_expire_against_real_sts(
    stack: dict[str, Any]
) -> None:
    from subscriptions.senders.aws import AssumedRoles
    from subscriptions.senders.base import Destination

    now = [time.time()]
    roles = AssumedRoles(clock=lambda: now[0])
    destination = Destination(kind="SQS", target=stack["queue"], region=REGION,
                              credentials="role", role_arn=stack["role"],
                              external_id=stack["external"]["a"], session_name="ec.cache-test")

    def calls() -> int:
        return sum(1 for r in _moto_data(stack["server"].url, "AssumedRole")
                   if r["session_name"] == "ec.cache-test")

    first = roles.get(destination)
    assert calls() == 1
    now[0] += 50 * 60
    assert roles.get(destination) is first and calls() == 1
    now[0] += 6 * 60  # 56 minutes into an hour's credentials: less than five minutes left
    second = roles.get(destination)
    assert second.access_key_id != first.access_key_id and calls() == 2
    # And the renewed credentials really work
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=stack["server"].url,
                       aws_access_key_id=second.access_key_id,
                       aws_secret_access_key=second.secret_access_key,
                       aws_session_token=second.session_token)
    assert sqs.send_message(QueueUrl=stack["queue"], MessageBody="renewed")["MessageId"]
    assert len(_receive(stack, expect=1, timeout=10)) == 1


def test_the_migration_marks_existing_rows_on_postgresql() -> None:
    from tests.support.migration_rows import check_migrated, seed_0005

    name = f"ec_mig_{uuid.uuid4().hex[:8]}"
    admin = conftest.PG_ADMIN_URL
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = "postgresql+psycopg://" + admin.split("://", 1)[1].rsplit("/", 1)[0] + f"/{name}"
        seed_0005(url)
        check_migrated(url)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
