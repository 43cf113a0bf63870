"""Worker processes' composition root: ``dramatiq workers.main:setup --queues <queue>``."""

from __future__ import annotations

import os

import dramatiq

from config.logging import configure_logging
from config.runtime import Runtime, build_runtime
from config.settings import Settings, load_settings
from workers.deliver import declare_deliver_actor
from workers.notify import declare_notify_actor
from workers.persist import declare_persist_actor


def declare_actors(runtime: Runtime) -> dict[str, dramatiq.Actor]:
    """Declare every actor on ``runtime.broker``; each pool consumes its own queue."""
    persist = declare_persist_actor(
        runtime.broker, runtime.sessions, max_retries=runtime.settings.persist_max_retries
    )
    deliver = declare_deliver_actor(
        runtime.broker, runtime.sessions, senders=runtime.senders, box=runtime.box,
        policy=runtime.retry_policy,
    )
    assert runtime.mailer is not None
    notify = declare_notify_actor(runtime.broker, runtime.sessions, mailer=runtime.mailer)
    return {a.actor_name: a for a in (persist, deliver, notify)}


def setup(settings: Settings | None = None) -> Runtime:
    """Called by the dramatiq CLI in each worker process: build the runtime, set the broker."""
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    runtime = build_runtime(settings)
    if os.environ.get("dramatiq_prom_port"):
        # Dramatiq's own exporter (a forked HTTP server on dramatiq_prom_host:port): messages,
        # errors, retries, in progress and durations per actor for this pool.
        from dramatiq.middleware.prometheus import Prometheus

        runtime.broker.add_middleware(Prometheus())
    dramatiq.set_broker(runtime.broker)
    declare_actors(runtime)
    return runtime
