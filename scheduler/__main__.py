"""``python -m scheduler``: the scheduler process's composition root; stops cleanly on SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from config.logging import configure_logging
from config.runtime import build_runtime
from config.settings import ConfigError, load_settings
from scheduler.loop import run_forever


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if settings.embedded:
        print("the scheduler process needs REDIS_URL (the embedded default runs it inside "
              "'eventcollector dev')", file=sys.stderr)
        return 2
    runtime = build_runtime(settings)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        logging.getLogger("scheduler").info("signal %d: stopping after this tick", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logging.getLogger("scheduler").info("scheduler started, tick every %ss",
                                        settings.scheduler_tick_seconds)
    try:
        run_forever(runtime.sessions, runtime.broker, interval=settings.scheduler_tick_seconds,
                    stop=stop, resend_after=settings.scheduler_resend_after_seconds,
                    sweep_after=settings.delivery_sweep_after_seconds)
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
