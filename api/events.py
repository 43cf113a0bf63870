"""Event reads: GET /api/v1/events/{id} and the filtered, cursor-paginated list."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from flask import Blueprint, Response, current_app, g
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from api.http import ApiError, json_response
from api.paging import shown_quarantine
from api.security import require
from events.contract import (
    EntityName,
    EventList,
    EventOut,
    EventSource,
    EventStatus,
    EventType,
    Operation,
    stored_fields,
)
from events.quarantine import get_quarantined
from events.quarantine import to_api as quarantine_api
from events.repository import EventQuery, get_event, list_events
from infra.limits import CORRELATION_ID_MAX, ENTITY_ID_MAX, EVENT_ID_RE, SEQ_MAX
from infra.timefmt import MomentOutOfRange, parse_time

bp = Blueprint("events", __name__)


def valid_event_id(value: str) -> bool:
    """True when ``value`` (a path segment) is shaped like an event, subscription or job id."""
    return EVENT_ID_RE.fullmatch(value) is not None


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _moment(value: object) -> object:
    if isinstance(value, str):
        try:
            return parse_time(value)
        except MomentOutOfRange:
            raise ValueError("must be an RFC 3339 date-time within the years 1-9999 in UTC") \
                from None
        except ValueError:
            raise ValueError("must be an RFC 3339 date-time") from None
    return value


Direction = Annotated[Literal["ASC", "DESC"], BeforeValidator(_upper)]
Moment = Annotated[datetime, BeforeValidator(_moment)]
def _printable(value: object) -> object:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# A filter is as long as the column it is compared with: every stored value can be searched for.
EntityIdFilter = Annotated[str, Field(min_length=1, max_length=ENTITY_ID_MAX),
                           BeforeValidator(_printable)]
CorrelationFilter = Annotated[str, Field(min_length=1, max_length=CORRELATION_ID_MAX),
                              BeforeValidator(_printable)]


class EventListParams(BaseModel):
    """Query parameters of GET /api/v1/events."""

    model_config = ConfigDict(extra="forbid")

    from_id: int | None = Field(None, ge=1, le=SEQ_MAX)
    per_page: int = Field(10, ge=1, le=100)
    sort: Literal["id", "received_at"] = "id"
    direction: Direction = "ASC"
    event_type: EventType | None = None
    event_source: EventSource | None = None
    entity_name: EntityName | None = None
    entity_id: EntityIdFilter | None = None
    operation: Operation | None = None
    correlation_id: CorrelationFilter | None = None
    since: Moment | None = None
    until: Moment | None = None

    def to_query(self) -> EventQuery:
        return EventQuery(
            from_seq=self.from_id,
            per_page=self.per_page,
            sort=self.sort,
            descending=self.direction == "DESC",
            event_type=self.event_type.value if self.event_type else None,
            event_source=self.event_source.value if self.event_source else None,
            entity_name=self.entity_name.value if self.entity_name else None,
            entity_id=self.entity_id,
            operation=self.operation.value if self.operation else None,
            correlation_id=self.correlation_id,
            since=self.since,
            until=self.until,
        )


def not_found(event_id: str) -> ApiError:
    return ApiError(404, "not_found", "no such event")


def _shown(fields: dict[str, Any]) -> dict[str, Any]:
    return EventStatus.model_validate(fields).model_dump(mode="json")


@bp.get("/api/v1/events/<string:event_id>")
@require("events:read")
def get_one(event_id: str) -> Response:
    """The event with its ``status``: ``stored``; ``quarantined`` (accepted, but the database
    refused it: the accepted document with the ``quarantine`` reason); or ``accepted`` (not
    stored yet: the intake's record, read-your-writes)."""
    runtime = current_app.extensions["ec.runtime"]
    tenant = g.principal.tenant
    if not valid_event_id(event_id):
        raise not_found(event_id)
    document: dict[str, Any] | None = None
    try:
        with runtime.sessions() as session:
            row = get_event(session, tenant, event_id)
            if row is not None:
                document = _shown({**stored_fields(row), "status": "stored"})
            else:
                held = get_quarantined(session, tenant, event_id)
                document = (shown_quarantine(quarantine_api(held).model_dump(mode="json"))
                            if held is not None else None)
    except SQLAlchemyError:
        accepted = runtime.intake.lookup(tenant, event_id)
        if accepted is None:
            raise
        return json_response(_shown({**accepted, "status": "accepted"}))
    if document is None:
        # Accepted but not stored yet: the intake remembers it (read-your-writes).
        accepted = runtime.intake.lookup(tenant, event_id)
        if accepted is None:
            raise not_found(event_id)
        document = _shown({**accepted, "status": "accepted"})
    return json_response(document)


@bp.get("/api/v1/events")
@require("events:read", query=EventListParams)
def list_all() -> Response:
    runtime = current_app.extensions["ec.runtime"]
    params = g.query
    assert isinstance(params, EventListParams)
    with runtime.sessions() as session:
        page = list_events(session, g.principal.tenant, params.to_query())
        body = EventList(events=[EventOut.from_row(r) for r in page.rows], total=page.total,
                         next_from_id=page.next_from_seq)
    return json_response(body.model_dump(mode="json"))
