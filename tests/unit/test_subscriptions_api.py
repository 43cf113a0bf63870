"""/api/v1/event-subscription on the embedded app (SQLite + StubBroker) with a StubSender.

The StubSender app is conftest's ``embedded`` marked ``embedded("sender")``; the helpers this
module shares with test_delivery.py and test_matching.py are in tests/support/subscriptions.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from subscriptions.senders.stub import StubSender
from tests.conftest import Caller, mint, order_event
from tests.support.apps import copy_db, runtime_of, stub_app
from tests.support.events import assert_error
from tests.support.subscriptions import (
    ACCESS_KEY,
    ACCESS_SECRET,
    BASE,
    QUEUE_URL,
    TOPIC_ARN,
    create,
    put,
    settle,
    sns_body,
    sqs_body,
    stored_subscription,
    writable,
)

# conftest's ``embedded`` (and so ``acme``/``globex``) is the StubSender app; ``stub`` its sender.
pytestmark = pytest.mark.embedded("sender")

# Seed 002's "Create Event Subscriptions" request, verbatim.
SEED_002_SUBSCRIPTION: dict[str, Any] = {
    "active": True,
    "destination": {
        "sqs": {
            "accessKey": "string",
            "accessSecret": "string",
            "queueUrl": "string",
            "region": "string",
        },
        "type": "SNS",
    },
    "entityType": "CUSTOMER",
    "id": "string",
    "subscribeChange": True,
    "subscribeCreate": True,
    "subscribeDelete": True,
}


# --- create, read, list -----------------------------------------------------------------------

def test_post_is_201_with_location_and_masks_the_key_and_secret(acme: Caller) -> None:
    # Given an SQS subscription with an access key and secret
    body = sqs_body()
    # When it is posted
    resp = acme.client.post(BASE, json=body, headers=acme.headers())
    # Then it is a 201 pointing at the new subscription
    assert resp.status_code == 201, resp.get_data(as_text=True)
    shown = resp.get_json()
    assert resp.headers["Location"] == f"{BASE}/{shown['id']}"
    # And the key is masked to its last 4 characters, the secret fully, and neither is echoed
    assert shown["destination"] == {"type": "SQS", "sqs": {
        "queueUrl": QUEUE_URL, "region": "us-east-1", "credentials": "keys",
        "accessKey": "****MPLE", "accessSecret": "********", "roleArn": None, "externalId": None}}
    text = resp.get_data(as_text=True)
    assert ACCESS_SECRET not in text and ACCESS_KEY not in text
    assert shown["active"] is True and shown["entityType"] == "ORDER"
    assert (shown["subscribeCreate"], shown["subscribeChange"], shown["subscribeDelete"]) \
        == (True, False, False)
    assert shown["eventTypes"] == ["ENTITY_EVENT"]
    assert shown["deactivatedAt"] is None and shown["deactivationReason"] is None
    # And the secret is stored encrypted, not in clear
    stored = stored_subscription(acme.client.application, "acme", shown["id"])
    assert stored is not None and stored.access_key == ACCESS_KEY
    assert stored.access_secret_enc and ACCESS_SECRET not in stored.access_secret_enc


def test_post_with_a_client_id_uses_it_and_a_second_post_is_a_409(acme: Caller) -> None:
    # Given a subscription created with a client-chosen id
    shown = create(acme, sqs_body(id="orders-sub"))
    assert shown["id"] == "orders-sub"
    # When the same id is posted again
    resp = acme.client.post(BASE, json=sqs_body(id="orders-sub"), headers=acme.headers())
    # Then it is a 409 naming the id, and there is still one subscription
    error = assert_error(resp, 409, "conflict")
    assert [d["field"] for d in error["details"]] == ["id"]
    assert [s["id"] for s in acme.get(BASE).get_json()] == ["orders-sub"]


def test_get_one_and_list_show_only_active_ones_unless_include_inactive(acme: Caller) -> None:
    # Given one active and one inactive subscription
    on = create(acme, sqs_body())
    off = create(acme, sns_body(active=False))
    # When one is fetched
    got = acme.get(f"{BASE}/{on['id']}")
    # Then it is what POST answered, secret masked
    assert got.status_code == 200
    assert got.get_json() == on
    # And the inactive one shows why
    off_shown = acme.get(f"{BASE}/{off['id']}").get_json()
    assert off_shown["active"] is False and off_shown["deactivationReason"] == "created inactive"
    assert off_shown["destination"] == {"type": "SNS", "sns": {
        "topicArn": TOPIC_ARN, "region": "us-east-1", "credentials": "keys",
        "accessKey": "****MPLE", "accessSecret": "********", "roleArn": None, "externalId": None}}
    # When listed by default, only the active one appears
    assert [s["id"] for s in acme.get(BASE).get_json()] == [on["id"]]
    # And include_inactive=true lists both, in creation order
    listed = acme.get(BASE, query_string={"include_inactive": "true"}).get_json()
    assert [s["id"] for s in listed] == [on["id"], off["id"]]
    assert ACCESS_SECRET not in acme.get(BASE).get_data(as_text=True)


def test_get_unknown_subscription_is_404(acme: Caller) -> None:
    assert_error(acme.get(f"{BASE}/no-such-sub"), 404, "not_found")


# --- update -----------------------------------------------------------------------------------

def test_put_with_the_id_in_the_body_updates(acme: Caller) -> None:
    # Given a subscription to ORDER creates
    shown = create(acme, sqs_body())
    # When PUT /event-subscription carries its id and turns on changes and deletes
    body = sqs_body(id=shown["id"], subscribeChange=True, subscribeDelete=True)
    resp = put(acme, BASE, body)
    # Then it is updated in place
    assert resp.status_code == 200, resp.get_data(as_text=True)
    updated = resp.get_json()
    assert updated["id"] == shown["id"]
    assert (updated["subscribeCreate"], updated["subscribeChange"], updated["subscribeDelete"]) \
        == (True, True, True)
    # (dropping the keys is a 400, never a silent switch to other credentials:
    # test_aws_identity.py::test_a_put_that_omits_the_keys_of_a_keys_subscription_is_a_400_and_keeps_them)
    assert updated["destination"]["sqs"]["accessKey"] == "****MPLE"
    assert acme.get(f"{BASE}/{shown['id']}").get_json() == updated


def test_put_without_an_id_in_the_body_is_a_400(acme: Caller) -> None:
    create(acme, sqs_body())
    error = assert_error(put(acme, BASE, sqs_body()), 400, "invalid_subscription")
    assert [d["field"] for d in error["details"]] == ["id"]


def test_put_by_path_updates(acme: Caller) -> None:
    # Given a subscription to an SQS queue
    shown = create(acme, sqs_body())
    # When PUT /{id} switches it to an SNS topic (no id in the body)
    resp = put(acme, f"{BASE}/{shown['id']}", sns_body(entityType="CUSTOMER"))
    # Then it is that subscription, now on the topic
    assert resp.status_code == 200, resp.get_data(as_text=True)
    updated = resp.get_json()
    assert updated["id"] == shown["id"] and updated["entityType"] == "CUSTOMER"
    assert updated["destination"] == {"type": "SNS", "sns": {
        "topicArn": TOPIC_ARN, "region": "us-east-1", "credentials": "keys",
        "accessKey": "****MPLE", "accessSecret": "********", "roleArn": None, "externalId": None}}
    assert [s["id"] for s in acme.get(BASE).get_json()] == [shown["id"]]


def test_put_by_path_with_a_different_id_in_the_body_is_a_400(acme: Caller) -> None:
    # Given two subscriptions
    a = create(acme, sqs_body())
    b = create(acme, sqs_body(entityType="CUSTOMER"))
    # When PUT /{a} carries b's id
    resp = put(acme, f"{BASE}/{a['id']}", sqs_body(id=b["id"], subscribeDelete=True))
    # Then it is a 400 naming id, and neither changed
    error = assert_error(resp, 400, "id_mismatch")
    assert [d["field"] for d in error["details"]] == ["id"]
    assert acme.get(f"{BASE}/{a['id']}").get_json() == a
    assert acme.get(f"{BASE}/{b['id']}").get_json() == b


@pytest.mark.parametrize("by", ["body", "path"])
def test_put_of_an_unknown_id_is_a_404_and_creates_nothing(acme: Caller, by: str) -> None:
    path = BASE if by == "body" else f"{BASE}/ghost"
    resp = put(acme, path, sqs_body(id="ghost"))
    assert_error(resp, 404, "not_found")
    assert acme.get(BASE, query_string={"include_inactive": "true"}).get_json() == []


def test_put_back_the_masked_values_keeps_the_stored_key_and_secret(
    acme: Caller, stub: StubSender
) -> None:
    # Given a subscription with keys, as GET shows it (masked)
    created = create(acme, sqs_body())
    shown = acme.get(f"{BASE}/{created['id']}").get_json()
    assert shown["destination"]["sqs"]["accessKey"] == "****MPLE"
    # When its writable fields are PUT back with the masked values and one flag changed
    body = writable(shown)
    body["subscribeChange"] = True
    resp = put(acme, BASE, body)
    # Then the update succeeds and still shows keys as stored
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["subscribeChange"] is True
    assert resp.get_json()["destination"]["sqs"]["accessKey"] == "****MPLE"
    assert resp.get_json()["destination"]["sqs"]["accessSecret"] == "********"
    stored = stored_subscription(acme.client.application, "acme", created["id"])
    assert stored is not None and stored.access_key == ACCESS_KEY
    # And a delivery is sent with the original key and secret
    acme.post_event(order_event(id="evt-keys-1"))
    settle(acme.client.application)
    assert len(stub.sent) == 1
    destination, _ = stub.sent[0]
    assert (destination.kind, destination.target, destination.region) == ("SQS", QUEUE_URL, "us-east-1")
    assert destination.access_key == ACCESS_KEY
    assert destination.access_secret == ACCESS_SECRET


def test_put_back_exactly_what_get_showed_is_accepted(acme: Caller) -> None:
    # Given a subscription with keys, as GET shows it
    created = create(acme, sqs_body())
    shown = acme.get(f"{BASE}/{created['id']}").get_json()
    # When that very document is PUT back
    resp = put(acme, BASE, shown)
    # Then it is accepted and nothing changes
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert writable(resp.get_json()) == writable(shown)
    assert resp.get_json()["createdAt"] == shown["createdAt"]
    # And read-only fields sent back with other values are ignored, not applied
    forged = {**shown, "createdAt": "2000-01-01T00:00:00.000Z", "deactivationReason": "forged",
              "deactivatedAt": "2000-01-01T00:00:00.000Z"}
    again = put(acme, BASE, forged).get_json()
    assert again["createdAt"] == shown["createdAt"]
    assert again["deactivationReason"] is None and again["deactivatedAt"] is None


def test_a_masked_key_that_is_not_the_stored_one_is_a_400(acme: Caller) -> None:
    created = create(acme, sqs_body())
    body = writable(created)
    body["destination"]["sqs"]["accessKey"] = "****ZZZZ"
    error = assert_error(put(acme, BASE, body), 400, "invalid_subscription")
    assert [d["field"] for d in error["details"]] == ["destination.accessKey"]
    assert "masked" in error["message"]


def test_a_masked_secret_is_not_carried_to_another_queue(acme: Caller) -> None:
    # Given a subscription with keys
    created = create(acme, sqs_body())
    # When the masked values are PUT back with another queue URL
    body = writable(created)
    body["destination"]["sqs"]["queueUrl"] = QUEUE_URL + "-other"
    resp = put(acme, BASE, body)
    # Then it is a 400 naming accessSecret, and the stored destination is unchanged
    error = assert_error(resp, 400, "invalid_subscription")
    assert [d["field"] for d in error["details"]] == ["destination.accessSecret"]
    assert acme.get(f"{BASE}/{created['id']}").get_json() == created


# --- deactivate, delete -------------------------------------------------------------------------

def test_deactivate_answers_accepted_and_get_shows_inactive_with_the_reason(acme: Caller) -> None:
    # Given an active subscription
    created = create(acme, sqs_body())
    # When it is deactivated
    resp = acme.client.put(f"{BASE}/{created['id']}/deactivate", headers=acme.headers())
    # Then the answer is seed 002's shape with 202 inside
    assert resp.status_code == 200
    assert resp.get_json() == {"body": {}, "statusCode": "ACCEPTED", "statusCodeValue": 202}
    # And GET shows it inactive, with when and why
    shown = acme.get(f"{BASE}/{created['id']}").get_json()
    assert shown["active"] is False
    assert shown["deactivationReason"] == "deactivated by request"
    assert shown["deactivatedAt"] is not None
    # And the default list leaves it out
    assert acme.get(BASE).get_json() == []
    # And deactivating again is the same answer, the first reason kept
    again = acme.client.put(f"{BASE}/{created['id']}/deactivate", headers=acme.headers())
    assert again.status_code == 200 and again.get_json()["statusCodeValue"] == 202
    assert acme.get(f"{BASE}/{created['id']}").get_json()["deactivatedAt"] == shown["deactivatedAt"]


def test_deactivate_unknown_is_404(acme: Caller) -> None:
    assert_error(acme.client.put(f"{BASE}/ghost/deactivate", headers=acme.headers()), 404, "not_found")


def test_put_active_true_reactivates_and_clears_the_reason(acme: Caller) -> None:
    created = create(acme, sqs_body())
    acme.client.put(f"{BASE}/{created['id']}/deactivate", headers=acme.headers())
    resp = put(acme, f"{BASE}/{created['id']}", sqs_body())
    assert resp.status_code == 200
    shown = resp.get_json()
    assert shown["active"] is True
    assert shown["deactivatedAt"] is None and shown["deactivationReason"] is None


def test_delete_is_204_then_get_is_404(acme: Caller) -> None:
    # Given a subscription
    created = create(acme, sqs_body())
    # When it is deleted
    resp = acme.client.delete(f"{BASE}/{created['id']}", headers=acme.headers())
    # Then it is a 204 with no body, and it is gone everywhere
    assert resp.status_code == 204 and resp.get_data() == b""
    assert_error(acme.get(f"{BASE}/{created['id']}"), 404, "not_found")
    assert acme.get(BASE, query_string={"include_inactive": "true"}).get_json() == []
    # And deleting again is a 404
    assert_error(acme.client.delete(f"{BASE}/{created['id']}", headers=acme.headers()), 404, "not_found")


# --- auth and tenants ---------------------------------------------------------------------------

def _every_route(sub_id: str) -> list[tuple[str, str, Any]]:
    """(method, path, json) for every subscription route, aimed at ``sub_id``."""
    one = f"{BASE}/{sub_id}"
    window = {"since": "2020-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z"}
    return [
        ("GET", BASE, None),
        ("POST", BASE, sqs_body()),
        ("PUT", BASE, sqs_body(id=sub_id)),
        ("GET", one, None),
        ("PUT", one, sqs_body()),
        ("PUT", f"{one}/deactivate", None),
        ("GET", f"{one}/deliveries", None),
        ("POST", f"{one}/replay", window),
        ("POST", f"{one}/test", None),
        ("DELETE", one, None),
    ]


def test_a_token_without_the_subscriptions_scope_is_a_403_on_every_route(embedded: Any) -> None:
    # Given acme's subscription and a token of acme holding only the event scopes
    owner = Caller(embedded.test_client(), "acme", mint("acme"))
    created = create(owner, sqs_body())
    events_only = Caller(embedded.test_client(), "acme",
                         mint("acme", scopes=frozenset({"events:read", "events:write"})))
    # When it calls any subscription route, Then it is a 403 insufficient_scope
    for method, path, body in _every_route(created["id"]):
        resp = events_only.client.open(path, method=method, json=body, headers=events_only.headers())
        error = assert_error(resp, 403, "insufficient_scope")
        assert "subscriptions" in error["message"], (method, path)
    # And nothing changed
    assert owner.get(BASE).get_json() == [created]


def test_a_missing_or_bad_token_is_a_401_on_every_route(acme: Caller) -> None:
    created = create(acme, sqs_body())
    for method, path, body in _every_route(created["id"]):
        resp = acme.client.open(path, method=method, json=body, headers={"X-TWC-Tenant": "acme"})
        assert_error(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        bad = acme.client.open(path, method=method, json=body,
                               headers={"X-TWC-Tenant": "acme", "Authorization": "Bearer nope"})
        assert_error(bad, 401, "unauthorized")
    assert acme.get(BASE).get_json() == [created]


def test_another_tenant_gets_404_on_every_route_and_sees_nothing(acme: Caller, globex: Caller) -> None:
    # Given acme's subscription (with keys)
    created = create(acme, sqs_body())
    # When globex calls every route on its id, Then each is a 404
    for method, path, body in _every_route(created["id"]):
        if path == BASE:
            continue  # the collection routes are globex's own
        resp = globex.client.open(path, method=method, json=body, headers=globex.headers())
        assert_error(resp, 404, "not_found")
    # And globex's list is empty, even with inactive ones
    assert globex.get(BASE, query_string={"include_inactive": "true"}).get_json() == []
    # And acme's subscription is untouched
    assert acme.get(f"{BASE}/{created['id']}").get_json() == created
    # And the same client id in globex is a separate subscription, not a conflict
    assert create(globex, sqs_body(id=created["id"]))["id"] == created["id"]
    assert acme.get(f"{BASE}/{created['id']}").get_json() == created


# --- validation -------------------------------------------------------------------------------

def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for key in parents:
            node = node[key]
        node[last] = value
    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for key in parents:
            node = node[key]
        del node[last]
    return change


def _all(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        for c in changes:
            c(body)
    return change


def _sns(body: dict[str, Any]) -> None:
    body["destination"] = sns_body()["destination"]


INVALID = [
    pytest.param(_set("entityType", "FOO"), "entityType", "must be one of", id="entity-unknown"),
    pytest.param(_set("entityType", "order"), "entityType", "ORDER", id="entity-lowercase"),
    pytest.param(_set("subscribeCreate", False), "body",
                 "at least one of subscribeCreate, subscribeChange, subscribeDelete must be true",
                 id="no-flag"),
    pytest.param(_set("subscribeCreate", "true"), "subscribeCreate", "boolean", id="flag-string"),
    pytest.param(_set("destination.sqs.queueUrl", "https://example.com/queue"), "destination.sqs",
                 "queueUrl must be an SQS queue URL", id="queue-not-sqs"),
    pytest.param(_set("destination.sqs.queueUrl", "http://sqs.us-east-1.amazonaws.com/123456789012/q"),
                 "destination.sqs", "queueUrl must be an SQS queue URL", id="queue-http"),
    pytest.param(_set("destination.sqs.queueUrl", "https://sqs.us-east-1.amazonaws.com/1234/q"),
                 "destination.sqs", "queueUrl must be an SQS queue URL", id="queue-bad-account"),
    pytest.param(_drop("destination.sqs.queueUrl"), "destination.sqs.queueUrl", "required",
                 id="queue-missing"),
    pytest.param(_all(_sns, _set("destination.sns.topicArn", "arn:aws:sqs:us-east-1:123456789012:q")),
                 "destination.sns", "topicArn must be an SNS topic ARN", id="topic-not-sns"),
    pytest.param(_all(_sns, _set("destination.sns.topicArn", "orders")),
                 "destination.sns", "topicArn must be an SNS topic ARN", id="topic-bare-name"),
    pytest.param(_set("destination.sqs.region", "US-EAST-1"), "destination.sqs.region",
                 "must be an AWS region name", id="region-upper"),
    pytest.param(_set("destination.sqs.region", "string"), "destination.sqs.region",
                 "must be an AWS region name", id="region-word"),
    pytest.param(_set("destination.sqs.region", "eu-west-1"), "destination.sqs",
                 "region eu-west-1 differs from the queue URL's us-east-1", id="region-differs-sqs"),
    pytest.param(_all(_sns, _set("destination.sns.region", "eu-west-1")), "destination.sns",
                 "region eu-west-1 differs from the topic ARN's us-east-1", id="region-differs-sns"),
    pytest.param(_drop("destination.sqs.accessSecret"), "destination.accessSecret",
                 "send accessKey and accessSecret together", id="key-without-secret"),
    pytest.param(_drop("destination.sqs.accessKey"), "destination.accessSecret",
                 "send accessKey and accessSecret together", id="secret-without-key"),
    pytest.param(_set("destination.sqs.accessKey", "string"), "destination.accessKey",
                 "accessKey must be an AWS access key id", id="key-malformed"),
    pytest.param(_set("destination.sqs.accessSecret", ""), "destination.sqs.accessSecret",
                 "at least 1 character", id="secret-empty"),
    pytest.param(_set("destination.sqs.accessSecret", "********"), "destination.accessSecret",
                 "masked", id="secret-masked-on-create"),
    pytest.param(_set("name", "orders"), "name", "Extra inputs are not permitted", id="unknown-top"),
    pytest.param(_set("destination.sqs.queueName", "orders"), "destination.sqs.queueName",
                 "Extra inputs are not permitted", id="unknown-in-sqs"),
    pytest.param(_set("destination.kind", "SQS"), "destination.kind",
                 "Extra inputs are not permitted", id="unknown-in-destination"),
    pytest.param(_set("eventTypes", ["FAULT", "ERROR"]), "eventTypes",
                 "items must be ENTITY_EVENT, FAULT, WARNING or SYSTEM", id="event-type-bad"),
    pytest.param(_set("eventTypes", []), "eventTypes", "at least 1 item", id="event-types-empty"),
    pytest.param(_set("eventTypes", "FAULT"), "eventTypes", "list", id="event-types-not-list"),
    pytest.param(_set("destination.type", "HTTP"), "destination.type", "'SQS' or 'SNS'",
                 id="type-unknown"),
    pytest.param(_set("destination", {"type": "SQS"}), "destination",
                 'type SQS needs an "sqs" block with queueUrl', id="sqs-no-block"),
    pytest.param(_set("destination", {"type": "SNS"}), "destination",
                 'type SNS needs an "sns" block with topicArn', id="sns-no-block"),
    pytest.param(_set("destination", {"type": "SQS", "sns": {"topicArn": TOPIC_ARN}}), "destination",
                 'type is SQS but the destination holds an "sns" block', id="sqs-with-sns-block"),
    pytest.param(_set("id", "has space"), "id", "pattern", id="id-malformed"),
]


@pytest.mark.parametrize(("change", "field", "fragment"), INVALID)
def test_an_invalid_subscription_is_a_400_naming_the_field_and_stores_nothing(
    acme: Caller, change: Callable[[dict[str, Any]], None], field: str, fragment: str
) -> None:
    # Given a valid subscription with one thing wrong
    body = sqs_body()
    change(body)
    # When it is posted
    resp = acme.client.post(BASE, json=body, headers=acme.headers())
    # Then it is a 400 whose details name exactly that field and say what is wrong
    error = assert_error(resp, 400, "invalid_subscription")
    assert [d["field"] for d in error["details"]] == [field], error
    assert fragment in error["details"][0]["message"], error
    # And nothing is stored, and no secret is echoed
    assert ACCESS_SECRET not in resp.get_data(as_text=True)
    assert acme.get(BASE, query_string={"include_inactive": "true"}).get_json() == []


def test_an_invalid_update_is_a_400_and_changes_nothing(acme: Caller) -> None:
    created = create(acme, sqs_body())
    body = sqs_body(id=created["id"])
    body["destination"]["sqs"]["region"] = "eu-west-1"
    error = assert_error(put(acme, BASE, body), 400, "invalid_subscription")
    assert [d["field"] for d in error["details"]] == ["destination.sqs"]
    assert acme.get(f"{BASE}/{created['id']}").get_json() == created


def test_seed_002_example_verbatim_is_a_400_saying_what_to_send(acme: Caller) -> None:
    # Given seed 002's request as printed: type SNS with an sqs block of placeholder strings
    body = copy.deepcopy(SEED_002_SUBSCRIPTION)
    # When it is posted verbatim
    resp = acme.client.post(BASE, json=body, headers=acme.headers())
    # Then it is a 400 naming the destination and saying exactly what to send instead
    error = assert_error(resp, 400, "invalid_subscription")
    assert [d["field"] for d in error["details"]] == ["destination"]
    message = error["details"][0]["message"]
    assert message.startswith('type is SNS but the destination holds an "sqs" block')
    assert '{"type": "SQS", "sqs": {"queueUrl": ..., "region": ...}}' in message
    assert '{"type": "SNS", "sns": {"topicArn": "arn:aws:sns:<region>:<account>:<topic>"' in message
    # And nothing is stored
    assert acme.get(BASE, query_string={"include_inactive": "true"}).get_json() == []


def test_seed_002_example_with_type_sqs_and_real_values_is_accepted(acme: Caller) -> None:
    # Given seed 002's example corrected as the 400 says: type SQS, real URL, region and keys
    body = copy.deepcopy(SEED_002_SUBSCRIPTION)
    body["destination"]["type"] = "SQS"
    body["destination"]["sqs"] = {"accessKey": ACCESS_KEY, "accessSecret": ACCESS_SECRET,
                                  "queueUrl": QUEUE_URL, "region": "us-east-1"}
    body["id"] = "customer-sub"
    # When it is posted, Then it is created as sent
    shown = create(acme, body)
    assert shown["id"] == "customer-sub" and shown["entityType"] == "CUSTOMER"
    assert (shown["subscribeCreate"], shown["subscribeChange"], shown["subscribeDelete"]) \
        == (True, True, True)


@pytest.mark.parametrize(("content_type", "data", "status", "code"), [
    ("application/json", b"{not json", 400, "malformed_json"),
    ("text/plain", b"{}", 415, "unsupported_media_type"),
    ("application/json", b"[]", 400, "invalid_subscription"),
    ("application/json", b"null", 400, "invalid_subscription"),
])
def test_a_body_that_is_not_a_subscription_object_is_a_4xx(
    acme: Caller, content_type: str, data: bytes, status: int, code: str
) -> None:
    resp = acme.client.post(BASE, data=data, headers=acme.headers(**{"Content-Type": content_type}))
    assert_error(resp, status, code)


# --- a deployment without EC_SECRET_KEY ---------------------------------------------------------

@pytest.fixture
def keyless(template_db: Path, tmp_path: Path) -> Iterator[tuple[Caller, StubSender]]:
    with stub_app(copy_db(template_db, tmp_path), secret_key=None) as app:
        yield Caller(app.test_client(), "acme", mint("acme")), runtime_of(app).senders["SQS"]


def test_without_a_secret_key_keys_are_refused_with_a_clear_400(
    keyless: tuple[Caller, StubSender]
) -> None:
    acme, _ = keyless
    # Given a deployment with secret_key=None, When a subscription with keys is posted
    resp = acme.client.post(BASE, json=sqs_body(), headers=acme.headers())
    # Then it is a 400 naming accessSecret that says why and what to do instead
    error = assert_error(resp, 400, "invalid_subscription")
    assert [d["field"] for d in error["details"]] == ["destination.accessSecret"]
    assert "no EC_SECRET_KEY" in error["message"]
    assert '"credentials": "role"' in error["message"]
    assert ACCESS_SECRET not in resp.get_data(as_text=True)
    assert acme.get(BASE, query_string={"include_inactive": "true"}).get_json() == []


def test_without_a_secret_key_a_role_subscription_works(
    keyless: tuple[Caller, StubSender]
) -> None:
    acme, stub = keyless
    # Given a deployment with secret_key=None, When a role subscription is posted
    body = sqs_body(keys=False)
    body["destination"]["sqs"].update(credentials="role",
                                      roleArn="arn:aws:iam::123456789012:role/delivery")
    shown = create(acme, body)
    # Then it is created without keys
    assert shown["destination"]["sqs"]["accessKey"] is None
    assert shown["destination"]["sqs"]["accessSecret"] is None
    # And matching events are sent through the role, with no key on the destination
    acme.post_event(order_event(id="evt-keyless-1"))
    settle(acme.client.application)
    assert len(stub.sent) == 1
    destination, message = stub.sent[0]
    assert destination.access_key is None and destination.access_secret is None
    assert destination.role_arn == "arn:aws:iam::123456789012:role/delivery"
    assert message.attributes["event_id"] == "evt-keyless-1"
