"""Revocation (issue 13): disabled tenants, revoked and rotated clients, revoked tokens, the
operator generation, the token lifetime bound, and what a disabled tenant's events, deliveries
and jobs do. On the embedded default (SQLite) with the CLI, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import select, text

from cli.main import main
from config.settings import ConfigError, load_settings
from tenants.auth import Principal
from tenants.revocation import Snapshot, TenantDisabled, TokenRevoked
from tests.conftest import free_port, order_event

BOUND = 30.0  # the promise: a revocation bites within 30 s on every web process


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("DATABASE_URL", "REDIS_URL", "EC_TOKEN_SECRET", "EC_DATA_DIR", "PORT",
                 "EC_TOKEN_MAX_TTL_SECONDS", "EC_TOKEN_TTL_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EC_REVOCATION_CHECK_SECONDS", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def app(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """The embedded app built from the same environment as the CLI (tenant ``shop`` exists)."""
    from api.app import create_app

    assert run(capsys, "tenant", "create", "shop", "--json")[0] == 0
    application: Any = create_app()
    application.testing = True
    try:
        yield application
    finally:
        application.extensions["ec.runtime"].close()


def token_for(app: Any, client_id: str, secret: str, **extra: str) -> Any:
    return app.test_client().post("/api/v1/auth/token", data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
        **extra})


def get_events(app: Any, token: str, tenant: str = "shop") -> Any:
    return app.test_client().get("/api/v1/events", headers={
        "Authorization": f"Bearer {token}", "X-TWC-Tenant": tenant})


def until_status(app: Any, token: str, status: int) -> dict[str, Any]:
    """Poll until a request with ``token`` is answered ``status`` (at most BOUND seconds)."""
    deadline = time.monotonic() + BOUND
    while True:
        resp = get_events(app, token)
        if resp.status_code == status:
            return resp.get_json() or {}
        assert time.monotonic() < deadline, (resp.status_code, resp.get_data(as_text=True))
        time.sleep(0.05)


def assert_shape(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code


def show(capsys: pytest.CaptureFixture[str], tenant: str) -> dict[str, Any]:
    code, out, _ = run(capsys, "tenant", "show", tenant, "--json")
    assert code == 0
    return json.loads(out)  # type: ignore[no-any-return]


# --- the check itself -------------------------------------------------------------------------

def _p(client: str = "ec_1", tenant: str = "shop", gen: int = 0, jti: str = "j") -> Principal:
    return Principal(tenant=tenant, client_id=client, scopes=frozenset(), jti=jti,
                     generation=gen)


def test_the_snapshot_refuses_what_is_revoked_and_nothing_else() -> None:
    snap = Snapshot(epoch=1, disabled=frozenset({"off"}), clients={"ec_rot": (2, True),
                    "ec_gone": (0, False)}, jtis=frozenset({"bad"}), operator_generation=3)
    snap.check(_p())  # an untouched client
    snap.check(_p("ec_rot", gen=2))  # issued after the rotation
    snap.check(_p("cli:operator", gen=3))
    for principal, error in [(_p(tenant="off"), TenantDisabled), (_p(jti="bad"), TokenRevoked),
                             (_p("ec_rot", gen=1), TokenRevoked), (_p("ec_gone"), TokenRevoked),
                             (_p("cli:operator", gen=2), TokenRevoked),
                             (_p("cli:dev", gen=0), TokenRevoked)]:
        with pytest.raises(error):
            snap.check(principal)


# --- clients ------------------------------------------------------------------------------------

def test_rotating_a_client_stops_its_old_secret_and_its_earlier_tokens(
        app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a client of shop and a token it obtained, used once (so it is in the verified cache)
    code, out, _ = run(capsys, "client", "create", "shop", "--json")
    assert code == 0
    old = json.loads(out)
    assert old["tenant"] == "shop" and old["client_secret"]
    token = token_for(app, old["client_id"], old["client_secret"]).get_json()["access_token"]
    assert get_events(app, token).status_code == 200
    # When the operator rotates it
    code, out, _ = run(capsys, "client", "rotate", old["client_id"], "--json")
    assert code == 0
    new = json.loads(out)
    assert new["client_id"] == old["client_id"] and new["client_secret"] != old["client_secret"]
    # Then the earlier token is refused with a 401 in the API's error shape within the bound
    body = until_status(app, token, 401)
    assert_shape(body, "unauthorized")
    assert "revoked" in body["error"]["message"]
    # And the old secret gets no token, the new one does, and that token works
    assert token_for(app, old["client_id"], old["client_secret"]).status_code == 401
    fresh = token_for(app, new["client_id"], new["client_secret"]).get_json()["access_token"]
    assert get_events(app, fresh).status_code == 200


def test_a_revoked_client_is_refused_and_its_tenant_can_be_given_a_new_one(
        app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # Given shop's only client (from tenant create, made by the fixture) and its token
    [only] = show(capsys, "shop")["clients"]
    code, out, _ = run(capsys, "client", "rotate", only["clientId"], "--json")
    creds = json.loads(out)
    token = token_for(app, creds["client_id"], creds["client_secret"]).get_json()["access_token"]
    assert get_events(app, token).status_code == 200
    # When it is revoked
    code, out, _ = run(capsys, "client", "revoke", creds["client_id"])
    assert code == 0 and "revoked" in out
    # Then its token is refused within the bound and its secret gets no new token
    assert_shape(until_status(app, token, 401), "unauthorized")
    assert token_for(app, creds["client_id"], creds["client_secret"]).status_code == 401
    # And it cannot be rotated back to life; an unknown client is exit 1
    assert run(capsys, "client", "rotate", creds["client_id"])[0] == 1
    assert run(capsys, "client", "revoke", "ec_unknown")[0] == 1
    # And the tenant can be given a new client, which works
    code, out, _ = run(capsys, "client", "create", "shop", "--json")
    assert code == 0
    new = json.loads(out)
    fresh = token_for(app, new["client_id"], new["client_secret"]).get_json()["access_token"]
    assert get_events(app, fresh).status_code == 200
    # And tenant show lists both clients with their state and never a secret
    code, out, _ = run(capsys, "tenant", "show", "shop", "--json")
    report = json.loads(out)
    states = {c["clientId"]: c["state"] for c in report["clients"]}
    assert states == {creds["client_id"]: "revoked", new["client_id"]: "active"}
    assert report["disabled"] is False
    assert creds["client_secret"] not in out and new["client_secret"] not in out
    assert "scrypt" not in out
    code, out, _ = run(capsys, "tenant", "show", "shop")
    assert f"{creds['client_id']}  revoked" in out and f"{new['client_id']}  active" in out
    assert "state:                enabled" in out
    # And a client for an unknown tenant is exit 1
    assert run(capsys, "client", "create", "nobody")[0] == 1


# --- tenants ------------------------------------------------------------------------------------

def test_a_disabled_tenant_is_refused_403_until_enabled(
        app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    [client] = show(capsys, "shop")["clients"]
    creds = json.loads(run(capsys, "client", "rotate", client["clientId"], "--json")[1])
    token = token_for(app, creds["client_id"], creds["client_secret"]).get_json()["access_token"]
    operator = run(capsys, "token", "--tenant", "shop")[1].strip()
    assert get_events(app, token).status_code == 200 and get_events(app, operator).status_code == 200
    # When the tenant is disabled
    code, out, _ = run(capsys, "tenant", "disable", "shop")
    assert code == 0 and "disabled" in out
    # Then its client's and operator tokens are refused 403 tenant_disabled within the bound
    assert_shape(until_status(app, token, 403), "tenant_disabled")
    assert_shape(until_status(app, operator, 403), "tenant_disabled")
    # And its client gets no new token
    resp = token_for(app, creds["client_id"], creds["client_secret"])
    assert resp.status_code == 403
    assert resp.get_json()["error"] == "unauthorized_client"  # the OAuth form (RFC 6749 5.2)
    assert "disabled" in resp.get_json()["error_description"]
    report = show(capsys, "shop")
    assert report["disabled"] is True and report["disabledAt"]
    # And once enabled again, the same tokens work
    assert run(capsys, "tenant", "enable", "shop")[0] == 0
    until_status(app, token, 200)
    until_status(app, operator, 200)
    assert show(capsys, "shop")["disabled"] is False
    # And an unknown tenant is exit 1
    assert run(capsys, "tenant", "disable", "nobody")[0] == 1


# --- operator tokens ----------------------------------------------------------------------------

def test_an_operator_token_is_revoked_by_its_jti_and_all_at_once(
        app: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, first, err = run(capsys, "token", "--tenant", "shop")
    first = first.strip()
    jti = jwt.decode(first, options={"verify_signature": False})["jti"]
    assert code == 0 and f"jti {jti}" in err
    second = run(capsys, "token", "--tenant", "shop")[1].strip()
    assert get_events(app, first).status_code == 200 and get_events(app, second).status_code == 200
    # When the first is revoked by its jti
    code, out, _ = run(capsys, "token", "revoke", jti)
    assert code == 0
    # Then it is refused within the bound, and the second still works
    assert_shape(until_status(app, first, 401), "unauthorized")
    assert get_events(app, second).status_code == 200
    # When every operator token is revoked
    assert run(capsys, "token", "revoke", "--all")[0] == 0
    # Then the second is refused too, and a token minted afterwards works
    assert_shape(until_status(app, second, 401), "unauthorized")
    third = run(capsys, "token", "--tenant", "shop")[1].strip()
    assert get_events(app, third).status_code == 200
    # And a client's token is not an operator token: --all leaves it alone
    [client] = show(capsys, "shop")["clients"]
    creds = json.loads(run(capsys, "client", "rotate", client["clientId"], "--json")[1])
    token = token_for(app, creds["client_id"], creds["client_secret"]).get_json()["access_token"]
    assert run(capsys, "token", "revoke", "--all")[0] == 0
    until_status(app, third, 401)
    assert get_events(app, token).status_code == 200
    # And revoke needs exactly one of a JTI and --all
    assert run(capsys, "token", "revoke")[0] == 2
    assert run(capsys, "token", "revoke", "x", "--all")[0] == 2


# --- token lifetime -----------------------------------------------------------------------------

def _exp(token: str) -> int:
    claims = jwt.decode(token, options={"verify_signature": False})
    return int(claims["exp"] - claims["iat"])


def test_the_token_endpoint_never_issues_more_than_the_maximum(
        data_dir: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from api.app import create_app

    monkeypatch.setenv("EC_TOKEN_MAX_TTL_SECONDS", "600")
    creds = json.loads(run(capsys, "tenant", "create", "shop", "--json")[1])
    application: Any = create_app()
    try:
        # A client asking for no lifetime gets EC_TOKEN_TTL_SECONDS (default capped at the max)
        body = token_for(application, creds["client_id"], creds["client_secret"]).get_json()
        assert body["expires_in"] == 600 and _exp(body["access_token"]) == 600
        # One asking for more than the maximum gets the maximum; less, what it asked
        for asked, granted in (("100000", 600), ("99999999999999999999", 600), ("120", 120)):
            body = token_for(application, creds["client_id"], creds["client_secret"],
                             expires_in=asked).get_json()
            assert (body["expires_in"], _exp(body["access_token"])) == (granted, granted)
        # A malformed lifetime is a 400 naming the field
        for bad in ("ten", "59", "-5", "١٢٠"):
            resp = token_for(application, creds["client_id"], creds["client_secret"],
                             expires_in=bad)
            assert resp.status_code == 400
            assert resp.get_json()["error"] == "invalid_request"
            assert "expires_in" in resp.get_json()["error_description"]
    finally:
        application.extensions["ec.runtime"].close()


def test_cli_token_ttl_above_the_maximum_is_exit_2(
        data_dir: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(capsys, "tenant", "create", "shop")[0] == 0
    code, out, err = run(capsys, "token", "--tenant", "shop", "--ttl", "86401")
    assert (code, out) == (2, "") and "EC_TOKEN_MAX_TTL_SECONDS" in err
    assert _exp(run(capsys, "token", "--tenant", "shop", "--ttl", "86400")[1].strip()) == 86400
    monkeypatch.setenv("EC_TOKEN_MAX_TTL_SECONDS", "300")
    assert run(capsys, "token", "--tenant", "shop", "--ttl", "301")[0] == 2
    assert _exp(run(capsys, "token", "--tenant", "shop")[1].strip()) == 300
    assert run(capsys, "token")[0] == 2  # --tenant is required to mint


def test_a_ttl_above_the_maximum_is_a_configuration_error(data_dir: Path) -> None:
    base = {"EC_DATA_DIR": str(data_dir)}
    with pytest.raises(ConfigError, match="EC_TOKEN_MAX_TTL_SECONDS"):
        load_settings({**base, "EC_TOKEN_TTL_SECONDS": "7200", "EC_TOKEN_MAX_TTL_SECONDS": "3600"})
    with pytest.raises(ConfigError, match="EC_REVOCATION_CHECK_SECONDS"):
        load_settings({**base, "EC_REVOCATION_CHECK_SECONDS": "31"})


def test_the_dev_token_is_bounded_by_the_maximum(data_dir: Path) -> None:
    # Given eventcollector dev started with a 10-minute maximum token lifetime
    port = free_port()
    env = {**os.environ, "EC_TOKEN_MAX_TTL_SECONDS": "600", "EC_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "dev", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout is not None
        token = None
        for line in proc.stdout:  # it prints the token once it is listening
            if line.startswith("export TOKEN="):
                token = line.strip().split("=", 1)[1]
                break
        # Then the token it prints lives 600 s, not 24 h
        assert token is not None
        assert _exp(token) == 600
    finally:
        proc.terminate()
        proc.wait(30)


# --- what a disabled tenant's events, deliveries and jobs do -------------------------------------

def _sessions(app: Any) -> Any:
    return app.extensions["ec.runtime"].sessions


def test_events_accepted_before_the_tenant_was_disabled_are_still_stored(
        template_db: Path, tmp_path: Path) -> None:
    from events.contract import EventIn
    from events.service import prepare
    from infra.broker.queues import PERSIST_ACTOR
    from tenants.revocation import disable_tenant
    from tests.support.apps import copy_db, stub_app
    from tests.support.subscriptions import create, sqs_body

    with stub_app(copy_db(template_db, tmp_path)) as app:
        from tests.conftest import Caller, mint

        acme = Caller(app.test_client(), "acme", mint("acme"))
        runtime = app.extensions["ec.runtime"]
        stub = runtime.senders["SQS"]
        create(acme, sqs_body())
        # Given an event answered 201 (the persist message the intake enqueued with it)...
        document = prepare(EventIn.model_validate(order_event(id="evt-before")),
                           datetime.now(UTC)).document
        # ... and the tenant disabled before the persist pool took it
        with runtime.sessions() as session:
            assert disable_tenant(session, "acme")
            session.commit()
        runtime.broker.get_actor(PERSIST_ACTOR).send("acme", [document])
        # Then the event is stored and its delivery recorded
        from events.models import EventRecord
        from subscriptions.models import Delivery

        def delivery() -> Any:
            with runtime.sessions() as session:
                return session.execute(select(Delivery).where(
                    Delivery.event_id == "evt-before")).scalar_one_or_none()

        deadline = time.monotonic() + 10
        while (row := delivery()) is None or row.next_attempt_at is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with runtime.sessions() as session:
            assert session.execute(select(EventRecord.event_id).where(
                EventRecord.tenant == "acme")).scalars().all() == ["evt-before"]
        # But the delivery is paused: nothing sent, no attempt counted, due again in a minute
        assert stub.sent == []
        assert (row.status, row.attempts) == ("pending", 0)
        due = row.next_attempt_at.replace(tzinfo=UTC)
        assert due > datetime.now(UTC) + timedelta(seconds=30)
        # When the tenant is enabled (the CLI enqueues what resume_paused returns)
        from infra.broker.dispatch import enqueue_deliveries
        from subscriptions.deliveries import resume_paused
        from tenants.revocation import enable_tenant

        with runtime.sessions() as session:
            assert enable_tenant(session, "acme")
            ids = resume_paused(session, "acme")
            session.commit()
        assert ids == [row.id]
        enqueue_deliveries(runtime.broker, ids)
        # Then it is delivered, on its first counted attempt
        deadline = time.monotonic() + 10
        while (row := delivery()).status != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert row.attempts == 1
        assert [m.attributes["event_id"] for _, m in stub.sent] == ["evt-before"]


def test_a_disabled_tenants_jobs_do_not_fire_until_it_is_enabled(embedded: Any) -> None:
    from jobs.contract import JobIn
    from jobs.mailers.stub import StubMailer
    from jobs.models import JobRun
    from jobs.notifications import run_notifications
    from jobs.repository import create_job, run_now, tick
    from tenants.revocation import disable_tenant, enable_tenant

    sessions = _sessions(embedded)
    with sessions() as session:
        job = create_job(session, "acme", JobIn.model_validate({
            "notification": "REMINDER", "schedule": "* * * * *", "template_id": "d-1"}))
        job_pk = job.pk
        manual = run_now(session, job)
        assert disable_tenant(session, "acme")
        session.commit()
    later = datetime.now(UTC) + timedelta(minutes=5)
    # When the scheduler ticks while acme is disabled, its due job does not fire
    with sessions() as session:
        assert tick(session, later).fired == []
        session.commit()
    # And a run already queued is cancelled by the notify pool without mailing
    mailer = StubMailer()
    status = run_notifications(sessions, manual, mailer=mailer, schedule_retry=lambda s: None)
    assert status == "cancelled" and mailer.requests == []
    with sessions() as session:
        assert session.get(JobRun, manual).error == "tenant disabled"
    # When it is enabled again, the next tick fires it once (its missed slots coalesce)
    with sessions() as session:
        enable_tenant(session, "acme")
        session.commit()
    with sessions() as session:
        fired = tick(session, later).fired
        session.commit()
    assert len(fired) == 1
    with sessions() as session:
        assert session.get(JobRun, fired[0]).job_pk == job_pk


# --- migration ----------------------------------------------------------------------------------

def test_migration_0008_keeps_tenants_enabled_and_clients_at_generation_0(tmp_path: Path) -> None:
    from infra.db import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0007")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (name, created_at, subscriptions_version, "
                              "external_id) VALUES ('old', '2026-01-01', 0, 'ec-x')"))
            conn.execute(text("INSERT INTO api_clients (client_id, tenant, secret_hash, scopes, "
                              "active, created_at) VALUES ('ec_old', 'old', 'h', 'jobs', 1, "
                              "'2026-01-01')"))
        upgrade(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT disabled_at FROM tenants")).all() == [(None,)]
            assert conn.execute(text("SELECT generation, revoked_at, rotated_at FROM "
                                     "api_clients")).all() == [(0, None, None)]
            assert conn.execute(text("SELECT count(*) FROM revoked_tokens")).scalar() == 0
        from alembic import command
        from alembic.config import Config

        from infra.db import MIGRATIONS_DIR

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", url)
        command.downgrade(cfg, "0007")
        with engine.connect() as conn:
            assert "disabled_at" not in [r[1] for r in conn.execute(
                text("PRAGMA table_info(tenants)")).all()]
    finally:
        engine.dispose()
