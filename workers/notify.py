"""The notify pool's actor: carry out one job run, re-enqueued later when SendGrid says wait."""

from __future__ import annotations

import logging
from collections.abc import Callable

import dramatiq
from sqlalchemy.orm import Session, sessionmaker

from infra.broker.dispatch import enqueue_runs
from infra.broker.queues import NOTIFY_ACTOR, NOTIFY_QUEUE
from infra.errors import is_transient
from jobs.mailers.base import Mailer
from jobs.notifications import RunBusy, run_notifications

log = logging.getLogger(__name__)


def declare_notify_actor(broker: dramatiq.Broker, sessions: sessionmaker[Session], *,
                         mailer: Mailer,
                         shown_run_id: Callable[[int], int] = lambda run_id: run_id,
                         ) -> dramatiq.Actor:
    """Declare ``send_notifications`` on ``broker`` (queue ``notifications``) and return it."""

    def send_notifications(run_id: int) -> None:
        def schedule_retry(seconds: float) -> None:
            enqueue_runs(broker, [run_id], delay_ms=max(1, int(seconds * 1000)))

        status = run_notifications(sessions, run_id, mailer=mailer, schedule_retry=schedule_retry,
                                   shown_run_id=shown_run_id)
        log.info("job run %s: %s", run_id, status)

    def retry_when(retries: int, exc: BaseException) -> bool:
        # RunBusy: a duplicate message for a run another worker is sending; wait for it.
        return retries < 1000 and (is_transient(exc) or isinstance(exc, RunBusy))

    return dramatiq.actor(
        actor_name=NOTIFY_ACTOR, queue_name=NOTIFY_QUEUE, broker=broker,
        retry_when=retry_when, min_backoff=1000, max_backoff=60_000, time_limit=600_000,
    )(send_notifications)
