"""cli/main.py: ``eventcollector tenant create`` and ``eventcollector token`` on the embedded default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from tenants.auth import SCOPES, InvalidToken, authenticate_client, verify_token


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The embedded default in a fresh directory: no DATABASE_URL, REDIS_URL or secret."""
    for name in ("DATABASE_URL", "REDIS_URL", "EC_TOKEN_SECRET", "EC_DATA_DIR", "PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EC_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def secret_of(data_dir: Path) -> str:
    return (data_dir / "token_secret").read_text().strip()


def test_tenant_create_json_prints_one_object_with_usable_credentials(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a fresh embedded data directory
    # When a tenant is created with --json
    code, out, err = run(capsys, "tenant", "create", "shop", "--json")
    # Then it exits 0 and prints exactly one JSON object with the three fields
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    created = json.loads(lines[0])
    assert set(created) == {"tenant", "client_id", "client_secret"}
    assert created["tenant"] == "shop"
    assert created["client_id"].startswith("ec_")
    assert len(created["client_secret"]) >= 32
    # And the credentials authenticate against the database it created
    from infra.db import make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{data_dir / 'eventcollector.db'}")
    try:
        with make_session_factory(engine)() as session:
            client = authenticate_client(session, created["client_id"], created["client_secret"])
            assert client.tenant == "shop"
            assert client.secret_hash != created["client_secret"]
    finally:
        engine.dispose()


def test_tenant_create_without_json_prints_the_credentials(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a fresh data directory
    # When a tenant is created without --json
    code, out, _ = run(capsys, "tenant", "create", "shop")
    # Then the output names the tenant, the client id and the secret
    assert code == 0
    assert "shop" in out and "client_id:" in out and "client_secret:" in out


def test_creating_a_tenant_twice_exits_1(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given tenant shop exists
    assert run(capsys, "tenant", "create", "shop", "--json")[0] == 0
    # When it is created again
    code, out, err = run(capsys, "tenant", "create", "shop", "--json")
    # Then it exits 1 saying so, printing no credentials
    assert code == 1
    assert out == ""
    assert "already exists" in err


def test_an_invalid_tenant_name_exits_1(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a name with a space
    # When a tenant is created with it
    code, out, err = run(capsys, "tenant", "create", "my shop")
    # Then it exits 1 with a message
    assert (code, out) == (1, "")
    assert "tenant names" in err


def test_token_prints_a_jwt_the_secret_file_verifies(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given tenant shop
    assert run(capsys, "tenant", "create", "shop", "--json")[0] == 0
    # When a token is minted for it
    code, out, err = run(capsys, "token", "--tenant", "shop")
    # Then one JWT is printed that verifies with the embedded secret file
    assert code == 0, err
    token = out.strip()
    assert token.count(".") == 2 and "\n" not in token
    principal = verify_token(secret_of(data_dir), token)
    assert (principal.tenant, principal.client_id, principal.scopes) \
        == ("shop", "cli:operator", frozenset(SCOPES))
    # And not with another key
    with pytest.raises(InvalidToken):
        verify_token("another-secret-" + "z" * 32, token)


def test_token_scopes_can_be_narrowed(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given tenant shop
    assert run(capsys, "tenant", "create", "shop", "--json")[0] == 0
    # When a token is minted with --scope events:read --scope jobs
    code, out, _ = run(capsys, "token", "--tenant", "shop", "--scope", "events:read",
                       "--scope", "jobs")
    # Then it carries just those scopes
    assert code == 0
    assert verify_token(secret_of(data_dir), out.strip()).scopes == {"events:read", "jobs"}
    # And an unknown scope exits 1
    code, out, err = run(capsys, "token", "--tenant", "shop", "--scope", "admin")
    assert (code, out) == (1, "")
    assert "admin" in err


def test_token_for_an_unknown_tenant_exits_1(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a database holding tenant shop only
    assert run(capsys, "tenant", "create", "shop", "--json")[0] == 0
    # When a token is asked for tenant nope
    code, out, err = run(capsys, "token", "--tenant", "nope")
    # Then it exits 1 naming the tenant and prints no token
    assert (code, out) == (1, "")
    assert "nope" in err


def test_token_on_a_fresh_data_dir_exits_1(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a fresh data directory (no tenant created yet)
    # When a token is asked for tenant nope
    code, out, err = run(capsys, "token", "--tenant", "nope")
    # Then it exits 1 with a clear message
    assert (code, out) == (1, "")
    assert "nope" in err


def test_a_bad_environment_exits_2_naming_the_variable(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given DATABASE_URL with an unusable scheme
    monkeypatch.setenv("DATABASE_URL", "mysql://u@h/db")
    monkeypatch.setenv("EC_TOKEN_SECRET", "s" * 40)
    # When any command runs
    with pytest.raises(SystemExit) as info:
        main(["tenant", "create", "shop"])
    # Then it exits 2 naming DATABASE_URL
    assert info.value.code == 2
    assert "DATABASE_URL" in capsys.readouterr().err


def test_the_cli_and_the_api_share_the_secret(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given tenant shop and an operator token from the CLI
    assert run(capsys, "tenant", "create", "shop", "--json")[0] == 0
    token = run(capsys, "token", "--tenant", "shop")[1].strip()
    # When the embedded app built from the same environment serves a request with it
    from api.app import create_app

    app: Any = create_app()
    try:
        resp = app.test_client().get(
            "/api/v1/events", headers={"Authorization": f"Bearer {token}", "X-TWC-Tenant": "shop"})
    finally:
        app.extensions["ec.runtime"].close()
    # Then the token is accepted
    assert resp.status_code == 200
    assert resp.get_json()["total"] == 0


# --- tenant show / allow-platform-credentials / revoke-platform-credentials (issue 12) ---------

def _platform_subscription(data_dir: Path, tenant: str, sub_id: str, url: str) -> None:
    """A platform-credential subscription as the API would store it (the tenant is opted in)."""
    from cryptography.fernet import Fernet

    from infra.crypto import SecretBox
    from infra.db import make_engine, make_session_factory
    from subscriptions.contract import SubscriptionIn
    from subscriptions.repository import create_subscription

    body = {"id": sub_id, "entityType": "ORDER", "subscribeCreate": True, "destination": {
        "type": "SQS", "sqs": {"queueUrl": url, "credentials": "platform"}}}
    engine = make_engine(f"sqlite:///{data_dir / 'eventcollector.db'}")
    try:
        with make_session_factory(engine)() as session:
            create_subscription(session, tenant, SubscriptionIn.model_validate(body),
                                SecretBox(Fernet.generate_key().decode()))
            session.commit()
    finally:
        engine.dispose()


def test_tenant_show_prints_the_external_id_and_that_platform_credentials_are_not_allowed(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "tenant", "create", "shop", "--json")[0] == 0
    code, out, err = run(capsys, "tenant", "show", "shop", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["tenant"] == "shop" and shown["externalId"].startswith("ec-")
    assert shown["platformCredentials"] == {"allowed": False, "accounts": []}
    assert shown["deactivatedByPlatformRule"] == []
    code, text, _ = run(capsys, "tenant", "show", "shop")
    assert code == 0 and shown["externalId"] in text and "not allowed" in text
    # The ExternalId is the tenant's for good: shown the same every time
    assert json.loads(run(capsys, "tenant", "show", "shop", "--json")[1])["externalId"] \
        == shown["externalId"]


def test_allow_then_revoke_platform_credentials_and_show_lists_what_the_rule_deactivated(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "tenant", "create", "shop", "--json")[0] == 0
    # When an operator allows two accounts (comma-separated, and a repeated flag)
    code, out, err = run(capsys, "tenant", "allow-platform-credentials", "shop",
                         "--accounts", "123456789012,210987654321", "--accounts", "123456789012")
    assert code == 0, err
    assert "123456789012, 210987654321" in out
    shown = json.loads(run(capsys, "tenant", "show", "shop", "--json")[1])
    assert shown["platformCredentials"] == {"allowed": True,
                                            "accounts": ["123456789012", "210987654321"]}
    # And the tenant has a platform subscription in each account
    _platform_subscription(data_dir, "shop", "mine",
                           "https://sqs.us-east-1.amazonaws.com/123456789012/orders")
    _platform_subscription(data_dir, "shop", "other",
                           "https://sqs.us-east-1.amazonaws.com/210987654321/orders")
    # When one account is revoked
    code, out, err = run(capsys, "tenant", "revoke-platform-credentials", "shop",
                         "--accounts", "210987654321")
    assert code == 0, err
    assert "still allowed for AWS accounts 123456789012" in out and "other" in out
    # Then show lists the subscription the rule deactivated, with the reason
    shown = json.loads(run(capsys, "tenant", "show", "shop", "--json")[1])
    assert [(s["id"], s["reason"]) for s in shown["deactivatedByPlatformRule"]] == [
        ("other", "platform credentials are no longer allowed for this tenant: use keys or a role")]
    assert shown["subscriptions"]["platform"] == {"active": 1, "inactive": 1}
    # When the rest is revoked, the other one stops too and the tenant is not opted in any more
    code, out, _ = run(capsys, "tenant", "revoke-platform-credentials", "shop")
    assert code == 0 and "no longer allowed" in out and "mine" in out
    shown = json.loads(run(capsys, "tenant", "show", "shop", "--json")[1])
    assert shown["platformCredentials"] == {"allowed": False, "accounts": []}
    assert sorted(s["id"] for s in shown["deactivatedByPlatformRule"]) == ["mine", "other"]
    text = run(capsys, "tenant", "show", "shop")[1]
    assert "mine" in text and "no longer allowed" in text


@pytest.mark.parametrize("argv", [
    ("tenant", "allow-platform-credentials", "shop", "--accounts", "12345"),
    ("tenant", "allow-platform-credentials", "shop", "--accounts", "1234567890123"),
    ("tenant", "allow-platform-credentials", "shop", "--accounts", "123456789012,12345678901x"),
    ("tenant", "allow-platform-credentials", "shop", "--accounts", ","),
    ("tenant", "allow-platform-credentials", "ghost", "--accounts", "123456789012"),
    ("tenant", "revoke-platform-credentials", "ghost"),
    ("tenant", "show", "ghost"),
])
def test_bad_accounts_or_an_unknown_tenant_exit_1(
    data_dir: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    assert run(capsys, "tenant", "create", "shop", "--json")[0] == 0
    code, out, err = run(capsys, *argv)
    assert code == 1 and err.startswith("error: ") and out == ""
    shown = json.loads(run(capsys, "tenant", "show", "shop", "--json")[1])
    assert shown["platformCredentials"]["allowed"] is False


def test_quarantine_list_retry_and_purge_on_the_embedded_default(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import text

    from events.contract import EventIn
    from events.service import prepare
    from infra.db import make_engine, make_session_factory
    from subscriptions.matching import IndexCache
    from tests.conftest import order_event
    from workers.persist import GroupCommit

    # Given two tenants' events the database refused (a trigger standing in for a narrow column)
    assert run(capsys, "tenant", "create", "shop")[0] == 0
    engine = make_engine(f"sqlite:///{data_dir / 'eventcollector.db'}")
    sessions = make_session_factory(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.entity_id = "
                          "'poison' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"))
    group = GroupCommit(sessions, IndexCache())
    for tenant, event_id in (("shop", "q-1"), ("other", "q-2")):
        doc = prepare(EventIn.model_validate(order_event(id=event_id, entity_id="poison")),
                      datetime.now(UTC)).document
        assert group.submit(tenant, [doc]) == (0, [])
    # When an operator lists them (all, one tenant's, one id)
    code, out, err = run(capsys, "quarantine", "list")
    assert code == 0, err
    listed = [json.loads(line) for line in out.splitlines()]
    assert [(x["tenant"], x["event_id"]) for x in listed] == [("shop", "q-1"), ("other", "q-2")]
    assert listed[0]["error"] == "IntegrityError" and "refused by the test" in listed[0]["reason"]
    assert "document" not in listed[0]
    code, out, _ = run(capsys, "quarantine", "list", "--tenant", "shop", "--documents")
    [only] = [json.loads(line) for line in out.splitlines()]
    assert only["event_id"] == "q-1" and only["document"]["entity_id"] == "poison"
    # And retries before the cause is fixed: still quarantined, exit 1, with the reason
    code, out, err = run(capsys, "quarantine", "retry", "--tenant", "shop")
    assert code == 1
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["quarantined"]
    assert "still quarantined 1" in err
    # And after the cause is fixed: stored (no Redis here: the sweep sends its deliveries)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER refuse"))
    code, out, err = run(capsys, "quarantine", "retry", "--id", "q-1")
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"tenant": "shop", "event_id": "q-1", "status": "stored"}]
    with sessions() as session:
        from events.repository import get_event

        assert get_event(session, "shop", "q-1") is not None
    # And purge needs --yes, then deletes what is left
    assert run(capsys, "quarantine", "purge")[0] == 1
    code, out, _ = run(capsys, "quarantine", "purge", "--yes", "--tenant", "other")
    assert code == 0 and out.strip() == "purged 1"
    assert run(capsys, "quarantine", "list")[1] == ""
    engine.dispose()
