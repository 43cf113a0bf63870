"""Bearer-token checks for every /api route: token, X-TWC-Tenant header, scope."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request

from api.http import ApiError
from store.auth import InvalidToken, Principal, verify_token
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
    return principal


def require(scope: str, *, tenant_header: bool = True) -> Callable[[F], F]:
    """Decorate a view: authenticate, then expose the principal as ``g.principal``."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.principal = authenticate(scope, tenant_header=tenant_header)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
