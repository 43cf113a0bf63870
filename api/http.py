"""JSON responses and the one error shape every 4xx/5xx answer uses."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from flask import Flask, Response, current_app, request
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from infra.broker.dispatch import BrokerUnavailable
from infra.broker.intake import IntakeUnavailable

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An answer other than success, raised anywhere under a route and rendered as JSON."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(orjson.dumps(body), status=status, mimetype="application/json")
    if headers:
        response.headers.update(headers)
    return response


BODY_LIMIT = 64 * 1024  # a resource's body (subscriptions, jobs, the token endpoint)
SEND_JSON = "send the body as application/json"


def is_json_media(mimetype: str) -> bool:
    """application/json or any ``+json`` type (what the event and resource routes take)."""
    return mimetype == "application/json" or mimetype.endswith("+json")


def accept_body(limit: int = BODY_LIMIT, *, media: Callable[[str], bool] | None = is_json_media,
                hint: str = SEND_JSON) -> None:
    """The body rules, in one place: a 415 ``unsupported_media_type`` saying ``hint`` unless
    ``media`` accepts the request's media type (None: any type, for a route that takes no
    body), checked before a byte is read; then at most ``limit`` bytes, which werkzeug enforces
    as the body is read (a 413, chunked bodies too; create_app's error handler words it)."""
    if media is not None and not media(request.mimetype):
        raise ApiError(415, "unsupported_media_type", hint)
    request.max_content_length = limit


def request_body(limit: int = BODY_LIMIT, *,
                 media: Callable[[str], bool] | None = is_json_media) -> bytes:
    """The request's raw body under accept_body's rules."""
    accept_body(limit, media=media)
    return request.get_data(cache=False)


def json_body(limit: int = BODY_LIMIT) -> Any:
    """The request's JSON body (resource routes: subscriptions, jobs); 415/413/400 otherwise."""
    try:
        return orjson.loads(request_body(limit))
    except orjson.JSONDecodeError:
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return json_response(body, status, headers)


def validation_details(exc: ValidationError, prefix: str = "") -> list[dict[str, Any]]:
    """One entry per invalid field: its dotted path, what is wrong, and the error type."""
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"])
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        name = (prefix + field) if field else (prefix.rstrip(".") or "body")
        details.append({"field": name, "message": message, "type": err["type"]})
    return details


def parse_query(model: type[BaseModel] | None) -> BaseModel | None:
    """The request's query string validated by ``model`` (None: the route takes none).

    Every parameter is given at most once; one the route does not know is a 400 naming it (as
    an unknown body field is), reported together with the known ones' errors.
    """
    raw: dict[str, str] = {}
    details: list[dict[str, Any]] = []
    for key in request.args:
        values = request.args.getlist(key)
        if len(values) > 1:
            raise ApiError(400, "invalid_query", f"give {key} once",
                           [{"field": key, "message": "repeated", "type": "repeated"}])
        raw[key] = values[0]
    known = set(model.model_fields) if model is not None else set()
    unknown = [k for k in raw if k not in known]
    for key in unknown:
        details.append({"field": key, "message": "unknown query parameter",
                        "type": "extra_forbidden"})
        del raw[key]
    parsed = None
    if model is not None:
        try:
            parsed = model.model_validate(raw)
        except ValidationError as exc:
            details += validation_details(exc)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ApiError(400, "invalid_query", f"unknown query parameter(s): {', '.join(unknown)} "
                       f"(this route takes: {allowed})", details)
    if details:
        raise ApiError(400, "invalid_query", "invalid query parameters", details)
    return parsed


def is_malformed_json(exc: ValidationError) -> bool:
    return any(e["type"] == "json_invalid" for e in exc.errors())


def unavailable(what: str) -> Response:
    return error_response(
        503,
        "unavailable",
        f"{what} is unavailable; nothing was changed, retry later",
        headers={"Retry-After": "5"},
    )


def register_error_handlers(app: Flask) -> None:
    @app.after_request
    def _bearer_challenge(response: Response) -> Response:
        # RFC 6750 section 3: a 401 names the scheme it wants (the token endpoint's own 401s ask
        # for Basic client credentials and set theirs).
        if response.status_code == 401 and "WWW-Authenticate" not in response.headers:
            response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = "the request body is too large"
        headers = {}
        if status == 405 and exc.get_response().headers.get("Allow"):
            headers["Allow"] = exc.get_response().headers["Allow"]
        return error_response(status, _CODES.get(status, "error"), message, headers=headers)

    @app.errorhandler(IntakeUnavailable)
    @app.errorhandler(BrokerUnavailable)
    def _broker_down(exc: Exception) -> Response:
        log.warning("broker unavailable: %s", exc)
        return unavailable("the broker")

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    def _db_down(exc: Exception) -> Response:
        log.warning("database unavailable: %s", type(exc).__name__)
        return unavailable("the database")

    @app.errorhandler(DataError)
    def _bad_value(exc: DataError) -> Response:
        # The database refused a value (e.g. NUL in text): the client's input, not our fault.
        log.info("database refused a value: %s", type(exc.orig).__name__)
        return error_response(400, "invalid_value", "a value in the request cannot be stored "
                              "or searched for (e.g. it contains NUL)")

    @app.errorhandler(DBAPIError)
    def _db_error(exc: DBAPIError) -> Response:
        if exc.connection_invalidated:
            return unavailable("the database")
        log.exception("database error")
        return error_response(500, "internal_error", "internal error")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        current_app.logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
