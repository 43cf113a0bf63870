"""Revocation across two real web processes (the Procfile's ``web``) on one PostgreSQL and
Redis: a token revoked with the CLI is refused by both within the 30 s bound, despite each
process's cache of verified tokens."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from cli.main import main as cli
from tests.conftest import SECRET, free_port
from tests.support.procs import Proc, procfile_command, wait_http

pytestmark = pytest.mark.integration
BOUND = 30.0


@pytest.fixture
def two_webs(pg_url: str, redis_url: str, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Any:
    env = {"DATABASE_URL": pg_url.replace("postgresql+psycopg://", "postgres://"),
           "REDIS_URL": redis_url, "EC_TOKEN_SECRET": SECRET, "WEB_BIND": "127.0.0.1",
           "WEB_CONCURRENCY": "2", "LOG_LEVEL": "WARNING"}
    for name, value in env.items():  # the CLI below speaks to the same database and Redis
        monkeypatch.setenv(name, value)
    bases, procs = [], []
    try:
        for i in range(2):
            port = free_port()
            proc = Proc(f"web{i}", procfile_command("web"), {**env, "PORT": str(port)}, tmp_path)
            procs.append(proc)
            bases.append(f"http://127.0.0.1:{port}")
        for base, proc in zip(bases, procs, strict=True):
            wait_http(base + "/healthz", proc)
        yield bases
    finally:
        for proc in procs:
            proc.stop()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli(list(argv)) == 0
    return capsys.readouterr().out


def _get(base: str, token: str) -> requests.Response:
    return requests.get(base + "/api/v1/events", timeout=10,
                        headers={"Authorization": f"Bearer {token}", "X-TWC-Tenant": "rev"})


def _all_answer(bases: list[str], token: str, status: int) -> None:
    """Poll every web process (several requests each: gunicorn has two workers per process)
    until all answer ``status``; the 30 s bound is the timeout."""
    deadline = time.monotonic() + BOUND
    while True:
        codes = [_get(base, token).status_code for base in bases for _ in range(6)]
        if set(codes) == {status}:
            return
        assert time.monotonic() < deadline, codes
        time.sleep(0.25)


def test_revocations_bite_on_every_web_process_within_the_bound(
        two_webs: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    bases = two_webs
    creds = json.loads(_cli(capsys, "tenant", "create", "rev", "--json"))
    answer = requests.post(bases[0] + "/api/v1/auth/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": creds["client_id"],
        "client_secret": creds["client_secret"]}).json()
    token = answer["access_token"]
    operator = _cli(capsys, "token", "--tenant", "rev").strip()
    # Given both tokens accepted (and cached as verified) by every worker of both processes
    _all_answer(bases, token, 200)
    _all_answer(bases, operator, 200)
    # When the tenant is disabled, both refuse both tokens 403 tenant_disabled
    _cli(capsys, "tenant", "disable", "rev")
    _all_answer(bases, token, 403)
    assert _get(bases[1], token).json()["error"]["code"] == "tenant_disabled"
    _all_answer(bases, operator, 403)
    # And once enabled, both accept them again
    _cli(capsys, "tenant", "enable", "rev")
    _all_answer(bases, token, 200)
    # When the client's secret is rotated, its earlier token is refused 401 by both
    _cli(capsys, "client", "rotate", creds["client_id"], "--json")
    _all_answer(bases, token, 401)
    body = _get(bases[0], token).json()
    assert body["error"]["code"] == "unauthorized" and "revoked" in body["error"]["message"]
    # When every operator token is revoked, the operator token is refused by both
    _cli(capsys, "token", "revoke", "--all")
    _all_answer(bases, operator, 401)
    # And a new operator token is accepted
    _all_answer(bases, _cli(capsys, "token", "--tenant", "rev").strip(), 200)


def test_migration_0008_on_postgresql(pg_url: str) -> None:
    # The session's database was migrated to head (0008 included): the new columns and tables
    url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = "
            "'api_clients'")}
        assert {"revoked_at", "rotated_at", "generation"} <= columns
        assert conn.execute("SELECT column_default FROM information_schema.columns WHERE "
                            "table_name = 'api_clients' AND column_name = 'generation'"
                            ).fetchone()[0] == "0"
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        assert {"revoked_tokens", "revocation_counters"} <= tables
