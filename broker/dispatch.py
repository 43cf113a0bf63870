"""Enqueue work for the deliver and notify pools by actor name (no actor object needed)."""

from __future__ import annotations

from collections.abc import Iterable

import dramatiq

from broker.queues import DELIVER_ACTOR, DELIVER_QUEUE, NOTIFY_ACTOR, NOTIFY_QUEUE


def _enqueue_ids(broker: dramatiq.Broker, queue: str, actor: str, ids: Iterable[int],
                 delay_ms: int | None) -> int:
    broker.declare_queue(queue)
    count = 0
    for one in ids:
        broker.enqueue(dramatiq.Message(queue_name=queue, actor_name=actor, args=(int(one),),
                                        kwargs={}, options={}), delay=delay_ms)
        count += 1
    return count


def enqueue_deliveries(broker: dramatiq.Broker, delivery_ids: Iterable[int],
                       *, delay_ms: int | None = None) -> int:
    """Send one ``deliver`` message per id; returns how many were sent."""
    return _enqueue_ids(broker, DELIVER_QUEUE, DELIVER_ACTOR, delivery_ids, delay_ms)


def enqueue_runs(broker: dramatiq.Broker, run_ids: Iterable[int], *,
                 delay_ms: int | None = None) -> int:
    """Send one ``send_notifications`` message per job run id."""
    return _enqueue_ids(broker, NOTIFY_QUEUE, NOTIFY_ACTOR, run_ids, delay_ms)
