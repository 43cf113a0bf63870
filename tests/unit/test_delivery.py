"""Delivering matched events: the message, retries, the attempt log, redelivery, replay, the retry
policy and boto3 error classification, on the StubSender app (no network)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
)
from cryptography.fernet import Fernet
from sqlalchemy import select, update

from events.contract import EventIn
from events.repository import save_events
from events.service import prepare
from infra.broker.dispatch import enqueue_deliveries
from infra.broker.queues import DELIVER_ACTOR, PERSIST_ACTOR
from infra.crypto import SecretBox
from subscriptions.contract import SubscriptionIn
from subscriptions.deliveries import create_deliveries, pending_by_event
from subscriptions.matching import build_index
from subscriptions.models import Delivery
from subscriptions.repository import create_subscription, list_subscriptions
from subscriptions.senders.aws import batch_results, classify
from subscriptions.senders.aws import chunks as sqs_chunks
from subscriptions.senders.base import OutgoingMessage, SendResult
from subscriptions.senders.stub import StubSender
from subscriptions.service import DeliveryRetryPolicy as RetryPolicy
from subscriptions.service import attempt_deliveries, build_message
from tenants.models import Tenant
from tests.conftest import Caller, Services, as_posted, internal_id, order_event, shown_id
from tests.support.apps import runtime_of
from tests.support.events import assert_error
from tests.support.subscriptions import (
    ACCESS_KEY,
    ACCESS_SECRET,
    BASE,
    FIFO_URL,
    QUEUE_URL,
    TOPIC_ARN,
    attempts,
    create,
    settle,
    sns_body,
    sqs_body,
    wait_until,
)

# conftest's ``embedded`` (and so ``acme``/``globex``) is the StubSender app; ``stub`` its sender.
pytestmark = pytest.mark.embedded("sender")

UNAVAILABLE = SendResult(False, error_code="ServiceUnavailable", error_message="try later",
                         transient=True)
DENIED = SendResult(False, error_code="AccessDenied", error_message="not authorized",
                    transient=False)


def sent_event_ids(sender: StubSender) -> list[str]:
    return [m.attributes["event_id"] for _, m in sender.sent]


def _runtime(app: Any) -> Any:
    """What the helpers below use of an app's runtime (sessions, box), or ``services``."""
    return app if isinstance(app, Services) else runtime_of(app)


def deliveries_of(app: Any, event_id: str) -> list[Delivery]:
    with _runtime(app).sessions() as session:
        return list(session.execute(select(Delivery).where(Delivery.event_id == event_id)
                                    .order_by(Delivery.id)).scalars())


def succeeded(caller: Caller, sub_id: str) -> int:
    return int(attempts(caller, sub_id, status="succeeded")["total"])


# --- the message ------------------------------------------------------------------------------

def test_a_matching_event_is_sent_once_as_get_returns_it_with_attributes(
    acme: Caller, stub: StubSender
) -> None:
    app = acme.client.application
    # Given an SQS subscription to ORDER creates
    sub = create(acme, sqs_body())
    # When a matching event is accepted
    resp = acme.post_event(order_event(id="evt-1", entity_id="order-9"))
    assert resp.status_code == 201
    settle(app)
    # Then exactly one message is sent, to the subscription's queue with its keys
    assert len(stub.sent) == 1
    destination, message = stub.sent[0]
    assert (destination.kind, destination.target, destination.region) == ("SQS", QUEUE_URL, "us-east-1")
    assert (destination.access_key, destination.access_secret) == (ACCESS_KEY, ACCESS_SECRET)
    assert destination.fifo is False
    # And its body is the event exactly as GET returns it (without GET's status)
    got = acme.get("/api/v1/events/evt-1")
    assert got.status_code == 200
    assert orjson.loads(message.body) == as_posted(got.get_json(), "stored")
    # And its attributes carry tenant, event type, entity name, operation and event id
    assert message.attributes == {"tenant": "acme", "event_type": "ENTITY_EVENT",
                                  "entity_name": "ORDER", "operation": "CREATE", "event_id": "evt-1"}
    # And the attempt log shows one success with the sender's message id
    log = attempts(acme, sub["id"])
    assert log["total"] == 1 and log["next_from_id"] is None
    [entry] = log["deliveries"]
    assert (entry["eventId"], entry["attempt"], entry["status"], entry["messageId"]) \
        == ("evt-1", 1, "succeeded", "stub-1")
    assert entry["errorCode"] is None and entry["errorMessage"] is None
    [row] = deliveries_of(app, "evt-1")
    assert (shown_id("delivery", row.id), row.status, row.attempts, row.message_id) \
        == (entry["deliveryId"], "succeeded", 1, "stub-1")


def test_a_fifo_queue_gets_the_tenant_entity_group_and_the_event_id_for_deduplication(
    acme: Caller, stub: StubSender
) -> None:
    # Given a subscription to a FIFO queue
    create(acme, sqs_body(FIFO_URL))
    # When an event of entity order-77 is accepted
    acme.post_event(order_event(id="evt-fifo-1", entity_id="order-77"))
    settle(acme.client.application)
    # Then its message is grouped by tenant and entity and deduplicated by event id
    [(destination, message)] = stub.sent
    assert destination.fifo is True and destination.target == FIFO_URL
    assert message.group_id == "acme:order-77"
    assert message.deduplication_id == "evt-fifo-1"


def test_an_sns_subscription_is_sent_to_its_topic(acme: Caller, stub: StubSender) -> None:
    create(acme, sns_body())
    acme.post_event(order_event(id="evt-sns-1"))
    settle(acme.client.application)
    [(destination, message)] = stub.sent
    assert (destination.kind, destination.target, destination.region) == ("SNS", TOPIC_ARN, "us-east-1")
    assert (destination.access_key, destination.access_secret) == (ACCESS_KEY, ACCESS_SECRET)
    assert orjson.loads(message.body)["id"] == "evt-sns-1"


def test_two_matching_subscriptions_get_one_message_each(acme: Caller, stub: StubSender) -> None:
    create(acme, sqs_body())
    create(acme, sns_body())
    acme.post_event(order_event(id="evt-two"))
    settle(acme.client.application)
    assert sorted(d.target for d, _ in stub.sent) == sorted([QUEUE_URL, TOPIC_ARN])
    assert sent_event_ids(stub) == ["evt-two", "evt-two"]


def _row(entity_id: str | None, replay: bool = False,
         delivery_id: int = 5) -> tuple[dict[str, Any], Delivery]:
    document = {"id": "evt-x", "entity_id": entity_id, "entity_name": "ORDER",
                "event_source": "APPLICATION", "event_type": "FAULT",
                "event_payload": {"base64_encoded_payload_json": None, "base64_encoded_fault_json": None,
                                  "entity_id": None, "key_attributes": {}, "operation": None},
                "received_at": "2026-01-01T00:00:00.000Z"}
    return document, Delivery(id=delivery_id, replay=replay,
                              created_at=datetime(2026, 1, 1, tzinfo=UTC))


def test_build_message_leaves_out_empty_attributes_and_falls_back_to_the_event_id() -> None:
    # Given a FAULT without operation or entity id
    document, delivery = _row(None)
    message = build_message("acme", document, delivery)
    # Then the attributes leave out the operation, and the group is the event id
    assert message.attributes == {"tenant": "acme", "event_type": "FAULT", "entity_name": "ORDER",
                                  "event_id": "evt-x"}
    assert message.group_id == "acme:evt-x"
    assert orjson.loads(message.body) == document


def test_build_message_hashes_ids_fifo_would_refuse_and_replays_get_their_own_dedup_id() -> None:
    # Given an entity id with a space (not allowed in a FIFO group id)
    document, delivery = _row("order 1", replay=True, delivery_id=42)
    message = build_message("acme", document, delivery)
    # Then the group id is its SHA-256, and a replay is deduplicated apart from the original
    assert message.group_id == hashlib.sha256(b"acme:order 1").hexdigest()
    # (told apart by when the replay was recorded, not by the internal delivery id)
    assert message.deduplication_id == "evt-x:replay:1767225600000000"


# --- retries and failures -----------------------------------------------------------------------

def test_transient_failures_are_retried_then_succeed_and_the_log_shows_each_attempt(
    acme: Caller, stub: StubSender
) -> None:
    app = acme.client.application
    # Given a subscription whose destination answers ServiceUnavailable twice
    sub = create(acme, sqs_body())
    stub.failures.extend([UNAVAILABLE, UNAVAILABLE])
    # When a matching event is accepted and the deliver pool retries on its schedule
    acme.post_event(order_event(id="evt-retry"))
    wait_until(lambda: succeeded(acme, sub["id"]) == 1)
    settle(app)
    # Then the log shows two retries then a success, numbered 1, 2, 3, all of one delivery
    log = attempts(acme, sub["id"])["deliveries"]
    assert [(x["attempt"], x["status"], x["errorCode"]) for x in log] == [
        (1, "retrying", "ServiceUnavailable"), (2, "retrying", "ServiceUnavailable"),
        (3, "succeeded", None)]
    assert log[0]["errorMessage"] == "try later"
    assert len({x["deliveryId"] for x in log}) == 1 and {x["eventId"] for x in log} == {"evt-retry"}
    # And the retries waited at least the schedule's first delay minus jitter (50 ms - 20 %)
    moments = [datetime.fromisoformat(x["attemptedAt"].replace("Z", "+00:00")) for x in log]
    assert (moments[1] - moments[0]).total_seconds() >= 0.035
    # And the event was sent exactly once, and the subscription is active and not failing
    assert sent_event_ids(stub) == ["evt-retry"]
    shown = acme.get(f"{BASE}/{sub['id']}").get_json()
    assert shown["active"] is True and shown["failingSince"] is None
    [row] = deliveries_of(app, "evt-retry")
    assert (row.status, row.attempts, row.last_error, row.next_attempt_at) == ("succeeded", 3, None, None)


def test_a_permanent_failure_fails_at_once_and_deactivates_the_subscription(
    acme: Caller, stub: StubSender
) -> None:
    app = acme.client.application
    # Given a subscription whose destination refuses our credentials
    sub = create(acme, sqs_body())
    stub.failures.append(DENIED)
    # When a matching event is accepted
    acme.post_event(order_event(id="evt-denied"))
    settle(app)
    # Then one failed attempt is recorded, and nothing was sent or retried
    log = attempts(acme, sub["id"])
    assert log["total"] == 1
    [entry] = log["deliveries"]
    assert (entry["attempt"], entry["status"], entry["errorCode"], entry["errorMessage"]) \
        == (1, "failed", "AccessDenied", "not authorized")
    assert stub.sent == []
    [row] = deliveries_of(app, "evt-denied")
    assert (row.status, row.attempts) == ("failed", 1)
    # And the subscription is deactivated with the reason
    shown = acme.get(f"{BASE}/{sub['id']}").get_json()
    assert shown["active"] is False and shown["deactivatedAt"] is not None
    assert shown["deactivationReason"].startswith("permanent delivery error")
    assert "AccessDenied" in shown["deactivationReason"]
    # And later events are neither matched nor sent
    acme.post_event(order_event(id="evt-after"))
    settle(app)
    assert deliveries_of(app, "evt-after") == []
    assert stub.sent == []


def test_the_attempt_log_filters_by_status_and_paginates(acme: Caller, stub: StubSender) -> None:
    app = acme.client.application
    # Given three delivered events, two attempts of which failed transiently first
    sub = create(acme, sqs_body())
    stub.failures.extend([UNAVAILABLE, UNAVAILABLE])
    for i in range(3):
        acme.post_event(order_event(id=f"evt-page-{i}"))
    wait_until(lambda: succeeded(acme, sub["id"]) == 3)
    settle(app)
    everything = attempts(acme, sub["id"])
    assert everything["total"] == 5 and everything["next_from_id"] is None
    ids = [internal_id("attempt", x["id"]) for x in everything["deliveries"]]
    assert ids == sorted(ids)  # in the order they happened (the shown ids are opaque)
    # When filtered by status, Then only those attempts are listed and counted
    retrying = attempts(acme, sub["id"], status="retrying")
    assert retrying["total"] == 2
    assert [x["status"] for x in retrying["deliveries"]] == ["retrying", "retrying"]
    done = attempts(acme, sub["id"], status="succeeded")
    assert done["total"] == 3
    assert sorted(x["eventId"] for x in done["deliveries"]) == ["evt-page-0", "evt-page-1", "evt-page-2"]
    assert attempts(acme, sub["id"], status="failed") == {"deliveries": [], "total": 0,
                                                           "next_from_id": None}
    # When filtered by time, Then attempts before it are left out
    assert attempts(acme, sub["id"], since="2000-01-01T00:00:00Z")["total"] == 5
    assert attempts(acme, sub["id"], since="2100-01-01T00:00:00Z")["total"] == 0
    # When paged two at a time, Then the pages chain by from_id and cover everything once
    pages, params = [], {"per_page": 2}
    while True:
        page = attempts(acme, sub["id"], **params)
        assert page["total"] == 5
        pages.append([internal_id("attempt", x["id"]) for x in page["deliveries"]])
        if page["next_from_id"] is None:
            break
        params = {"per_page": 2, "from_id": page["next_from_id"]}
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    # And status and paging combine
    first = attempts(acme, sub["id"], status="succeeded", per_page=2)
    second = attempts(acme, sub["id"], status="succeeded", per_page=2, from_id=first["next_from_id"])
    assert len(first["deliveries"]) == 2 and len(second["deliveries"]) == 1
    assert second["next_from_id"] is None
    assert [x["id"] for x in first["deliveries"] + second["deliveries"]] \
        == [x["id"] for x in done["deliveries"]]


def test_a_subscription_recreated_under_a_deleted_id_starts_with_an_empty_log(
    acme: Caller, stub: StubSender
) -> None:
    app = acme.client.application
    # Given subscription "orders" that delivered one event, then was deleted
    create(acme, sqs_body(id="orders"))
    acme.post_event(order_event(id="evt-old"))
    settle(app)
    assert attempts(acme, "orders")["total"] == 1
    assert acme.client.delete(f"{BASE}/orders", headers=acme.headers()).status_code == 204
    # When a new subscription, to another queue, is created under the same id
    create(acme, sqs_body(QUEUE_URL + "-new", id="orders"))
    # Then its attempt log is empty
    assert attempts(acme, "orders") == {"deliveries": [], "total": 0, "next_from_id": None}


@pytest.mark.parametrize("params", [{"status": "pending"}, {"per_page": 0}, {"per_page": 501},
                                    {"from_id": 0}, {"since": "yesterday"}])
def test_bad_attempt_log_parameters_are_a_400(acme: Caller, params: dict[str, Any]) -> None:
    sub = create(acme, sqs_body())
    resp = acme.get(f"{BASE}/{sub['id']}/deliveries", query_string=params)
    assert resp.status_code == 400, resp.get_data(as_text=True)


def test_the_attempt_log_of_an_unknown_subscription_is_a_404(acme: Caller) -> None:
    assert_error(acme.get(f"{BASE}/ghost/deliveries"), 404, "not_found")


# --- redelivered broker messages -----------------------------------------------------------------

def test_a_deliver_message_redelivered_after_success_does_not_send_twice(
    acme: Caller, stub: StubSender
) -> None:
    app = acme.client.application
    runtime = runtime_of(app)
    # Given an event delivered once
    sub = create(acme, sqs_body())
    acme.post_event(order_event(id="evt-once"))
    settle(app)
    [entry] = attempts(acme, sub["id"])["deliveries"]
    assert len(stub.sent) == 1
    # When the deliver actor runs again for the same delivery id (a redelivered message)
    deliver = runtime.broker.get_actor(DELIVER_ACTOR)
    deliver.fn(entry["deliveryId"])
    # And the same message comes through the broker again
    enqueue_deliveries(runtime.broker, [entry["deliveryId"], entry["deliveryId"]])
    settle(app)
    # Then nothing more was sent, and the log still shows one attempt
    assert len(stub.sent) == 1
    assert attempts(acme, sub["id"])["total"] == 1
    # And an unknown delivery id is a no-op
    deliver.fn(987654)
    assert len(stub.sent) == 1


def test_a_persist_message_redelivered_creates_no_second_delivery(
    acme: Caller, stub: StubSender
) -> None:
    app = acme.client.application
    runtime = runtime_of(app)
    create(acme, sqs_body())
    persist = runtime.broker.get_actor(PERSIST_ACTOR)
    # Given the document a persist message carries (as the intake builds it)
    document = prepare(EventIn.model_validate(order_event(id="evt-persist")), datetime.now(UTC)).document
    # When the same persist_events message is sent twice (a redelivery)
    persist.send("acme", [document])
    persist.send("acme", [document])
    settle(app)
    # Then one delivery exists and one message was sent
    rows = deliveries_of(app, "evt-persist")
    assert [(r.status, r.attempts) for r in rows] == [("succeeded", 1)]
    assert sent_event_ids(stub) == ["evt-persist"]
    # And the event is stored once
    assert acme.get("/api/v1/events").get_json()["total"] == 1
    # And a third copy through the broker, after the send, changes nothing either
    persist.send("acme", [document])
    settle(app)
    assert len(deliveries_of(app, "evt-persist")) == 1
    assert sent_event_ids(stub) == ["evt-persist"]


class CommitsDuringSend(StubSender):
    """A sender during whose first send another thread commits a write (as the persist pool,
    another deliver thread or an API subscription change do in the embedded server)."""

    def __init__(self, sessions: Any) -> None:
        super().__init__()
        self.sessions = sessions
        self.armed = True
        self.writer: threading.Thread | None = None
        self.errors: list[BaseException] = []

    def _write(self) -> None:
        try:
            with self.sessions() as session:
                session.execute(update(Tenant).where(Tenant.name == "globex")
                                .values(subscriptions_version=Tenant.subscriptions_version + 1))
                session.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def send(self, destination: Any, message: Any) -> SendResult:
        if self.armed:
            self.armed = False
            # Another thread writes while this send is in flight (it may have to wait for the
            # delivery's own transaction: that is the point).
            self.writer = threading.Thread(target=self._write)
            self.writer.start()
            self.writer.join(0.3)
        return super().send(destination, message)


def test_a_commit_elsewhere_during_a_send_does_not_send_the_event_twice(acme: Caller) -> None:
    app = acme.client.application
    runtime = runtime_of(app)
    # Given a sender during whose send another thread commits (the deliver actor shares the dict)
    sender = CommitsDuringSend(runtime.sessions)
    runtime.senders["SQS"] = sender
    sub = create(acme, sqs_body())
    # When a matching event is delivered
    acme.post_event(order_event(id="evt-contended"))
    settle(app)
    # Then it was sent once, and the log shows one success; the other write went through too
    assert sent_event_ids(sender) == ["evt-contended"]
    assert attempts(acme, sub["id"])["total"] == 1
    assert sender.writer is not None
    sender.writer.join(10)
    assert sender.errors == []


def test_each_matching_event_of_a_batch_is_delivered(acme: Caller, stub: StubSender) -> None:
    # Given a subscription to ORDER creates
    create(acme, sqs_body())
    # When a batch of two ORDER creates and a CUSTOMER create is accepted
    events = [order_event(id="evt-b-1"), order_event(id="evt-b-2", entity_id="order-2"),
              order_event(id="evt-b-3", entity_name="CUSTOMER")]
    resp = acme.client.post("/api/v1/events/batch", json={"events": events}, headers=acme.headers())
    assert resp.status_code == 200
    settle(acme.client.application)
    # Then the two ORDER events are sent, once each
    assert sorted(sent_event_ids(stub)) == ["evt-b-1", "evt-b-2"]


def test_secrets_never_reach_the_logs(acme: Caller, stub: StubSender,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sub = create(acme, sqs_body())
    stub.failures.extend([UNAVAILABLE, DENIED])
    acme.post_event(order_event(id="evt-log"))
    wait_until(lambda: attempts(acme, sub["id"], status="failed")["total"] == 1)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert ACCESS_SECRET not in text and ACCESS_KEY not in text


def test_the_same_event_posted_twice_is_delivered_once(acme: Caller, stub: StubSender) -> None:
    create(acme, sqs_body())
    assert acme.post_event(order_event(id="evt-dupe")).status_code == 201
    assert acme.post_event(order_event(id="evt-dupe")).status_code == 200
    settle(acme.client.application)
    assert sent_event_ids(stub) == ["evt-dupe"]


# --- attempt_deliveries of one delivery, called directly -------------------------------------------

def _stored_pending(app: Any, event_id: str) -> int:
    """Store ``event_id`` and its deliveries without enqueueing them; return the delivery id."""
    with _runtime(app).sessions() as session:
        document = prepare(EventIn.model_validate(order_event(id=event_id)), datetime.now(UTC)).document
        save_events(session, "acme", [document])
        index = build_index(list_subscriptions(session, "acme", include_inactive=False), 0)
        create_deliveries(session, "acme", [document], index)
        session.commit()
        [(delivery_id, _)] = pending_by_event(session, "acme", [event_id])
        return delivery_id


def _attempt(app: Any, delivery_id: int, sender: StubSender, policy: RetryPolicy,
             box: SecretBox | None = None, *, due: bool = True) -> tuple[str, list[float]]:
    """One attempt, as the scheduled message would make it once due (``due=False``: a message
    arriving before the next attempt is due)."""
    delays: list[float] = []
    if due:
        with _runtime(app).sessions() as session:
            session.execute(update(Delivery).where(Delivery.id == delivery_id,
                                                   Delivery.next_attempt_at.is_not(None))
                            .values(next_attempt_at=datetime.now(UTC)))
            session.commit()
    statuses = attempt_deliveries(_runtime(app).sessions, [delivery_id],
                                  senders={"SQS": sender, "SNS": sender},
                                  box=box or _runtime(app).box, policy=policy,
                                  schedule_retry=lambda _ids, seconds: delays.append(seconds))
    return statuses[delivery_id], delays


def test_a_transient_failure_schedules_the_next_attempt_by_the_policy(services: Services) -> None:
    app = services
    with services.sessions() as session:  # the service layer, no HTTP round trip
        create_subscription(session, "acme", SubscriptionIn.model_validate(sqs_body()), services.box)
        session.commit()
    delivery_id = _stored_pending(app, "evt-direct")
    sender = StubSender()
    sender.failures.append(UNAVAILABLE)
    # When the first attempt fails transiently under a 10 s schedule
    status, delays = _attempt(app, delivery_id, sender, RetryPolicy(schedule=(10, 20), jitter=0.2))
    # Then a retry is scheduled within 10 s ± 20 %, and the row says when
    assert status == "retrying"
    assert len(delays) == 1 and 8 <= delays[0] <= 12
    [row] = deliveries_of(app, "evt-direct")
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "ServiceUnavailable: try later")
    assert row.next_attempt_at is not None
    # And the next attempt succeeds and clears the error
    status, delays = _attempt(app, delivery_id, sender, RetryPolicy(schedule=(10, 20)))
    assert (status, delays) == ("succeeded", [])
    [row] = deliveries_of(app, "evt-direct")
    assert (row.status, row.attempts, row.last_error) == ("succeeded", 2, None)


def test_a_subscription_failing_past_its_window_is_deactivated(acme: Caller) -> None:
    app = acme.client.application
    sub = create(acme, sqs_body())
    delivery_id = _stored_pending(app, "evt-window")
    sender = StubSender()
    sender.failures.append(UNAVAILABLE)
    # When a transient failure happens with a failing window of 0 s
    status, delays = _attempt(app, delivery_id, sender, RetryPolicy(failing_window=0))
    # Then no retry is scheduled, the delivery is cancelled, and the subscription deactivated
    assert (status, delays) == ("cancelled", [])
    shown = acme.get(f"{BASE}/{sub['id']}").get_json()
    assert shown["active"] is False
    assert shown["deactivationReason"].startswith("deliveries failing for 0 s")
    assert "ServiceUnavailable" in shown["deactivationReason"]


def test_the_attempt_that_ends_a_failing_window_is_not_logged_as_retrying(acme: Caller) -> None:
    app = acme.client.application
    sub = create(acme, sqs_body())
    delivery_id = _stored_pending(app, "evt-window-log")
    sender = StubSender()
    sender.failures.append(UNAVAILABLE)
    # When a transient failure ends the failing window (0 s) and no retry is scheduled
    assert _attempt(app, delivery_id, sender, RetryPolicy(failing_window=0)) == ("cancelled", [])
    # Then the log does not announce a retry, and the row has no next attempt time
    [entry] = attempts(acme, sub["id"])["deliveries"]
    assert entry["status"] != "retrying"
    [row] = deliveries_of(app, "evt-window-log")
    assert row.next_attempt_at is None


def test_transient_failures_past_give_up_fail_the_delivery_but_keep_the_subscription(
    acme: Caller
) -> None:
    app = acme.client.application
    sub = create(acme, sqs_body())
    delivery_id = _stored_pending(app, "evt-give-up")
    sender = StubSender()
    sender.failures.append(UNAVAILABLE)
    status, delays = _attempt(app, delivery_id, sender, RetryPolicy(give_up_after=0))
    assert (status, delays) == ("failed", [])
    assert [x["status"] for x in attempts(acme, sub["id"])["deliveries"]] == ["failed"]
    assert acme.get(f"{BASE}/{sub['id']}").get_json()["active"] is True


def test_a_secret_that_cannot_be_decrypted_is_recorded_and_nothing_is_sent(acme: Caller) -> None:
    app = acme.client.application
    sub = create(acme, sqs_body())
    delivery_id = _stored_pending(app, "evt-rotated")
    sender = StubSender()
    # When the deployment's key no longer decrypts the stored secret
    status, _ = _attempt(app, delivery_id, sender, RetryPolicy(),
                         box=SecretBox(Fernet.generate_key().decode()))
    # Then the attempt fails as SecretUnavailable and nothing is sent
    assert status == "failed" and sender.sent == []
    [entry] = attempts(acme, sub["id"])["deliveries"]
    assert entry["errorCode"] == "SecretUnavailable"
    assert ACCESS_SECRET not in (entry["errorMessage"] or "")


def test_deliveries_of_an_inactive_or_deleted_subscription_are_cancelled(acme: Caller) -> None:
    app = acme.client.application
    sub = create(acme, sqs_body())
    first = _stored_pending(app, "evt-inactive")
    second = _stored_pending(app, "evt-deleted")
    sender = StubSender()
    acme.client.put(f"{BASE}/{sub['id']}/deactivate", headers=acme.headers())
    assert _attempt(app, first, sender, RetryPolicy()) == ("cancelled", [])
    assert deliveries_of(app, "evt-inactive")[0].last_error == "subscription inactive"
    acme.client.delete(f"{BASE}/{sub['id']}", headers=acme.headers())
    assert deliveries_of(app, "evt-deleted")[0].status == "cancelled"
    assert _attempt(app, second, sender, RetryPolicy()) == ("cancelled", [])
    assert sender.sent == []


# --- replay -------------------------------------------------------------------------------------

def _replay(caller: Caller, sub_id: str, since: datetime, until: datetime) -> Any:
    return caller.client.post(f"{BASE}/{sub_id}/replay", headers=caller.headers(),
                              json={"since": since.isoformat(), "until": until.isoformat()})


def test_replay_sends_the_matching_stored_events_in_the_range(acme: Caller, stub: StubSender) -> None:
    app = acme.client.application
    # Given an inactive subscription to ORDER creates
    sub = create(acme, sqs_body(active=False))
    payload = order_event()["event_payload"]
    # And an ORDER create before the range
    acme.post_event(order_event(id="evt-before"))
    time.sleep(0.005)
    since = datetime.now(UTC)
    time.sleep(0.005)
    # And, in the range, three ORDER creates, an ORDER update and a CUSTOMER create
    for i in range(3):
        acme.post_event(order_event(id=f"evt-in-{i}"))
    acme.post_event(order_event(id="evt-update", event_payload={**payload, "operation": "UPDATE"}))
    acme.post_event(order_event(id="evt-customer", entity_name="CUSTOMER"))
    settle(app)
    until = datetime.now(UTC) + timedelta(seconds=1)
    assert stub.sent == []
    # When it is replayed while inactive, Then it is a 409 and nothing is queued
    assert_error(_replay(acme, sub["id"], since, until), 409, "inactive")
    # When it is reactivated and the range replayed
    assert acme.client.put(f"{BASE}/{sub['id']}", json=sqs_body(),
                           headers=acme.headers()).status_code == 200
    resp = _replay(acme, sub["id"], since, until)
    # Then the three matching events are queued and sent, in order, as replays
    assert resp.status_code == 202, resp.get_data(as_text=True)
    assert resp.get_json() == {"queued": 3, "deferred": False}
    settle(app)
    assert sent_event_ids(stub) == ["evt-in-0", "evt-in-1", "evt-in-2"]
    for _, message in stub.sent:
        assert message.deduplication_id.startswith(message.attributes["event_id"] + ":replay:")
        assert orjson.loads(message.body) == as_posted(acme.get(
            f"/api/v1/events/{message.attributes['event_id']}").get_json(), "stored")
    assert succeeded(acme, sub["id"]) == 3
    # And a range with nothing in it queues nothing
    empty = _replay(acme, sub["id"], until, until + timedelta(hours=1))
    assert empty.status_code == 202 and empty.get_json() == {"queued": 0, "deferred": False}


@pytest.mark.parametrize("window", [
    {"since": "2026-01-02T00:00:00Z", "until": "2026-01-02T00:00:00Z"},
    {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
    {"since": "2026-01-01T00:00:00Z"},
    {"since": "yesterday", "until": "2026-01-01T00:00:00Z"},
    {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z", "limit": 5},
])
def test_a_bad_replay_window_is_a_400(acme: Caller, window: dict[str, Any]) -> None:
    sub = create(acme, sqs_body())
    resp = acme.client.post(f"{BASE}/{sub['id']}/replay", json=window, headers=acme.headers())
    error = assert_error(resp, 400, "invalid_replay")
    assert error["details"]


def test_replay_until_before_since_names_the_rule(acme: Caller) -> None:
    sub = create(acme, sqs_body())
    resp = acme.client.post(f"{BASE}/{sub['id']}/replay", headers=acme.headers(),
                            json={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"})
    error = assert_error(resp, 400, "invalid_replay")
    assert "until must be after since" in error["details"][0]["message"]


def test_replay_of_an_unknown_subscription_is_a_404(acme: Caller) -> None:
    resp = acme.client.post(f"{BASE}/ghost/replay", headers=acme.headers(),
                            json={"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"})
    assert_error(resp, 404, "not_found")


# --- the test send ------------------------------------------------------------------------------

def test_the_test_send_reaches_the_destination_and_reports_failures(
    acme: Caller, stub: StubSender
) -> None:
    sub = create(acme, sqs_body(FIFO_URL))
    ok = acme.client.post(f"{BASE}/{sub['id']}/test", headers=acme.headers())
    assert ok.status_code == 200
    assert ok.get_json() == {"ok": True, "messageId": "stub-1", "errorCode": None, "errorMessage": None,
                             "transient": None}
    [(destination, message)] = stub.sent
    assert (destination.access_key, destination.access_secret) == (ACCESS_KEY, ACCESS_SECRET)
    assert message.attributes["tenant"] == "acme" and message.attributes["event_type"] == "SYSTEM"
    assert message.group_id and message.deduplication_id
    stub.failures.append(UNAVAILABLE)
    bad = acme.client.post(f"{BASE}/{sub['id']}/test", headers=acme.headers())
    assert bad.get_json() == {"ok": False, "messageId": None, "errorCode": "ServiceUnavailable",
                              "errorMessage": "try later", "transient": True}
    assert attempts(acme, sub["id"])["total"] == 0


# --- RetryPolicy --------------------------------------------------------------------------------

def test_retry_delay_follows_the_schedule_within_the_jitter_bounds() -> None:
    policy = RetryPolicy(schedule=(5, 30, 120), jitter=0.2)
    for attempts_so_far, base in [(1, 5), (2, 30), (3, 120)]:
        samples = [policy.delay(attempts_so_far) for _ in range(200)]
        assert all(base * 0.8 <= s <= base * 1.2 for s in samples), (attempts_so_far, samples)
        assert len(set(samples)) > 1  # jittered, not constant


def test_retry_delay_uses_exactly_the_jitter_extremes(monkeypatch: pytest.MonkeyPatch) -> None:
    import infra.retry as service

    policy = RetryPolicy(schedule=(10, 60), jitter=0.25)
    monkeypatch.setattr(service.random, "uniform", lambda low, high: low)
    assert policy.delay(1) == pytest.approx(7.5)
    monkeypatch.setattr(service.random, "uniform", lambda low, high: high)
    assert policy.delay(2) == pytest.approx(75.0)


def test_retry_delay_repeats_the_last_value_and_treats_zero_as_the_first() -> None:
    policy = RetryPolicy(schedule=(1, 2, 4), jitter=0.0)
    assert [policy.delay(n) for n in (0, 1, 2, 3, 4, 10, 1000)] == [1, 1, 2, 4, 4, 4, 4]


def test_retry_delay_honours_a_larger_retry_after_hint_only() -> None:
    policy = RetryPolicy(schedule=(5,), jitter=0.0)
    assert policy.delay(1, 90.0) == 90.0
    assert policy.delay(1, 2.0) == 5.0
    assert policy.delay(1, None) == 5.0


def test_the_default_schedule_backs_off_for_hours_not_seconds() -> None:
    policy = RetryPolicy()
    assert policy.schedule == (5, 30, 120, 600, 1800, 3600)
    assert policy.give_up_after == 86400 and policy.failing_window == 6 * 3600


# --- classify -----------------------------------------------------------------------------------

def _client_error(code: str, status: int, headers: dict[str, str] | None = None,
                  message: str = "boom") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}}},
                       "SendMessage")


@pytest.mark.parametrize(("code", "status", "transient"), [
    ("Throttling", 400, True),
    ("ThrottlingException", 400, True),
    ("RequestThrottled", 403, True),
    ("SomethingNew", 503, True),
    ("InternalError", 500, True),
    ("TooMany", 429, True),
    ("AccessDenied", 403, False),
    ("AWS.SimpleQueueService.NonExistentQueue", 400, False),
    ("InvalidClientTokenId", 403, False),
    ("NotFound", 404, False),
    ("Throttled", 429, True),  # SNS ThrottledException's wire code
    pytest.param("KMSThrottling", 400, True, id="sns-kms-throttling"),
    ("KmsThrottled", 400, True),  # SQS (JSON protocol)
    ("KMS.ThrottlingException", 400, True),  # SQS (query-compatible code)
])
def test_classify_client_errors(code: str, status: int, transient: bool) -> None:
    result = classify(_client_error(code, status, message="details here"))
    assert result == SendResult(False, error_code=code, error_message="details here",
                                transient=transient, retry_after=None)


def test_classify_parses_a_retry_after_header_in_seconds() -> None:
    assert classify(_client_error("Throttling", 400, {"Retry-After": "7"})).retry_after == 7.0
    assert classify(_client_error("Throttling", 400, {"retry-after": " 12 "})).retry_after == 12.0
    assert classify(_client_error("Throttling", 400, {"Retry-After": "soon"})).retry_after is None


def test_classify_truncates_long_messages() -> None:
    result = classify(_client_error("AccessDenied", 403, message="x" * 2000))
    assert result.error_message == "x" * 500


def test_classify_network_errors_as_transient() -> None:
    result = classify(EndpointConnectionError(endpoint_url="https://sqs.us-east-1.amazonaws.com"))
    assert (result.ok, result.error_code, result.transient) == (False, "EndpointConnectionError", True)
    assert result.error_message == "network error"
    timeout = classify(ConnectTimeoutError(endpoint_url="https://sqs.us-east-1.amazonaws.com"))
    assert (timeout.error_code, timeout.transient) == ("ConnectTimeoutError", True)


def test_classify_missing_credentials_as_permanent() -> None:
    result = classify(NoCredentialsError())
    assert (result.error_code, result.transient) == ("NoCredentials", False)


def test_classify_an_unexpected_exception_without_its_text() -> None:
    result = classify(RuntimeError(f"secret {ACCESS_SECRET}"))
    assert (result.error_code, result.transient) == ("RuntimeError", True)
    assert ACCESS_SECRET not in (result.error_message or "")


def test_the_stub_sender_returns_its_failures_in_order_then_succeeds() -> None:
    from subscriptions.senders.base import Destination, OutgoingMessage

    sender = StubSender()
    sender.failures.extend([UNAVAILABLE, DENIED])
    destination = Destination("SQS", QUEUE_URL, "us-east-1")
    message = OutgoingMessage(body="{}", attributes={})
    assert sender.send(destination, message) == UNAVAILABLE
    assert sender.send(destination, message) == DENIED
    assert sender.send(destination, message) == SendResult(True, message_id="stub-1")
    assert sender.sent == [(destination, message)]


def test_one_message_of_deliveries_is_one_batch_call_and_each_gets_its_own_outcome(
        acme: Caller) -> None:
    app = acme.client.application
    create(acme, sqs_body())
    ids = [_stored_pending(app, f"evt-batch-{i}") for i in range(3)]
    sender = StubSender()
    batches: list[int] = []
    plain_send_batch = sender.send_batch

    def counting(destination: Any, messages: list[Any]) -> list[SendResult]:
        batches.append(len(messages))
        return plain_send_batch(destination, messages)

    sender.send_batch = counting  # type: ignore[method-assign]
    sender.failures.append(UNAVAILABLE)  # the first message of the batch fails, the rest pass
    retried: list[tuple[list[int], float]] = []
    statuses = attempt_deliveries(
        runtime_of(app).sessions, ids, senders={"SQS": sender, "SNS": sender},
        box=runtime_of(app).box, policy=RetryPolicy(schedule=(10,), jitter=0),
        schedule_retry=lambda retry_ids, seconds: retried.append((retry_ids, seconds)))
    assert batches == [3]
    assert statuses == {ids[0]: "retrying", ids[1]: "succeeded", ids[2]: "succeeded"}
    assert retried == [([ids[0]], 10)]
    assert [m.body for _, m in sender.sent] == [
        orjson.dumps(as_posted(acme.get(f"/api/v1/events/evt-batch-{i}").json, "stored")).decode()
        for i in (1, 2)]
    # And a second message carrying the same ids sends nothing again (succeeded / not yet due)
    again = attempt_deliveries(
        runtime_of(app).sessions, ids + [999_999], senders={"SQS": sender, "SNS": sender},
        box=runtime_of(app).box, policy=RetryPolicy(), schedule_retry=lambda *a: None)
    assert again == {ids[0]: "scheduled", ids[1]: "succeeded", ids[2]: "succeeded",
                     999_999: "missing"}
    assert batches == [3]


def test_batch_responses_map_back_to_their_entries() -> None:
    results = batch_results({
        "Successful": [{"Id": "0", "MessageId": "m-0"}, {"Id": "2", "MessageId": "m-2"}],
        "Failed": [{"Id": "1", "SenderFault": True, "Code": "InvalidParameterValue",
                    "Message": "bad attribute"},
                   {"Id": "3", "SenderFault": False, "Code": "InternalError", "Message": "oops"}],
    }, 5)
    assert [(r.ok, r.message_id, r.error_code, r.transient) for r in results] == [
        (True, "m-0", None, False), (False, None, "InvalidParameterValue", False),
        (True, "m-2", None, False), (False, None, "InternalError", True),
        (False, None, "MissingFromBatchResponse", True)]


def test_sqs_batches_hold_at_most_ten_messages_and_256_kib() -> None:
    small = [OutgoingMessage(body="x" * 10, attributes={}) for _ in range(23)]
    assert [len(c) for c in sqs_chunks(small)] == [10, 10, 3]
    big = [OutgoingMessage(body="y" * 100_000, attributes={"k": "v"}) for _ in range(5)]
    assert [len(c) for c in sqs_chunks(big)] == [2, 2, 1]
    assert sqs_chunks([]) == []


def test_the_scheduler_sweep_re_enqueues_deliveries_whose_message_was_lost(acme: Caller) -> None:
    from scheduler.loop import sweep_once

    app = acme.client.application
    runtime = runtime_of(app)
    create(acme, sqs_body())
    lost = _stored_pending(app, "evt-lost")  # stored, its deliver message never sent
    fresh = _stored_pending(app, "evt-fresh")
    retrying = _stored_pending(app, "evt-retry")
    now = datetime.now(UTC)
    with runtime.sessions() as session:
        session.execute(update(Delivery).where(Delivery.id == lost)
                        .values(created_at=now - timedelta(minutes=30)))
        session.execute(update(Delivery).where(Delivery.id == retrying)
                        .values(created_at=now - timedelta(minutes=30), attempts=2,
                                next_attempt_at=now - timedelta(minutes=20)))
        session.commit()
    enqueued: list[list[int]] = []
    plain_enqueue = runtime.broker.enqueue

    def capture(message: Any, *, delay: Any = None) -> Any:
        if message.actor_name == DELIVER_ACTOR:
            enqueued.append(list(message.args[0]))
            return message
        return plain_enqueue(message, delay=delay)

    runtime.broker.enqueue = capture  # type: ignore[method-assign]
    try:
        assert sweep_once(runtime.sessions, runtime.broker, older_than=600) == 2
    finally:
        runtime.broker.enqueue = plain_enqueue  # type: ignore[method-assign]
    assert sorted(i for m in enqueued for i in m) == sorted([lost, retrying])
    assert fresh not in [i for m in enqueued for i in m]


def test_a_replay_whose_enqueue_fails_is_recorded_and_sent_by_the_sweep(
        acme: Caller, stub: StubSender) -> None:
    import redis

    from scheduler.loop import sweep_once

    app = acme.client.application
    runtime = runtime_of(app)
    sub = create(acme, sqs_body())
    since = datetime.now(UTC) - timedelta(seconds=1)
    for i in range(2):
        acme.post_event(order_event(id=f"evt-r{i}"))
    settle(app)
    assert sorted(sent_event_ids(stub)) == ["evt-r0", "evt-r1"]
    until = datetime.now(UTC) + timedelta(seconds=1)
    plain_enqueue = runtime.broker.enqueue

    def broker_down(message: Any, *, delay: Any = None) -> Any:
        raise redis.ConnectionError("Error 111 connecting to redis. Connection refused.")

    # When the replay's enqueue finds the broker down
    runtime.broker.enqueue = broker_down  # type: ignore[method-assign]
    try:
        resp = _replay(acme, sub["id"], since, until)
    finally:
        runtime.broker.enqueue = plain_enqueue  # type: ignore[method-assign]
    # Then it is accepted as deferred (retrying would replay the range twice), nothing sent yet
    assert resp.status_code == 202, resp.get_data(as_text=True)
    assert resp.get_json() == {"queued": 2, "deferred": True}
    settle(app)
    assert len(stub.sent) == 2
    # And once overdue, the scheduler's sweep sends both replays
    later = datetime.now(UTC) + timedelta(minutes=11)
    assert sweep_once(runtime.sessions, runtime.broker, later, older_than=600) == 2
    settle(app)
    replays = [m for _, m in stub.sent if ":replay:" in (m.deduplication_id or "")]
    assert sorted(m.attributes["event_id"] for m in replays) == ["evt-r0", "evt-r1"]


def test_a_broker_outage_while_enqueueing_is_a_transient_error_the_pools_retry() -> None:
    import redis
    from dramatiq.brokers.stub import StubBroker

    from infra.broker.dispatch import BrokerUnavailable, enqueue_runs
    from workers.persist import is_transient

    class DownBroker(StubBroker):
        def enqueue(self, message: Any, *, delay: Any = None) -> Any:
            raise redis.ConnectionError("Error 111 connecting to redis. Connection refused.")

    broker = DownBroker()
    # When an enqueue (after a commit, or a retry being scheduled) finds Redis down
    for send in (lambda: enqueue_deliveries(broker, [1, 2]), lambda: enqueue_runs(broker, [3])):
        with pytest.raises(BrokerUnavailable) as caught:
            send()
        # Then the persist, deliver and notify actors retry it rather than dead-letter it
        assert is_transient(caught.value)


# --- claims, bulk records, FIFO groups (issue 15) ------------------------------------------------

def _pending(app: Any, *events: dict[str, Any]) -> list[int]:
    """Store ``events`` and their deliveries without enqueueing them; their delivery ids, in
    the order stored."""
    with _runtime(app).sessions() as session:
        documents = [prepare(EventIn.model_validate(e), datetime.now(UTC)).document
                     for e in events]
        save_events(session, "acme", documents)
        index = build_index(list_subscriptions(session, "acme", include_inactive=False), 0)
        create_deliveries(session, "acme", documents, index)
        session.commit()
        found = dict((e, d) for d, e in pending_by_event(session, "acme",
                                                         [d["id"] for d in documents]))
        return [found[d["id"]] for d in documents]


def _run(app: Any, ids: list[int], sender: StubSender, policy: RetryPolicy | None = None,
         enqueued: list[tuple[list[int], float]] | None = None, **kwargs: Any) -> dict[int, str]:
    calls = enqueued if enqueued is not None else []
    return attempt_deliveries(
        _runtime(app).sessions, ids, senders={"SQS": sender, "SNS": sender},
        box=_runtime(app).box, policy=policy or RetryPolicy(schedule=(10,), jitter=0),
        schedule_retry=lambda retry_ids, seconds: calls.append((list(retry_ids), seconds)),
        **kwargs)


class SendsOnce(StubSender):
    """Runs ``during`` (once) while its first batch is in flight."""

    def __init__(self, during: Any) -> None:
        super().__init__()
        self.during = during

    def send_batch(self, destination: Any, messages: list[Any]) -> list[SendResult]:
        during, self.during = self.during, None
        if during is not None:
            during()
        return super().send_batch(destination, messages)


def test_a_delivery_claimed_by_an_attempt_in_flight_is_left_to_it_and_looked_at_when_the_claim_ends(
        acme: Caller) -> None:
    app = acme.client.application
    create(acme, sqs_body())
    [delivery_id] = _pending(app, order_event(id="evt-claimed"))
    second: dict[str, Any] = {}

    def another_message() -> None:
        # A second message for the same delivery, handled while the first attempt sends
        calls: list[tuple[list[int], float]] = []
        second["statuses"] = _run(app, [delivery_id], StubSender(), enqueued=calls)
        second["calls"] = calls

    sender = SendsOnce(another_message)
    statuses = _run(app, [delivery_id], sender, lease=30)
    # Then the first attempt sent it once; the second found it claimed and sent nothing
    assert statuses == {delivery_id: "succeeded"}
    assert second["statuses"] == {delivery_id: "claimed"}
    # And asked to look again just after the claim ends (a claim whose process died lapses)
    [(ids, seconds)] = second["calls"]
    assert ids == [delivery_id] and 29 <= seconds <= 31
    assert sent_event_ids(sender) == ["evt-claimed"]
    [row] = deliveries_of(app, "evt-claimed")
    assert (row.status, row.attempts, row.claim, row.claimed_until) == ("succeeded", 1, None, None)


class Dies(StubSender):
    """An attempt whose process dies in the middle of the send."""

    def send_batch(self, destination: Any, messages: list[Any]) -> list[SendResult]:
        raise SystemExit("killed")


def test_a_claim_left_by_a_process_that_died_lapses_and_the_delivery_is_sent_then(
        acme: Caller) -> None:
    app = acme.client.application
    sub = create(acme, sqs_body())
    [delivery_id] = _pending(app, order_event(id="evt-orphan"))
    with pytest.raises(SystemExit):
        _run(app, [delivery_id], Dies())
    # While the claim holds, another message leaves it alone
    sender = StubSender()
    assert _run(app, [delivery_id], sender) == {delivery_id: "claimed"}
    assert sender.sent == []
    # Once it has lapsed, the delivery is claimed again and sent, one attempt in the log
    with _runtime(app).sessions() as session:
        session.execute(update(Delivery).where(Delivery.id == delivery_id)
                        .values(claimed_until=datetime.now(UTC) - timedelta(seconds=1)))
        session.commit()
    assert _run(app, [delivery_id], sender) == {delivery_id: "succeeded"}
    assert sent_event_ids(sender) == ["evt-orphan"]
    assert attempts(acme, sub["id"])["total"] == 1


def test_an_attempt_of_many_deliveries_takes_the_same_statements_as_one_of_a_few(
        acme: Caller) -> None:
    from sqlalchemy import event as sa_event

    app = acme.client.application
    create(acme, sqs_body())
    engine = _runtime(app).sessions.kw["bind"]
    counts = []
    for n in (3, 40):
        ids = _pending(app, *[order_event(id=f"evt-bulk-{n}-{i}", entity_id=f"o-{n}-{i}")
                              for i in range(n)])
        writes: list[str] = []

        def note(conn: Any, cursor: Any, statement: str, *args: Any,
                 writes: list[str] = writes) -> None:
            if statement.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE")):
                writes.append(" ".join(statement.split()[:3]))

        sa_event.listen(engine, "before_cursor_execute", note)
        try:
            sender = StubSender()
            statuses = _run(app, ids, sender)
        finally:
            sa_event.remove(engine, "before_cursor_execute", note)
        assert set(statuses.values()) == {"succeeded"} and len(sender.sent) == n
        counts.append(len(writes))
    # One claim, one write-back and one attempt insert, whatever the number of deliveries
    assert counts[0] == counts[1] <= 4, counts


def test_the_sends_of_one_attempt_are_handed_to_the_runner_ten_messages_each(
        acme: Caller) -> None:
    app = acme.client.application
    create(acme, sqs_body())
    ids = _pending(app, *[order_event(id=f"evt-run-{i}", entity_id=f"o-{i}") for i in range(25)])
    handed: list[int] = []

    def run(tasks: list[Any]) -> None:
        handed.append(len(tasks))
        threads = [threading.Thread(target=t) for t in tasks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    sender = StubSender()
    statuses = _run(app, ids, sender, run=run)
    assert handed == [3]  # 10 + 10 + 5, sent side by side
    assert set(statuses.values()) == {"succeeded"}
    assert sorted(sent_event_ids(sender)) == sorted(f"evt-run-{i}" for i in range(25))


def _fifo_events(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [order_event(id=event_id, entity_id=entity) for event_id, entity in pairs]


def test_fifo_deliveries_go_in_stored_order_and_a_failure_holds_back_the_rest_of_its_group(
        acme: Caller) -> None:
    app = acme.client.application
    create(acme, sqs_body(FIFO_URL))
    a1, a2, b1, a3 = _pending(app, *_fifo_events(("a1", "order-a"), ("a2", "order-a"),
                                                 ("b1", "order-b"), ("a3", "order-a")))
    sender = StubSender()
    sender.failures.append(UNAVAILABLE)  # the first message sent: a1
    enqueued: list[tuple[list[int], float]] = []
    statuses = _run(app, [a1, a2, b1, a3], sender, enqueued=enqueued)
    # Then a1 waits for its retry, a2 and a3 wait behind it (nothing sent, no attempt), b1 went
    assert statuses == {a1: "retrying", a2: "held", a3: "held", b1: "succeeded"}
    assert sent_event_ids(sender) == ["b1"]
    assert enqueued == [([a1], 10)]
    rows = {r.event_id: r for r in [*deliveries_of(app, "a2"), *deliveries_of(app, "a3")]}
    assert {(r.status, r.attempts, r.claim) for r in rows.values()} == {("pending", 0, None)}
    # And a message for a2 alone finds a1 still pending: a2 is held back, not sent
    assert _run(app, [a2], sender) == {a2: "held"}
    assert sent_event_ids(sender) == ["b1"]
    # When a1's retry succeeds, the rest of its group is enqueued at once
    with _runtime(app).sessions() as session:
        session.execute(update(Delivery).where(Delivery.id == a1)
                        .values(next_attempt_at=datetime.now(UTC)))
        session.commit()
    enqueued.clear()
    assert _run(app, [a1], sender, enqueued=enqueued) == {a1: "succeeded"}
    assert enqueued == [([a2, a3], 0)]
    # And they go in the order they were stored, one round each
    assert _run(app, [a3, a2], sender) == {a2: "succeeded", a3: "succeeded"}
    assert sent_event_ids(sender) == ["b1", "a1", "a2", "a3"]


def test_a_fifo_delivery_given_up_lets_the_next_of_its_group_go_and_the_gap_is_in_the_log(
        acme: Caller) -> None:
    app = acme.client.application
    sub = create(acme, sqs_body(FIFO_URL))
    g1, g2 = _pending(app, *_fifo_events(("g1", "order-g"), ("g2", "order-g")))
    sender = StubSender()
    sender.failures.append(UNAVAILABLE)
    enqueued: list[tuple[list[int], float]] = []
    # A policy that gives up after one attempt (the subscription stays active)
    statuses = _run(app, [g1, g2], sender, RetryPolicy(schedule=(10,), max_attempts=1),
                    enqueued=enqueued)
    assert statuses == {g1: "failed", g2: "held"}
    assert enqueued == [([g2], 0)]
    assert _run(app, [g2], sender) == {g2: "succeeded"}
    assert sent_event_ids(sender) == ["g2"]
    log = attempts(acme, sub["id"])["deliveries"]
    assert [(e["status"], e["eventId"]) for e in log] == [("failed", "g1"), ("succeeded", "g2")]


class PublishBatchClient:
    """A stand-in SNS client: PublishBatch answers each entry as told."""

    def __init__(self, failed_ids: set[str]) -> None:
        self.failed_ids = failed_ids
        self.calls: list[dict[str, Any]] = []

    def publish_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        entries = kwargs["PublishBatchRequestEntries"]
        return {"Successful": [{"Id": e["Id"], "MessageId": f"m-{e['Id']}"} for e in entries
                               if e["Id"] not in self.failed_ids],
                "Failed": [{"Id": e["Id"], "Code": "InternalError", "SenderFault": False,
                            "Message": "try again"} for e in entries
                           if e["Id"] in self.failed_ids]}


def test_sns_sends_ten_messages_per_publish_batch_and_keeps_each_entrys_result() -> None:
    from subscriptions.senders.aws import ClientCache
    from subscriptions.senders.base import Destination
    from subscriptions.senders.sns import SnsSender

    client = PublishBatchClient(failed_ids={"3"})

    class Clients(ClientCache):
        def get(self, service: str, destination: Destination) -> Any:
            assert service == "sns"
            return client

    destination = Destination(kind="SNS", target=TOPIC_ARN, region="us-east-1",
                              credentials="keys", access_key="AKIA", access_secret="s")
    messages = [OutgoingMessage(body=f"{{\"n\": {i}}}", attributes={"tenant": "acme"})
                for i in range(12)]
    results = SnsSender(Clients()).send_batch(destination, messages)
    assert [len(c["PublishBatchRequestEntries"]) for c in client.calls] == [10, 2]
    assert client.calls[0]["TopicArn"] == TOPIC_ARN
    assert [e["Message"] for e in client.calls[0]["PublishBatchRequestEntries"]][:2] == [
        '{"n": 0}', '{"n": 1}']
    # Entry 3 of each call failed (a partial failure), transient; the others succeeded
    failed = [i for i, r in enumerate(results) if not r.ok]
    assert failed == [3]
    assert results[3].transient and results[3].error_code == "InternalError"
    assert results[0].message_id == "m-0"


def test_a_subscription_deleted_while_its_delivery_is_sent_keeps_it_cancelled_and_unlogged(
        acme: Caller) -> None:
    from subscriptions.models import DeliveryAttempt

    app = acme.client.application
    sub = create(acme, sqs_body())
    [delivery_id] = _pending(app, order_event(id="evt-deleted-meanwhile"))
    sender = SendsOnce(lambda: acme.client.delete(f"{BASE}/{sub['id']}",
                                                  headers=acme.headers()))
    assert _run(app, [delivery_id], sender) == {delivery_id: "succeeded"}
    [row] = deliveries_of(app, "evt-deleted-meanwhile")
    assert row.status == "cancelled"
    with _runtime(app).sessions() as session:
        logged = session.execute(select(DeliveryAttempt).where(
            DeliveryAttempt.delivery_id == delivery_id)).scalars().all()
    assert logged == []


class Overlapping(StubSender):
    """Notes how many batch calls are in flight at once (each takes a little while)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.most = 0
        self.guard = threading.Lock()

    def send_batch(self, destination: Any, messages: list[Any]) -> list[SendResult]:
        with self.guard:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.05)
        try:
            return super().send_batch(destination, messages)
        finally:
            with self.guard:
                self.now -= 1


@pytest.mark.embedded("sender", deliver_sends_in_flight=2)
def test_a_deliver_process_has_at_most_its_sends_in_flight(acme: Caller) -> None:
    app = acme.client.application
    runtime = runtime_of(app)
    sender = Overlapping()
    runtime.senders["SQS"] = sender
    create(acme, sqs_body())
    ids = _pending(app, *[order_event(id=f"evt-fly-{i}", entity_id=f"o-{i}") for i in range(60)])
    deliver = runtime.broker.get_actor(DELIVER_ACTOR)
    # Two messages of 30 handled at once by two threads: six calls of ten
    threads = [threading.Thread(target=deliver.fn, args=(ids[i:i + 30],)) for i in (0, 30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(sender.sent) == 60
    assert sender.most == 2
