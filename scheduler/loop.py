"""The scheduler loop: every tick, fire due jobs (exactly once per slot) and enqueue their runs."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import dramatiq
from sqlalchemy.orm import Session, sessionmaker

from broker.dispatch import enqueue_runs
from store.jobs import mark_enqueued, tick

log = logging.getLogger(__name__)


def tick_once(sessions: sessionmaker[Session], broker: dramatiq.Broker,
              now: datetime | None = None, *, resend_after: float = 30.0) -> list[int]:
    """One tick: commit the due runs, then enqueue them (and any a crash left unsent)."""
    with sessions() as session:
        result = tick(session, now or datetime.now(UTC),
                      stale_after=timedelta(seconds=resend_after))
    runs = result.fired + result.stale
    if runs:
        enqueue_runs(broker, runs)
        with sessions() as session:
            mark_enqueued(session, runs)
        log.info("fired %d job run(s), re-sent %d", len(result.fired), len(result.stale))
    return runs


def run_forever(sessions: sessionmaker[Session], broker: dramatiq.Broker, *,
                interval: float, stop: threading.Event, resend_after: float = 30.0) -> None:
    """Tick every ``interval`` seconds until ``stop`` is set; a failed tick is logged, not fatal."""
    while not stop.is_set():
        try:
            tick_once(sessions, broker, resend_after=resend_after)
        except Exception:  # noqa: BLE001 - the next tick tries again
            log.exception("scheduler tick failed")
        stop.wait(interval)
