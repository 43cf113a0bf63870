"""POST /api/v1/auth/token: OAuth 2.0 client credentials grant."""

from __future__ import annotations

import base64
import binascii
from typing import Literal
from urllib.parse import unquote

import orjson
from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel, Field

from api import token_guard
from api.http import BODY_LIMIT, ApiError, accept_body, json_response
from config.settings import Settings
from infra.db import UnitOfWork
from tenants.auth import InvalidClient, InvalidScope, authenticate_client, mint_token, parse_scopes
from tenants.revocation import disabled_tenants

bp = Blueprint("token", __name__)


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


# RFC 6749 section 5.2: the token endpoint's errors are {"error", "error_description"}, so that
# OAuth client libraries read them. Codes the RFC defines are kept; other refusals map onto it.
_OAUTH_CODES = {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                "unsupported_grant_type", "invalid_scope"}


def _oauth_code(status: int, code: str) -> str:
    if code in _OAUTH_CODES:
        return code
    if status == 401:
        return "invalid_client"
    if status == 403:  # authenticated, but its tenant is disabled
        return "unauthorized_client"
    if status in (429, 503):
        return "temporarily_unavailable"  # with Retry-After
    if status >= 500:
        return "server_error"
    return "invalid_request"


@bp.after_request
def _oauth_error_form(response: Response) -> Response:
    """Every error this endpoint answers (its own, a 413/415, a database outage) in the OAuth
    form, whatever raised it; headers (WWW-Authenticate, Retry-After) are kept."""
    if response.status_code < 400 or response.mimetype != "application/json":
        return response
    try:
        error = orjson.loads(response.get_data()).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return response
    if not isinstance(error, dict):
        return response
    body = OAuthError.model_validate(
        {"error": _oauth_code(response.status_code, str(error.get("code", ""))),
         "error_description": str(error.get("message", ""))})
    response.set_data(orjson.dumps(body.model_dump(mode="json")))
    response.headers["Cache-Control"] = "no-store"
    if response.status_code == 401:  # section 5.2: the scheme the client authenticates with
        response.headers["WWW-Authenticate"] = 'Basic realm="token"'
    return response


TOKEN_MEDIA = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")


def _form() -> dict[str, str]:
    accept_body(BODY_LIMIT, media=lambda mimetype: mimetype in TOKEN_MEDIA,
                hint="send application/x-www-form-urlencoded or application/json")
    if request.mimetype == "application/json":
        try:
            data = orjson.loads(request.get_data(cache=False))
        except orjson.JSONDecodeError:
            raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ApiError(400, "invalid_request", "send an object of string fields")
        return data
    return {k: v for k, v in request.form.items()}


def _basic_credentials() -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    kind, _, value = header.partition(" ")
    if kind.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(401, "invalid_client", "malformed Basic credentials") from None
    if not sep:
        raise ApiError(401, "invalid_client", "malformed Basic credentials")
    return unquote(user), unquote(password)


def token_lifetime(settings: Settings, asked: str | None) -> int:
    """EC_TOKEN_TTL_SECONDS, or the ``expires_in`` (seconds, ≥ 60) the client asks for; never
    more than EC_TOKEN_MAX_TTL_SECONDS (a client asking more gets that)."""
    ttl = settings.token_ttl_seconds
    if asked is not None and asked.strip():
        if not asked.strip().isascii() or not asked.strip().isdigit() or int(asked) < 60:
            raise ApiError(400, "invalid_request", "expires_in must be a number of seconds >= 60",
                           [{"field": "expires_in", "message": "must be an integer >= 60",
                             "type": "int_parsing"}])
        ttl = int(asked) if len(asked.strip()) < 12 else settings.token_max_ttl_seconds
    return min(ttl, settings.token_max_ttl_seconds)


@bp.post("/api/v1/auth/token")
def issue_token() -> Response:
    runtime = current_app.extensions["ec.runtime"]
    form = _form()
    if form.get("grant_type") != "client_credentials":
        raise ApiError(400, "unsupported_grant_type", "grant_type must be client_credentials",
                       [{"field": "grant_type", "message": "must be client_credentials",
                         "type": "literal_error"}])
    basic = _basic_credentials()
    client_id, client_secret = basic or (form.get("client_id"), form.get("client_secret"))
    if not client_id or not client_secret:
        raise ApiError(401, "invalid_client", "client_id and client_secret are required",
                       headers={"WWW-Authenticate": 'Basic realm="token"'})
    requested = form.get("scope")
    try:
        wanted = parse_scopes(requested) if requested and requested.strip() else None
    except InvalidScope as exc:
        raise ApiError(400, "invalid_scope", str(exc),
                       [{"field": "scope", "message": str(exc), "type": "enum"}]) from None
    attempt = token_guard.begin_attempt(client_id)  # 429 past the failed-attempt limits
    check = token_guard.bounded_slow_check()
    failed = False
    try:
        with UnitOfWork(runtime.sessions) as uow:
            session = uow.session
            try:
                client = authenticate_client(
                    session, client_id, client_secret,
                    fingerprint_key=runtime.settings.token_secret, slow_check=check)
                check.record(True)
                uow.commit()  # a secret fingerprint backfilled by the check
            except InvalidClient:
                check.record(False)
                failed = True
                raise ApiError(401, "invalid_client", "invalid client credentials",
                               headers={"WWW-Authenticate": 'Basic realm="token"'}) from None
            except token_guard.ChecksBusy:
                raise token_guard.busy() from None
            granted = frozenset(client.scopes.split())
            tenant = client.tenant
            generation = int(client.generation or 0)
            if disabled_tenants(session, {tenant}):
                raise ApiError(403, "tenant_disabled", f"tenant {tenant!r} is disabled")
    finally:
        if not failed:  # only a failed secret check counts against the limits
            token_guard.forgive(attempt)
    if wanted is None:  # RFC 6749 3.3: no scope asked, the client's own scopes granted
        wanted = granted
    if not wanted <= granted:
        refused = " ".join(sorted(wanted - granted))
        raise ApiError(400, "invalid_scope", f"the client may not request: {refused}",
                       [{"field": "scope", "message": f"not granted to this client: {refused}",
                         "type": "invalid_scope"}])
    ttl = token_lifetime(runtime.settings, form.get("expires_in"))
    token = mint_token(runtime.settings.token_secret, tenant=tenant, client_id=client_id,
                       scopes=wanted, ttl_seconds=ttl, generation=generation)
    return json_response(
        TokenResponse(access_token=token, token_type="Bearer", expires_in=ttl,
                      scope=" ".join(sorted(wanted))).model_dump(mode="json"),
        200,
        {"Cache-Control": "no-store", "Pragma": "no-cache"},
    )
