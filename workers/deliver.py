"""The deliver pool's actor: the messages a process has in hand at the same time are attempted
together (subscriptions/service.py claims them in one statement, sends ten per batch call
concurrently, and records every outcome in one statement), the next attempt scheduled by our
policy."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import dramatiq
from sqlalchemy.orm import Session, sessionmaker

from infra.broker.dispatch import enqueue_deliveries
from infra.broker.queues import DELIVER_ACTOR, DELIVER_QUEUE
from infra.crypto import SecretBox
from infra.errors import is_transient
from subscriptions.senders.base import Sender
from subscriptions.service import DeliveryRetryPolicy, Task, attempt_deliveries
from workers.grouping import Grouper

log = logging.getLogger(__name__)

# How many deliveries one attempt takes at most (ten batch calls of ten); how many batch calls
# one process has in flight at once is EC_DELIVER_SENDS_IN_FLIGHT.
DELIVERIES_PER_ATTEMPT = 100


def declare_deliver_actor(
    broker: dramatiq.Broker, sessions: sessionmaker[Session], *, senders: Mapping[str, Sender],
    box: SecretBox, policy: DeliveryRetryPolicy, linger: float = 0.0,
    max_deliveries: int = DELIVERIES_PER_ATTEMPT, sends_in_flight: int = 8,
) -> dramatiq.Actor:
    """Declare ``deliver`` on ``broker`` (queue ``deliveries``) and return it."""
    pool = ThreadPoolExecutor(max_workers=sends_in_flight, thread_name_prefix="deliver-send")

    def schedule_retry(retry_ids: list[int], seconds: float) -> None:
        enqueue_deliveries(broker, retry_ids, delay_ms=max(1, int(seconds * 1000)))

    def run(tasks: list[Task]) -> None:
        # Every call of every thread goes through the one pool, so the process never has more
        # than ``sends_in_flight`` in flight (a slow destination is not pressed harder by
        # more threads); any error is raised here.
        for future in [pool.submit(task) for task in tasks]:
            future.result()

    def attempt_group(messages: list[list[int]]) -> list[None | BaseException]:
        ids = [i for message in messages for i in message]
        statuses = attempt_deliveries(sessions, ids, senders=senders, box=box, policy=policy,
                                      schedule_retry=schedule_retry, run=run)
        log.debug("deliveries: %s", statuses)
        return [None] * len(messages)

    # Messages handled at the same time (and those arriving within ``linger``) share one claim,
    # one record and batch calls of ten per subscription; the next group forms while one sends
    # (overlap), so a process keeps several attempts in flight, each short transactions apart.
    group: Grouper[list[int], None] = Grouper(attempt_group, size=len, max_size=max_deliveries,
                                              linger=linger, overlap=True)

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
