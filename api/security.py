"""Bearer-token checks for every /api route: token, X-TWC-Tenant header, scope."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request
from sqlalchemy.exc import SQLAlchemyError

from api.http import ApiError
from broker.ratelimit import retry_after_header
from store.auth import InvalidToken, Principal, rate_limits, verify_token
from store.domain import TENANT_PATTERN

F = TypeVar("F", bound=Callable[..., Any])
TENANT_HEADER = "X-TWC-Tenant"
_TENANT_RE = re.compile(TENANT_PATTERN)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="api"'})


def authenticate(scope: str, *, tenant_header: bool) -> Principal:
    """Return the caller's principal or raise ApiError 401/400/403."""
    header = request.headers.get("Authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise _unauthorized("an 'Authorization: Bearer <token>' header is required")
    try:
        principal = verify_token(current_app.extensions["ec.runtime"].settings.token_secret,
                                 token.strip())
    except InvalidToken as exc:
        raise _unauthorized(str(exc)) from None
    claimed = request.headers.get(TENANT_HEADER)
    if tenant_header and claimed is None:
        raise ApiError(400, "missing_tenant", f"the {TENANT_HEADER} header is required",
                       [{"field": TENANT_HEADER, "message": "required", "type": "missing"}])
    if claimed is not None:
        if not _TENANT_RE.match(claimed):
            raise ApiError(400, "invalid_tenant", f"the {TENANT_HEADER} header is malformed",
                           [{"field": TENANT_HEADER, "message": "malformed", "type": "pattern"}])
        if claimed != principal.tenant:
            raise ApiError(403, "tenant_mismatch",
                           f"the token does not belong to the tenant named in {TENANT_HEADER}")
    if scope not in principal.scopes:
        raise ApiError(403, "insufficient_scope", f"the token lacks the '{scope}' scope")
    charge(principal.tenant, 1)
    return principal


_limits_cache: dict[str, tuple[float, float | None, int | None]] = {}
_LIMITS_TTL = 30.0


def _tenant_limits(tenant: str) -> tuple[float, int]:
    runtime = current_app.extensions["ec.runtime"]
    settings = runtime.settings
    cached = _limits_cache.get(tenant)
    now = time.monotonic()
    if cached is None or cached[0] < now:
        try:
            with runtime.sessions() as session:
                per_second, burst = rate_limits(session, tenant)
        except SQLAlchemyError:
            per_second, burst = (cached[1], cached[2]) if cached else (None, None)
        cached = (now + _LIMITS_TTL, per_second, burst)
        _limits_cache[tenant] = cached
    rate = cached[1] if cached[1] is not None else settings.rate_limit_per_second
    return float(rate), int(cached[2] if cached[2] is not None else settings.rate_limit_burst)


def charge(tenant: str, cost: int) -> None:
    """Take ``cost`` requests from the tenant's bucket or raise 429 with Retry-After."""
    runtime = current_app.extensions["ec.runtime"]
    if runtime.limiter is None:
        return
    rate, burst = _tenant_limits(tenant)
    if rate <= 0:
        return
    verdict = runtime.limiter.take(tenant, cost, rate, max(burst, cost))
    if not verdict.allowed:
        raise ApiError(429, "rate_limited", f"tenant {tenant!r} is over its rate limit "
                       f"({rate:g} requests/s)",
                       headers={"Retry-After": retry_after_header(verdict.retry_after)})


def require(scope: str, *, tenant_header: bool = True) -> Callable[[F], F]:
    """Decorate a view: authenticate, then expose the principal as ``g.principal``."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.principal = authenticate(scope, tenant_header=tenant_header)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
