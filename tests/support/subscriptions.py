"""Subscription bodies and helpers for the StubSender app (``pytest.mark.embedded("sender")``)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from infra.broker.queues import DELIVER_QUEUE
from subscriptions.models import Subscription
from tests.conftest import Caller, drain
from tests.support.apps import runtime_of

BASE = "/api/v1/event-subscription"


ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"


ACCESS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETzz"


QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/orders"


FIFO_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/orders.fifo"


TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:orders"


READ_ONLY = ("createdAt", "updatedAt", "failingSince", "deactivatedAt", "deactivationReason")


def sqs_body(url: str = QUEUE_URL, *, keys: bool = True, **overrides: Any) -> dict[str, Any]:
    """A valid ORDER-create subscription to an SQS queue (with keys unless ``keys=False``)."""
    sqs: dict[str, Any] = {"queueUrl": url, "region": "us-east-1"}
    if keys:
        sqs.update(accessKey=ACCESS_KEY, accessSecret=ACCESS_SECRET)
    body: dict[str, Any] = {
        "active": True, "entityType": "ORDER", "subscribeCreate": True,
        "subscribeChange": False, "subscribeDelete": False,
        "destination": {"type": "SQS", "sqs": sqs},
    }
    body.update(overrides)
    return body


def sns_body(arn: str = TOPIC_ARN, **overrides: Any) -> dict[str, Any]:
    """A valid ORDER-create subscription to an SNS topic, with keys."""
    body = sqs_body(**overrides)
    body["destination"] = {"type": "SNS", "sns": {"topicArn": arn, "region": "us-east-1",
                                                  "accessKey": ACCESS_KEY,
                                                  "accessSecret": ACCESS_SECRET}}
    return body


def create(caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    resp = caller.client.post(BASE, json=body, headers=caller.headers())
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return resp.get_json()


def put(caller: Caller, path: str, body: Any) -> Any:
    return caller.client.put(path, json=body, headers=caller.headers())


def attempts(caller: Caller, sub_id: str, **params: Any) -> dict[str, Any]:
    resp = caller.get(f"{BASE}/{sub_id}/deliveries", query_string=params)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def settle(app: Any, timeout: float = 10) -> None:
    """Wait until the persist queue and the deliveries queue (with its delay queue) are empty."""
    drain(app)
    runtime_of(app).broker.join(DELIVER_QUEUE, timeout=int(timeout * 1000))


def wait_until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


def stored_subscription(app: Any, tenant: str, sub_id: str) -> Subscription | None:
    with runtime_of(app).sessions() as session:
        return session.execute(select(Subscription).where(
            Subscription.tenant == tenant, Subscription.id == sub_id)).scalar_one_or_none()


def writable(shown: dict[str, Any]) -> dict[str, Any]:
    """What GET showed, without the read-only fields."""
    return copy.deepcopy({k: v for k, v in shown.items() if k not in READ_ONLY})
