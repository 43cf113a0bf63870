"""Bearer-token checks for every /api route: token, X-TWC-Tenant header, scope."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from api.http import ApiError, parse_query
from infra.broker.ratelimit import Charge, RateLimited, retry_after_header
from infra.limits import TENANT_RE
from tenants.auth import InvalidToken, Principal, rate_limits, verify_token
from tenants.revocation import RevocationCache, TenantDisabled, TokenRevoked

F = TypeVar("F", bound=Callable[..., Any])
TENANT_HEADER = "X-TWC-Tenant"


def _unauthorized(message: str, *, invalid_token: bool = False) -> ApiError:
    # RFC 6750 section 3: the Bearer challenge; error="invalid_token" when one was presented.
    challenge = 'Bearer realm="api"' + (', error="invalid_token"' if invalid_token else "")
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def authenticate(scope: str, *, tenant_header: bool, charge_now: bool = True) -> Principal:
    """Return the caller's principal or raise ApiError 401/400/403 (429 when ``charge_now``
    and the tenant is over its rate limit)."""
    header = request.headers.get("Authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise _unauthorized("an 'Authorization: Bearer <token>' header is required")
    try:
        principal = verify_token(current_app.extensions["ec.runtime"].settings.token_secret,
                                 token.strip())
    except InvalidToken as exc:
        raise _unauthorized(str(exc), invalid_token=True) from None
    check_revocation(principal)
    claimed = request.headers.get(TENANT_HEADER)
    if tenant_header and claimed is None:
        raise ApiError(400, "missing_tenant", f"the {TENANT_HEADER} header is required",
                       [{"field": TENANT_HEADER, "message": "required", "type": "missing"}])
    if claimed is not None:
        if not TENANT_RE.fullmatch(claimed):
            raise ApiError(400, "invalid_tenant", f"the {TENANT_HEADER} header is malformed",
                           [{"field": TENANT_HEADER, "message": "malformed", "type": "pattern"}])
        if claimed != principal.tenant:
            raise ApiError(403, "tenant_mismatch",
                           f"the token does not belong to the tenant named in {TENANT_HEADER}")
    if scope not in principal.scopes:
        raise ApiError(403, "insufficient_scope", f"the token lacks the '{scope}' scope")
    _refuse_if_throttled(principal.tenant)
    if charge_now:
        charge(principal.tenant, 1)
    return principal


_revocations_lock = threading.Lock()


def revocations() -> RevocationCache:
    """This app's revocation snapshot (store.revocation), refreshed in the background."""
    runtime = current_app.extensions["ec.runtime"]
    if runtime.revocations is None:
        with _revocations_lock:
            if runtime.revocations is None:
                runtime.revocations = RevocationCache(runtime.sessions,
                                                      runtime.settings.revocation_check_seconds)
    return runtime.revocations  # type: ignore[no-any-return]


def check_revocation(principal: Principal) -> None:
    """401 for a revoked token (client revoked or rotated, jti revoked, operator tokens
    revoked), 403 ``tenant_disabled`` for a disabled tenant's."""
    try:
        revocations().check(principal)
    except TokenRevoked as exc:
        raise _unauthorized(str(exc)) from None
    except TenantDisabled as exc:
        raise ApiError(403, "tenant_disabled", str(exc)) from None


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


def tenant_charge(tenant: str, cost: int) -> Charge | None:
    """What ``cost`` requests cost the tenant, or None when it is not rate limited."""
    if current_app.extensions["ec.runtime"].limiter is None:
        return None
    rate, burst = _tenant_limits(tenant)
    if rate <= 0:
        return None
    return Charge(tenant, cost, rate, burst)


def charge_events(count: int) -> None:
    """Make the pending intake charge of a view declared ``require(..., charge_in_intake=True)``
    cover ``count`` events: a request carrying N events costs N from the bucket (at least one).

    A count above the tenant's burst could never be paid, however long the client waited: that
    is a 413 ``batch_exceeds_burst`` naming both numbers, not a 429 to retry forever (the request
    still costs one, as every request does).
    """
    due: Charge | None = g.get("intake_charge")
    if due is None or count <= due.cost:
        return
    if count > due.burst:
        raise ApiError(
            413, "batch_exceeds_burst",
            f"the batch holds {count} events but tenant {due.tenant!r} may send at most "
            f"{due.burst} at once (its rate-limit burst; each event costs one): send batches "
            f"of at most {due.burst} events",
            [{"field": "events", "type": "too_long",
              "message": f"at most {due.burst} events (the tenant's burst), got {count}"}])
    g.intake_charge = Charge(due.tenant, count, due.rate, due.burst)


def _throttled() -> dict[str, tuple[float, float]]:
    """tenant → (monotonic time, rate), per app: once the bucket refused one of the tenant's
    requests, this process refuses the tenant's requests until the refusal's Retry-After has
    passed, without asking Redis or reading the body (tokens only refill with time, so none of
    them could have been allowed). A throttled client costs a dict lookup, not a validated body.
    """
    return current_app.extensions.setdefault("ec.throttled", {})  # type: ignore[no-any-return]


def _throttle(exc: RateLimited) -> None:
    # A refused batch of N waits for N tokens; a single request fits after the wait for one.
    due = exc.charge
    wait_for_one = exc.retry_after - (due.cost - 1) / due.rate
    if wait_for_one > 0:
        _throttled()[due.tenant] = (time.monotonic() + wait_for_one, due.rate)


def _rate_limited(tenant: str, rate: float, wait: float) -> ApiError:
    return ApiError(429, "rate_limited", f"tenant {tenant!r} is over its rate limit "
                    f"({rate:g}/s; a request costs one, a batch one per event)",
                    headers={"Retry-After": retry_after_header(wait)})


def _refuse_if_throttled(tenant: str) -> None:
    until = _throttled().get(tenant)
    if until is None:
        return
    wait = until[0] - time.monotonic()
    if wait <= 0:
        _throttled().pop(tenant, None)
        return
    raise _rate_limited(tenant, until[1], wait)


def too_many_requests(exc: RateLimited) -> ApiError:
    _throttle(exc)
    return _rate_limited(exc.charge.tenant, exc.charge.rate, exc.retry_after)


def _pay(due: Charge) -> RateLimited | None:
    """Take ``due`` from the bucket through the process's limiter; the refusal, if refused."""
    verdict = current_app.extensions["ec.runtime"].limiter.take(due.tenant, due.cost, due.rate,
                                                                due.burst)
    return None if verdict.allowed else RateLimited(due, verdict.retry_after)


def charge(tenant: str, cost: int) -> None:
    """Take ``cost`` requests from the tenant's bucket or raise 429 with Retry-After."""
    due = tenant_charge(tenant, cost)
    refused = _pay(due) if due is not None else None
    if refused is not None:
        raise too_many_requests(refused)


def claim_intake_charge() -> Charge | None:
    """The request's rate-limit charge, for a view declared ``require(..., charge_in_intake=True)``
    to pass to the intake (which takes it in the same Redis call that accepts the events)."""
    return g.pop("intake_charge", None)


def require(scope: str, *, tenant_header: bool = True, charge_in_intake: bool = False,
            query: type[BaseModel] | None = None) -> Callable[[F], F]:
    """Decorate a view: authenticate, then expose the principal as ``g.principal`` and the
    query string, validated by ``query``, as ``g.query``. A route without ``query`` takes no
    query parameters: any is a 400 naming it, as is a parameter ``query`` does not know.

    Every request costs one from the tenant's rate-limit bucket. With ``charge_in_intake`` the
    view hands the charge to the intake (``claim_intake_charge``), saving a Redis round trip; a
    request that ends before reaching the intake (e.g. a 400) is charged on the way out.
    """

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.principal = authenticate(scope, tenant_header=tenant_header,
                                       charge_now=not charge_in_intake)
            if not charge_in_intake:
                g.query = parse_query(query)
                return view(*args, **kwargs)
            g.intake_charge = tenant_charge(g.principal.tenant, 1)
            try:
                g.query = parse_query(query)
                return view(*args, **kwargs)
            finally:
                unpaid = g.pop("intake_charge", None)
                refused = _pay(unpaid) if unpaid is not None else None
                if refused is not None:  # this answer stands; the next ones are 429s
                    _throttle(refused)

        return wrapper  # type: ignore[return-value]

    return decorate
