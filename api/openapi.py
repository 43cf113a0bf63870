"""The OpenAPI 3.1 document of /api/v1 and /api/event, and an offline Swagger UI at /docs."""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, Response, send_from_directory
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from api.events import EventListParams
from api.http import json_response
from store.domain import EventIn

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


class EventPayloadOut(BaseModel):
    base64_encoded_payload_json: str | None
    base64_encoded_fault_json: str | None
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


class TokenResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str


class OpenLoyaltyEvent(BaseModel):
    id: int = Field(description="sequence number")
    uuid: str = Field(description="the event id")
    payload: Any = Field(description="decoded base64_encoded_payload_json (else the fault)")
    type: str = Field(description="event type, entity name and operation joined by dots")
    recorderOn: str


class OpenLoyaltyEventList(BaseModel):
    events: list[OpenLoyaltyEvent]
    total: int


_MODELS = [Error, EventIn, Event, EventList, BatchRequest, BatchResult, TokenRequest,
           TokenResponse, OpenLoyaltyEvent, OpenLoyaltyEventList]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "invalid input", 401: "missing, invalid or expired token",
            403: "tenant mismatch or missing scope", 404: "unknown id in this tenant",
            409: "same id, different body", 413: "body too large", 415: "not JSON",
            503: "broker or database unavailable; retry after Retry-After seconds"}
    return {str(s): _json("Error", text[s]) for s in statuses}


_TENANT = {"name": "X-TWC-Tenant", "in": "header", "required": True,
           "schema": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"}}


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


def build_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built from the same pydantic models that validate requests)."""
    from api.open_loyalty import OpenLoyaltyParams

    _, top = models_json_schema([(m, "validation" if m is EventIn else "serialization")
                                 for m in _MODELS],
                                ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})
    secured = [{"bearerAuth": []}]
    v1 = {"security": secured, "parameters": [_TENANT]}
    event_path = {"name": "event_id", "in": "path", "required": True,
                  "schema": {"type": "string", "maxLength": 128}}
    paths: dict[str, Any] = {
        "/api/v1/auth/token": {"post": {
            "summary": "OAuth 2.0 client credentials: get an access token",
            "tags": ["auth"],
            "requestBody": {"required": True, "content": {
                "application/x-www-form-urlencoded": {"schema": _ref("TokenRequest")},
                "application/json": {"schema": _ref("TokenRequest")}}},
            "responses": {"200": _json("TokenResponse", "a signed access token"),
                          **_errors(400, 401, 415)}}},
        "/api/v1/events": {
            "post": {**v1, "summary": "Post an event", "tags": ["events"],
                     "requestBody": {"required": True,
                                     "content": {"application/json": {"schema": _ref("EventIn")}}},
                     "responses": {"201": {**_json("Event", "accepted: it will be stored"),
                                           "headers": {"Location": {"schema": {"type": "string"}}}},
                                   "200": _json("Event", "retry of an accepted event"),
                                   **_errors(400, 401, 403, 409, 413, 415, 503)}},
            "get": {**v1, "summary": "List events (cursor pagination)", "tags": ["events"],
                    "parameters": [_TENANT, *_query_params(EventListParams)],
                    "responses": {"200": _json("EventList", "a page of events"),
                                  **_errors(400, 401, 403, 503)}}},
        "/api/v1/events/batch": {"post": {
            **v1, "summary": "Post up to 1000 events; each item is answered on its own",
            "tags": ["events"],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref("BatchRequest")}}},
            "responses": {"200": _json("BatchResult", "per-item results"),
                          **_errors(400, 401, 403, 413, 415, 503)}}},
        "/api/v1/events/{event_id}": {"get": {
            **v1, "summary": "Get an event by id", "tags": ["events"],
            "parameters": [_TENANT, event_path],
            "responses": {"200": _json("Event", "the event"), **_errors(401, 403, 404, 503)}}},
        "/api/event": {"get": {
            "security": secured, "summary": "Open Loyalty style event list", "tags": ["event store"],
            "parameters": _query_params(OpenLoyaltyParams),
            "responses": {"200": _json("OpenLoyaltyEventList", "a page of events"),
                          **_errors(400, 401, 403, 503)}}},
        "/api/event/{event_id}": {"get": {
            "security": secured, "summary": "Open Loyalty style event by sequence number or uuid",
            "tags": ["event store"], "parameters": [event_path],
            "responses": {"200": _json("OpenLoyaltyEvent", "the event"),
                          **_errors(401, 403, 404, 503)}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Event Collector API", "version": "1.0.0",
                 "description": "Multi-tenant event collector. Every /api/v1 call carries "
                 "'Authorization: Bearer <token>' and 'X-TWC-Tenant: <tenant>'."},
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
