"""Worker processes' composition root: ``dramatiq workers.main:setup --queues <queue>``."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import dramatiq

from config.logging import configure_logging
from config.runtime import Runtime, build_runtime
from config.settings import ConfigError, Settings, load_settings
from infra.broker.dramatiq_compat import is_cli_worker_sigterm_handler
from infra.opaque import IdCipher
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
        policy=runtime.retry_policy, linger=runtime.settings.deliver_linger_ms / 1000,
        sends_in_flight=runtime.settings.deliver_sends_in_flight,
    )
    assert runtime.mailer is not None
    ids = IdCipher.from_secret(runtime.settings.token_secret)
    notify = declare_notify_actor(runtime.broker, runtime.sessions, mailer=runtime.mailer,
                                  shown_run_id=lambda run_id: ids.encode("run", run_id))
    return {a.actor_name: a for a in (persist, deliver, notify)}


def metrics_port(env: Mapping[str, str]) -> int | None:
    """The pool's exporter port from ``dramatiq_prom_port``; None when unset, empty or 0 (off)."""
    raw = env.get("dramatiq_prom_port", "").strip()
    if raw in ("", "0"):
        return None
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"dramatiq_prom_port must be a port number, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"dramatiq_prom_port must be between 1 and 65535, got {port}")
    return port


# A platform stopping a dyno (or foreman/honcho stopping a Procfile) signals every process of
# the group, and dramatiq's parent process forwards that SIGTERM to its workers too: each worker
# gets it twice at once, and dramatiq takes a second SIGTERM as "exit now", dropping the
# messages in hand. A repeat within this many seconds is the same stop request.
REPEATED_SIGTERM_WINDOW = 5.0


def tolerate_repeated_sigterm(window: float = REPEATED_SIGTERM_WINDOW) -> bool:
    """Inside a dramatiq CLI worker process, wrap its SIGTERM handler so a repeat within
    ``window`` seconds is ignored (a later one still kills). Returns whether it was wrapped."""
    if threading.current_thread() is not threading.main_thread():
        return False
    dramatiq_handler = signal.getsignal(signal.SIGTERM)
    if not is_cli_worker_sigterm_handler(dramatiq_handler):
        return False
    first: float | None = None

    def handler(signum: int, frame: Any) -> Any:
        nonlocal first
        now = time.monotonic()
        if first is not None and now - first < window:
            logging.getLogger("workers").info("SIGTERM repeated: still stopping gracefully")
            return None
        first = first if first is not None else now
        return dramatiq_handler(signum, frame)

    signal.signal(signal.SIGTERM, handler)
    return True


def setup(settings: Settings | None = None) -> Runtime:
    """Called by the dramatiq CLI in each worker process: build the runtime, set the broker."""
    tolerate_repeated_sigterm()
    if settings is None:
        try:
            settings = load_settings()
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    port = metrics_port(os.environ)
    runtime = build_runtime(settings)
    if port is not None:
        # Dramatiq's own exporter (a forked HTTP server on dramatiq_prom_host:port): messages,
        # errors, retries, dead letters, in progress and durations per actor for this pool. The
        # pool's processes share the multiprocess directory dramatiq_prom_db (the Procfile gives
        # each run of a pool its own), which the exporter sums.
        from dramatiq.middleware.prometheus import Prometheus

        runtime.broker.add_middleware(Prometheus())
    dramatiq.set_broker(runtime.broker)
    declare_actors(runtime)
    return runtime
