"""Slow clients against the Procfile's real ``web`` command (gunicorn) on PostgreSQL and Redis.

A handful of connections trickling a body must not take the web process from everyone else;
a body that does not arrive in time is answered 408; psycopg, SQLAlchemy's pool and redis-py
yield to other greenlets while they wait (under gevent's patching, as in the worker)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import SECRET, free_port, make_settings, mint, order_event
from tests.support.procs import ROOT, Proc, procfile_command, wait_http

pytestmark = pytest.mark.integration

TRICKLERS = 50
ORDINARY = 100
CLIENT_TIMEOUT = 5.0


def _tenants(pg_url: str, redis_url: str, *names: str) -> None:
    from config.runtime import build_runtime
    from tenants.auth import create_tenant, tenant_exists

    runtime = build_runtime(make_settings(pg_url, redis_url))
    try:
        with runtime.sessions() as session:
            for name in names:
                if not tenant_exists(session, name):
                    create_tenant(session, name)
            session.commit()
    finally:
        runtime.close()


def _start_web(pg_url: str, redis_url: str, tmp_path: Path, **env: str) -> tuple[str, int, Proc]:
    port = free_port()
    full = {"DATABASE_URL": pg_url.replace("postgresql+psycopg://", "postgres://"),
            "REDIS_URL": redis_url, "EC_TOKEN_SECRET": SECRET, "PORT": str(port),
            "WEB_BIND": "127.0.0.1", "LOG_LEVEL": "WARNING",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), **env}
    web = Proc("web", procfile_command("web"), full, tmp_path)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz", web)
    return base, port, web


@pytest.fixture
def web(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[str, int, Proc]]:
    _tenants(pg_url, redis_url, "fair-slow", "fair-ok")
    base, port, proc = _start_web(pg_url, redis_url, tmp_path)
    try:
        yield base, port, proc
    finally:
        assert proc.stop() is not None


def _post_head(port: int, tenant: str, length: int) -> bytes:
    return (f"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {mint(tenant)}\r\nX-TWC-Tenant: {tenant}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


class Tricklers:
    """``n`` connections that send their headers at once, then their body at 1 byte/s."""

    def __init__(self, port: int, n: int, tenant: str) -> None:
        body = json.dumps(order_event()).encode()
        self.socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(_post_head(port, tenant, len(body)))
            self.socks.append(s)
        self.sent = 0
        self.broken = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(body,), daemon=True)
        self._thread.start()

    def _run(self, body: bytes) -> None:
        i = 0
        while not self._stop.wait(1.0) and i < len(body) - 1:  # never the last byte
            for s in self.socks:
                try:
                    s.sendall(body[i:i + 1])
                except OSError:
                    self.broken += 1
            i += 1
            self.sent = i

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for s in self.socks:
            s.close()


def test_fifty_trickling_connections_do_not_delay_anyone_else(web: tuple[str, int, Proc]) -> None:
    base, port, proc = web
    # Given 50 connections of one tenant trickling a body at 1 byte/s into the Procfile's web
    trickle = Tricklers(port, TRICKLERS, "fair-slow")
    try:
        while trickle.sent < 2:  # every connection is in its body (holding a thread, on gthread)
            time.sleep(0.1)
        # When 100 ordinary requests arrive meanwhile: health checks, readiness (PostgreSQL)
        # and another tenant's authenticated POSTs, four at a time
        ok_headers = {"Authorization": f"Bearer {mint('fair-ok')}", "X-TWC-Tenant": "fair-ok"}

        def call(i: int) -> tuple[str, int | str]:
            try:
                if i % 2:
                    r = requests.post(base + "/api/v1/events", headers=ok_headers,
                                      json=order_event(id=f"fair-{i}"), timeout=CLIENT_TIMEOUT)
                    return "post", r.status_code
                path = "/readyz" if i % 10 == 0 else "/healthz"
                return path, requests.get(base + path, timeout=CLIENT_TIMEOUT).status_code
            except requests.RequestException as exc:
                return "error", type(exc).__name__

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(call, range(ORDINARY)))
        # Then every one of them was answered within the client's 5-second timeout
        bad = [a for a in answers if a[1] not in (200, 201)]
        assert not bad, (bad[:10], proc.log()[-2000:])
        assert sum(1 for a in answers if a == ("post", 201)) == ORDINARY // 2
        # And the trickling connections are all still open (not yet past their body deadline)
        assert trickle.broken == 0
    finally:
        trickle.close()
    assert proc.alive()


def _read_until_closed(s: socket.socket) -> bytes:
    s.settimeout(30)  # a bound, not an assertion: the server closes well before
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_a_body_past_its_deadline_is_answered_408_and_headers_past_keep_alive_are_dropped(
        pg_url: str, redis_url: str, tmp_path: Path) -> None:
    _tenants(pg_url, redis_url, "fair-slow")
    base, port, proc = _start_web(pg_url, redis_url, tmp_path,
                                  EC_REQUEST_BODY_TIMEOUT_SECONDS="1")
    try:
        # Given a POST whose headers arrive but whose body stops after a few bytes
        body = json.dumps(order_event(id="late-body")).encode()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(_post_head(port, "fair-slow", len(body)) + body[:5])
            # Then the answer is a 408 in the API's error shape, and the connection is closed
            raw = _read_until_closed(s)
        head, _, payload = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), raw[:300]
        assert b"connection: close" in head.lower()
        error = json.loads(payload)["error"]
        assert error["code"] == "request_timeout" and "1 s" in error["message"]
        assert error["details"] == []
        # And a connection that never finishes its headers is closed without an answer
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            assert _read_until_closed(s) == b""
        # And the event was not accepted
        r = requests.get(base + "/api/v1/events/late-body", timeout=5, headers={
            "Authorization": f"Bearer {mint('fair-slow')}", "X-TWC-Tenant": "fair-slow"})
        assert r.status_code == 404
        assert proc.alive()
    finally:
        assert proc.stop() is not None


GREEN_PROBE = textwrap.dedent("""
    import json, sys
    from gevent import monkey
    monkey.patch_all()
    import gevent
    from sqlalchemy import text
    from api.serving import check_green
    from config.runtime import build_runtime
    from config.settings import Settings

    check_green()
    import psycopg.waiting
    runtime = build_runtime(Settings(database_url=sys.argv[1], redis_url=sys.argv[2],
                                     token_secret="x" * 40))
    done = []

    def slow():
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(1.5)"))
        done.append("slow query")

    def quick():
        gevent.sleep(0.2)  # the slow query is waiting on PostgreSQL by now
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert runtime.intake.ping()
        runtime.redis_client.set("green-probe", "1")
        done.append("quick query and redis")

    gevent.joinall([gevent.spawn(slow), gevent.spawn(quick)], raise_error=True)
    print(json.dumps({"order": done, "wait": psycopg.waiting.wait.__name__}))
""")


def test_psycopg_sqlalchemy_and_redis_yield_to_other_greenlets_under_gevent(
        pg_url: str, redis_url: str) -> None:
    # Given the standard library patched by gevent, as in a web worker, then the runtime built
    out = subprocess.run([sys.executable, "-c", GREEN_PROBE, pg_url, redis_url], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Then psycopg waits with a patched (green) function, not the C one
    assert result["wait"] != "wait_c"
    # And while one greenlet waits on a slow PostgreSQL query, another one queries PostgreSQL
    # through the same engine's pool and talks to Redis, and finishes first
    assert result["order"] == ["quick query and redis", "slow query"]
