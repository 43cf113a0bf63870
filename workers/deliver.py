"""The deliver pool's actor: one attempt per message, the next one scheduled by our policy."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import dramatiq
from sqlalchemy.orm import Session, sessionmaker

from broker.dispatch import enqueue_deliveries
from broker.queues import DELIVER_ACTOR, DELIVER_QUEUE
from delivery.sender import Sender
from delivery.service import RetryPolicy, attempt_delivery
from store.crypto import SecretBox
from workers.persist import is_transient

log = logging.getLogger(__name__)


def declare_deliver_actor(
    broker: dramatiq.Broker, sessions: sessionmaker[Session], *, senders: Mapping[str, Sender],
    box: SecretBox, policy: RetryPolicy,
) -> dramatiq.Actor:
    """Declare ``deliver`` on ``broker`` (queue ``deliveries``) and return it."""

    def deliver(delivery_id: int) -> None:
        def schedule_retry(seconds: float) -> None:
            enqueue_deliveries(broker, [delivery_id], delay_ms=max(1, int(seconds * 1000)))

        with sessions() as session:
            try:
                status = attempt_delivery(session, delivery_id, senders=senders, box=box,
                                          policy=policy, schedule_retry=schedule_retry)
            except Exception:
                session.rollback()
                raise
        log.debug("delivery %s: %s", delivery_id, status)

    def retry_when(retries: int, exc: BaseException) -> bool:
        # Destination errors are handled inside; only our own database troubles retry here.
        return retries < 1000 and is_transient(exc)

    return dramatiq.actor(
        deliver,
        actor_name=DELIVER_ACTOR,
        queue_name=DELIVER_QUEUE,
        broker=broker,
        retry_when=retry_when,
        min_backoff=500,
        max_backoff=60_000,
        time_limit=60_000,
    )
