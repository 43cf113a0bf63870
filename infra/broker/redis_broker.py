"""A Dramatiq RedisBroker that gives up its identity after a connection error.

Dramatiq's Redis consumer keeps fetched-but-unacknowledged messages in a set named after the
broker's id, and only requeues such a set when that id's heartbeat stops. When Redis goes away
while a consumer holds prefetched messages, the consumer drops them from memory, but the worker
keeps heartbeating under the same id, so they would stay parked for as long as the process lives.
Taking a new id on a connection error lets the old id's heartbeat expire, and the broker's
maintenance then requeues whatever it still held. Redelivery is safe: every actor is idempotent.

It also caps the consumer's idle back-off: Dramatiq's consumer sleeps 5, 10, 20 … ms up to the
worker's idle timeout (1 s) after each empty fetch, so on a queue that empties between messages
(a steady 200 events/s) each stage could add hundreds of milliseconds of latency.
"""

from __future__ import annotations

import uuid
from typing import Any

import redis

from infra.broker.dramatiq_compat import Dispatch, DispatchHookRedisBroker


class ResilientRedisBroker(DispatchHookRedisBroker):
    def __init__(self, *args: Any, idle_poll_ms: int = 50, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_poll_ms = idle_poll_ms

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        return super().consume(queue_name, prefetch, min(timeout, self.idle_poll_ms))

    def call_dispatch(self, dispatch: Dispatch, queue_name: str, *args: Any) -> Any:
        try:
            return dispatch(queue_name, *args)
        except (redis.ConnectionError, redis.TimeoutError):
            self.renew_broker_id(str(uuid.uuid4()))
            raise
