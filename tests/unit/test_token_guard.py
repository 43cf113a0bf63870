"""Issue 13, the token endpoint under attack: failed secret checks are limited per client id and
per source address (X-Forwarded-For behind trusted proxies), an unknown client id does the same
work as a wrong secret, a wrong secret is refused by its fingerprint without the slow hash, and a
process runs a bounded number of slow checks at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from sqlalchemy import text

import tenants.auth
from infra.broker.ratelimit import Allowance, RedisAttemptLimiter
from tenants.auth import Credentials, create_tenant, secret_fingerprint
from tenants.models import ApiClient
from tests.conftest import SECRET, Caller, order_event
from tests.support.apps import running_app
from tests.support.backends import unreachable_redis

UNKNOWN = "ec_000000000000000000000000"


@contextmanager
def token_app(tmp_path: Path, name: str = "t", **kw: Any) -> Iterator[tuple[Any, Credentials,
                                                                            Credentials]]:
    """The embedded app with two tenants' clients (shop, other)."""
    with running_app(tmp_path / f"{name}.db", **kw) as app:
        with app.extensions["ec.runtime"].sessions() as session:
            shop, other = create_tenant(session, "shop"), create_tenant(session, "other")
            session.commit()
        yield app, shop, other


def ask(app: Any, client_id: str, secret: str, *, forwarded: str | None = None,
        peer: str = "127.0.0.1") -> Any:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return app.test_client().post(
        "/api/v1/auth/token", headers=headers, environ_base={"REMOTE_ADDR": peer},
        data={"grant_type": "client_credentials", "client_id": client_id,
              "client_secret": secret})


def wrong(creds: Credentials) -> str:
    return "not-" + creds.client_secret


@pytest.fixture
def slow_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of the slow (scrypt) secret check, by the hash it was checked against."""
    calls: list[str] = []
    real = tenants.auth.check_secret

    def counting(secret: str, stored: str) -> bool:
        calls.append(stored)
        return real(secret, stored)

    monkeypatch.setattr(tenants.auth, "check_secret", counting)
    return calls


# --- per client id, per source --------------------------------------------------------------

def test_failures_per_client_id_are_limited_then_429_with_retry_after(tmp_path: Path) -> None:
    # Given 3 failures allowed per client id and minute
    with token_app(tmp_path, token_failures_per_client=3) as (app, shop, other):
        # When shop's client id gets wrong secrets
        answers = [ask(app, shop.client_id, wrong(shop)).status_code for _ in range(4)]
        # Then three are 401 and the fourth is a 429 with Retry-After (old code: four 401s)
        assert answers == [401, 401, 401, 429]
        limited = ask(app, shop.client_id, wrong(shop))
        assert limited.get_json()["error"] == "temporarily_unavailable"  # OAuth form
        assert "too many" in limited.get_json()["error_description"]
        # (3 a minute: one failure comes back every 20 s, so the wait is just under 20 s)
        assert 15 <= int(limited.headers["Retry-After"]) <= 20
        # And while it lasts even the right secret is refused for that client id
        assert ask(app, shop.client_id, shop.client_secret).status_code == 429
        # But another client from the same address is not affected
        assert ask(app, other.client_id, other.client_secret).status_code == 200


def test_successes_do_not_count(tmp_path: Path) -> None:
    with token_app(tmp_path, token_failures_per_client=2, token_failures_per_source=2) as (
            app, shop, _):
        assert [ask(app, shop.client_id, shop.client_secret).status_code
                for _ in range(6)] == [200] * 6


def test_failures_per_source_address_are_limited_across_client_ids(tmp_path: Path) -> None:
    # Given 3 failures allowed per source address (client ids unlimited)
    with token_app(tmp_path, token_failures_per_client=0, token_failures_per_source=3) as (
            app, shop, other):
        # When one address tries three unknown client ids and then a fourth
        answers = [ask(app, f"ec_guess{i}", "x", peer="10.0.0.9").status_code for i in range(4)]
        # Then the fourth is a 429, and so is a real client from that address
        assert answers == [401, 401, 401, 429]
        assert ask(app, shop.client_id, shop.client_secret, peer="10.0.0.9").status_code == 429
        # But another address is not affected
        assert ask(app, shop.client_id, shop.client_secret, peer="10.0.0.10").status_code == 200


def test_behind_trusted_proxies_the_source_is_the_first_untrusted_forwarded_hop(
        tmp_path: Path) -> None:
    # Given one trusted proxy (the platform router appends the address it received from) and
    # 2 failures per source
    with token_app(tmp_path, token_failures_per_client=0, token_failures_per_source=2,
                   trusted_proxy_count=1) as (app, shop, _):
        # When an attacker behind the router sends wrong secrets, writing a fresh
        # X-Forwarded-For of its own each time (the router appends its real address)
        answers = [ask(app, UNKNOWN, "x", forwarded=f"192.0.2.{i}, 203.0.113.7",
                       peer="10.1.1.1").status_code for i in range(3)]
        # Then its forged hops are ignored: the third is refused
        assert answers == [401, 401, 429]
        # And a client behind the same router (same peer) at another address is not affected
        assert ask(app, shop.client_id, shop.client_secret, forwarded="198.51.100.2",
                   peer="10.1.1.1").status_code == 200


@pytest.mark.parametrize(("count", "forwarded", "expected"), [
    (0, "198.51.100.2", "10.1.1.1"),  # no trusted proxy: the header is the client's, ignored
    (1, "198.51.100.2", "198.51.100.2"),
    (1, "6.6.6.6, 198.51.100.2", "198.51.100.2"),
    (2, "6.6.6.6, 198.51.100.2, 10.0.0.5", "198.51.100.2"),
    (2, "198.51.100.2", "10.1.1.1"),  # fewer hops than proxies: not through them all
    (1, None, "10.1.1.1"),
])
def test_source_address(count: int, forwarded: str | None, expected: str) -> None:
    from flask import Flask

    from api.token_guard import source_address

    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    with Flask("t").test_request_context(headers=headers,
                                         environ_base={"REMOTE_ADDR": "10.1.1.1"}):
        assert source_address(count) == expected


def test_the_failure_counters_are_shared_through_redis(tmp_path: Path) -> None:
    # Given two web processes whose attempt limiters use one Redis (fakeredis, the real Lua)
    fake = fakeredis.FakeRedis()
    with token_app(tmp_path, "a", token_failures_per_client=2) as (app_a, shop, _), \
            running_app(tmp_path / "a.db", migrate=False, token_failures_per_client=2) as app_b:
        for app in (app_a, app_b):
            app.extensions["ec.runtime"].attempts = RedisAttemptLimiter(fake)
        # When one process sees two failures for shop's client id
        assert [ask(app_a, shop.client_id, "x").status_code for _ in range(2)] == [401, 401]
        # Then the other refuses the client id too
        assert ask(app_b, shop.client_id, shop.client_secret).status_code == 429
        assert any(k.startswith(b"ec:authfail:client:") for k in fake.keys())


def test_without_redis_the_attempt_limiter_counts_in_the_process() -> None:
    # Given a Redis client that cannot connect (and does not retry: redis-py's default backoff
    # made this test take 12 s)
    limiter = RedisAttemptLimiter(unreachable_redis())
    rules = [Allowance("ec:authfail:client:x", 2)]
    # Then attempts are still counted (in memory), not let through
    assert [limiter.attempt(rules).allowed for _ in range(3)] == [True, True, False]




# --- the same work for an unknown id; the cheap refusal ---------------------------------------

def test_an_unknown_client_id_and_a_wrong_secret_call_the_hash_check_once_each(
        tmp_path: Path, slow_calls: list[str]) -> None:
    # Given a client whose fingerprint is not written yet (as after the upgrade), and the store
    # called without a fingerprint key: only the slow hash decides
    with token_app(tmp_path) as (app, shop, _):
        runtime = app.extensions["ec.runtime"]
        with runtime.sessions() as session:
            # When an unknown client id and a wrong secret are checked
            for client_id in (UNKNOWN, shop.client_id):
                with pytest.raises(tenants.auth.InvalidClient):
                    tenants.auth.authenticate_client(session, client_id, wrong(shop))
        # Then each ran the slow check exactly once (the unknown id against the dummy hash;
        # the old code ran none for it, answering faster)
        assert len(slow_calls) == 2
        assert slow_calls[0] != slow_calls[1] and slow_calls[0].startswith("scrypt$16384$8$1$")


def test_a_wrong_secret_is_refused_by_its_fingerprint_without_the_slow_hash(
        tmp_path: Path, slow_calls: list[str]) -> None:
    with token_app(tmp_path) as (app, shop, _):
        runtime = app.extensions["ec.runtime"]
        # Given a client without a fingerprint (created before migration 0010)
        # When a wrong secret is tried: the slow hash decides (no fingerprint to compare)
        assert ask(app, shop.client_id, wrong(shop)).status_code == 401
        assert len(slow_calls) == 1
        # And when the right secret is used: a token, and the fingerprint is written
        assert ask(app, shop.client_id, shop.client_secret).status_code == 200
        assert len(slow_calls) == 2
        with runtime.sessions() as session:
            row = session.get(ApiClient, shop.client_id)
            assert row is not None
            assert row.secret_fingerprint == secret_fingerprint(SECRET, shop.client_secret)
            assert shop.client_secret not in row.secret_fingerprint
        # Then wrong secrets are refused with no slow check, as are unknown client ids
        for client_id, secret in ((shop.client_id, wrong(shop)), (UNKNOWN, wrong(shop)),
                                  (shop.client_id, shop.client_secret[:-1])):
            assert ask(app, client_id, secret).status_code == 401
        assert len(slow_calls) == 2
        # And the right secret is still confirmed by the slow hash
        token = ask(app, shop.client_id, shop.client_secret)
        assert token.status_code == 200 and len(slow_calls) == 3
        assert Caller(app.test_client(), "shop", token.get_json()["access_token"]).post_event(
            order_event()).status_code == 201


def test_a_fingerprint_under_another_key_is_ignored_and_rewritten(
        tmp_path: Path, slow_calls: list[str]) -> None:
    # Given a fingerprint written under a previous EC_TOKEN_SECRET
    with token_app(tmp_path) as (app, shop, _):
        runtime = app.extensions["ec.runtime"]
        old = secret_fingerprint("an-older-token-secret-" + "z" * 32, shop.client_secret)
        with runtime.sessions() as session:
            session.execute(text("UPDATE api_clients SET secret_fingerprint = :f "
                                 "WHERE client_id = :c"), {"f": old, "c": shop.client_id})
            session.commit()
        # When the right secret is used: the slow hash decides, a token, a new fingerprint
        assert ask(app, shop.client_id, shop.client_secret).status_code == 200
        assert len(slow_calls) == 1
        with runtime.sessions() as session:
            assert session.get(ApiClient, shop.client_id).secret_fingerprint == \
                secret_fingerprint(SECRET, shop.client_secret)


def test_a_deactivated_client_is_refused_like_an_unknown_one(
        tmp_path: Path, slow_calls: list[str]) -> None:
    with token_app(tmp_path) as (app, shop, _):
        assert ask(app, shop.client_id, shop.client_secret).status_code == 200
        runtime = app.extensions["ec.runtime"]
        with runtime.sessions() as session:
            session.execute(text("UPDATE api_clients SET active = false"))
            session.commit()
        del slow_calls[:]
        # The right secret of a deactivated client is refused without the slow hash, like an
        # unknown id (compared with a dummy fingerprint)
        assert ask(app, shop.client_id, shop.client_secret).status_code == 401
        assert ask(app, UNKNOWN, shop.client_secret).status_code == 401
        assert slow_calls == []


# --- the per-process budget of slow checks ------------------------------------------------------

def test_past_the_budget_of_slow_checks_a_503_with_retry_after_that_is_not_a_failure(
        tmp_path: Path) -> None:
    # Given one slow check allowed per process, and one failure per client id
    with token_app(tmp_path, token_checks_per_process=1, token_failures_per_client=1) as (
            app, shop, _):
        from api.token_guard import _budget

        with app.app_context():
            budget = _budget()
        # When a request arrives while the one slow check is running (held here)
        assert budget.acquire(blocking=False)
        try:
            busy = ask(app, shop.client_id, shop.client_secret)
        finally:
            budget.release()
        # Then it is a 503 with Retry-After, not a 401
        assert busy.status_code == 503, busy.get_json()
        assert busy.headers["Retry-After"] == "1"
        assert busy.get_json()["error"] == "temporarily_unavailable"
        # And it did not count as a failure: the next request gets its token
        assert ask(app, shop.client_id, shop.client_secret).status_code == 200


# --- migration 0010 ------------------------------------------------------------------------------

def test_migration_0010_adds_the_fingerprint_and_existing_clients_still_authenticate(
        tmp_path: Path) -> None:
    from infra.db import make_engine, upgrade

    # Given a database at 0007 holding a client (its secret hashed, no fingerprint column)
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0007")
    secret = "an-existing-client-secret-0123456789"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (name, created_at, subscriptions_version, "
                          "external_id) VALUES ('old', '2026-01-01', 0, 'ec-x')"))
        conn.execute(text("INSERT INTO api_clients (client_id, tenant, secret_hash, scopes, "
                          "active, created_at) VALUES ('ec_old', 'old', :h, 'events:read', 1, "
                          "'2026-01-01')"), {"h": tenants.auth.hash_secret(secret)})
    # When it is upgraded
    upgrade(url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT secret_fingerprint FROM api_clients")).scalar() is None
    engine.dispose()
    # Then the client gets a token with its secret, which backfills the fingerprint
    with running_app(tmp_path / "m.db") as app:
        assert ask(app, "ec_old", "wrong").status_code == 401
        assert ask(app, "ec_old", secret).status_code == 200
        with app.extensions["ec.runtime"].sessions() as session:
            assert session.get(ApiClient, "ec_old").secret_fingerprint == \
                secret_fingerprint(SECRET, secret)


# --- settings ------------------------------------------------------------------------------------

def test_the_token_endpoint_settings_have_their_defaults_and_are_validated() -> None:
    from config.settings import ConfigError, load_settings
    from tests.support.env import server_env

    settings = load_settings(server_env())
    assert (settings.token_failures_per_client, settings.token_failures_per_source,
            settings.trusted_proxy_count, settings.token_checks_per_process) == (10, 30, 0, 4)
    set_ = load_settings(server_env(EC_TOKEN_FAILURES_PER_CLIENT="0",
                                    EC_TOKEN_FAILURES_PER_SOURCE="100",
                                    EC_TRUSTED_PROXY_COUNT="2", EC_TOKEN_CHECKS_PER_PROCESS="8"))
    assert (set_.token_failures_per_client, set_.token_failures_per_source,
            set_.trusted_proxy_count, set_.token_checks_per_process) == (0, 100, 2, 8)
    for name, value in (("EC_TOKEN_FAILURES_PER_CLIENT", "-1"),
                        ("EC_TOKEN_FAILURES_PER_SOURCE", "many"),
                        ("EC_TRUSTED_PROXY_COUNT", "-1"), ("EC_TOKEN_CHECKS_PER_PROCESS", "0")):
        with pytest.raises(ConfigError, match=name):
            load_settings(server_env(**{name: value}))
