"""Which AWS identity a subscription is delivered with (issue 12, the confused deputy).

A destination authenticates in exactly one of three stated ways: the tenant's own keys, a role
of the tenant's that the deliver pool assumes with the tenant's ExternalId, or the platform's
own identity, which only tenants an operator opted in may use, and only for queues and topics in
their allowed accounts. These tests run on the StubSender app (no network); the real AssumeRole
against moto with IAM access control is in tests/integration/test_aws_identity.py.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select, update

from subscriptions.models import Subscription
from subscriptions.senders.base import Destination
from subscriptions.senders.stub import StubSender
from tenants.models import Tenant
from tests.conftest import Caller, order_event
from tests.support.apps import copy_db, runtime_of, stub_app
from tests.support.events import assert_error
from tests.support.subscriptions import (
    ACCESS_KEY,
    ACCESS_SECRET,
    BASE,
    QUEUE_URL,
    TOPIC_ARN,
    attempts,
    create,
    put,
    settle,
    sqs_body,
    stored_subscription,
    writable,
)

# conftest's ``embedded`` (and so ``acme``/``globex``) is the StubSender app; ``stub`` its sender.
pytestmark = pytest.mark.embedded("sender")

ACCOUNT = "123456789012"  # QUEUE_URL's and TOPIC_ARN's account
OTHER_QUEUE = "https://sqs.us-east-1.amazonaws.com/210987654321/someone-elses-orders"
ROLE_ARN = "arn:aws:iam::123456789012:role/event-collector-delivery"
REVOKED = "platform credentials are no longer allowed for this tenant: use keys or a role"


def platform_body(url: str = QUEUE_URL, **overrides: Any) -> dict[str, Any]:
    body = sqs_body(url, keys=False, **overrides)
    body["destination"]["sqs"]["credentials"] = "platform"
    return body


def role_body(url: str = QUEUE_URL, role: str = ROLE_ARN, **overrides: Any) -> dict[str, Any]:
    body = sqs_body(url, keys=False, **overrides)
    body["destination"]["sqs"].update(credentials="role", roleArn=role)
    return body


def allow(app: Any, tenant: str, *accounts: str) -> None:
    from tenants.aws_identity import allow_platform_credentials

    with runtime_of(app).sessions() as session:
        allow_platform_credentials(session, tenant, list(accounts))
        session.commit()


def external_id_of(app: Any, tenant: str) -> str:
    with runtime_of(app).sessions() as session:
        return str(session.execute(select(Tenant.external_id).where(Tenant.name == tenant))
                   .scalar_one())


def three_forms(error: dict[str, Any]) -> None:
    """The 400 explains the three forms."""
    text = error["message"] + " ".join(d["message"] for d in error["details"])
    for fragment in ('"credentials": "keys"', '"credentials": "role"', '"credentials": "platform"',
                     "roleArn", "externalId", "accessKey"):
        assert fragment in text, (fragment, text)


# --- the request must say how it authenticates -------------------------------------------------

def test_a_keyless_subscription_without_a_credential_mode_is_a_400_explaining_the_three_forms(
    acme: Caller
) -> None:
    # Given a subscription with neither keys, nor a role, nor a stated mode (today's platform form)
    body = sqs_body(keys=False)
    # When it is posted
    resp = acme.client.post(BASE, json=body, headers=acme.headers())
    # Then it is a 400 on the destination block explaining the three forms, and nothing is stored
    error = assert_error(resp, 400, "invalid_subscription")
    assert [d["field"] for d in error["details"]] == ["destination.sqs"]
    three_forms(error)
    assert acme.get(BASE, query_string={"include_inactive": "true"}).get_json() == []


def test_a_keyless_sns_subscription_without_a_mode_is_a_400_too(acme: Caller) -> None:
    body = sqs_body(keys=False)
    body["destination"] = {"type": "SNS", "sns": {"topicArn": TOPIC_ARN, "region": "us-east-1"}}
    error = assert_error(acme.client.post(BASE, json=body, headers=acme.headers()), 400,
                         "invalid_subscription")
    assert [d["field"] for d in error["details"]] == ["destination.sns"]
    three_forms(error)


def _with(mode: str | None, **fields: Any) -> dict[str, Any]:
    body = sqs_body(keys=False)
    block = body["destination"]["sqs"]
    if mode is not None:
        block["credentials"] = mode
    block.update(fields)
    return body


WRONG_COMPANIONS = [
    pytest.param(_with("role"), id="role-without-roleArn"),
    pytest.param(_with("role", roleArn=ROLE_ARN, accessKey=ACCESS_KEY, accessSecret=ACCESS_SECRET),
                 id="role-with-keys"),
    pytest.param(_with("role", roleArn="arn:aws:iam::123456789012:user/someone"),
                 id="roleArn-not-a-role"),
    pytest.param(_with("role", roleArn="arn:aws:iam::1234:role/r"), id="roleArn-bad-account"),
    pytest.param(_with("role", roleArn=ROLE_ARN + "\n"), id="roleArn-trailing-newline"),
    pytest.param(_with("keys"), id="keys-without-the-pair"),
    pytest.param(_with("keys", accessKey=ACCESS_KEY, accessSecret=ACCESS_SECRET, roleArn=ROLE_ARN),
                 id="keys-with-roleArn"),
    pytest.param(_with("platform", accessKey=ACCESS_KEY, accessSecret=ACCESS_SECRET),
                 id="platform-with-keys"),
    pytest.param(_with("platform", roleArn=ROLE_ARN), id="platform-with-roleArn"),
    pytest.param(_with(None, roleArn=ROLE_ARN), id="roleArn-without-mode"),
    pytest.param(_with("both"), id="unknown-mode"),
    pytest.param(_with("role", roleArn=ROLE_ARN, externalId="ec-chosen-by-the-tenant"),
                 id="externalId-chosen-by-the-client"),
    pytest.param(_with("platform", externalId="anything"), id="externalId-with-platform"),
]


@pytest.mark.parametrize("body", WRONG_COMPANIONS)
def test_a_mode_with_the_wrong_companion_fields_is_a_400_and_stores_nothing(
    acme: Caller, body: dict[str, Any]
) -> None:
    allow(acme.client.application, "acme", ACCOUNT)  # so platform is refused for its fields only
    resp = acme.client.post(BASE, json=body, headers=acme.headers())
    error = assert_error(resp, 400, "invalid_subscription")
    assert ACCESS_SECRET not in resp.get_data(as_text=True)
    assert error["details"] and error["details"][0]["field"].startswith("destination")
    assert acme.get(BASE, query_string={"include_inactive": "true"}).get_json() == []


def test_keys_may_omit_the_mode_as_seed_002_does_and_the_response_states_it(acme: Caller) -> None:
    shown = create(acme, sqs_body())
    assert shown["destination"]["sqs"] == {
        "queueUrl": QUEUE_URL, "region": "us-east-1", "credentials": "keys",
        "accessKey": "****MPLE", "accessSecret": "********", "roleArn": None, "externalId": None}


# --- platform: opted-in tenants, allowed accounts ----------------------------------------------

def test_platform_credentials_for_a_tenant_not_opted_in_are_a_400(acme: Caller) -> None:
    error = assert_error(acme.client.post(BASE, json=platform_body(), headers=acme.headers()),
                         400, "invalid_subscription")
    assert [d["field"] for d in error["details"]] == ["destination.credentials"]
    assert "not allowed for this tenant" in error["message"]
    assert acme.get(BASE, query_string={"include_inactive": "true"}).get_json() == []


def test_platform_credentials_to_a_queue_in_an_account_the_tenant_is_not_allowed_are_a_400(
    acme: Caller, stub: StubSender
) -> None:
    # Given acme is opted in for its own account only
    allow(acme.client.application, "acme", ACCOUNT)
    # When it points a platform-credential subscription at a queue in another account
    resp = acme.client.post(BASE, json=platform_body(OTHER_QUEUE), headers=acme.headers())
    # Then it is a 400 naming the account, and nothing is stored or sent
    error = assert_error(resp, 400, "invalid_subscription")
    assert [d["field"] for d in error["details"]] == ["destination.credentials"]
    assert "210987654321" in error["message"]
    assert acme.get(BASE, query_string={"include_inactive": "true"}).get_json() == []
    # And an SNS topic in another account is refused the same way
    body = platform_body()
    body["destination"] = {"type": "SNS", "sns": {
        "topicArn": "arn:aws:sns:us-east-1:210987654321:theirs", "credentials": "platform"}}
    assert_error(acme.client.post(BASE, json=body, headers=acme.headers()), 400,
                 "invalid_subscription")
    assert stub.sent == []


def test_an_opted_in_tenant_delivers_with_the_platform_identity_to_a_listed_account(
    acme: Caller, globex: Caller, stub: StubSender
) -> None:
    app = acme.client.application
    # Given acme opted in for 123456789012 (globex is not)
    allow(app, "acme", ACCOUNT)
    # When acme subscribes with platform credentials to a queue in that account
    shown = create(acme, platform_body())
    # Then the response states the mode and shows no keys, role or ExternalId
    assert shown["destination"]["sqs"] == {
        "queueUrl": QUEUE_URL, "region": "us-east-1", "credentials": "platform",
        "accessKey": None, "accessSecret": None, "roleArn": None, "externalId": None}
    # And a matching event is sent with no keys and no role (the platform's own chain)
    acme.post_event(order_event(id="evt-platform-1"))
    settle(app)
    [(destination, message)] = stub.sent
    assert (destination.credentials, destination.access_key, destination.role_arn) \
        == ("platform", None, None)
    assert message.attributes["event_id"] == "evt-platform-1"
    # And globex, not opted in, cannot do the same to the same queue
    assert_error(globex.client.post(BASE, json=platform_body(), headers=globex.headers()), 400,
                 "invalid_subscription")


def test_platform_credentials_on_the_endpoint_override_use_the_account_in_the_path(
    template_db: Any, tmp_path: Any
) -> None:
    from tests.conftest import mint

    with stub_app(copy_db(template_db, tmp_path),
                            aws_endpoint_sqs="http://127.0.0.1:4566") as app:
        acme = Caller(app.test_client(), "acme", mint("acme"))
        allow(app, "acme", ACCOUNT)
        ok = platform_body("http://127.0.0.1:4566/123456789012/orders")
        assert acme.client.post(BASE, json=ok, headers=acme.headers()).status_code == 201
        other = platform_body("http://127.0.0.1:4566/210987654321/orders")
        error = assert_error(acme.client.post(BASE, json=other, headers=acme.headers()), 400,
                             "invalid_subscription")
        assert "210987654321" in error["message"]


# --- role: AssumeRole with the tenant's ExternalId ----------------------------------------------

def test_a_role_subscription_shows_the_tenants_external_id_and_delivers_through_the_role(
    acme: Caller, stub: StubSender
) -> None:
    app = acme.client.application
    ours = external_id_of(app, "acme")
    # Given a role subscription
    shown = create(acme, role_body())
    # Then the response shows the mode, the role and acme's ExternalId (read-only), no keys
    assert shown["destination"]["sqs"] == {
        "queueUrl": QUEUE_URL, "region": "us-east-1", "credentials": "role", "accessKey": None,
        "accessSecret": None, "roleArn": ROLE_ARN, "externalId": ours}
    assert ours.startswith("ec-") and len(ours) >= 32
    # And a delivery names the role, acme's ExternalId and a session naming acme and the
    # subscription, with no keys
    acme.post_event(order_event(id="evt-role-1"))
    settle(app)
    [(destination, _)] = stub.sent
    assert (destination.credentials, destination.role_arn, destination.external_id) \
        == ("role", ROLE_ARN, ours)
    assert destination.access_key is None and destination.access_secret is None
    assert destination.session_name is not None
    assert "acme" in destination.session_name and shown["id"][:20] in destination.session_name
    assert len(destination.session_name) <= 64


def test_every_tenant_has_its_own_external_id_and_sees_only_its_own(
    acme: Caller, globex: Caller
) -> None:
    app = acme.client.application
    a, g = external_id_of(app, "acme"), external_id_of(app, "globex")
    assert a != g
    mine = create(acme, role_body())
    theirs = create(globex, role_body())
    assert mine["destination"]["sqs"]["externalId"] == a
    assert theirs["destination"]["sqs"]["externalId"] == g
    assert a not in globex.get(BASE).get_data(as_text=True)


def test_a_role_subscription_read_back_and_put_back_keeps_the_tenants_external_id(
    acme: Caller, globex: Caller, stub: StubSender
) -> None:
    app = acme.client.application
    shown = create(acme, role_body())
    # When exactly what GET showed (externalId included) is PUT back, it is accepted unchanged
    resp = put(acme, BASE, writable(shown))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["destination"] == shown["destination"]
    # But another tenant's ExternalId in the body is refused, and never used
    forged = writable(shown)
    forged["destination"]["sqs"]["externalId"] = external_id_of(app, "globex")
    error = assert_error(put(acme, BASE, forged), 400, "invalid_subscription")
    assert "externalId" in error["message"]
    acme.post_event(order_event(id="evt-role-2"))
    settle(app)
    [(destination, _)] = stub.sent
    assert destination.external_id == external_id_of(app, "acme")


# --- PUT never changes the mode implicitly --------------------------------------------------------

def test_a_put_that_omits_the_keys_of_a_keys_subscription_is_a_400_and_keeps_them(
    acme: Caller
) -> None:
    created = create(acme, sqs_body())
    # When it is PUT without keys and without a mode (what used to switch to platform)
    resp = put(acme, BASE, sqs_body(id=created["id"], keys=False, subscribeChange=True))
    # Then it is a 400 and the stored keys and flags are untouched
    error = assert_error(resp, 400, "invalid_subscription")
    three_forms(error)
    assert acme.get(f"{BASE}/{created['id']}").get_json() == created
    # And stating keys without sending them (nor their masks) is a 400 too
    body = sqs_body(id=created["id"], keys=False)
    body["destination"]["sqs"]["credentials"] = "keys"
    assert_error(put(acme, BASE, body), 400, "invalid_subscription")
    stored = stored_subscription(acme.client.application, "acme", created["id"])
    assert stored is not None and stored.access_key == ACCESS_KEY
    assert stored.access_secret_enc is not None


def test_the_masked_keys_sent_back_keep_the_keys_with_or_without_the_mode(acme: Caller) -> None:
    created = create(acme, sqs_body())
    for mode in (None, "keys"):
        body = writable(created)
        body["subscribeChange"] = not body["subscribeChange"]
        if mode is None:
            del body["destination"]["sqs"]["credentials"]
        resp = put(acme, BASE, body)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert resp.get_json()["destination"]["sqs"]["accessKey"] == "****MPLE"
    stored = stored_subscription(acme.client.application, "acme", created["id"])
    assert stored is not None and stored.access_key == ACCESS_KEY


def test_switching_mode_needs_the_new_mode_stated_and_drops_the_old_credentials(
    acme: Caller, stub: StubSender
) -> None:
    app = acme.client.application
    created = create(acme, sqs_body())
    # keys → role
    resp = put(acme, BASE, role_body(id=created["id"]))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    stored = stored_subscription(app, "acme", created["id"])
    assert stored is not None and stored.credentials == "role"
    assert stored.access_key is None and stored.access_secret_enc is None
    # role → platform: refused until acme is opted in, then accepted
    assert_error(put(acme, BASE, platform_body(id=created["id"])), 400, "invalid_subscription")
    allow(app, "acme", ACCOUNT)
    resp = put(acme, BASE, platform_body(id=created["id"]))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    stored = stored_subscription(app, "acme", created["id"])
    assert stored is not None and (stored.credentials, stored.role_arn) == ("platform", None)
    # platform → keys
    resp = put(acme, BASE, sqs_body(id=created["id"]))
    assert resp.status_code == 200 and resp.get_json()["destination"]["sqs"]["credentials"] == "keys"
    # And a role subscription PUT back with masks it never had is a 400
    create(acme, role_body(id="role-sub"))
    body = role_body(id="role-sub")
    body["destination"]["sqs"].update(credentials="keys", accessKey="****MPLE",
                                      accessSecret="********")
    del body["destination"]["sqs"]["roleArn"]
    assert_error(put(acme, BASE, body), 400, "invalid_subscription")


# --- the deliver pool re-checks: revoked or never granted ------------------------------------------

def _platform_sub(app: Any, acme: Caller) -> dict[str, Any]:
    allow(app, "acme", ACCOUNT)
    return create(acme, platform_body())


def test_revoking_the_opt_in_deactivates_platform_subscriptions_with_the_reason(
    acme: Caller, stub: StubSender
) -> None:
    from subscriptions.platform import revoke_platform_credentials

    app = acme.client.application
    sub = _platform_sub(app, acme)
    keys_sub = create(acme, sqs_body(entityType="CUSTOMER"))
    # When an operator revokes acme's opt-in
    with runtime_of(app).sessions() as session:
        revoked = revoke_platform_credentials(session, "acme", None)
        session.commit()
    # Then its platform subscription is inactive with the exact reason, its keys one untouched
    assert revoked == [sub["id"]]
    shown = acme.get(f"{BASE}/{sub['id']}").get_json()
    assert shown["active"] is False and shown["deactivationReason"] == REVOKED
    assert acme.get(f"{BASE}/{keys_sub['id']}").get_json()["active"] is True
    # And nothing is sent for it
    acme.post_event(order_event(id="evt-after-revoke"))
    settle(app)
    assert stub.sent == []


def test_a_platform_subscription_no_longer_allowed_is_deactivated_at_send_time_without_a_send(
    acme: Caller, stub: StubSender, caplog: pytest.LogCaptureFixture
) -> None:
    app = acme.client.application
    sub = _platform_sub(app, acme)
    # Given the opt-in disappears behind the API's back (a migrated subscription of a tenant
    # never opted in is in exactly this state)
    with runtime_of(app).sessions() as session:
        session.execute(update(Tenant).where(Tenant.name == "acme").values(platform_accounts=None))
        session.commit()
    # When a matching event arrives
    caplog.set_level("WARNING")
    acme.post_event(order_event(id="evt-not-allowed"))
    settle(app)
    # Then nothing is sent, the attempt is logged as failed "not allowed", and the subscription is
    # deactivated with the exact reason, logged
    assert stub.sent == []
    [entry] = attempts(acme, sub["id"])["deliveries"]
    assert (entry["status"], entry["errorCode"]) == ("failed", "NotAllowed")
    assert entry["errorMessage"] == "not allowed: " + REVOKED
    shown = acme.get(f"{BASE}/{sub['id']}").get_json()
    assert shown["active"] is False and shown["deactivationReason"] == REVOKED
    assert any(REVOKED in r.getMessage() and sub["id"] in r.getMessage() for r in caplog.records)


def test_removing_the_subscriptions_account_from_the_list_stops_it_too(
    acme: Caller, stub: StubSender
) -> None:
    from subscriptions.platform import revoke_platform_credentials

    app = acme.client.application
    allow(app, "acme", ACCOUNT, "210987654321")
    mine = create(acme, platform_body())
    other = create(acme, platform_body(OTHER_QUEUE, entityType="CUSTOMER"))
    with runtime_of(app).sessions() as session:
        assert revoke_platform_credentials(session, "acme", ["210987654321"]) == [other["id"]]
        session.commit()
    assert acme.get(f"{BASE}/{mine['id']}").get_json()["active"] is True
    assert acme.get(f"{BASE}/{other['id']}").get_json()["deactivationReason"] == REVOKED
    acme.post_event(order_event(id="evt-still-allowed"))
    settle(app)
    assert [d.target for d, _ in stub.sent] == [QUEUE_URL]


@pytest.mark.parametrize("url", [QUEUE_URL, QUEUE_URL.replace("orders", "no-such-queue")])
def test_the_test_send_to_a_destination_not_allowed_says_only_not_allowed(
    acme: Caller, stub: StubSender, url: str
) -> None:
    app = acme.client.application
    allow(app, "acme", ACCOUNT)
    sub = create(acme, platform_body(url))
    with runtime_of(app).sessions() as session:
        session.execute(update(Tenant).where(Tenant.name == "acme").values(platform_accounts=None))
        session.commit()
    resp = acme.client.post(f"{BASE}/{sub['id']}/test", headers=acme.headers())
    # The same answer whether the queue exists or not, and no send made
    assert resp.status_code == 200
    assert resp.get_json() == {"ok": False, "messageId": None, "errorCode": "NotAllowed",
                               "errorMessage": "not allowed: " + REVOKED, "transient": False}
    assert stub.sent == []


# --- the session name and the store --------------------------------------------------------------

def test_the_role_session_name_is_a_valid_sts_name_for_any_tenant_and_id() -> None:
    import re

    from tenants.aws_identity import role_session_name

    for tenant, sub_id in [("acme", "s-1"), ("a" * 64, "b" * 128), ("x.y-z", "id:with:colons")]:
        name = role_session_name(tenant, sub_id)
        assert re.fullmatch(r"[\w+=,.@-]{2,64}", name), name
    assert role_session_name("acme", "s-1") == "ec.acme.s-1"
    assert role_session_name("acme", "s-1") != role_session_name("acme", "s-2")
    # Long or rewritten names stay distinct per subscription
    assert role_session_name("a" * 64, "b" * 127 + "1") != role_session_name("a" * 64, "b" * 127 + "2")
    assert role_session_name("acme", "x:y") != role_session_name("acme", "x-y")


def test_the_migration_marks_existing_rows_and_backfills_external_ids(tmp_path: Any) -> None:
    """SQLite: a database at 0005 holding tenants and subscriptions with and without keys."""
    from tests.support.migration_rows import check_migrated, seed_0005

    url = f"sqlite:///{tmp_path / 'old.db'}"
    seed_0005(url)
    check_migrated(url)


def test_migrated_platform_subscriptions_keep_delivering_only_where_the_tenant_is_opted_in(
    tmp_path: Any
) -> None:
    from cryptography.fernet import Fernet

    from tests.conftest import mint
    from tests.support.migration_rows import check_migrated, seed_0005

    # Given a database of the previous release: old-a has a keyed and a keyless subscription,
    # old-b a keyless one; migrated, and old-b then opted in for the queues' account
    key = Fernet.generate_key()
    db = tmp_path / "old.db"
    seed_0005(f"sqlite:///{db}", Fernet(key).encrypt(ACCESS_SECRET.encode()).decode())
    check_migrated(f"sqlite:///{db}")
    with stub_app(db, secret_key=key.decode()) as app:
        sender = runtime_of(app).senders["SQS"]
        allow(app, "old-b", ACCOUNT)
        old_a = Caller(app.test_client(), "old-a", mint("old-a"))
        old_b = Caller(app.test_client(), "old-b", mint("old-b"))
        # When each posts an ORDER create
        old_a.post_event(order_event(id="evt-old-a"))
        old_b.post_event(order_event(id="evt-old-b"))
        settle(app)
        # Then old-a's keyed one and old-b's (opted in) platform one are delivered as before
        sent = sorted((m.attributes["event_id"], d.credentials, d.access_key)
                      for d, m in sender.sent)
        assert sent == [("evt-old-a", "keys", ACCESS_KEY), ("evt-old-b", "platform", None)]
        # And old-a's keyless one, its tenant not opted in, is deactivated with the reason
        shown = old_a.get(f"{BASE}/keyless").get_json()
        assert shown["active"] is False and shown["deactivationReason"] == REVOKED
        assert shown["destination"]["sqs"]["credentials"] == "platform"
        [entry] = attempts(old_a, "keyless")["deliveries"]
        assert entry["errorCode"] == "NotAllowed"
        assert old_b.get(f"{BASE}/keyless-too").get_json()["active"] is True
        # And the operator's view lists it
        from subscriptions.platform import tenant_report

        with runtime_of(app).sessions() as session:
            report = tenant_report(session, "old-a")
        assert [s["id"] for s in report["deactivatedByPlatformRule"]] == ["keyless"]


# --- the temporary-credential cache --------------------------------------------------------------

class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class _RecordingSts:
    """Answers AssumeRole like STS does (credentials valid for DurationSeconds), counting calls."""

    def __init__(self, clock: _Clock, delay: float = 0.0) -> None:
        self.clock = clock
        self.calls: list[dict[str, Any]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def assume_role(self, **kwargs: Any) -> dict[str, Any]:
        from datetime import UTC, datetime

        time.sleep(self.delay)
        with self.lock:
            self.calls.append(kwargs)
            n = len(self.calls)
        expires = datetime.fromtimestamp(self.clock.now + kwargs["DurationSeconds"], UTC)
        return {"Credentials": {"AccessKeyId": f"ASIA{n:016d}", "SecretAccessKey": f"s{n}",
                                "SessionToken": f"t{n}", "Expiration": expires}}


def _role_destination(external_id: str = "ec-one", role: str = ROLE_ARN) -> Destination:
    return Destination(kind="SQS", target=QUEUE_URL, region="us-east-1", credentials="role",
                       role_arn=role, external_id=external_id, session_name="ec-acme.s-1")


def test_assumed_credentials_are_reused_until_five_minutes_before_they_expire() -> None:
    from subscriptions.senders.aws import AssumedRoles

    clock = _Clock()
    sts = _RecordingSts(clock)
    roles = AssumedRoles(sts_client=lambda region: sts, clock=clock)
    first = roles.get(_role_destination())
    # The call carried the role, the tenant's ExternalId and the session name
    [call] = sts.calls
    assert (call["RoleArn"], call["ExternalId"], call["RoleSessionName"]) \
        == (ROLE_ARN, "ec-one", "ec-acme.s-1")
    # Reused while more than five minutes remain (an hour's credentials: 55 minutes)
    clock.now += 54 * 60
    assert roles.get(_role_destination()) is first and len(sts.calls) == 1
    # Refreshed once less than five minutes remain, before they expire
    clock.now += 2 * 60
    second = roles.get(_role_destination())
    assert second is not first and len(sts.calls) == 2
    assert second.access_key_id != first.access_key_id
    # Another ExternalId (another tenant) or another role never shares an entry
    roles.get(_role_destination("ec-two"))
    roles.get(_role_destination(role="arn:aws:iam::123456789012:role/other"))
    assert len(sts.calls) == 4


def test_concurrent_senders_share_one_assume_role_call() -> None:
    from subscriptions.senders.aws import AssumedRoles

    clock = _Clock()
    sts = _RecordingSts(clock, delay=0.05)
    roles = AssumedRoles(sts_client=lambda region: sts, clock=clock)
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(roles.get(_role_destination())))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sts.calls) == 1 and len({id(c) for c in got}) == 1


def test_a_refused_assume_role_is_permanent_and_not_cached_and_throttling_is_transient() -> None:
    from botocore.exceptions import ClientError

    from subscriptions.senders.aws import AssumedRoles, CredentialsFailed

    clock = _Clock()

    class Refusing:
        code = "AccessDenied"
        calls = 0

        def assume_role(self, **kwargs: Any) -> dict[str, Any]:
            Refusing.calls += 1
            raise ClientError({"Error": {"Code": self.code, "Message":
                               "User: arn:aws:iam::999999999999:user/platform is not authorized"},
                               "ResponseMetadata": {"HTTPStatusCode": 403}}, "AssumeRole")

    sts = Refusing()
    roles = AssumedRoles(sts_client=lambda region: sts, clock=clock)
    for _ in range(2):
        with pytest.raises(CredentialsFailed) as caught:
            roles.get(_role_destination())
        result = caught.value.result
        assert result.transient is False and result.error_code == "AssumeRole.AccessDenied"
        # The platform's identity in STS's message is not passed on to the tenant
        assert "999999999999" not in (result.error_message or "")
        assert "externalId" in (result.error_message or "")
    assert Refusing.calls == 2
    sts.code = "Throttling"
    with pytest.raises(CredentialsFailed) as caught:
        roles.get(_role_destination())
    assert caught.value.result.transient is True


def test_senders_turn_a_refused_role_into_a_failed_result_for_every_message() -> None:
    from botocore.exceptions import ClientError

    from subscriptions.senders.aws import AssumedRoles, ClientCache
    from subscriptions.senders.base import OutgoingMessage
    from subscriptions.senders.sns import SnsSender
    from subscriptions.senders.sqs import SqsSender

    class Refusing:
        def assume_role(self, **kwargs: Any) -> dict[str, Any]:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"},
                               "ResponseMetadata": {"HTTPStatusCode": 403}}, "AssumeRole")

    clients = ClientCache(AssumedRoles(sts_client=lambda region: Refusing()))
    messages = [OutgoingMessage(body="{}", attributes={}) for _ in range(3)]
    sqs_results = SqsSender(clients).send_batch(_role_destination(), messages)
    assert [r.error_code for r in sqs_results] == ["AssumeRole.AccessDenied"] * 3
    sns = SnsSender(clients).send(dataclasses.replace(_role_destination(), kind="SNS", target=TOPIC_ARN),
                                  messages[0])
    assert sns.ok is False and sns.transient is False


def test_subscription_rows_carry_the_mode(acme: Caller) -> None:
    app = acme.client.application
    created = create(acme, role_body())
    with runtime_of(app).sessions() as session:
        row = session.execute(select(Subscription).where(Subscription.id == created["id"])) \
            .scalar_one()
        assert (row.credentials, row.role_arn, row.access_key) == ("role", ROLE_ARN, None)
