"""A Dramatiq RedisBroker that gives up its identity after a connection error.

Dramatiq's Redis consumer keeps fetched-but-unacknowledged messages in a set named after the
broker's id, and only requeues such a set when that id's heartbeat stops. When Redis goes away
while a consumer holds prefetched messages, the consumer drops them from memory, but the worker
keeps heartbeating under the same id, so they would stay parked for as long as the process lives.
Taking a new id on a connection error lets the old id's heartbeat expire, and the broker's
maintenance then requeues whatever it still held. Redelivery is safe: every actor is idempotent.
"""

from __future__ import annotations

import uuid
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker


class ResilientRedisBroker(RedisBroker):
    def _dispatch(self, command: str) -> Any:
        dispatch = super()._dispatch(command)

        def guarded(queue_name: str, *args: Any) -> Any:
            try:
                return dispatch(queue_name, *args)
            except (redis.ConnectionError, redis.TimeoutError):
                self.broker_id = str(uuid.uuid4())
                raise

        return guarded
