"""Issue 13, fairness: a request is charged what it carries (a batch of N events costs N), and a
batch the tenant's burst can never pay is a 413, not a 429 to retry forever. Both limiters: the
Redis one (the intake's Lua script, here on fakeredis with real Lua) and the embedded in-memory
one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from infra.broker.intakes.redis import RedisIntake
from infra.broker.queues import rate_bucket_key
from infra.broker.ratelimit import RedisRateLimiter
from tests.conftest import Caller, mint, order_event
from tests.support.apps import running_app

BURST = 10


@contextmanager
def limited_app(tmp_path: Path, kind: str, **kw: Any) -> Iterator[tuple[Any, Any]]:
    """The embedded app with a burst of 10 refilled at one per 1,000 s; with ``kind`` "redis"
    its intake and limiter run on fakeredis (the production Lua scripts), else in memory."""
    with running_app(tmp_path / f"{kind}.db", rate_limit_per_second=0.001,
                     rate_limit_burst=BURST, **kw) as app:
        fake = None
        if kind == "redis":
            fake = fakeredis.FakeRedis()
            runtime = app.extensions["ec.runtime"]
            runtime.intake = RedisIntake(fake, runtime.settings.intake_ttl_seconds)
            runtime.limiter = RedisRateLimiter(fake)
        yield app, fake


def batch(caller: Caller, n: int, prefix: str) -> Any:
    return caller.client.post("/api/v1/events/batch", headers=caller.headers(), json={
        "events": [order_event(id=f"{prefix}-{i}") for i in range(n)]})


def tokens_left(fake: Any, tenant: str) -> float:
    return float(fake.hget(rate_bucket_key(tenant), "tokens"))


@pytest.mark.parametrize("kind", ["redis", "memory"])
def test_a_batch_of_n_events_drains_n_tokens(tmp_path: Path, kind: str) -> None:
    # Given a tenant with a burst of 10 events
    with limited_app(tmp_path, kind) as (app, fake):
        caller = Caller(app.test_client(), "acme", mint("acme"))
        # When a batch of 4 events is accepted
        first = batch(caller, 4, "a")
        assert first.status_code == 200 and first.get_json()["accepted"] == 4
        # Then the bucket lost 4 tokens (the old code charged a batch as one request: 9 left)
        if fake is not None:
            assert tokens_left(fake, "acme") == pytest.approx(6, abs=0.01)
        # And a batch of 7 no longer fits (429, Retry-After for the missing event), nothing
        # accepted
        refused = batch(caller, 7, "b")
        assert refused.status_code == 429, refused.get_json()
        assert refused.get_json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        assert app.extensions["ec.runtime"].intake.lookup("acme", "b-0") is None
        # But a batch of 6 still does: a refused batch does not throttle smaller requests
        assert batch(caller, 6, "c").get_json()["accepted"] == 6
        # And then the bucket is empty: a single event is a 429
        assert caller.post_event(order_event(id="d")).status_code == 429
        if fake is not None:
            assert tokens_left(fake, "acme") < 1


@pytest.mark.parametrize("kind", ["redis", "memory"])
def test_a_batch_larger_than_the_burst_is_a_413_naming_the_limit(tmp_path: Path, kind: str) -> None:
    # Given a tenant with a burst of 10 events
    with limited_app(tmp_path, kind) as (app, fake):
        caller = Caller(app.test_client(), "acme", mint("acme"))
        # When it posts a batch of 11 (valid) events
        answer = batch(caller, BURST + 1, "x")
        # Then it is a 413 batch_exceeds_burst naming the burst and the batch size, not a 429
        # (which a client would retry forever): the old code accepted it as one request
        assert answer.status_code == 413, answer.get_json()
        error = answer.get_json()["error"]
        assert error["code"] == "batch_exceeds_burst"
        assert "11 events" in error["message"] and "at most 10" in error["message"]
        assert error["details"][0]["field"] == "events"
        assert "Retry-After" not in answer.headers
        # And nothing was accepted; the request cost one token, as any request does
        assert app.extensions["ec.runtime"].intake.lookup("acme", "x-0") is None
        if fake is not None:
            assert tokens_left(fake, "acme") == pytest.approx(BURST - 1, abs=0.01)
        # And a batch of exactly the remaining 9 is accepted
        assert batch(caller, BURST - 1, "y").get_json()["accepted"] == BURST - 1


def test_a_batch_of_exactly_the_burst_is_accepted(tmp_path: Path) -> None:
    with limited_app(tmp_path, "redis") as (app, fake):
        caller = Caller(app.test_client(), "acme", mint("acme"))
        assert batch(caller, BURST, "z").get_json()["accepted"] == BURST
        assert tokens_left(fake, "acme") == pytest.approx(0, abs=0.01)


def test_invalid_items_of_a_batch_are_charged_too(tmp_path: Path) -> None:
    # Given a tenant with a burst of 10, when a batch of 5 invalid items is answered (200 with
    # five 400s, nothing reached the intake)
    with limited_app(tmp_path, "redis") as (app, fake):
        caller = Caller(app.test_client(), "acme", mint("acme"))
        answer = caller.client.post("/api/v1/events/batch", headers=caller.headers(),
                                    json={"events": [{"bad": i} for i in range(5)]})
        assert answer.status_code == 200 and answer.get_json()["rejected"] == 5
        # Then the request still cost what it carried
        assert tokens_left(fake, "acme") == pytest.approx(5, abs=0.01)


def test_without_a_rate_limit_any_batch_size_is_accepted(tmp_path: Path) -> None:
    # Given no rate limit (0), a batch larger than the configured burst is not a 413
    with running_app(tmp_path / "free.db", rate_limit_per_second=0, rate_limit_burst=2) as app:
        caller = Caller(app.test_client(), "acme", mint("acme"))
        assert batch(caller, 5, "f").get_json()["accepted"] == 5
