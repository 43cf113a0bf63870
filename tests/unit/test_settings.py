"""config/settings.py: load_settings(env) validates every variable and names the bad one."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from config.settings import ConfigError, load_settings, normalize_database_url
from tests.support.env import GOOD_SECRET, _procfile_env, server_env


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "http://h/db", "db.sqlite", "postgres:/x",
                                 "postgresql+asyncpg://u@h/db"])
def test_bad_database_url_scheme_names_database_url(url: str) -> None:
    # Given DATABASE_URL with a scheme the collector cannot use
    # When settings are loaded
    with pytest.raises(ConfigError) as info:
        load_settings(server_env(DATABASE_URL=url))
    # Then the error names DATABASE_URL
    assert "DATABASE_URL" in str(info.value)


@pytest.mark.parametrize(("raw", "expected"), [
    ("postgres://u:p@db:5432/ec", "postgresql+psycopg://u:p@db:5432/ec"),
    ("postgresql://u:p@db/ec?sslmode=require", "postgresql+psycopg://u:p@db/ec?sslmode=require"),
    ("postgresql+psycopg://u@db/ec", "postgresql+psycopg://u@db/ec"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
])
def test_database_urls_become_sqlalchemy_urls(raw: str, expected: str) -> None:
    # Given a Heroku-style (or already explicit) DATABASE_URL
    # When settings are loaded
    settings = load_settings(server_env(DATABASE_URL=raw))
    # Then it is the psycopg 3 dialect URL (sqlite unchanged)
    assert settings.database_url == expected


def test_postgres_url_without_host_or_database_is_an_error() -> None:
    # Given "postgres://" and nothing after it
    # When normalised
    # Then the error names the variable
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        normalize_database_url("postgres://")


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "abc"), ("PORT", "0"), ("PORT", "70000"), ("PORT", "8080.5"),
    ("EC_TOKEN_TTL_SECONDS", "10"), ("EC_MAX_BATCH_EVENTS", "5000"),
    ("EC_MAX_EVENT_BYTES", "lots"), ("EC_INTAKE_TTL_SECONDS", "-1"),
    ("REDIS_URL", "http://r:6379"), ("LOG_LEVEL", "LOUD"),
])
def test_a_bad_variable_is_named_in_the_error(name: str, value: str) -> None:
    # Given one malformed or out-of-range variable
    # When settings are loaded
    with pytest.raises(ConfigError) as info:
        load_settings(server_env(**{name: value}))
    # Then the error names it
    assert name in str(info.value)


def test_port_and_limits_are_read() -> None:
    # Given PORT and limits set
    # When settings are loaded
    settings = load_settings(server_env(PORT="5055", EC_MAX_BATCH_EVENTS="50",
                                        LOG_LEVEL="debug"))
    # Then they are the integers given (LOG_LEVEL upper-cased) and the rest are defaults
    assert (settings.port, settings.max_batch_events, settings.log_level) == (5055, 50, "DEBUG")
    assert (settings.max_event_bytes, settings.token_ttl_seconds) == (1024 * 1024, 3600)
    assert settings.redis_url == "redis://r:6379/0"
    assert not settings.embedded


@pytest.mark.parametrize("present", ["REDIS_URL", "DATABASE_URL"])
def test_a_server_setup_without_token_secret_names_ec_token_secret(present: str) -> None:
    # Given REDIS_URL (or DATABASE_URL) set but no EC_TOKEN_SECRET
    env = server_env()
    del env["EC_TOKEN_SECRET"]
    env = {present: env[present]}
    # When settings are loaded
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    # Then the error names EC_TOKEN_SECRET
    assert "EC_TOKEN_SECRET" in str(info.value)


def test_a_short_token_secret_is_an_error() -> None:
    # Given a 31-character secret
    # When settings are loaded
    with pytest.raises(ConfigError) as info:
        load_settings(server_env(EC_TOKEN_SECRET="x" * 31))
    # Then the error names EC_TOKEN_SECRET
    assert "EC_TOKEN_SECRET" in str(info.value)
    # And 32 characters are enough
    assert load_settings(server_env(EC_TOKEN_SECRET="x" * 32)).token_secret == "x" * 32


def test_the_secret_is_not_in_the_settings_repr() -> None:
    # Given settings holding a secret
    settings = load_settings(server_env())
    # When they are printed
    # Then the secret does not show
    assert GOOD_SECRET not in repr(settings)


def test_embedded_default_creates_and_reuses_the_token_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # Given no DATABASE_URL, REDIS_URL or EC_TOKEN_SECRET, and an empty EC_DATA_DIR
    env = {"EC_DATA_DIR": str(data_dir)}
    # When settings are loaded
    first = load_settings(env)
    # Then a secret file was created, private, and is the signing key
    secret_file = data_dir / "token_secret"
    assert secret_file.is_file()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert first.token_secret == secret_file.read_text().strip()
    assert len(first.token_secret) >= 32
    # And the embedded default is SQLite in that directory with no Redis
    assert first.database_url == f"sqlite:///{data_dir.resolve() / 'eventcollector.db'}"
    assert first.redis_url is None and first.embedded and first.is_sqlite
    # When settings are loaded again
    second = load_settings(env)
    # Then the same secret is reused
    assert second.token_secret == first.token_secret
    # And another data dir gets another secret
    assert load_settings({"EC_DATA_DIR": str(tmp_path / "other")}).token_secret \
        != first.token_secret


def test_an_explicit_secret_is_used_and_no_file_is_written(tmp_path: Path) -> None:
    # Given the embedded default with EC_TOKEN_SECRET set
    env = {"EC_DATA_DIR": str(tmp_path / "data"), "EC_TOKEN_SECRET": GOOD_SECRET}
    # When settings are loaded
    settings = load_settings(env)
    # Then that secret is used and no secret file appears
    assert settings.token_secret == GOOD_SECRET
    assert not (tmp_path / "data" / "token_secret").exists()


@pytest.mark.parametrize(("raw", "expected"), [
    ({}, None), ({"dramatiq_prom_port": ""}, None), ({"dramatiq_prom_port": "0"}, None),
    ({"dramatiq_prom_port": "9191"}, 9191), ({"dramatiq_prom_port": " 9300 "}, 9300)])
def test_worker_metrics_port_is_read_and_zero_turns_it_off(raw: dict[str, str],
                                                           expected: int | None) -> None:
    from workers.main import metrics_port

    assert metrics_port(raw) == expected


@pytest.mark.parametrize("value", ["abc", "70000", "-1"])
def test_a_bad_worker_metrics_port_is_named_in_the_error(value: str) -> None:
    from workers.main import metrics_port

    with pytest.raises(ConfigError, match="dramatiq_prom_port"):
        metrics_port({"dramatiq_prom_port": value})


def test_each_worker_pool_has_its_own_default_metrics_port_and_directory() -> None:
    # Given the Procfile's three pools, with no metrics variables set
    pools = {pool: _procfile_env(pool) for pool in ("persist", "deliver", "notify")}
    # Then each pool's exporter has its own port, and each run its own multiprocess directory
    assert {p: e["dramatiq_prom_port"] for p, e in pools.items()} == {
        "persist": "9191", "deliver": "9192", "notify": "9193"}
    for pool, env in pools.items():
        assert env["dramatiq_prom_db"].startswith(f"/tmp/ec-dramatiq-{pool}-")
    # And a pool's own variable moves its port (0 turns the exporter off), TMPDIR its directory
    moved = _procfile_env("deliver", DELIVER_METRICS_PORT="9400", PERSIST_METRICS_PORT="1",
                          TMPDIR="/var/x")
    assert moved["dramatiq_prom_port"] == "9400"
    assert moved["dramatiq_prom_db"].startswith("/var/x/ec-dramatiq-deliver-")
