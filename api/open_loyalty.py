"""Open Loyalty style event store reads (seed 003): GET /api/event and /api/event/{id}."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, Response, current_app, g
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from api.events import Direction, valid_event_id
from api.http import ApiError, json_response
from api.security import require
from events.contract import payload_view
from events.models import EventRecord
from events.repository import EventQuery, get_event, get_event_by_number, list_events
from infra.contract import ResponseModel, Timestamp
from infra.limits import SEQ_MAX

bp = Blueprint("open_loyalty", __name__)

# Seed 003's names for the sort keys; its default ``name`` is the event's type name (``type``).
_SORTS = {"id": "id", "recorderOn": "received_at", "recorderon": "received_at", "name": "type",
          "type": "type"}


class OpenLoyaltyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fromId: int | None = Field(None, ge=1, le=SEQ_MAX)
    perPage: int = Field(10, ge=1, le=100)
    sort: Annotated[Literal["id", "received_at", "type"],
                    BeforeValidator(lambda v: _SORTS.get(v, v)),
                    Field(json_schema_extra={
                        "enum": ["id", "name", "recorderOn", "received_at", "type"],
                        "description": "id (default), recorderOn / received_at, or name / type: "
                                       "the event's type name (ENTITY_EVENT.ORDER.CREATE, "
                                       "FAULT, ...), then id"})] = "id"
    direction: Direction = "ASC"


def event_type_name(row: EventRecord) -> str:
    """``ENTITY_EVENT.ORDER.CREATE``, ``FAULT``, ... : type, entity and operation joined."""
    return ".".join(p for p in (row.event_type, row.entity_name, row.operation) if p)


class OpenLoyaltyEvent(ResponseModel):
    """An event as the Open Loyalty style reads show it (seed 003)."""

    id: int = Field(description="the tenant's own sequence number (from 10^12 + 1; numbers "
                                "below 10^12 are the global ones shown before, still accepted)")
    uuid: str = Field(description="the event id")
    payload: Any = Field(description=(
        "base64_encoded_payload_json (else base64_encoded_fault_json) decoded: the JSON value when "
        "it parses as JSON, otherwise its text as a string (UTF-8, undecodable bytes replaced "
        "by U+FFFD); {} when the event has neither"))
    type: str = Field(description="event type, entity name and operation joined by dots")
    recorderOn: Timestamp

    @classmethod
    def from_row(cls, row: EventRecord) -> OpenLoyaltyEvent:
        payload = payload_view(
            {"event_payload": {"base64_encoded_payload_json": row.payload_b64,
                               "base64_encoded_fault_json": row.fault_b64}}
        )
        return cls(id=row.tenant_seq, uuid=row.event_id,
                   payload=payload if payload is not None else {},
                   type=event_type_name(row), recorderOn=row.received_at)


class OpenLoyaltyEventList(ResponseModel):
    events: list[OpenLoyaltyEvent]
    total: int


def to_open_loyalty(row: EventRecord) -> dict[str, Any]:
    return OpenLoyaltyEvent.from_row(row).model_dump(mode="json")


@bp.get("/api/event")
@require("events:read", tenant_header=False, query=OpenLoyaltyParams)
def list_ol() -> Response:
    runtime = current_app.extensions["ec.runtime"]
    params = g.query
    assert isinstance(params, OpenLoyaltyParams)
    query = EventQuery(from_seq=params.fromId, per_page=params.perPage, sort=params.sort,
                       descending=params.direction == "DESC")
    with runtime.sessions() as session:
        page = list_events(session, g.principal.tenant, query)
        body = OpenLoyaltyEventList(events=[OpenLoyaltyEvent.from_row(r) for r in page.rows],
                                    total=page.total)
    return json_response(body.model_dump(mode="json"))


@bp.get("/api/event/<string:event_id>")
@require("events:read", tenant_header=False)
def get_ol(event_id: str) -> Response:
    runtime = current_app.extensions["ec.runtime"]
    if not valid_event_id(event_id):
        raise ApiError(404, "not_found", "no such event")
    with runtime.sessions() as session:
        row = None
        if event_id.isascii() and event_id.isdigit() and len(event_id) < 19:
            row = get_event_by_number(session, g.principal.tenant, int(event_id))
        if row is None:
            row = get_event(session, g.principal.tenant, event_id)
        if row is None:
            raise ApiError(404, "not_found", "no such event")
        return json_response(to_open_loyalty(row))
