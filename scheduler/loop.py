"""The scheduler loop: every tick, fire due jobs (exactly once per slot) and enqueue their runs."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import dramatiq
from sqlalchemy.orm import Session, sessionmaker

from infra.broker.dispatch import enqueue_deliveries, enqueue_runs
from infra.db import UnitOfWork
from jobs.repository import mark_enqueued, tick
from subscriptions.deliveries import overdue_deliveries

log = logging.getLogger(__name__)


def tick_once(sessions: sessionmaker[Session], broker: dramatiq.Broker,
              now: datetime | None = None, *, resend_after: float = 30.0) -> list[int]:
    """One tick: commit the due runs, then enqueue them (and any a crash left unsent)."""
    with UnitOfWork(sessions, write=True) as uow:
        result = tick(uow.session, now or datetime.now(UTC),
                      stale_after=timedelta(seconds=resend_after))
        uow.commit()
    runs = result.fired + result.stale
    if runs:
        enqueue_runs(broker, runs)
        with UnitOfWork(sessions, write=True) as uow:
            mark_enqueued(uow.session, runs)
            uow.commit()
        log.info("fired %d job run(s), re-sent %d", len(result.fired), len(result.stale))
    return runs


def sweep_once(sessions: sessionmaker[Session], broker: dramatiq.Broker,
               now: datetime | None = None, *, older_than: float = 600.0) -> int:
    """Re-enqueue deliveries overdue by ``older_than`` seconds; return how many.

    A copy of a message still in the queue is harmless: a delivery already sent, or not yet
    due, is skipped by the deliver pool.
    """
    with UnitOfWork(sessions) as uow:
        ids = overdue_deliveries(uow.session, now or datetime.now(UTC), older_than)
    if ids:
        enqueue_deliveries(broker, ids)
        log.warning("re-enqueued %d overdue deliveries", len(ids))
    return len(ids)


def redrive_requested(sessions: sessionmaker[Session], broker: dramatiq.Broker) -> int:
    """Enqueue the embedded default's dead letters that `eventcollector dlq retry` asked for (the
    in-process broker lives here, not in the CLI's process); return how many."""
    from infra.broker.deadletter_store import take_requested
    from infra.broker.embedded import redrive

    with UnitOfWork(sessions, write=True) as uow:
        rows = take_requested(uow.session)
        for row in rows:
            redrive(broker, row.queue, row.message)
        uow.commit()  # only after enqueueing: a crash before leaves them requested
    if rows:
        log.info("re-enqueued %d dead letters", len(rows))
    return len(rows)


def run_forever(sessions: sessionmaker[Session], broker: dramatiq.Broker, *,
                interval: float, stop: threading.Event, resend_after: float = 30.0,
                sweep_after: float = 600.0, sweep_every: float | None = None,
                redrive_dead_letters: bool = False) -> None:
    """Tick every ``interval`` seconds until ``stop`` is set, and sweep overdue deliveries every
    ``sweep_every`` seconds (default: a minute, or half of ``sweep_after`` if shorter, so an
    overdue delivery is found within 1.5× the threshold); a failure is logged, not fatal."""
    if sweep_every is None:
        sweep_every = min(60.0, sweep_after / 2)
    next_sweep = 0.0
    while not stop.is_set():
        try:
            tick_once(sessions, broker, resend_after=resend_after)
        except Exception:  # noqa: BLE001 - the next tick tries again
            log.exception("scheduler tick failed")
        if redrive_dead_letters:
            try:
                redrive_requested(sessions, broker)
            except Exception:  # noqa: BLE001 - the next tick tries again
                log.exception("re-driving dead letters failed")
        if time.monotonic() >= next_sweep:
            next_sweep = time.monotonic() + sweep_every
            try:
                sweep_once(sessions, broker, older_than=sweep_after)
            except Exception:  # noqa: BLE001 - the next sweep tries again
                log.exception("delivery sweep failed")
        stop.wait(interval)
