"""The OpenAPI 3.1 document of /api/v1 and /api/event, and an offline Swagger UI at /docs.

The schemas are generated from the models that validate the requests and serialise the answers
(each feature's contract.py; api/token.py for OAuth, api/open_loyalty.py for its view); only
the paths, parameters and status codes are written here."""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, Response, send_from_directory
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.events import EventListParams
from api.http import json_response
from api.open_loyalty import OpenLoyaltyEvent, OpenLoyaltyEventList
from api.token import OAuthError, TokenRequest, TokenResponse
from events.contract import (
    BatchRequest,
    BatchResult,
    EventIn,
    EventList,
    EventOut,
    EventStatus,
    QuarantineList,
)
from infra.contract import Error
from infra.limits import TENANT_PATTERN
from jobs.contract import JobIn, JobOut, JobRuns, RunQueued
from subscriptions.contract import (
    AttemptList,
    Deactivated,
    Queued,
    SubscriptionIn,
    SubscriptionOut,
    TestResult,
)

bp = Blueprint("docs", __name__)


# Every model here is the one the routes validate requests with or serialise answers with.
_MODELS: list[type[BaseModel]] = [
    Error, EventIn, EventOut, EventStatus, EventList, QuarantineList, BatchRequest, BatchResult,
    TokenRequest, TokenResponse, OAuthError, OpenLoyaltyEvent, OpenLoyaltyEventList,
    SubscriptionIn, SubscriptionOut, Deactivated, AttemptList, Queued, TestResult, JobIn, JobOut,
    JobRuns, RunQueued]


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
    from api.subscriptions import AttemptParams, ReplayIn
    from api.subscriptions import ListParams as SubscriptionListParams

    # Validation mode for the answers too: infra.contract.ResponseModel's wrap serializer (keys
    # left out when None) would hide their fields from the serialization-mode schema.
    models: list[type[BaseModel]] = [*_MODELS, ReplayIn]
    _, top = models_json_schema([(m, "validation") for m in models],
                                ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})
    # Batch items are answered one by one (a bad item gets its own 400): any JSON value.
    schemas["BatchRequest"]["properties"]["events"]["items"] = {
        "description": "an event (EventIn); items that are not valid get their own 400"}
    secured: list[dict[str, list[str]]] = [{"bearerAuth": []}]
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
                "201": {**_json("EventOut", "accepted: it will be stored"), **created},
                "200": _json("EventOut", "retry of an accepted event")}, 409, 413, 415,
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
                       {"201": {**_json("SubscriptionOut", "created"), **created}}, 409, 413, 415,
                       body=_body("SubscriptionIn")),
            "put": op("Update a subscription (id in the body)", "subscriptions",
                      {"200": _json("SubscriptionOut", "updated")}, 404, 413, 415,
                      body=_body("SubscriptionIn")),
            "get": op("List subscriptions (active ones unless include_inactive)",
                      "subscriptions", {"200": _array("SubscriptionOut", "subscriptions")},
                      params=_query_params(SubscriptionListParams))},
        f"{sub_base}/{{sub_id}}": {
            "get": op("Get a subscription", "subscriptions",
                      {"200": _json("SubscriptionOut", "the subscription")}, 404,
                      params=[sub_path]),
            "put": op("Update a subscription", "subscriptions",
                      {"200": _json("SubscriptionOut", "updated")}, 404, 413, 415,
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
            params=[sub_path], body=_body("ReplayIn"))},
        f"{sub_base}/{{sub_id}}/test": {"post": op(
            "Send one test message now", "subscriptions",
            {"200": _json("TestResult", "the outcome")}, 404, params=[sub_path])},
        "/api/v1/jobs": {
            "post": op("Create a notification job", "jobs",
                       {"201": {**_json("JobOut", "created"), **created}}, 409, 413, 415,
                       body=_body("JobIn")),
            "get": op("List jobs (not deleted unless include_deleted)", "jobs",
                      {"200": _array("JobOut", "jobs")}, params=_query_params(JobListParams))},
        "/api/v1/jobs/{job_id}": {
            "get": op("Get a job", "jobs", {"200": _json("JobOut", "the job")}, 404,
                      params=[job_path]),
            "put": op("Update a job (its id cannot change)", "jobs",
                      {"200": _json("JobOut", "updated")}, 404, 413, 415, params=[job_path],
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
