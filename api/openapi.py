"""The OpenAPI 3.1 document of /api/v1 and /api/event, and an offline Swagger UI at /docs."""

from __future__ import annotations

import os
from typing import Any, Literal

from flask import Blueprint, Response, send_from_directory
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from api.events import EventListParams
from api.http import json_response
from events.contract import EventIn
from infra.limits import TENANT_PATTERN

bp = Blueprint("docs", __name__)


class ErrorDetail(BaseModel):
    field: str
    message: str
    type: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail]


class Error(BaseModel):
    """The shape of every 4xx/5xx answer."""

    error: ErrorBody


_AS_SENT = ("standard base64, stored and returned as sent; its content need not be JSON (an "
            "upstream's HTML error page, XML or a form is kept as it came)")


class EventPayloadOut(BaseModel):
    base64_encoded_payload_json: str | None = Field(description=_AS_SENT)
    base64_encoded_fault_json: str | None = Field(description=_AS_SENT)
    entity_id: str | None
    key_attributes: dict[str, str]
    operation: str | None


class Event(BaseModel):
    """An event as stored and returned."""

    id: str
    entity_id: str | None
    entity_name: str | None
    event_source: str
    event_type: str
    event_payload: EventPayloadOut
    received_at: str = Field(description="RFC 3339, UTC, when the collector accepted the event")


class QuarantineDetails(BaseModel):
    """Why and since when an accepted event is quarantined."""

    id: int = Field(description="the quarantine entry's id, opaque (from_id of GET /api/v1/quarantine)")
    reason: str = Field(description="why the database refused the event (no values quoted)")
    error: str = Field(description="the database error's class, e.g. StringDataRightTruncation")
    quarantined_at: str
    retries: int = Field(description="operator re-drives that failed again")
    last_retry_at: str | None


class EventStatus(Event):
    """An event as GET /api/v1/events/{id} returns it: the document and where it is."""

    status: Literal["stored", "accepted", "quarantined"] = Field(
        description="stored; accepted (not stored yet: the intake's record, read-your-writes); "
                    "quarantined (accepted, but the database refused it: see quarantine)")
    quarantine: QuarantineDetails | None = Field(
        None, description="present when status is quarantined")


class QuarantinedEvent(Event):
    status: Literal["quarantined"]
    quarantine: QuarantineDetails


class QuarantineList(BaseModel):
    events: list[QuarantinedEvent]
    total: int
    next_from_id: int | None = Field(description="pass as from_id for the next page; null at "
                                                 "the end")


class EventList(BaseModel):
    events: list[Event]
    total: int
    next_from_id: int | None = Field(
        description="pass as from_id for the next page. In id ASC order the last non-empty page "
        "still gives one (last + 1) so a client can come back for newer events; an empty page "
        "(or the end in other orders) gives null")


class BatchRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"additionalProperties": False})
    events: list[dict[str, Any]] = Field(min_length=1, max_length=1000,
                                         description="each item is an EventIn")


class BatchItem(BaseModel):
    index: int
    status: int = Field(description="201 accepted, 200 duplicate, 400 invalid, 409 id conflict")
    id: str | None = None
    event: Event | None = None
    error: ErrorBody | None = None


class BatchResult(BaseModel):
    accepted: int
    duplicates: int
    conflicts: int
    rejected: int
    results: list[BatchItem]


class TokenRequest(BaseModel):
    grant_type: str = Field(json_schema_extra={"enum": ["client_credentials"]})
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = Field(None, description="space-separated subset of: events:write "
                              "events:read subscriptions jobs (default: all of the client's)")
    expires_in: str | None = Field(None, description="lifetime asked for, in seconds (>= 60; "
                                   "default EC_TOKEN_TTL_SECONDS); never more than "
                                   "EC_TOKEN_MAX_TTL_SECONDS")


class OAuthError(BaseModel):
    """The token endpoint's errors (RFC 6749 section 5.2), which OAuth client libraries read."""

    error: Literal["invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                   "unsupported_grant_type", "invalid_scope", "temporarily_unavailable",
                   "server_error"] = Field(description=(
        "invalid_client on 401 (with WWW-Authenticate); unauthorized_client on 403 (the tenant is "
        "disabled); temporarily_unavailable on 429/503 (with Retry-After); invalid_request for a "
        "malformed request"))
    error_description: str


class TokenResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str


class OpenLoyaltyEvent(BaseModel):
    id: int = Field(description="the tenant's own sequence number (from 10^12 + 1; numbers "
                                "below 10^12 are the global ones shown before, still accepted)")
    uuid: str = Field(description="the event id")
    payload: Any = Field(description=(
        "base64_encoded_payload_json (else base64_encoded_fault_json) decoded: the JSON value when "
        "it parses as JSON, otherwise its text as a string (UTF-8, undecodable bytes replaced "
        "by U+FFFD); {} when the event has neither"))
    type: str = Field(description="event type, entity name and operation joined by dots")
    recorderOn: str


class OpenLoyaltyEventList(BaseModel):
    events: list[OpenLoyaltyEvent]
    total: int


_MODELS = [Error, EventIn, Event, EventStatus, EventList, QuarantineList, BatchRequest,
           BatchResult, TokenRequest, TokenResponse, OAuthError, OpenLoyaltyEvent, OpenLoyaltyEventList]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "invalid input (or a missing/malformed X-TWC-Tenant)",
            401: "missing, invalid, expired or revoked token",
            429: "the tenant is over its rate limit",
            403: "tenant mismatch, missing scope, or the tenant is disabled (tenant_disabled)",
            404: "unknown id in this tenant", 409: "same id, different body", 415: "not JSON",
            408: "request_timeout: the body did not arrive within EC_REQUEST_BODY_TIMEOUT_SECONDS "
                 "of the headers (the connection is closed)",
            413: "body too large (on the batch route also batch_exceeds_burst: more events "
                 "than the tenant's rate-limit burst, which no wait would let through)",
            503: "broker or database unavailable; retry after Retry-After seconds"}
    return {str(s): _json("Error", text[s]) for s in statuses}


def _oauth_errors(*statuses: int) -> dict[str, Any]:
    text = {400: "invalid_request, unsupported_grant_type or invalid_scope",
            403: "unauthorized_client: the client's tenant is disabled",
            401: "invalid_client (WWW-Authenticate: Basic)", 413: "invalid_request: body too large",
            408: "invalid_request: the body did not arrive in time",
            415: "invalid_request: not a form or JSON", 429: "temporarily_unavailable",
            503: "temporarily_unavailable; retry after Retry-After seconds"}
    return {str(s): _json("OAuthError", text[s]) for s in statuses}


_TENANT = {"name": "X-TWC-Tenant", "in": "header", "required": True,
           "schema": {"type": "string", "pattern": TENANT_PATTERN}}
_TENANT_OPTIONAL = {**_TENANT, "required": False,
                    "description": "optional; when given it must name the token's tenant"}


def _query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    params = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        if "$ref" in prop:
            prop = defs[prop["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in prop:
            options = [defs[o["$ref"].rsplit("/", 1)[-1]] if "$ref" in o else o
                       for o in prop["anyOf"] if o.get("type") != "null"]
            prop = {**options[0], **{k: v for k, v in prop.items() if k not in ("anyOf",)}}
        prop.pop("title", None)
        prop.pop("default", None) if prop.get("default") is None else None
        params.append({"name": name, "in": "query", "required": False, "schema": prop})
    return params


class SubscriptionBlock(BaseModel):
    queueUrl: str | None = None
    topicArn: str | None = None
    region: str
    credentials: Literal["keys", "role", "platform"] = Field(
        description="how deliveries authenticate to AWS")
    accessKey: str | None = Field(description="masked: '****' + the last 4 characters")
    accessSecret: str | None = Field(description="masked: '********' when one is stored")
    roleArn: str | None = Field(description="the role assumed with STS (credentials: role)")
    externalId: str | None = Field(
        description="read-only, role destinations: the ExternalId Event Collector passes when "
                    "it assumes the role (generated per tenant; require it in the role's trust "
                    "policy)")


class DestinationOut(BaseModel):
    type: str
    sqs: SubscriptionBlock | None = None
    sns: SubscriptionBlock | None = None


class Subscription(BaseModel):
    """A subscription as responses show it (secrets masked)."""

    id: str
    active: bool
    entityType: str
    subscribeCreate: bool
    subscribeChange: bool
    subscribeDelete: bool
    eventTypes: list[str]
    destination: DestinationOut
    createdAt: str
    updatedAt: str
    failingSince: str | None
    deactivatedAt: str | None
    deactivationReason: str | None


class Deactivated(BaseModel):
    body: dict[str, Any]
    statusCode: str
    statusCodeValue: int


class Attempt(BaseModel):
    id: int = Field(description="opaque (says nothing about other tenants); pass as from_id")
    deliveryId: int = Field(description="opaque, the same for every attempt of a delivery")
    eventId: str
    attempt: int
    attemptedAt: str
    status: str
    errorCode: str | None
    errorMessage: str | None
    messageId: str | None
    latencyMs: int


class AttemptList(BaseModel):
    deliveries: list[Attempt]
    total: int
    next_from_id: int | None


class ReplayRequest(BaseModel):
    since: str = Field(json_schema_extra={"format": "date-time"})
    until: str = Field(json_schema_extra={"format": "date-time"})


class Queued(BaseModel):
    queued: int
    deferred: bool = Field(
        description="true when the broker could not be reached: the deliveries are recorded "
                    "and the scheduler's sweep sends them (do not retry: that replays again)")


class TestResult(BaseModel):
    ok: bool
    messageId: str | None
    errorCode: str | None
    errorMessage: str | None
    transient: bool | None


class Job(BaseModel):
    """A notification job as responses show it."""

    id: str
    deleted: bool
    is_active: bool
    is_scheduled: bool
    job_parameters: dict[str, Any]
    notification: str
    number_of_items_in_email: int
    schedule: str | None
    scheduleExpression: str | None
    template_id: str
    timezone: str
    next_run_at: str | None
    last_run_at: str | None
    created_at: str
    updated_at: str


class JobRun(BaseModel):
    id: int = Field(description="opaque; the run_id of POST .../run and of SendGrid's custom args")
    fire_time: str
    trigger: str
    status: str
    created_at: str
    finished_at: str | None
    recipients: int
    sent: int
    failed: int
    skipped: int
    attempts: int
    error: str | None


class JobRuns(BaseModel):
    runs: list[JobRun]


class RunQueued(BaseModel):
    run_id: int = Field(description="opaque; the id in the run history")
    status: str = Field(description="queued; or deferred when the broker could not be reached: "
                                    "the run is recorded and the scheduler sends it (do not retry)")


def _array(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"type": "array", "items": _ref(name)}}}}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def build_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built from the same pydantic models that validate requests)."""
    from api.jobs import ListParams as JobListParams
    from api.open_loyalty import OpenLoyaltyParams
    from api.quarantine import QuarantineParams
    from api.subscriptions import AttemptParams
    from api.subscriptions import ListParams as SubscriptionListParams
    from jobs.contract import JobIn
    from subscriptions.contract import SubscriptionIn

    validation = {EventIn, SubscriptionIn, JobIn}
    models = [*_MODELS, SubscriptionIn, Subscription, Deactivated, AttemptList, ReplayRequest,
              Queued, TestResult, JobIn, Job, JobRuns, RunQueued]
    _, top = models_json_schema([(m, "validation" if m in validation else "serialization")
                                 for m in models],
                                ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})
    # Batch items are answered one by one (a bad item gets its own 400): any JSON value.
    schemas["BatchRequest"]["properties"]["events"]["items"] = {
        "description": "an event (EventIn); items that are not valid get their own 400"}
    secured = [{"bearerAuth": []}]
    # Every secured call may also be rate limited, or find the broker/database down.
    common = (401, 403, 429, 503)

    def op(summary: str, tag: str, responses: dict[str, Any], *statuses: int,
           params: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None,
           v1: bool = True) -> dict[str, Any]:
        codes = sorted(set(statuses) | set(common) | ({400} if v1 else set())
                       | ({408} if body is not None else set()))  # the body deadline
        out: dict[str, Any] = {"summary": summary, "tags": [tag], "security": secured,
                               "parameters": [_TENANT if v1 else _TENANT_OPTIONAL, *(params or [])],
                               "responses": {**responses, **_errors(*codes)}}
        if body is not None:
            out["requestBody"] = body
        return out

    def path_param(name: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True,
                "schema": {"type": "string", "maxLength": 128}}

    event_path = path_param("event_id")
    sub_path = path_param("sub_id")
    job_path = path_param("job_id")
    created = {"headers": {"Location": {"schema": {"type": "string"}}}}
    no_content = {"204": {"description": "done"}}
    sub_base = "/api/v1/event-subscription"
    paths: dict[str, Any] = {
        "/api/v1/auth/token": {"post": {
            "summary": "OAuth 2.0 client credentials: get an access token",
            "tags": ["auth"],
            "requestBody": {"required": True, "content": {
                "application/x-www-form-urlencoded": {"schema": _ref("TokenRequest")},
                "application/json": {"schema": _ref("TokenRequest")}}},
            "responses": {"200": _json("TokenResponse", "a signed access token"),
                          **_oauth_errors(400, 401, 403, 408, 413, 415, 429, 503)}}},
        "/api/v1/events": {
            "post": op("Post an event", "events", {
                "201": {**_json("Event", "accepted: it will be stored"), **created},
                "200": _json("Event", "retry of an accepted event")}, 409, 413, 415,
                body=_body("EventIn")),
            "get": op("List events (cursor pagination)", "events",
                      {"200": _json("EventList", "a page of events")},
                      params=_query_params(EventListParams))},
        "/api/v1/events/batch": {"post": op(
            "Post up to 1000 events; each item is answered on its own", "events",
            {"200": _json("BatchResult", "per-item results")}, 413, 415,
            body=_body("BatchRequest"))},
        "/api/v1/events/{event_id}": {"get": op(
            "Get an event by id, with its status (stored, accepted or quarantined)", "events",
            {"200": _json("EventStatus", "the event")}, 404, params=[event_path])},
        "/api/v1/quarantine": {"get": op(
            "List the tenant's quarantined events (accepted, refused by the database)",
            "events", {"200": _json("QuarantineList", "a page of quarantined events")},
            params=_query_params(QuarantineParams))},
        "/api/event": {"get": op(
            "Open Loyalty style event list", "event store",
            {"200": _json("OpenLoyaltyEventList", "a page of events")}, 400,
            params=_query_params(OpenLoyaltyParams), v1=False)},
        "/api/event/{event_id}": {"get": op(
            "Open Loyalty style event by sequence number or uuid", "event store",
            {"200": _json("OpenLoyaltyEvent", "the event")}, 400, 404, params=[event_path],
            v1=False)},
        sub_base: {
            "post": op("Create a subscription", "subscriptions",
                       {"201": {**_json("Subscription", "created"), **created}}, 409, 413, 415,
                       body=_body("SubscriptionIn")),
            "put": op("Update a subscription (id in the body)", "subscriptions",
                      {"200": _json("Subscription", "updated")}, 404, 413, 415,
                      body=_body("SubscriptionIn")),
            "get": op("List subscriptions (active ones unless include_inactive)",
                      "subscriptions", {"200": _array("Subscription", "subscriptions")},
                      params=_query_params(SubscriptionListParams))},
        f"{sub_base}/{{sub_id}}": {
            "get": op("Get a subscription", "subscriptions",
                      {"200": _json("Subscription", "the subscription")}, 404,
                      params=[sub_path]),
            "put": op("Update a subscription", "subscriptions",
                      {"200": _json("Subscription", "updated")}, 404, 413, 415,
                      params=[sub_path], body=_body("SubscriptionIn")),
            "delete": op("Delete a subscription", "subscriptions", no_content, 404,
                         params=[sub_path])},
        f"{sub_base}/{{sub_id}}/deactivate": {"put": op(
            "Deactivate a subscription", "subscriptions",
            {"200": _json("Deactivated", "deactivated")}, 404, params=[sub_path])},
        f"{sub_base}/{{sub_id}}/deliveries": {"get": op(
            "The attempt log", "subscriptions", {"200": _json("AttemptList", "attempts")}, 404,
            params=[sub_path, *_query_params(AttemptParams)])},
        f"{sub_base}/{{sub_id}}/replay": {"post": op(
            "Re-deliver the stored events of a time range", "subscriptions",
            {"202": _json("Queued", "deliveries queued")}, 404, 409, 413, 415,
            params=[sub_path], body=_body("ReplayRequest"))},
        f"{sub_base}/{{sub_id}}/test": {"post": op(
            "Send one test message now", "subscriptions",
            {"200": _json("TestResult", "the outcome")}, 404, params=[sub_path])},
        "/api/v1/jobs": {
            "post": op("Create a notification job", "jobs",
                       {"201": {**_json("Job", "created"), **created}}, 409, 413, 415,
                       body=_body("JobIn")),
            "get": op("List jobs (not deleted unless include_deleted)", "jobs",
                      {"200": _array("Job", "jobs")}, params=_query_params(JobListParams))},
        "/api/v1/jobs/{job_id}": {
            "get": op("Get a job", "jobs", {"200": _json("Job", "the job")}, 404,
                      params=[job_path]),
            "put": op("Update a job (its id cannot change)", "jobs",
                      {"200": _json("Job", "updated")}, 404, 413, 415, params=[job_path],
                      body=_body("JobIn")),
            "delete": op("Delete a job (soft)", "jobs", no_content, 404, params=[job_path]),
            "post": op("Delete a job (soft; seed 002's form): an empty body or none; a body is a "
                       "400 and deletes nothing", "jobs", no_content, 404, params=[job_path])},
        "/api/v1/jobs/{job_id}/delete": {"post": op(
            "Delete a job (soft; seed 002's POST form)", "jobs", no_content, 404,
            params=[job_path])},
        "/api/v1/jobs/{job_id}/runs": {"get": op(
            "Run history", "jobs", {"200": _json("JobRuns", "runs, newest first")}, 404,
            params=[job_path])},
        "/api/v1/jobs/{job_id}/run": {"post": op(
            "Fire now", "jobs", {"202": _json("RunQueued", "queued")}, 404, 409,
            params=[job_path])},
    }
    token_answers = paths["/api/v1/auth/token"]["post"]["responses"]
    token_answers["429"]["description"] = (
        "too_many_attempts: too many failed secret checks for this client id or source address")
    token_answers["503"]["description"] = (
        "database unavailable, or the process's slow secret checks all busy; retry after "
        "Retry-After seconds")
    quota = ("; or 409 quota_exceeded: the tenant is at a quota (details[].field names it: "
             "subscriptions, jobs, replay_events or queued_replays; the message gives the limit)")
    for path, method in ((sub_base, "post"), ("/api/v1/jobs", "post"),
                         (f"{sub_base}/{{sub_id}}/replay", "post")):
        paths[path][method]["responses"]["409"]["description"] += quota
    link = {"Link": {"description": 'RFC 8288: <the next page>; rel="next", when per_page '
                     "was given and there is more", "schema": {"type": "string"}}}
    for path in (sub_base, "/api/v1/jobs"):
        paths[path]["get"]["responses"]["200"]["headers"] = link
    for methods in paths.values():
        for operation in methods.values():
            for status, response in operation["responses"].items():
                if status in ("429", "503"):
                    response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Event Collector API", "version": "1.0.0",
                 # Markdown (Swagger UI renders it): the placeholders sit in code spans, where
                 # "<token>" is text, not an HTML tag.
                 "description": "Multi-tenant event collector. Every /api/v1 call carries "
                 "`Authorization: Bearer <token>` and `X-TWC-Tenant: <tenant>`. A query "
                 "parameter an operation does not list, like a body field its schema does not, "
                 "is refused: 400 naming it."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    }


_SWAGGER_DIR: str | None = None


def _swagger_dir() -> str:
    global _SWAGGER_DIR
    if _SWAGGER_DIR is None:
        import flask_openapi3_swagger

        _SWAGGER_DIR = os.path.join(os.path.dirname(flask_openapi3_swagger.__file__),
                                    "templates", "swagger")
    return _SWAGGER_DIR


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Event Collector API</title>
<link rel="icon" type="image/svg+xml" href="/docs/static/images/swagger.svg">
<link rel="stylesheet" href="/docs/static/css/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/js/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"""


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return json_response(build_spec())


@bp.get("/docs")
def docs_page() -> Response:
    return Response(_PAGE, mimetype="text/html")


@bp.get("/docs/static/<path:filename>")
def docs_static(filename: str) -> Response:
    return send_from_directory(_swagger_dir(), filename)
