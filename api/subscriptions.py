"""/api/v1/event-subscription: CRUD, deactivate, the attempt log, replay and a test send."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

from flask import Blueprint, Response, current_app, g
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from api.events import Moment, valid_event_id
from api.http import ApiError, json_body, json_response, validation_details
from api.paging import PageParams, cipher, decode_cursor, page_of, quota_error
from api.security import require
from events.contract import EventOut, EventPayloadOut, new_event_id
from infra.broker.dispatch import BrokerUnavailable, enqueue_deliveries
from infra.crypto import SecretsUnavailable
from infra.db import UnitOfWork
from infra.opaque import DOMAIN
from subscriptions.contract import (
    AttemptList,
    Deactivated,
    Queued,
    SubscriptionError,
    SubscriptionExists,
    SubscriptionIn,
    TestResult,
)
from subscriptions.deliveries import list_attempts, replay_deliveries
from subscriptions.models import Delivery
from subscriptions.quotas import check_no_queued_replay, check_subscriptions, lock_subscription
from subscriptions.repository import (
    create_subscription,
    deactivate_subscription,
    delete_subscription,
    get_subscription,
    list_subscriptions,
    to_api,
    update_subscription,
)
from subscriptions.service import NOT_ALLOWED, NotAllowed, build_message, destination_of
from tenants.aws_identity import tenant_aws
from tenants.quotas import QuotaExceeded, tenant_quotas

log = logging.getLogger(__name__)
bp = Blueprint("subscriptions", __name__)
BASE = "/api/v1/event-subscription"


def _runtime() -> Any:
    return current_app.extensions["ec.runtime"]


def _parse_subscription(body: Any) -> SubscriptionIn:
    context = {"sqs_endpoint": _runtime().settings.aws_endpoint_sqs}
    try:
        return SubscriptionIn.model_validate(body, context=context)
    except ValidationError as exc:
        raise ApiError(400, "invalid_subscription", "the subscription is invalid",
                       validation_details(exc)) from None


def _domain_error(exc: SubscriptionError) -> ApiError:
    status, code = (409, "conflict") if isinstance(exc, SubscriptionExists) else (400, "invalid_subscription")
    field = exc.field or "body"
    return ApiError(status, code, str(exc), [{"field": field, "message": str(exc), "type": code}])


def _shown(session: Any, subs: list[Any]) -> list[dict[str, Any]]:
    """The subscriptions as responses show them, role ones with the tenant's ExternalId."""
    identity = tenant_aws(session, g.principal.tenant) if any(
        s.credentials == "role" for s in subs) else None
    return [to_api(s, identity.external_id if identity else None).model_dump(mode="json")
            for s in subs]


def _check_id(value: str) -> None:
    if not valid_event_id(value):
        raise _not_found()


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "no such subscription")


@bp.post(BASE)
@require("subscriptions")
def create() -> Response:
    data = _parse_subscription(json_body())
    with UnitOfWork(_runtime().sessions, write=True) as uow:
        try:
            check_subscriptions(uow.session, g.principal.tenant, _runtime().settings.quotas)
            sub = create_subscription(uow.session, g.principal.tenant, data, _runtime().box)
        except SubscriptionError as exc:
            raise _domain_error(exc) from None
        except QuotaExceeded as exc:
            raise quota_error(exc) from None
        uow.commit()
        [body] = _shown(uow.session, [sub])
    return json_response(body, 201, {"Location": f"{BASE}/{body['id']}"})


def _update(sub_id: str, body: Any) -> Response:
    data = _parse_subscription(body)
    if data.id is not None and data.id != sub_id:
        raise ApiError(400, "id_mismatch", "the id in the body differs from the one in the path",
                       [{"field": "id", "message": "must equal the path id", "type": "mismatch"}])
    with UnitOfWork(_runtime().sessions, write=True) as uow:
        try:
            sub = update_subscription(uow.session, g.principal.tenant, sub_id, data,
                                      _runtime().box)
        except SubscriptionError as exc:
            raise _domain_error(exc) from None
        if sub is None:
            raise _not_found()
        uow.commit()
        return json_response(_shown(uow.session, [sub])[0])


@bp.put(BASE)
@require("subscriptions")
def update_by_body() -> Response:
    body = json_body()
    sub_id = body.get("id") if isinstance(body, dict) else None
    if sub_id is None:
        raise ApiError(400, "invalid_subscription", "the body must carry the subscription's id",
                       [{"field": "id", "message": "required", "type": "missing"}])
    if not isinstance(sub_id, str) or not sub_id:
        raise ApiError(400, "invalid_subscription", "id must be a non-empty string",
                       [{"field": "id", "message": "must be a non-empty string",
                         "type": "string_type"}])
    return _update(sub_id, body)


@bp.put(f"{BASE}/<string:sub_id>")
@require("subscriptions")
def update_by_path(sub_id: str) -> Response:
    _check_id(sub_id)
    return _update(sub_id, json_body())


class ListParams(PageParams):
    include_inactive: bool = False


@bp.get(BASE)
@require("subscriptions", query=ListParams)
def list_all() -> Response:
    params = g.query
    assert isinstance(params, ListParams)
    with _runtime().sessions() as session:
        subs = list_subscriptions(
            session, g.principal.tenant, include_inactive=params.include_inactive,
            from_pk=decode_cursor("subscription", params.from_id),
            limit=params.per_page + 1 if params.per_page else None)
        subs, link = page_of(subs, params.per_page, "subscription")
        return json_response(_shown(session, subs), headers=link)


@bp.get(f"{BASE}/<string:sub_id>")
@require("subscriptions")
def get_one(sub_id: str) -> Response:
    _check_id(sub_id)
    with _runtime().sessions() as session:
        sub = get_subscription(session, g.principal.tenant, sub_id)
        if sub is None:
            raise _not_found()
        return json_response(_shown(session, [sub])[0])


@bp.put(f"{BASE}/<string:sub_id>/deactivate")
@require("subscriptions")
def deactivate(sub_id: str) -> Response:
    _check_id(sub_id)
    with UnitOfWork(_runtime().sessions, write=True) as uow:
        sub = get_subscription(uow.session, g.principal.tenant, sub_id)
        if sub is None:
            raise _not_found()
        if sub.active:
            deactivate_subscription(uow.session, sub, "deactivated by request", datetime.now(UTC))
            uow.commit()
    return json_response(Deactivated(body={}, statusCode="ACCEPTED", statusCodeValue=202)
                         .model_dump(mode="json"))


@bp.delete(f"{BASE}/<string:sub_id>")
@require("subscriptions")
def delete(sub_id: str) -> Response:
    _check_id(sub_id)
    with UnitOfWork(_runtime().sessions, write=True) as uow:
        if not delete_subscription(uow.session, g.principal.tenant, sub_id):
            raise _not_found()
        uow.commit()
    return Response(status=204)


class AttemptParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["succeeded", "retrying", "failed"] | None = None
    since: Moment | None = None
    from_id: int | None = Field(None, ge=1, le=DOMAIN)
    per_page: int = Field(50, ge=1, le=500)


@bp.get(f"{BASE}/<string:sub_id>/deliveries")
@require("subscriptions", query=AttemptParams)
def deliveries(sub_id: str) -> Response:
    _check_id(sub_id)
    params = g.query
    assert isinstance(params, AttemptParams)
    with _runtime().sessions() as session:
        if get_subscription(session, g.principal.tenant, sub_id) is None:
            raise _not_found()
        page = list_attempts(session, g.principal.tenant, sub_id, status=params.status,
                             since=params.since,
                             from_id=decode_cursor("attempt", params.from_id),
                             per_page=params.per_page)
    ids = cipher()
    shown = [a.model_copy(update={"id": ids.encode("attempt", a.id),
                                  "deliveryId": ids.encode("delivery", a.deliveryId)})
             for a in page.attempts]
    body = AttemptList(deliveries=shown, total=page.total,
                       next_from_id=(ids.encode("attempt", page.next_from_id)
                                     if page.next_from_id is not None else None))
    return json_response(body.model_dump(mode="json"))


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: Moment
    until: Moment

    @model_validator(mode="after")
    def _ordered(self) -> ReplayIn:
        if self.until <= self.since:
            raise ValueError("until must be after since")
        return self


@bp.post(f"{BASE}/<string:sub_id>/replay")
@require("subscriptions")
def replay(sub_id: str) -> Response:
    _check_id(sub_id)
    try:
        window = ReplayIn.model_validate(json_body())
    except ValidationError as exc:
        raise ApiError(400, "invalid_replay", "send {\"since\": ..., \"until\": ...} (RFC 3339)",
                       validation_details(exc)) from None
    runtime = _runtime()
    with UnitOfWork(runtime.sessions, write=True) as uow:
        session = uow.session
        sub = get_subscription(session, g.principal.tenant, sub_id)
        if sub is None:
            raise _not_found()
        if not sub.active:
            raise ApiError(409, "inactive", "reactivate the subscription (PUT active=true) before "
                           "replaying")
        lock_subscription(session, sub)
        limit = tenant_quotas(session, sub.tenant, runtime.settings.quotas).replay_events
        try:
            check_no_queued_replay(session, sub)
        except QuotaExceeded as exc:
            raise quota_error(exc) from None
        ids = replay_deliveries(session, sub, window.since, window.until, limit)
        if ids is None:
            raise quota_error(QuotaExceeded(
                "replay_events", limit,
                f"more than {limit} events match, the tenant's quota for one replay: replay a "
                "shorter range"))
        uow.commit()  # before the enqueue: the deliver pool must find the deliveries
    try:
        queued = enqueue_deliveries(runtime.broker, ids)
    except BrokerUnavailable as exc:
        # The deliveries are committed: the scheduler's sweep sends them once they are overdue
        # (EC_DELIVERY_SWEEP_AFTER_SECONDS). Retrying would replay the range a second time.
        log.warning("replay of %d deliveries deferred to the sweep: %s", len(ids), exc)
        return json_response(Queued(queued=len(ids), deferred=True).model_dump(mode="json"), 202)
    return json_response(Queued(queued=queued, deferred=False).model_dump(mode="json"), 202)


@bp.post(f"{BASE}/<string:sub_id>/test")
@require("subscriptions")
def test_send(sub_id: str) -> Response:
    _check_id(sub_id)
    runtime = _runtime()
    with runtime.sessions() as session:
        sub = get_subscription(session, g.principal.tenant, sub_id)
        if sub is None:
            raise _not_found()
        try:
            destination = destination_of(sub, runtime.box, tenant_aws(session, sub.tenant))
        except SecretsUnavailable as exc:
            # This answer has no messageId and no transient.
            return json_response(TestResult(
                ok=False, messageId=None, errorCode="SecretUnavailable", errorMessage=str(exc),
                transient=None).model_dump(mode="json", exclude={"messageId", "transient"}))
        except NotAllowed:
            # The same answer whether the queue exists or not: no AWS call is made.
            return json_response(TestResult(
                ok=False, messageId=None, errorCode=NOT_ALLOWED.error_code,
                errorMessage=NOT_ALLOWED.error_message, transient=False).model_dump(mode="json"))
        tenant = sub.tenant
        entity = sub.entity_type
    document = EventOut(
        id=f"test-{new_event_id()}", entity_id=None, entity_name=entity, event_source="SYSTEM",
        event_type="SYSTEM", event_payload=EventPayloadOut(
            base64_encoded_payload_json=None, base64_encoded_fault_json=None, entity_id=None,
            key_attributes={"test": "true"}, operation=None),
        received_at=datetime.now(UTC)).model_dump(mode="json")
    probe = Delivery(id=0, replay=False)
    result = runtime.senders[destination.kind].send(destination,
                                                    build_message(tenant, document, probe))
    return json_response(TestResult(
        ok=result.ok, messageId=result.message_id, errorCode=result.error_code,
        errorMessage=result.error_message, transient=result.transient if not result.ok else None,
    ).model_dump(mode="json"))

