"""Shared fixtures: settings, an embedded (SQLite + StubBroker) app, tokens, real services."""

from __future__ import annotations

import base64
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

import events.models  # noqa: F401  (every table on Base.metadata for the tests that create them)
import infra.broker.deadletter_store  # noqa: F401
import jobs.models  # noqa: F401
import subscriptions.models  # noqa: F401
import tenants.models  # noqa: F401
from config.settings import Settings

pytest_plugins = ["pytester"]  # tests/unit/test_secret_scan.py runs the scan on a planted leak

SECRET = "test-signing-secret-" + "x" * 32
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("EC_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("EC_TEST_REDIS", "redis://127.0.0.1:6379/0")
# The Redis database the integration tests flush before and after each test; two suites running
# at once on one machine (two checkouts) need different ones.
REDIS_TEST_DB = int(os.environ.get("EC_TEST_REDIS_DB", "13"))


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


def as_posted(answer: dict[str, Any], *statuses: str) -> dict[str, Any]:
    """A GET /api/v1/events/{id} answer without its ``status`` (one of ``statuses``, default
    accepted or stored), to compare with the event POST answered (and SQS received)."""
    answer = dict(answer)
    status = answer.pop("status", None)
    assert status in (statuses or ("accepted", "stored")), status
    return answer


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


def shown_id(kind: str, internal: int) -> int:
    """The opaque id the API shows for an internal row number (store.opaque), under SECRET."""
    from infra.opaque import IdCipher

    return IdCipher.from_secret(SECRET).encode(kind, internal)


def internal_id(kind: str, shown: int) -> int:
    from infra.opaque import IdCipher

    found = IdCipher.from_secret(SECRET).decode(kind, shown)
    assert found is not None
    return found


def mint(tenant: str, scopes: frozenset[str] | None = None, ttl: int = 600) -> str:
    from tenants.auth import SCOPES, mint_token

    return mint_token(SECRET, tenant=tenant, client_id="test", scopes=scopes or frozenset(SCOPES),
                      ttl_seconds=ttl)


# --- embedded (unit tier) -------------------------------------------------------------------

EMBEDDED_KINDS = ("plain", "sender", "mailer")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "embedded(kind='plain', **settings): which embedded app the ``embedded`` "
        "fixture builds for the tests it marks (module-wide as ``pytestmark``): 'plain' (persist "
        "worker thread), 'sender' (StubSender deliveries), 'mailer' (StubMailer, workers only "
        "inside settle); keyword arguments are extra Settings")


def _embedded_marker(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    marker = request.node.get_closest_marker("embedded")
    if marker is None:
        return "plain", {}
    kind = marker.args[0] if marker.args else marker.kwargs.get("kind", "plain")
    assert kind in EMBEDDED_KINDS, kind
    return kind, {k: v for k, v in marker.kwargs.items() if k != "kind"}


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A migrated SQLite file holding tenants acme and globex, built once per session."""
    from tests.support.apps import build_template

    return build_template(tmp_path_factory.mktemp("template") / "ec.db")


@dataclass
class Services:
    """What a service or repository function takes, without an app: sessions on a copy of the
    template database (migrated; tenants acme and globex) and a SecretBox."""

    sessions: Any
    box: Any


@pytest.fixture
def services(template_db: Any, tmp_path: Any) -> Iterator[Services]:
    """For tests whose assertion is about a service or repository, not HTTP: no Flask app, no
    broker, no worker thread. (A file, not ``:memory:``: SQLAlchemy gives every session of a
    thread the one connection of an in-memory database, and these tests, like the app, open a
    second session while one is in a transaction.)"""
    from cryptography.fernet import Fernet

    from infra.crypto import SecretBox
    from infra.db import make_engine, make_session_factory
    from tests.support.apps import copy_db

    engine = make_engine(f"sqlite:///{copy_db(template_db, tmp_path)}")
    try:
        yield Services(make_session_factory(engine), SecretBox(Fernet.generate_key().decode()))
    finally:
        engine.dispose()


@pytest.fixture
def embedded(request: pytest.FixtureRequest, template_db: Any, tmp_path: Any) -> Iterator[Any]:
    """The embedded app (SQLite + StubBroker, tenants acme and globex) on a copy of the template
    database; ``pytest.mark.embedded`` chooses which (tests/support/apps.py):

    - ``plain`` (default): a persist worker thread consuming everything enqueued (running_app);
    - ``sender``: deliveries go to one StubSender, the ``stub`` fixture (stub_app);
    - ``mailer``: the ``stub`` fixture's StubMailer; workers run only inside
      tests/support/jobs.settle (notify_app).
    """
    from tests.support.apps import copy_db, notify_app, running_app, stub_app

    kind, settings = _embedded_marker(request)
    db = copy_db(template_db, tmp_path)
    if kind == "sender":
        app_cm = stub_app(db, **settings)
    elif kind == "mailer":
        app_cm = notify_app(db, request.getfixturevalue("stub"), **settings)
    else:
        app_cm = running_app(db, migrate=False, **settings)
    with app_cm as app:
        yield app


@pytest.fixture
def stub(request: pytest.FixtureRequest) -> Any:
    """The embedded app's stub: the StubSender every delivery of a ``sender`` app goes to, or
    the StubMailer of a ``mailer`` app (made first: the app is built with it)."""
    kind, _ = _embedded_marker(request)
    if kind == "mailer":
        from jobs.mailers.stub import StubMailer

        return StubMailer()
    assert kind == "sender", "the stub fixture needs pytest.mark.embedded('sender' or 'mailer')"
    from subscriptions.senders.stub import StubSender

    sender = request.getfixturevalue("embedded").extensions["ec.runtime"].senders["SQS"]
    assert isinstance(sender, StubSender)
    return sender


def drain(app: Any) -> None:
    """Wait until the persist pool has handled everything enqueued so far."""
    from infra.broker.queues import PERSIST_QUEUE

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


@contextmanager
def migrated_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database named ``<prefix>_<random>``, migrated; dropped on leaving.
    Yields its SQLAlchemy URL."""
    import psycopg

    from config.settings import normalize_database_url
    from infra.db import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = normalize_database_url(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated; dropped at the end."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    with migrated_database("ec_test") as url:
        yield url


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The machine's Redis, on a database of its own, emptied before and after each test."""
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    url = REDIS_TEST_URL.rsplit("/", 1)[0] + f"/{REDIS_TEST_DB}"
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


# --- the whole suite's logs and responses never carry a secret -------------------------------
#
# A "secret" is one of KNOWN_SECRETS (the token signing key, the subscription AWS secret key, the
# SendGrid keys) or a client secret minted by tenants.auth.create_tenant in this process. Access
# tokens are not secrets in this sense: the token endpoint returns them by design.

KNOWN_SECRETS = {SECRET, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETzz", "SG.test-key", "SG.e2e-key",
                 "SG.chaos"}

_client_secrets: set[str] = set()
# Every leak found in this session, in order; a test fails for the leaks found while it ran.
_leaks: list[str] = []
_failed_for: set[int] = set()  # indexes in _leaks a test has already failed for
_LEAK_MARK = pytest.StashKey[int]()


def _hint(secret: str) -> str:
    """How a leak report names a secret without printing it."""
    return f"{secret[:4]}…({len(secret)} chars)"


def secrets_in(text: str) -> list[str]:
    """The secrets found in ``text`` (also JSON-escaped or URL-encoded), as hints."""
    from urllib.parse import unquote_plus

    variants = {text, text.replace("\\/", "/"), unquote_plus(text)}
    return [_hint(s) for s in sorted(KNOWN_SECRETS | _client_secrets)
            if any(s in v for v in variants)]


def scan_response(where: str, headers: Any, body: bytes) -> list[str]:
    """Leak reports for an HTTP response's headers (name, value pairs) and body."""
    found = [f"{where}: header {name}: {hint}" for name, value in headers
             for hint in secrets_in(f"{name}: {value}")]
    found += [f"{where}: body: {hint}" for hint in secrets_in(body.decode("utf-8", "replace"))]
    return found


def _mask(text: str) -> str:
    for secret in KNOWN_SECRETS | _client_secrets:
        text = text.replace(secret, _hint(secret))
    return text


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage() + " " + " ".join(
                str(v) for k, v in record.__dict__.items() if k not in ("msg", "args"))
        except Exception:  # noqa: BLE001 - a record that cannot render cannot leak either
            return
        if secrets_in(text):
            _leaks.append(f"log record {record.name}: {_mask(text[:200])}")


def _scanning_werkzeug_open(original: Any) -> Any:
    """werkzeug's test Client.open (Flask's test_client and Schemathesis's WSGI calls), scanned."""

    def open(self: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: A001 - the method's name
        response = original(self, *args, **kwargs)
        request = getattr(response, "request", None)
        where = f"response to {request.method} {request.path}" if request is not None \
            else "response"
        _leaks.extend(scan_response(where, response.headers.items(), response.get_data()))
        return response

    return open


def _scanning_requests_send(original: Any) -> Any:
    """requests' Session.send (integration tests talking to real processes), scanned."""

    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        response = original(self, request, **kwargs)
        body = b"" if kwargs.get("stream") else (response.content or b"")
        where = f"response to {request.method} {request.url}"
        _leaks.extend(scan_response(where, response.headers.items(), body))
        return response

    return send


@pytest.fixture(autouse=True, scope="session")
def no_secret_in_any_log_line_or_response() -> Iterator[None]:
    """Every log record of the suite (any level) and every HTTP response a test receives (Flask
    and werkzeug test clients, requests) is scanned for the secrets the tests use, including
    every client secret minted by tenants.auth.create_tenant. A test fails for what leaked while
    it ran, setup included (pytest_runtest_call below); the session fails for a leak no test
    failed for (a teardown's, say)."""
    import requests
    import werkzeug.test

    import tenants.auth

    original = tenants.auth._new_client

    def remembering(*args: Any, **kwargs: Any) -> Any:
        creds = original(*args, **kwargs)
        _client_secrets.add(creds.client_secret)
        return creds

    tenants.auth._new_client = remembering
    werkzeug_open = werkzeug.test.Client.open
    requests_send = requests.Session.send
    werkzeug.test.Client.open = _scanning_werkzeug_open(werkzeug_open)  # type: ignore[method-assign]
    requests.Session.send = _scanning_requests_send(requests_send)  # type: ignore[method-assign]
    recorder = _Recorder()
    root = logging.getLogger()
    level = root.level
    root.setLevel(min(level, logging.INFO))  # INFO and up reach the scan from every logger
    root.addHandler(recorder)
    yield
    root.removeHandler(recorder)
    root.setLevel(level)
    werkzeug.test.Client.open = werkzeug_open  # type: ignore[method-assign]
    requests.Session.send = requests_send  # type: ignore[method-assign]
    tenants.auth._new_client = original
    unattributed = [leak for i, leak in enumerate(_leaks) if i not in _failed_for]
    assert not unattributed, unattributed[:5]  # e.g. from a fixture's teardown


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_LEAK_MARK] = len(_leaks)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    start = item.stash.get(_LEAK_MARK, 0)
    leaked = _leaks[start:]
    if leaked:
        _failed_for.update(range(start, start + len(leaked)))
        pytest.fail(f"{len(leaked)} secret leak(s) in this test's logs or responses:\n"
                    + "\n".join(leaked[:10]), pytrace=False)
    return result


def run_concurrently(call: Any, items: list[Any]) -> list[Any]:
    """``call(item)`` for every item, each in its own thread, all released at once; returns the
    results (or the exceptions raised) in order."""
    import threading

    results: list[Any] = [None] * len(items)
    barrier = threading.Barrier(len(items))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(items[i])
        except Exception as exc:  # noqa: BLE001 - the caller looks at it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results
