"""The web's serving model (api/serving.py, config/gunicorn.py, Procfile), what its logs never
hold, and who may read /metrics."""

from __future__ import annotations

import io
import json
import logging
import shlex
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from config.settings import ConfigError, load_settings
from tests.conftest import drain, make_settings, mint, order_event
from tests.support.procs import ROOT, procfile_command

GOOD_SECRET = "s" * 40
MARK = "BODYMARK-7f3a"  # a value that only an event body carries


# --- the body deadline ------------------------------------------------------------------------

class _SlowBody:
    def __init__(self, data: bytes, delay: float) -> None:
        self.data, self.delay = data, delay

    def read(self, size: int | None = None) -> bytes:
        import gevent

        gevent.sleep(self.delay)
        out, self.data = self.data, b""
        return out

    readline = read


class _Req:
    must_close = False


def test_a_body_read_past_the_deadline_raises_408_and_closes_the_connection() -> None:
    from api.serving import BodyTimeout, DeadlineBody

    # Given a body that takes longer to arrive than its deadline allows
    req = _Req()
    body = DeadlineBody(_SlowBody(b"{}", delay=5), time.monotonic() + 0.05, 30, req)
    # When the application reads it, then it gets a 408 naming the deadline
    with pytest.raises(BodyTimeout) as caught:
        body.read()
    assert caught.value.code == 408 and "30 s" in str(caught.value.description)
    # And the connection is marked to close after the answer; a further read fails at once
    assert req.must_close and body.expired
    with pytest.raises(BodyTimeout):
        body.readline()


def test_a_body_in_time_reads_through_and_after_the_answer_has_no_deadline() -> None:
    from api.serving import DeadlineBody

    req = _Req()
    assert DeadlineBody(_SlowBody(b"abc", delay=0), time.monotonic() + 5, 30, req).read() == b"abc"
    late = DeadlineBody(_SlowBody(b"rest", delay=0.01), time.monotonic() - 1, 30, req)
    late.release()  # answered: only draining is left, bounded by the keep-alive deadline
    assert late.read() == b"rest" and not req.must_close


def test_the_body_deadline_setting_is_validated() -> None:
    base = {"EC_TOKEN_SECRET": GOOD_SECRET, "DATABASE_URL": "sqlite:///x.db"}
    assert load_settings(base).request_body_timeout_seconds == 30
    assert load_settings({**base, "EC_REQUEST_BODY_TIMEOUT_SECONDS": "5"}) \
        .request_body_timeout_seconds == 5
    with pytest.raises(ConfigError, match="EC_REQUEST_BODY_TIMEOUT_SECONDS"):
        load_settings({**base, "EC_REQUEST_BODY_TIMEOUT_SECONDS": "0"})


def test_the_408_is_rendered_in_the_api_error_shape(embedded: Any) -> None:
    from flask import request

    from api.serving import BodyTimeout

    class Expiring:
        def read(self, *_: Any) -> bytes:
            raise BodyTimeout("the request body did not arrive within 30 s")

        readline = read

    headers = {"Authorization": f"Bearer {mint('acme')}", "X-TWC-Tenant": "acme"}
    with embedded.test_request_context():
        assert request  # the app builds; the answer comes from its own error handlers
    resp = embedded.test_client().post(
        "/api/v1/events", headers=headers, content_type="application/json",
        environ_overrides={"wsgi.input": Expiring(), "CONTENT_LENGTH": "100"})
    assert resp.status_code == 408
    assert resp.get_json() == {"error": {"code": "request_timeout", "message":
                                         "the request body did not arrive within 30 s",
                                         "details": []}}


# --- gunicorn: worker class, Procfile and config agree; gevent patches first -------------------

def _procfile_web_args(**env: str) -> Any:
    from gunicorn.config import Config

    out = subprocess.run(["bash", "-c", "printf '%s\\n' " + procfile_command("web")],
                         env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    argv = shlex.split(" ".join(a for a in out if a))
    assert argv[0] == "gunicorn"
    return Config().parser().parse_args(argv[1:])


def test_the_procfile_web_line_and_config_gunicorn_agree() -> None:
    import config.gunicorn as conf

    args = _procfile_web_args()
    assert args.worker_class == conf.worker_class == "api.serving.Worker"
    assert args.worker_connections == conf.worker_connections == 1000
    assert args.reuse_port is True and conf.reuse_port is True
    assert args.keepalive == conf.keepalive == 5
    assert args.threads is None  # WEB_THREADS is gone: a gevent worker has no thread pool
    assert _procfile_web_args(WEB_CONNECTIONS="250").worker_connections == 250


def test_the_worker_module_imports_no_database_or_redis_client() -> None:
    # gunicorn's master imports the worker class and config/gunicorn.py before the fork; the
    # worker patches the standard library after it, so neither may import these.
    code = ("import sys, api.serving, config.gunicorn; print(sorted(m for m in "
            "('psycopg', 'sqlalchemy', 'redis', 'dramatiq', 'flask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_the_worker_refuses_a_psycopg_imported_before_patching() -> None:
    code = "import psycopg\nfrom api.serving import check_green\ncheck_green()\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "imported before gevent patched" in out.stderr


# --- what the logs never hold ------------------------------------------------------------------

def test_the_access_log_holds_no_query_string_referer_or_user(tmp_path: Path) -> None:
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    import config.gunicorn as conf

    # Given gunicorn's access logger with the web's format
    cfg = Config()
    cfg.set("access_log_format", conf.access_log_format)
    cfg.set("accesslog", str(tmp_path / "access.log"))
    logger = Logger(cfg)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/api/v1/events?access_token=QSECRET",
               "PATH_INFO": "/api/v1/events", "QUERY_STRING": "access_token=QSECRET",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
               "HTTP_REFERER": "https://shop.example/cart?token=RSECRET",
               "HTTP_USER_AGENT": "connector/1.0",
               "HTTP_AUTHORIZATION": "Basic dXNlcm5hbWVTRUNSRVQ6cHc="}

    class Resp:
        status, sent, headers = "200 OK", 15, [("Content-Type", "application/json")]

    # When a request with a token in its query string and a Referer is logged
    logger.access(Resp(), [("REFERER", environ["HTTP_REFERER"])], environ,
                  timedelta(milliseconds=3))
    for h in logger.access_log.handlers:
        h.flush()
    line = (tmp_path / "access.log").read_text()
    # Then the line has the method, path, status and user agent, and none of those
    assert '"GET /api/v1/events HTTP/1.1" 200 15 3ms "connector/1.0"' in line
    for leaked in ("QSECRET", "RSECRET", "access_token", "shop.example", "usernameSECRET"):
        assert leaked not in line


def test_the_apps_request_log_holds_no_query_string(acme: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="eventcollector.http"):
        acme.client.get("/api/v1/events?access_token=QSECRET",
                        headers=acme.headers(Referer="https://r/RSECRET"))
    lines = [r.getMessage() + json.dumps({k: str(v) for k, v in r.__dict__.items()})
             for r in caplog.records if r.name == "eventcollector.http"]
    assert lines and all("QSECRET" not in x and "RSECRET" not in x for x in lines)


def test_the_gunicorn_error_log_names_the_path_without_its_query_string() -> None:
    from gunicorn.config import Config

    from api.serving import Worker

    # Given a worker whose application failed on a request with a token in its query string
    logged: list[str] = []

    class Log:
        def exception(self, msg: str, *args: Any) -> None:
            logged.append(msg % args)

        warning = debug = info = error = exception

        def access(self, *_: Any) -> None:
            pass

    worker = Worker.__new__(Worker)
    worker.cfg, worker.log = Config(), Log()

    from gunicorn.http.parser import RequestParser

    req = next(RequestParser(worker.cfg, iter([
        b"GET /api/v1/events?access_token=QSECRET HTTP/1.1\r\nHost: x\r\n\r\n"]),
        ("127.0.0.1", 1)))
    a, b = socket.socketpair()
    try:
        worker.handle_error(req, a, ("127.0.0.1", 1), RuntimeError("boom"))
    finally:
        a.close()
        b.close()
    # Then its log line names the path only
    assert logged and all("QSECRET" not in x for x in logged)
    assert any("/api/v1/events" in x for x in logged)


def test_sql_errors_never_carry_the_statements_values(tmp_path: Path) -> None:
    from sqlalchemy import text

    from infra.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v TEXT UNIQUE)"))
        conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": MARK})
    with pytest.raises(Exception) as caught, engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": MARK})
    assert MARK not in str(caught.value) and "hide_parameters" in str(caught.value)
    engine.dispose()


def test_a_failed_persist_logs_neither_event_bodies_nor_sql_parameters(embedded: Any) -> None:
    from config.logging import JsonFormatter, MessageBodyFilter

    # Given the persist pool logging through the processes' JSON handler, and a database that
    # cannot take the insert (its events table is gone: an OperationalError, retried)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(MessageBodyFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    runtime = embedded.extensions["ec.runtime"]
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE events RENAME TO events_gone")
    try:
        # When an event whose body carries a marker is accepted and the persist actor fails
        event = order_event(id="marked-1")
        event["event_payload"]["key_attributes"]["referenceId"] = MARK  # correlationId is logged
        headers = {"Authorization": f"Bearer {mint('acme')}", "X-TWC-Tenant": "acme"}
        assert embedded.test_client().post("/api/v1/events", json=event,
                                           headers=headers).status_code == 201
        deadline = time.monotonic() + 20
        while "Failed to process message" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        root.removeHandler(handler)
        with runtime.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE events_gone RENAME TO events")
    text_out = out.getvalue()
    failures = [json.loads(x) for x in text_out.splitlines() if "Failed to process" in x]
    # Then Dramatiq's failure line names the actor and message id, with the SQL error whose
    # parameters are hidden, and nowhere the event's body
    assert failures, text_out[-2000:]
    assert "persist_events[" in failures[0]["msg"] and "no such table" in failures[0]["exc"]
    assert "hidden due to hide_parameters" in failures[0]["exc"]
    assert MARK not in text_out
    drain(embedded)  # the retried message is stored now that the table is back


# --- /metrics ----------------------------------------------------------------------------------

METRICS_TOKEN = "metrics-" + "m" * 24


@pytest.fixture
def metered(tmp_path: Path) -> Any:
    from api.app import create_app
    from config.runtime import build_runtime
    from infra.db import upgrade

    settings = make_settings(f"sqlite:///{tmp_path / 'm.db'}", metrics_token=METRICS_TOKEN)
    upgrade(settings.database_url)
    runtime = build_runtime(settings)
    yield create_app(runtime=runtime).test_client()
    runtime.close()


def test_metrics_are_not_served_without_a_metrics_token(acme: Any) -> None:
    resp = acme.client.get("/metrics")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    # not even with a tenant's own valid access token
    assert acme.get("/metrics").status_code == 404


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer wrong-token-of-the-same-len", f"Basic {METRICS_TOKEN}",
    f"Bearer {METRICS_TOKEN}x", f"Bearer {METRICS_TOKEN[:-1]}"])
def test_metrics_need_the_metrics_bearer_token(metered: Any, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = metered.get("/metrics", headers=headers)
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthorized"
    assert "ec_http_requests_total" not in resp.get_data(as_text=True)


def test_metrics_answer_with_the_metrics_token(metered: Any) -> None:
    resp = metered.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert resp.status_code == 200 and "ec_http_requests_total" in resp.get_data(as_text=True)


def test_the_metrics_token_setting_is_validated_and_never_shown() -> None:
    base = {"EC_TOKEN_SECRET": GOOD_SECRET, "DATABASE_URL": "sqlite:///x.db"}
    assert load_settings(base).metrics_token is None
    settings = load_settings({**base, "EC_METRICS_TOKEN": METRICS_TOKEN})
    assert settings.metrics_token == METRICS_TOKEN and METRICS_TOKEN not in repr(settings)
    with pytest.raises(ConfigError, match="EC_METRICS_TOKEN"):
        load_settings({**base, "EC_METRICS_TOKEN": "short"})


def test_the_pools_exporters_bind_loopback_unless_told_otherwise() -> None:
    from tests.support.env import _procfile_env

    for pool in ("persist", "deliver", "notify"):
        assert _procfile_env(pool)["dramatiq_prom_host"] == "127.0.0.1"
    assert _procfile_env("deliver", dramatiq_prom_host="0.0.0.0")["dramatiq_prom_host"] == \
        "0.0.0.0"


def test_the_openapi_document_lists_the_408_on_every_operation_that_takes_a_body() -> None:
    from api.openapi import build_spec

    spec = build_spec()
    with_body = [(path, method, op) for path, methods in spec["paths"].items()
                 for method, op in methods.items() if "requestBody" in op]
    assert len(with_body) >= 8
    for path, method, op in with_body:
        assert "408" in op["responses"], (method, path)
    token = spec["paths"]["/api/v1/auth/token"]["post"]["responses"]["408"]
    assert token["content"]["application/json"]["schema"]["$ref"].endswith("/OAuthError")
