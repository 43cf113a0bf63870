"""Enqueue work for the deliver and notify pools by actor name (no actor object needed)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import dramatiq
import redis

from infra.broker.queues import DELIVER_ACTOR, DELIVER_QUEUE, NOTIFY_ACTOR, NOTIFY_QUEUE


class BrokerUnavailable(Exception):
    """The broker could not take a message (Redis unreachable or timing out)."""


@contextmanager
def _broker_errors() -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _enqueue_ids(broker: dramatiq.Broker, queue: str, actor: str, ids: Iterable[int],
                 delay_ms: int | None) -> int:
    broker.declare_queue(queue)
    count = 0
    with _broker_errors():
        for one in ids:
            broker.enqueue(dramatiq.Message(queue_name=queue, actor_name=actor,
                                            args=(int(one),), kwargs={}, options={}),
                           delay=delay_ms)
            count += 1
    return count


# One deliver message carries up to this many delivery ids: one attempt of the deliver pool
# (ten batch calls of ten, sent side by side; workers/deliver.py).
DELIVERIES_PER_MESSAGE = 100


def enqueue_deliveries(broker: dramatiq.Broker, delivery_ids: Iterable[int],
                       *, delay_ms: int | None = None) -> int:
    """Send ``deliver`` messages of up to ten ids each, in the order given (callers order ids
    by subscription so a message's deliveries share one batch call); returns how many ids.

    Raises BrokerUnavailable when Redis cannot be reached; messages sent before that stay sent.
    """
    ids = [int(i) for i in delivery_ids]
    broker.declare_queue(DELIVER_QUEUE)
    with _broker_errors():
        for start in range(0, len(ids), DELIVERIES_PER_MESSAGE):
            chunk = ids[start:start + DELIVERIES_PER_MESSAGE]
            broker.enqueue(dramatiq.Message(queue_name=DELIVER_QUEUE, actor_name=DELIVER_ACTOR,
                                            args=(chunk,), kwargs={}, options={}),
                           delay=delay_ms)
    return len(ids)


def enqueue_runs(broker: dramatiq.Broker, run_ids: Iterable[int], *,
                 delay_ms: int | None = None) -> int:
    """Send one ``send_notifications`` message per job run id."""
    return _enqueue_ids(broker, NOTIFY_QUEUE, NOTIFY_ACTOR, run_ids, delay_ms)
