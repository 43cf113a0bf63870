"""Enqueue work for the deliver and notify pools by actor name (no actor object needed)."""

from __future__ import annotations

from collections.abc import Iterable

import dramatiq

from broker.queues import DELIVER_ACTOR, DELIVER_QUEUE, NOTIFY_ACTOR, NOTIFY_QUEUE


def enqueue_deliveries(broker: dramatiq.Broker, delivery_ids: Iterable[int],
                       *, delay_ms: int | None = None) -> int:
    """Send one ``deliver`` message per id; returns how many were sent."""
    broker.declare_queue(DELIVER_QUEUE)
    count = 0
    for delivery_id in delivery_ids:
        broker.enqueue(
            dramatiq.Message(queue_name=DELIVER_QUEUE, actor_name=DELIVER_ACTOR,
                             args=(int(delivery_id),), kwargs={}, options={}),
            delay=delay_ms,
        )
        count += 1
    return count


def enqueue_runs(broker: dramatiq.Broker, run_ids: Iterable[int], *,
                 delay_ms: int | None = None) -> int:
    """Send one ``send_notifications`` message per job run id."""
    broker.declare_queue(NOTIFY_QUEUE)
    count = 0
    for run_id in run_ids:
        broker.enqueue(
            dramatiq.Message(queue_name=NOTIFY_QUEUE, actor_name=NOTIFY_ACTOR,
                             args=(int(run_id),), kwargs={}, options={}),
            delay=delay_ms,
        )
        count += 1
    return count
