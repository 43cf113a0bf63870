"""The implementations a port's contract tests run over, as Dramatiq's tests run over its
brokers and result backends: in memory, Redis on fakeredis (real Lua, through lupa), and the
machine's Redis (``redis_url``: database EC_TEST_REDIS_DB, flushed before and after each test)."""

from __future__ import annotations

from typing import Any

import pytest

IMPLEMENTATIONS = ["memory", "fakeredis", pytest.param("redis", marks=pytest.mark.integration)]


def redis_client(request: pytest.FixtureRequest, kind: str) -> Any:
    """A redis-py client for ``kind`` "fakeredis" or "redis", closed after the test."""
    import redis

    if kind == "fakeredis":
        import fakeredis

        client: Any = fakeredis.FakeRedis()
    else:
        assert kind == "redis", kind
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    request.addfinalizer(client.close)
    return client


def unreachable_redis() -> Any:
    """A redis-py client for a port nothing listens on (that does not retry)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
