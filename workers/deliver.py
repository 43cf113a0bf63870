"""The deliver pool's actor: one attempt per delivery (up to ten per message, sent in one
batch call), the next one scheduled by our policy."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import dramatiq
from sqlalchemy.orm import Session, sessionmaker

from infra.broker.dispatch import DELIVERIES_PER_MESSAGE, enqueue_deliveries
from infra.broker.queues import DELIVER_ACTOR, DELIVER_QUEUE
from infra.crypto import SecretBox
from infra.db import UnitOfWork
from infra.errors import is_transient
from subscriptions.senders.base import Sender
from subscriptions.service import DeliveryRetryPolicy, attempt_deliveries
from workers.grouping import Grouper

log = logging.getLogger(__name__)


def declare_deliver_actor(
    broker: dramatiq.Broker, sessions: sessionmaker[Session], *, senders: Mapping[str, Sender],
    box: SecretBox, policy: DeliveryRetryPolicy, linger: float = 0.0,
) -> dramatiq.Actor:
    """Declare ``deliver`` on ``broker`` (queue ``deliveries``) and return it."""

    def schedule_retry(retry_ids: list[int], seconds: float) -> None:
        enqueue_deliveries(broker, retry_ids, delay_ms=max(1, int(seconds * 1000)))

    def attempt_group(messages: list[list[int]]) -> list[None | BaseException]:
        ids = [i for message in messages for i in message]
        # One writer unit of work: the rows stay locked from the check through the send to
        # this commit, so no delivery is sent twice at once.
        with UnitOfWork(sessions, write=True) as uow:
            statuses = attempt_deliveries(uow.session, ids, senders=senders, box=box,
                                          policy=policy, schedule_retry=schedule_retry)
            uow.commit()
        log.debug("deliveries: %s", statuses)
        return [None] * len(messages)

    # Messages handled at the same time (and those arriving within ``linger``) share one
    # transaction and one batch call per subscription: on a light load each event comes alone,
    # and one SendMessage per event costs the destination (and us) far more than a batch.
    group: Grouper[list[int], None] = Grouper(attempt_group, size=len,
                                              max_size=DELIVERIES_PER_MESSAGE, linger=linger,
                                              overlap=False)

    def deliver(delivery_ids: int | list[int]) -> None:
        # A message carries a list of ids (one batch call); a single id is the older form.
        ids = [delivery_ids] if isinstance(delivery_ids, int) else [int(i) for i in delivery_ids]
        group.submit(ids)

    def retry_when(retries: int, exc: BaseException) -> bool:
        # Destination errors are handled inside; only our own database troubles retry here.
        return retries < 1000 and is_transient(exc)

    return dramatiq.actor(
        actor_name=DELIVER_ACTOR,
        queue_name=DELIVER_QUEUE,
        broker=broker,
        retry_when=retry_when,
        min_backoff=500,
        max_backoff=60_000,
        time_limit=60_000,
    )(deliver)
