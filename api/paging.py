"""What the resource lists (subscriptions, jobs) share: ``per_page`` / ``from_id`` paging with the
next page in a ``Link: <...>; rel="next"`` header (RFC 8288), quota refusals, and the opaque ids
shown for internal numbers (store.opaque)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import current_app, request
from pydantic import BaseModel, ConfigDict, Field

from api.http import ApiError
from infra.opaque import DOMAIN, IdCipher
from tenants.quotas import QuotaExceeded

PER_PAGE_MAX = 500


class PageParams(BaseModel):
    """``per_page`` (1-500; without it, the whole list, as before) and ``from_id`` (the cursor
    from a previous page's ``Link``)."""

    model_config = ConfigDict(extra="forbid")
    per_page: int | None = Field(
        None, ge=1, le=PER_PAGE_MAX,
        description="page size; without it the whole list. When there is more, the answer has "
                    'a Link: <next page>; rel="next" header')
    from_id: int | None = Field(
        None, ge=1, le=DOMAIN,
        description="where the page starts: the opaque cursor in the previous page's Link")


def cipher() -> IdCipher:
    """The process's id cipher, keyed from the token secret."""
    found = current_app.extensions.get("ec.id_cipher")
    if found is None:
        found = IdCipher.from_secret(current_app.extensions["ec.runtime"].settings.token_secret)
        current_app.extensions["ec.id_cipher"] = found
    return found


def next_link(cursor: int | None) -> dict[str, str]:
    """A ``Link`` header to the same list from ``cursor`` on, keeping the other parameters."""
    if cursor is None:
        return {}
    params = [(k, v) for k, v in request.args.items(multi=True) if k != "from_id"]
    params.append(("from_id", str(cursor)))
    return {"Link": f'<{request.path}?{urlencode(params)}>; rel="next"'}


def page_of(rows: list[Any], per_page: int | None, kind: str) -> tuple[list[Any], dict[str, str]]:
    """``rows`` were read with ``per_page + 1`` as limit: the page and its ``Link`` header; the
    cursor is the next row's internal key, shown opaque."""
    if per_page is None or len(rows) <= per_page:
        return rows, {}
    return rows[:per_page], next_link(cipher().encode(kind, rows[per_page].pk))


def decode_cursor(kind: str, from_id: int | None, field: str = "from_id") -> int | None:
    """The internal key behind a shown cursor; 400 naming ``field`` when no id can be it."""
    if from_id is None:
        return None
    found = cipher().decode(kind, from_id)
    if found is None:
        message = f"must be a cursor this API gave: 1 to {DOMAIN}"
        raise ApiError(400, "invalid_query", f"{field}: {message}",
                       [{"field": field, "message": message, "type": "value_error"}])
    return found


def quota_error(exc: QuotaExceeded) -> ApiError:
    """409 ``quota_exceeded``, naming the quota and its limit."""
    return ApiError(409, "quota_exceeded", str(exc),
                    [{"field": exc.quota, "message": f"quota {exc.quota} is {exc.limit}",
                      "type": "quota_exceeded"}])


def shown_quarantine(document: dict[str, Any]) -> dict[str, Any]:
    """A quarantined event's document with its entry id shown opaque."""
    details = document.get("quarantine")
    if not isinstance(details, dict):
        return document
    return {**document, "quarantine": {**details, "id": cipher().encode("quarantine",
                                                                        details["id"])}}
