"""The rate-limiter ports (infra/broker/ratelimit.py): one contract each, run over every
implementation (in memory; the Lua scripts on fakeredis and on the machine's Redis).

RateLimiter is the per-tenant request bucket; AttemptLimiter the token endpoint's failed-attempt
buckets. What only one implementation does (Redis failing open, or falling back to counting in
the process) stays in that implementation's tests (test_token_guard.py, test_pipeline.py).
"""

from __future__ import annotations

import time

import pytest

from infra.broker.ratelimit import (
    Allowance,
    AttemptLimiter,
    MemoryAttemptLimiter,
    MemoryRateLimiter,
    RateLimiter,
    RedisAttemptLimiter,
    RedisRateLimiter,
)
from tests.support.backends import IMPLEMENTATIONS, redis_client


@pytest.fixture(params=IMPLEMENTATIONS)
def limiter(request: pytest.FixtureRequest) -> RateLimiter:
    if request.param == "memory":
        return MemoryRateLimiter()
    return RedisRateLimiter(redis_client(request, request.param))


@pytest.fixture(params=IMPLEMENTATIONS)
def attempts(request: pytest.FixtureRequest) -> AttemptLimiter:
    if request.param == "memory":
        return MemoryAttemptLimiter()
    return RedisAttemptLimiter(redis_client(request, request.param))


# --- RateLimiter ----------------------------------------------------------------------------------

def test_a_full_bucket_pays_up_to_its_burst_then_refuses_with_the_wait(limiter: RateLimiter) -> None:
    # Given a burst of 10 refilled at one per 1,000 s
    assert limiter.take("acme", 4, 0.001, 10).allowed
    # When 7 more are asked for, 6 are left
    refused = limiter.take("acme", 7, 0.001, 10)
    # Then it is refused with the time the missing token takes
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(1000, rel=0.01)
    # And a refused take took nothing: 6 still fit, then nothing does
    assert limiter.take("acme", 6, 0.001, 10).allowed
    empty = limiter.take("acme", 1, 0.001, 10)
    assert not empty.allowed and empty.retry_after == pytest.approx(1000, rel=0.01)


def test_an_allowed_take_waits_for_nothing(limiter: RateLimiter) -> None:
    verdict = limiter.take("acme", 10, 0.001, 10)
    assert verdict.allowed and verdict.retry_after == 0


def test_tenants_have_their_own_buckets(limiter: RateLimiter) -> None:
    assert limiter.take("acme", 10, 0.001, 10).allowed
    assert not limiter.take("acme", 1, 0.001, 10).allowed
    assert limiter.take("globex", 10, 0.001, 10).allowed


def test_a_bucket_refills_at_its_rate_up_to_its_burst(limiter: RateLimiter) -> None:
    # Given an empty bucket of 2 refilled at 20 per second
    assert limiter.take("acme", 2, 20, 2).allowed
    assert not limiter.take("acme", 1, 20, 2).allowed
    # When 0.15 s pass (3 tokens' worth, capped at the burst of 2)
    time.sleep(0.15)
    # Then 2 fit again, not 3
    assert not limiter.take("acme", 3, 20, 2).allowed
    assert limiter.take("acme", 2, 20, 2).allowed


def test_a_cost_larger_than_the_burst_is_never_allowed(limiter: RateLimiter) -> None:
    verdict = limiter.take("acme", 11, 0.001, 10)
    assert not verdict.allowed
    assert verdict.retry_after == pytest.approx(1000, rel=0.01)


# --- AttemptLimiter -------------------------------------------------------------------------------

def test_forgive_gives_back_what_attempt_took(attempts: AttemptLimiter) -> None:
    # (was test_token_guard.py's, on the memory limiter only)
    rules = [Allowance("a", 1), Allowance("b", 5)]
    assert attempts.attempt(rules).allowed
    attempts.forgive(rules)
    assert attempts.attempt(rules).allowed
    verdict = attempts.attempt(rules)
    assert not verdict.allowed and 0 < verdict.retry_after <= 60
    # and a refused attempt took nothing from the other bucket
    assert attempts.attempt([Allowance("b", 5)]).allowed


def test_attempts_are_counted_per_key_up_to_the_allowance(attempts: AttemptLimiter) -> None:
    rules = [Allowance("ec:authfail:client:x", 2)]
    assert [attempts.attempt(rules).allowed for _ in range(3)] == [True, True, False]
    assert attempts.attempt([Allowance("ec:authfail:client:y", 2)]).allowed


def test_a_refused_attempt_names_the_wait_for_one_attempt(attempts: AttemptLimiter) -> None:
    # A bucket of 6 per minute refills one every 10 s
    rules = [Allowance("k", 6)]
    for _ in range(6):
        assert attempts.attempt(rules).allowed
    verdict = attempts.attempt(rules)
    assert not verdict.allowed
    assert verdict.retry_after == pytest.approx(10, abs=0.5)


def test_no_allowances_is_always_allowed(attempts: AttemptLimiter) -> None:
    assert attempts.attempt([]).allowed
    attempts.forgive([])


def test_forgiving_a_full_bucket_does_not_overfill_it(attempts: AttemptLimiter) -> None:
    rules = [Allowance("k", 2)]
    attempts.forgive(rules)
    attempts.forgive(rules)
    assert [attempts.attempt(rules).allowed for _ in range(3)] == [True, True, False]
