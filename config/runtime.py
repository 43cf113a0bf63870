"""Builds a process's long-lived resources (engine, sessions, broker, intake) from Settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from infra.broker.embedded import Keep, KeepDeadLetters
from infra.broker.intake import Intake
from infra.broker.queues import BROKER_NAMESPACE
from infra.broker.ratelimit import (
    AttemptLimiter,
    MemoryAttemptLimiter,
    MemoryRateLimiter,
    RateLimiter,
    RedisAttemptLimiter,
    RedisRateLimiter,
)
from infra.crypto import SecretBox
from infra.db import UnitOfWork, make_engine, make_session_factory
from jobs.mailers.base import Mailer
from subscriptions.senders.base import Sender
from subscriptions.service import DeliveryRetryPolicy


@dataclass
class Runtime:
    """The resources one process shares between its threads.

    Attributes:
        settings: the validated configuration.
        engine: the SQLAlchemy engine of ``settings.database_url``.
        sessions: session factory bound to ``engine``.
        broker: the Dramatiq broker (Redis, or an in-process StubBroker when embedded).
        intake: where the web process hands accepted events to the persist pool.
        box: encrypts and decrypts subscription secrets.
        senders: the delivery sender per destination type (SQS, SNS).
        retry_policy: the delivery retry schedule.
        mailer: SendGrid when configured, else the log mailer.
        limiter: per-tenant request rate limiter (Redis, or in memory when embedded).
        attempts: the token endpoint's failed-attempt limiter (Redis, or in memory when
            embedded).
    """

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    broker: dramatiq.Broker
    intake: Intake
    box: SecretBox
    senders: Mapping[str, Sender] = field(default_factory=dict)
    retry_policy: DeliveryRetryPolicy = field(default_factory=DeliveryRetryPolicy)
    mailer: Mailer | None = None
    limiter: RateLimiter | None = None
    redis_client: Any = None
    attempts: AttemptLimiter = field(default_factory=MemoryAttemptLimiter)
    revocations: Any = None  # the web's store.revocation.RevocationCache, once used

    def close(self) -> None:
        if self.revocations is not None:
            self.revocations.stop()
        self.engine.dispose()
        self.broker.close()


def build_broker(settings: Settings) -> dramatiq.Broker:
    """A RedisBroker for ``settings.redis_url``, else an in-process StubBroker."""
    if settings.redis_url:
        from infra.broker.redis_broker import ResilientRedisBroker

        return ResilientRedisBroker(
            url=settings.redis_url,
            namespace=BROKER_NAMESPACE,
            # A crashed worker's unacked messages are requeued once its heartbeat is this old,
            # by the maintenance that roughly every 50th broker command runs (Dramatiq's default
            # is every 1,000th, which can leave them waiting for minutes on a quiet queue).
            heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
            maintenance_chance=settings.broker_maintenance_chance,
            idle_poll_ms=settings.broker_idle_poll_ms,
            socket_timeout=5,
            socket_connect_timeout=5,
        )
    from dramatiq.brokers.stub import StubBroker

    broker = StubBroker(fail_fast_default=False)
    broker.emit_after("process_boot")
    return broker


def build_redis(settings: Settings) -> Any:
    if not settings.redis_url:
        return None
    import redis

    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=2,
        socket_connect_timeout=2,
        health_check_interval=15,
    )


def build_intake(settings: Settings, broker: dramatiq.Broker, client: Any = None,
                 limiter: RateLimiter | None = None) -> Intake:
    """The Redis intake charges the rate limit in its own Lua call; the in-memory one uses
    ``limiter``."""
    if settings.redis_url:
        from infra.broker.intakes.redis import RedisIntake

        return RedisIntake(client or build_redis(settings), settings.intake_ttl_seconds)
    from infra.broker.intakes.memory import MemoryIntake

    return MemoryIntake(broker, settings.intake_ttl_seconds, limiter)


def build_senders() -> dict[str, Sender]:
    from subscriptions.senders.aws import ClientCache
    from subscriptions.senders.sns import SnsSender
    from subscriptions.senders.sqs import SqsSender

    clients = ClientCache()
    return {"SQS": SqsSender(clients), "SNS": SnsSender(clients)}


def build_mailer(settings: Settings) -> Mailer:
    if settings.sendgrid_api_key and settings.sendgrid_from_email:
        from jobs.mailers.sendgrid import SendGridMailer

        return SendGridMailer(settings.sendgrid_api_key, settings.sendgrid_from_email,
                              settings.sendgrid_api_host)
    from jobs.mailers.log import LogMailer

    return LogMailer()


def _keeper(sessions: sessionmaker[Session]) -> Keep:
    from infra.broker import deadletter_store as deadletters

    def keep(queue: str, message_id: str, encoded: str) -> None:
        with UnitOfWork(sessions, write=True) as uow:
            deadletters.keep(uow.session, queue, message_id, encoded)
            uow.commit()

    return keep


def build_runtime(
    settings: Settings,
    *,
    broker: dramatiq.Broker | None = None,
    senders: Mapping[str, Sender] | None = None,
    mailer: Mailer | None = None,
) -> Runtime:
    """Wire everything for ``settings``; pass ``broker``/``senders`` to substitute (tests)."""
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    if broker is None:
        broker = build_broker(settings)
        if not settings.redis_url:
            # Dead letters of the in-process broker go to the database, where `eventcollector
            # dlq` (another process) finds them.
            broker.add_middleware(KeepDeadLetters(_keeper(sessions)))
    client = build_redis(settings)
    limiter = RedisRateLimiter(client) if client is not None else MemoryRateLimiter()
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        broker=broker,
        intake=build_intake(settings, broker, client, limiter),
        redis_client=client,
        limiter=limiter,
        attempts=RedisAttemptLimiter(client) if client is not None else MemoryAttemptLimiter(),
        box=SecretBox(settings.secret_key),
        senders=senders if senders is not None else build_senders(),
        retry_policy=DeliveryRetryPolicy(
            schedule=settings.delivery_retry_schedule,
            give_up_after=settings.delivery_give_up_seconds,
            failing_window=settings.subscription_failing_window_seconds,
        ),
        mailer=mailer if mailer is not None else build_mailer(settings),
    )
