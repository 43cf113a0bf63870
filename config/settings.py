"""Typed settings built from environment variables and validated at start-up."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from infra.limits import QUOTA_MAX, Quotas, full_pattern

# An e-mail address: printable ASCII, no spaces, one @ and a dot in the domain (matched whole).
_EMAIL_RE = full_pattern(r"[!-?A-~]+@[!-?A-~]+\.[!-?A-~]+")


class ConfigError(Exception):
    """A configuration variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know about its environment.

    Attributes:
        database_url: SQLAlchemy URL (``postgresql+psycopg://`` or ``sqlite:///``).
        redis_url: Redis URL for the Dramatiq broker and the intake cache; ``None`` = embedded.
        port: the HTTP port of the web process.
        token_secret: HMAC key that signs access tokens.
        token_ttl_seconds: lifetime of an access token.
        max_event_bytes: largest body accepted by ``POST /api/v1/events``.
        max_batch_bytes: largest body accepted by ``POST /api/v1/events/batch``.
        max_batch_events: most events in one batch request.
        intake_ttl_seconds: how long an accepted event stays in the intake cache
            (read-your-writes and the fast idempotency check).
        data_dir: where the embedded default keeps its SQLite file and generated secret.
        log_format: ``json`` or ``text`` (``LOG_FORMAT``); None = the process's own default:
            JSON lines for the Procfile's processes, text for ``eventcollector dev``.
        secret_key: Fernet key that encrypts subscription secrets at rest (None: subscriptions
            cannot carry keys and use the platform's AWS credentials).
        delivery_retry_schedule: seconds before each retry of a failed delivery; the last
            value repeats until ``delivery_give_up_seconds`` after the first attempt.
        subscription_failing_window_seconds: a subscription whose deliveries keep failing
            (transiently) for this long is deactivated.
        aws_endpoint_sqs / aws_endpoint_sns: endpoint overrides (``AWS_ENDPOINT_URL[_SQS|_SNS]``,
            which boto3 honours itself); queue URLs on them are accepted too.
        sendgrid_api_key / sendgrid_from_email / sendgrid_api_host: the SendGrid account; with
            no key, e-mails are written to the log instead.
        scheduler_tick_seconds: how often the scheduler looks for due jobs.
        rate_limit_per_second / rate_limit_burst: default per-tenant request rate (0 = none);
            a tenant's own limits (``eventcollector tenant limits``) win.
        broker_heartbeat_timeout_ms / broker_maintenance_chance: how soon a killed worker's
            unacknowledged messages are given to another (Dramatiq RedisBroker settings).
        delivery_sweep_after_seconds: the scheduler re-enqueues a pending delivery overdue by
            this long (its message was lost: an enqueue after a commit failed).
        deliver_linger_ms: how long a deliver thread waits for more deliveries to send in the
            same batch call (up to ten) when it has fewer.
        deliver_sends_in_flight: the batch calls one deliver process has in flight at once
            (over all its threads): how hard one process presses on the destinations.
        broker_idle_poll_ms: the longest a pool's consumer sleeps after finding its queue empty
            (Dramatiq backs off up to 1 s; a lower cap keeps latency low on a quiet queue).
        scheduler_resend_after_seconds: a run committed but never enqueued (the scheduler died
            in between) is enqueued by another tick after this long.
        request_body_timeout_seconds: a request's whole body must arrive within this long of
            its headers (gunicorn worker ``api.serving.Worker``), else 408.
        metrics_token: bearer token ``/metrics`` requires on the web port (None: 404).
        token_failures_per_client / token_failures_per_source: failed secret checks the token
            endpoint allows per client id / per source address and minute (0 = no limit).
        trusted_proxy_count: proxies in front of the web process that append to
            X-Forwarded-For (0: the source is the socket's peer; n: the n-th address from the
            right of X-Forwarded-For).
        token_checks_per_process: slow (scrypt) secret checks a web process runs at once;
            beyond, the token endpoint answers 503 with Retry-After.
        token_max_ttl_seconds: the longest lifetime of any token (token endpoint, CLI, dev).
        revocation_check_seconds: how often a web process looks for revocations (≤ 30).
        quota_subscriptions / quota_jobs / quota_replay_events: default per-tenant quotas
            (store.quotas); a tenant's own (``eventcollector tenant quota``) win.
    """

    database_url: str
    redis_url: str | None
    port: int = 8000
    token_secret: str = field(default="", repr=False)
    token_ttl_seconds: int = 3600
    max_event_bytes: int = 1024 * 1024
    max_batch_bytes: int = 16 * 1024 * 1024
    max_batch_events: int = 1000
    intake_ttl_seconds: int = 3600
    persist_max_retries: int = 1000
    data_dir: str = ".eventcollector"
    log_level: str = "INFO"
    log_format: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    delivery_retry_schedule: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600)
    delivery_give_up_seconds: float = 86400
    subscription_failing_window_seconds: float = 6 * 3600
    aws_endpoint_sqs: str | None = None
    aws_endpoint_sns: str | None = None
    sendgrid_api_key: str | None = field(default=None, repr=False)
    sendgrid_from_email: str | None = None
    sendgrid_api_host: str = "https://api.sendgrid.com"
    scheduler_tick_seconds: float = 2.0
    rate_limit_per_second: float = 1000.0
    rate_limit_burst: int = 2000
    broker_heartbeat_timeout_ms: int = 15_000
    broker_maintenance_chance: int = 20_000
    broker_idle_poll_ms: int = 50
    deliver_linger_ms: int = 20
    deliver_sends_in_flight: int = 8
    delivery_sweep_after_seconds: int = 600
    scheduler_resend_after_seconds: float = 30.0
    request_body_timeout_seconds: int = 30
    metrics_token: str | None = field(default=None, repr=False)
    token_failures_per_client: int = 10
    token_failures_per_source: int = 30
    trusted_proxy_count: int = 0
    token_checks_per_process: int = 4
    token_max_ttl_seconds: int = 86400
    revocation_check_seconds: int = 10
    quota_subscriptions: int = 100
    quota_jobs: int = 100
    quota_replay_events: int = 100_000

    @property
    def quotas(self) -> Quotas:
        """The default per-tenant quotas."""
        return Quotas(subscriptions=self.quota_subscriptions, jobs=self.quota_jobs,
                      replay_events=self.quota_replay_events)

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: one process, in-process broker."""
        return self.redis_url is None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def request_body_timeout(env: Mapping[str, str]) -> int:
    """``EC_REQUEST_BODY_TIMEOUT_SECONDS``: how long a request's body may take to arrive."""
    return _int(env, "EC_REQUEST_BODY_TIMEOUT_SECONDS", 30, 1, 3600)


def _metrics_token(env: Mapping[str, str]) -> str | None:
    raw = env.get("EC_METRICS_TOKEN", "").strip()
    if not raw:
        return None
    if len(raw) < 16 or not raw.isascii() or not raw.isprintable() or " " in raw:
        raise ConfigError("EC_METRICS_TOKEN must be at least 16 printable ASCII characters "
                          "without spaces")
    return raw


def normalize_database_url(raw: str, name: str = "DATABASE_URL") -> str:
    """Return a SQLAlchemy URL; Heroku's ``postgres://`` form becomes psycopg 3's dialect."""
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        rest = raw.split("://", 1)[1]
        if not rest:
            raise ConfigError(f"{name} has no host or database: {scheme}://")
        return "postgresql+psycopg://" + rest
    if scheme.startswith("sqlite"):
        return raw
    raise ConfigError(
        f"{name} must be a postgres://, postgresql:// or sqlite:/// URL, got scheme {scheme!r}"
    )


def _redis_url(raw: str, name: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{name} must be a redis://, rediss:// or unix:// URL")
    return raw


def _embedded_secret(data_dir: Path, name: str = "token_secret", make: Any = None) -> str:
    """The embedded default keeps generated keys beside its database."""
    path = data_dir / name
    try:
        if path.exists():
            return path.read_text().strip()
        data_dir.mkdir(parents=True, exist_ok=True)
        secret = make() if make else secrets.token_urlsafe(48)
        path.write_text(secret)
        path.chmod(0o600)
    except OSError as exc:
        raise ConfigError(
            f"the data directory {data_dir} cannot be used ({exc.strerror or exc}): set "
            f"EC_DATA_DIR to a directory this user can write") from None
    return secret


def _fernet_key() -> str:
    import base64

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _check_fernet(raw: str) -> str:
    import base64
    import binascii

    try:
        if len(base64.urlsafe_b64decode(raw.encode())) == 32:
            return raw
    except (binascii.Error, ValueError):
        pass
    raise ConfigError(
        "EC_SECRET_KEY must be a Fernet key: 32 bytes, url-safe base64 (generate one with: "
        "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
    )


def _schedule(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        values = tuple(float(v) for v in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated seconds, got {raw!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{name} must list positive numbers of seconds")
    return values


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default ``os.environ``); raise ConfigError naming the variable."""
    env = os.environ if env is None else env
    data_dir = env.get("EC_DATA_DIR", ".eventcollector")

    raw_db = env.get("DATABASE_URL", "").strip()
    if raw_db:
        database_url = normalize_database_url(raw_db)
    else:
        database_url = f"sqlite:///{Path(data_dir).resolve() / 'eventcollector.db'}"

    raw_redis = env.get("REDIS_URL", "").strip()
    redis_url = _redis_url(raw_redis, "REDIS_URL") if raw_redis else None

    secret = env.get("EC_TOKEN_SECRET", "").strip()
    if secret and len(secret) < 32:
        raise ConfigError("EC_TOKEN_SECRET must be at least 32 characters long")
    if not secret:
        if raw_db or raw_redis:
            raise ConfigError(
                "EC_TOKEN_SECRET is required when DATABASE_URL or REDIS_URL is set "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        secret = _embedded_secret(Path(data_dir))

    secret_key = env.get("EC_SECRET_KEY", "").strip() or None
    if secret_key:
        secret_key = _check_fernet(secret_key)
    elif not (raw_db or raw_redis):
        secret_key = _embedded_secret(Path(data_dir), "secret_key", _fernet_key)

    sendgrid_key = env.get("SENDGRID_API_KEY", "").strip() or None
    sendgrid_from = env.get("SENDGRID_FROM_EMAIL", "").strip() or None
    if sendgrid_key and not sendgrid_from:
        raise ConfigError("SENDGRID_FROM_EMAIL is required when SENDGRID_API_KEY is set")
    if sendgrid_from and not _EMAIL_RE.fullmatch(sendgrid_from):
        raise ConfigError(f"SENDGRID_FROM_EMAIL must be an e-mail address, got {sendgrid_from!r}")
    sendgrid_host = env.get("SENDGRID_API_HOST", "").strip() or "https://api.sendgrid.com"
    if urlsplit(sendgrid_host).scheme not in ("http", "https") or not urlsplit(sendgrid_host).netloc:
        raise ConfigError(f"SENDGRID_API_HOST must be an http(s) URL, got {sendgrid_host!r}")

    log_level = env.get("LOG_LEVEL", "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    log_format = env.get("LOG_FORMAT", "").strip().lower() or None
    if log_format not in (None, "json", "text"):
        raise ConfigError(f"LOG_FORMAT must be json or text, got {log_format!r}")
    token_max_ttl = _int(env, "EC_TOKEN_MAX_TTL_SECONDS", 86400, 60, 30 * 86400)
    token_ttl = _int(env, "EC_TOKEN_TTL_SECONDS", min(3600, token_max_ttl), 60, 30 * 86400)
    if token_ttl > token_max_ttl:
        raise ConfigError(f"EC_TOKEN_TTL_SECONDS ({token_ttl}) must not exceed "
                          f"EC_TOKEN_MAX_TTL_SECONDS ({token_max_ttl})")

    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        port=_int(env, "PORT", 8000, 1, 65535),
        token_secret=secret,
        token_ttl_seconds=token_ttl,
        token_max_ttl_seconds=token_max_ttl,
        revocation_check_seconds=_int(env, "EC_REVOCATION_CHECK_SECONDS", 10, 1, 30),
        max_event_bytes=_int(env, "EC_MAX_EVENT_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
        max_batch_bytes=_int(env, "EC_MAX_BATCH_BYTES", 16 * 1024 * 1024, 1024, 256 * 1024 * 1024),
        max_batch_events=_int(env, "EC_MAX_BATCH_EVENTS", 1000, 1, 1000),
        intake_ttl_seconds=_int(env, "EC_INTAKE_TTL_SECONDS", 3600, 60, 7 * 86400),
        persist_max_retries=_int(env, "EC_PERSIST_MAX_RETRIES", 1000, 0, 100000),
        data_dir=data_dir,
        log_level=log_level,
        log_format=log_format,
        secret_key=secret_key,
        delivery_retry_schedule=_schedule(
            env, "EC_DELIVERY_RETRY_SCHEDULE", (5, 30, 120, 600, 1800, 3600)
        ),
        delivery_give_up_seconds=_int(env, "EC_DELIVERY_GIVE_UP_SECONDS", 86400, 1, 30 * 86400),
        subscription_failing_window_seconds=_int(
            env, "EC_SUBSCRIPTION_FAILING_WINDOW_SECONDS", 6 * 3600, 1, 30 * 86400
        ),
        aws_endpoint_sqs=(env.get("AWS_ENDPOINT_URL_SQS") or env.get("AWS_ENDPOINT_URL") or None),
        aws_endpoint_sns=(env.get("AWS_ENDPOINT_URL_SNS") or env.get("AWS_ENDPOINT_URL") or None),
        sendgrid_api_key=sendgrid_key,
        sendgrid_from_email=sendgrid_from,
        sendgrid_api_host=sendgrid_host.rstrip("/"),
        scheduler_tick_seconds=_int(env, "EC_SCHEDULER_TICK_SECONDS", 2, 1, 60),
        rate_limit_per_second=_int(env, "EC_RATE_LIMIT_PER_SECOND", 1000, 0, 10_000_000),
        rate_limit_burst=_int(env, "EC_RATE_LIMIT_BURST", 2000, 1, 100_000_000),
        broker_heartbeat_timeout_ms=_int(env, "EC_BROKER_HEARTBEAT_TIMEOUT_MS", 15_000, 1000,
                                         3_600_000),
        broker_maintenance_chance=_int(env, "EC_BROKER_MAINTENANCE_CHANCE", 20_000, 1, 1_000_000),
        broker_idle_poll_ms=_int(env, "EC_BROKER_IDLE_POLL_MS", 50, 5, 5000),
        deliver_linger_ms=_int(env, "EC_DELIVER_LINGER_MS", 20, 0, 1000),
        deliver_sends_in_flight=_int(env, "EC_DELIVER_SENDS_IN_FLIGHT", 8, 1, 64),
        delivery_sweep_after_seconds=_int(env, "EC_DELIVERY_SWEEP_AFTER_SECONDS", 600, 10,
                                          7 * 86400),
        scheduler_resend_after_seconds=_int(env, "EC_SCHEDULER_RESEND_AFTER_SECONDS", 30, 1, 3600),
        request_body_timeout_seconds=request_body_timeout(env),
        metrics_token=_metrics_token(env),
        token_failures_per_client=_int(env, "EC_TOKEN_FAILURES_PER_CLIENT", 10, 0, 1_000_000),
        token_failures_per_source=_int(env, "EC_TOKEN_FAILURES_PER_SOURCE", 30, 0, 1_000_000),
        trusted_proxy_count=_int(env, "EC_TRUSTED_PROXY_COUNT", 0, 0, 16),
        token_checks_per_process=_int(env, "EC_TOKEN_CHECKS_PER_PROCESS", 4, 1, 1024),
        quota_subscriptions=_int(env, "EC_QUOTA_SUBSCRIPTIONS", 100, 0, QUOTA_MAX),
        quota_jobs=_int(env, "EC_QUOTA_JOBS", 100, 0, QUOTA_MAX),
        quota_replay_events=_int(env, "EC_QUOTA_REPLAY_EVENTS", 100_000, 0, QUOTA_MAX),
    )
