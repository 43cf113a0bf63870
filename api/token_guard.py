"""The token endpoint under attack: failed secret checks are limited per client id and per source
address (buckets in Redis, shared by the web processes), and each process runs at most
``EC_TOKEN_CHECKS_PER_PROCESS`` slow (scrypt) checks at once."""

from __future__ import annotations

import threading

from flask import Flask, current_app, request
from prometheus_client import Counter

from api.http import ApiError
from infra.broker.queues import auth_failure_key
from infra.broker.ratelimit import Allowance, retry_after_header
from tenants import auth

FORWARDED_FOR = "X-Forwarded-For"
CHECKS = Counter("ec_token_checks_total", "Token endpoint secret checks by outcome: ok, "
                 "refused_fast (by the fingerprint, no slow hash), refused_slow, busy, "
                 "too_many_attempts", ["outcome"])


def source_address(trusted_proxies: int) -> str:
    """Who sent the request: the socket's peer, or behind ``trusted_proxies`` proxies that each
    append the address they received from, the ``trusted_proxies``-th address from the right of
    X-Forwarded-For (what the client wrote itself is further left and ignored). With fewer
    addresses than proxies the request did not come through them all: the peer it is."""
    peer = request.remote_addr or "unknown"
    if trusted_proxies <= 0:
        return peer
    hops = [hop.strip() for value in request.headers.getlist(FORWARDED_FOR)
            for hop in value.split(",") if hop.strip()]
    return hops[-trusted_proxies] if len(hops) >= trusted_proxies else peer


def allowances(client_id: str) -> list[Allowance]:
    """The buckets a failed check of ``client_id`` from this request's source draws from."""
    settings = current_app.extensions["ec.runtime"].settings
    out = []
    if settings.token_failures_per_client > 0:
        out.append(Allowance(auth_failure_key("client", client_id), settings.token_failures_per_client))
    if settings.token_failures_per_source > 0:
        source = source_address(settings.trusted_proxy_count)
        out.append(Allowance(auth_failure_key("source", source), settings.token_failures_per_source))
    return out


def begin_attempt(client_id: str) -> list[Allowance]:
    """Count this request as a failed attempt until ``forgive`` says otherwise; 429 with
    Retry-After when the client id or the source has no failures left this minute."""
    taken = allowances(client_id)
    verdict = current_app.extensions["ec.runtime"].attempts.attempt(taken)
    if not verdict.allowed:
        CHECKS.labels("too_many_attempts").inc()
        raise ApiError(429, "too_many_attempts",
                       "too many failed client authentications for this client id or source "
                       "address; retry later", headers={"Retry-After":
                                                       retry_after_header(verdict.retry_after)})
    return taken


def forgive(taken: list[Allowance]) -> None:
    current_app.extensions["ec.runtime"].attempts.forgive(taken)


class ChecksBusy(Exception):
    """This process already runs its allowed number of slow secret checks."""


def _budget() -> threading.BoundedSemaphore:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    budget = app.extensions.get("ec.token_checks")
    if budget is None:
        size = app.extensions["ec.runtime"].settings.token_checks_per_process
        budget = app.extensions.setdefault("ec.token_checks", threading.BoundedSemaphore(size))
    return budget  # type: ignore[no-any-return]


class BoundedCheck:
    """``store.auth.check_secret`` under the process's budget of concurrent slow checks
    (ChecksBusy past it: the caller answers 503 rather than queueing CPU-bound work behind a
    flood); ``ran`` tells whether the slow check ran."""

    def __init__(self, budget: threading.BoundedSemaphore) -> None:
        self.budget = budget
        self.ran = False

    def __call__(self, secret: str, stored: str) -> bool:
        if not self.budget.acquire(blocking=False):
            CHECKS.labels("busy").inc()
            raise ChecksBusy
        try:
            self.ran = True
            return auth.check_secret(secret, stored)
        finally:
            self.budget.release()

    def record(self, ok: bool) -> None:
        CHECKS.labels("ok" if ok else "refused_slow" if self.ran else "refused_fast").inc()


def bounded_slow_check() -> BoundedCheck:
    return BoundedCheck(_budget())


def busy() -> ApiError:
    return ApiError(503, "temporarily_unavailable",
                    "the token endpoint is busy checking other secrets; retry after Retry-After",
                    headers={"Retry-After": "1"})
