"""POST /api/v1/events and /api/v1/events/batch: parse, validate, accept, answer."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from api.http import ApiError, is_malformed_json, json_response, request_body, validation_details
from api.observability import INGESTED
from api.security import charge_events, claim_intake_charge, require, too_many_requests
from config import logging as logctx
from events.contract import EventIn, entity_event_problems
from events.repository import stored_versions
from events.service import accept_events
from infra.broker.intake import IntakeResult, Outcome
from infra.broker.ratelimit import RateLimited

log = logging.getLogger(__name__)

bp = Blueprint("ingest", __name__)


def _stored_lookup(tenant: str) -> Any:
    """Look up retried ids in the database; if it is down, rely on the intake's memory."""
    runtime = current_app.extensions["ec.runtime"]

    def lookup(ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        try:
            with runtime.sessions() as session:
                return stored_versions(session, tenant, ids)
        except SQLAlchemyError as exc:
            log.warning("idempotency lookup skipped, database unavailable: %s",
                        type(exc).__name__)
            return {}

    return lookup


def _location(event_id: str) -> str:
    return f"/api/v1/events/{event_id}"


def _accept(events: list[EventIn]) -> list[IntakeResult]:
    """One intake call: the rate-limit charge, the ids and the enqueue (429 when over limit)."""
    runtime = current_app.extensions["ec.runtime"]
    tenant = g.principal.tenant
    try:
        return accept_events(runtime.intake, tenant, events, stored=_stored_lookup(tenant),
                             charge=claim_intake_charge())
    except RateLimited as exc:
        raise too_many_requests(exc) from None


@bp.post("/api/v1/events")
@require("events:write", charge_in_intake=True)
def create_event() -> Response:
    runtime = current_app.extensions["ec.runtime"]
    body = request_body(runtime.settings.max_event_bytes)
    try:
        event = EventIn.model_validate_json(body)
    except ValidationError as exc:
        INGESTED.labels("rejected").inc()
        if is_malformed_json(exc):
            raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
        raise ApiError(
            400, "invalid_event", "the event is invalid", validation_details(exc)
        ) from None
    problems = entity_event_problems(event)
    if problems:
        INGESTED.labels("rejected").inc()
        raise ApiError(400, "invalid_event", "the event is invalid", problems)
    corr = event.event_payload.key_attributes.get("correlationId")
    if corr:
        logctx.correlation_id.set(corr)
    [result] = _accept([event])
    INGESTED.labels(result.outcome.value).inc()
    document = result.document
    if result.outcome is Outcome.CONFLICT:
        raise ApiError(
            409,
            "id_conflict",
            f"an event with id {document['id']!r} was already accepted with a different body",
            [{"field": "id", "message": "already used with a different body", "type": "conflict"}],
        )
    status = 201 if result.outcome is Outcome.ACCEPTED else 200
    return json_response(document, status, {"Location": _location(document["id"])})


@bp.post("/api/v1/events/batch")
@require("events:write", charge_in_intake=True)
def create_events_batch() -> Response:
    runtime = current_app.extensions["ec.runtime"]
    settings = runtime.settings
    body = request_body(settings.max_batch_bytes)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("events"), list):
        raise ApiError(400, "invalid_batch", "send {\"events\": [ ... ]}",
                       [{"field": "events", "message": "must be a list", "type": "list_type"}])
    if set(parsed) - {"events"}:
        extra = sorted(set(parsed) - {"events"})
        raise ApiError(400, "invalid_batch", "unexpected fields",
                       [{"field": k, "message": "extra fields not permitted",
                         "type": "extra_forbidden"} for k in extra])
    items: list[Any] = parsed["events"]
    if not items or len(items) > settings.max_batch_events:
        raise ApiError(
            400, "invalid_batch",
            f"a batch holds 1 to {settings.max_batch_events} events, got {len(items)}",
            [{"field": "events", "message": f"1 to {settings.max_batch_events} items",
              "type": "length"}],
        )
    charge_events(len(items))  # a batch of N events costs N (413 past the tenant's burst)

    results: list[dict[str, Any] | None] = [None] * len(items)
    valid: list[EventIn] = []
    positions: list[int] = []
    for index, item in enumerate(items):
        try:
            if len(orjson.dumps(item)) > settings.max_event_bytes:
                raise OverflowError
            event = EventIn.model_validate(item)
            details = entity_event_problems(event)
        except OverflowError:
            details = [{"field": f"events.{index}", "type": "too_large",
                        "message": f"an event may be at most {settings.max_event_bytes} bytes"}]
        except (ValidationError, orjson.JSONEncodeError) as exc:
            details = (validation_details(exc) if isinstance(exc, ValidationError) else
                       [{"field": f"events.{index}", "type": "invalid", "message": str(exc)}])
        if details:
            results[index] = {
                "index": index,
                "status": 400,
                "error": {"code": "invalid_event", "message": "the event is invalid",
                          "details": details},
            }
        else:
            valid.append(event)
            positions.append(index)
    counts = {"accepted": 0, "duplicates": 0, "conflicts": 0,
              "rejected": len(items) - len(valid)}
    if valid:
        accepted = _accept(valid)
        for index, result in zip(positions, accepted, strict=True):
            doc = result.document
            if result.outcome is Outcome.ACCEPTED:
                counts["accepted"] += 1
                results[index] = {"index": index, "status": 201, "id": doc["id"], "event": doc}
            elif result.outcome is Outcome.DUPLICATE:
                counts["duplicates"] += 1
                results[index] = {"index": index, "status": 200, "id": doc["id"], "event": doc}
            else:
                counts["conflicts"] += 1
                results[index] = {
                    "index": index, "status": 409, "id": doc["id"],
                    "error": {"code": "id_conflict",
                              "message": "id already accepted with a different body",
                              "details": []},
                }
    for outcome, key in (("accepted", "accepted"), ("duplicate", "duplicates"),
                         ("conflict", "conflicts"), ("rejected", "rejected")):
        if counts[key]:
            INGESTED.labels(outcome).inc(counts[key])
    return json_response({**counts, "results": results}, 200)
