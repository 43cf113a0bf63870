"""GET /api/v1/quarantine: the caller's own events the database refused (cursor paginated)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g
from pydantic import BaseModel, ConfigDict, Field

from api.http import json_response
from api.paging import cipher, decode_cursor, shown_quarantine
from api.security import require
from events.contract import QuarantineList
from events.quarantine import list_quarantined, to_api
from infra.opaque import DOMAIN

bp = Blueprint("quarantine", __name__)


class QuarantineParams(BaseModel):
    """Query parameters of GET /api/v1/quarantine."""

    model_config = ConfigDict(extra="forbid")

    from_id: int | None = Field(None, ge=1, le=DOMAIN,
                                description="a quarantine entry's id (quarantine.id, opaque) to "
                                            "start at")
    per_page: int = Field(10, ge=1, le=100)


@bp.get("/api/v1/quarantine")
@require("events:read", query=QuarantineParams)
def list_all() -> Response:
    params = g.query
    assert isinstance(params, QuarantineParams)
    with current_app.extensions["ec.runtime"].sessions() as session:
        page = list_quarantined(session, tenant=g.principal.tenant,
                                from_id=decode_cursor("quarantine", params.from_id),
                                per_page=params.per_page)
        events = [shown_quarantine(to_api(r).model_dump(mode="json")) for r in page.rows]
    body = QuarantineList.model_validate(
        {"events": events, "total": page.total,
         "next_from_id": (cipher().encode("quarantine", page.next_from_id)
                          if page.next_from_id is not None else None)})
    return json_response(body.model_dump(mode="json"))
