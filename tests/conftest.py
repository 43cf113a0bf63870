"""Shared fixtures: settings, an embedded (SQLite + StubBroker) app, tokens, real services."""

from __future__ import annotations

import base64
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from config.settings import Settings

SECRET = "test-signing-secret-" + "x" * 32
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("EC_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("EC_TEST_REDIS", "redis://127.0.0.1:6379/0")


def b64(obj: Any) -> str:
    return base64.b64encode(orjson.dumps(obj)).decode()


def order_event(**overrides: Any) -> dict[str, Any]:
    """A valid ORDER CREATE entity event (seed 002's shape with real values)."""
    event: dict[str, Any] = {
        "entity_id": "order-1",
        "entity_name": "ORDER",
        "event_payload": {
            "base64_encoded_payload_json": b64({"id": "order-1", "total": 10}),
            "base64_encoded_fault_json": b64({"status": 503}),
            "entity_id": "order-1",
            "key_attributes": {"correlationId": "corr-1", "referenceId": "ref-1"},
            "operation": "CREATE",
        },
        "event_source": "APPLICATION",
        "event_type": "ENTITY_EVENT",
    }
    event.update(overrides)
    return event


def make_settings(database_url: str, redis_url: str | None = None, **kw: Any) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, token_secret=SECRET, **kw)


@dataclass
class Caller:
    """A test client bound to one tenant's token."""

    client: Any
    tenant: str
    token: str

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-TWC-Tenant": self.tenant, **extra}

    def post_event(self, event: dict[str, Any]) -> Any:
        return self.client.post("/api/v1/events", json=event, headers=self.headers())

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self.headers(), **kw)


def mint(tenant: str, scopes: frozenset[str] | None = None, ttl: int = 600) -> str:
    from store.auth import SCOPES, mint_token

    return mint_token(SECRET, tenant=tenant, client_id="test", scopes=scopes or frozenset(SCOPES),
                      ttl_seconds=ttl)


# --- embedded (unit tier) -------------------------------------------------------------------

@pytest.fixture
def embedded(tmp_path: Any) -> Iterator[Any]:
    """An app on SQLite with an in-process StubBroker and a persist worker thread."""
    import dramatiq

    from api.app import create_app
    from config.runtime import build_runtime
    from store.auth import create_tenant
    from store.db import upgrade
    from workers.main import declare_actors

    settings = make_settings(f"sqlite:///{tmp_path / 'ec.db'}")
    upgrade(settings.database_url)
    runtime = build_runtime(settings)
    declare_actors(runtime)
    worker = dramatiq.Worker(runtime.broker, worker_threads=1, worker_timeout=50)
    worker.start()
    with runtime.sessions() as session:
        create_tenant(session, "acme")
        create_tenant(session, "globex")
    app = create_app(runtime=runtime)
    app.testing = True
    try:
        yield app
    finally:
        worker.stop()
        runtime.close()


def drain(app: Any) -> None:
    """Wait until the persist pool has handled everything enqueued so far."""
    from broker.queues import PERSIST_QUEUE

    runtime = app.extensions["ec.runtime"]
    runtime.broker.join(PERSIST_QUEUE, timeout=10_000)


@pytest.fixture
def acme(embedded: Any) -> Caller:
    return Caller(embedded.test_client(), "acme", mint("acme"))


@pytest.fixture
def globex(embedded: Any) -> Caller:
    return Caller(embedded.test_client(), "globex", mint("globex"))


# --- real services (integration tier) --------------------------------------------------------

def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(message + " (CI must run every integration test)")
    pytest.skip(message + ": integration test skipped outside CI")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated; dropped at the end."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    name = f"ec_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    from config.settings import normalize_database_url
    from store.db import upgrade

    sa_url = normalize_database_url(url)
    upgrade(sa_url)
    try:
        yield sa_url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The machine's Redis, on a database of its own, emptied before and after each test."""
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    url = REDIS_TEST_URL.rsplit("/", 1)[0] + "/13"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the whole suite's logs never carry a secret ---------------------------------------------

KNOWN_SECRETS = {SECRET, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETzz", "SG.test-key", "SG.e2e-key",
                 "SG.chaos"}


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage() + " " + " ".join(
                str(v) for k, v in record.__dict__.items() if k not in ("msg", "args"))
        except Exception:  # noqa: BLE001 - a record that cannot render cannot leak either
            return
        for secret in KNOWN_SECRETS | _client_secrets:
            if secret in text:
                self.leaks.append(f"{record.name}: {text[:200]}")


_client_secrets: set[str] = set()


@pytest.fixture(autouse=True, scope="session")
def no_secret_in_any_log_line() -> Iterator[None]:
    """Every log record of the suite (any level) is scanned for the secrets the tests use,
    including every client secret minted by store.auth.create_tenant."""
    import store.auth

    original = store.auth._new_client

    def remembering(*args: Any, **kwargs: Any) -> Any:
        creds = original(*args, **kwargs)
        _client_secrets.add(creds.client_secret)
        return creds

    store.auth._new_client = remembering
    recorder = _Recorder()
    root = logging.getLogger()
    level = root.level
    root.setLevel(min(level, logging.INFO))  # INFO and up reach the scan from every logger
    root.addHandler(recorder)
    yield
    root.removeHandler(recorder)
    root.setLevel(level)
    store.auth._new_client = original
    assert not recorder.leaks, recorder.leaks[:5]
