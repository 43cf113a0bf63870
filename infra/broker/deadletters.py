"""Dead-lettered Dramatiq messages in Redis: list, re-drive, purge (``eventcollector dlq``)."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis

from infra.broker.dramatiq_compat import (
    RETRIES,
    TRACEBACK,
    as_new,
    dead_letter_key,
    dead_letter_messages_key,
)
from infra.broker.queues import BROKER_NAMESPACE, DELIVER_QUEUE, NOTIFY_QUEUE, PERSIST_QUEUE

QUEUES = (PERSIST_QUEUE, DELIVER_QUEUE, NOTIFY_QUEUE)


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    redis_id: str
    message: dramatiq.Message[Any]
    dead_at_ms: int

    def summary(self) -> dict[str, Any]:
        """What an operator may see: no event bodies, only their count and ids."""
        args = list(self.message.args)
        shown: list[Any] = []
        for a in args:
            if isinstance(a, list):
                shown.append({"events": len(a),
                              "ids": [e.get("id") for e in a[:5] if isinstance(e, dict)]})
            else:
                shown.append(a)
        return {"queue": self.queue, "id": self.redis_id, "message_id": self.message.message_id,
                "actor": self.message.actor_name, "args": shown,
                "retries": self.message.options.get(RETRIES, 0),
                "error": str(self.message.options.get(TRACEBACK, ""))[-300:] or None,
                "dead_at_ms": self.dead_at_ms}


class DeadLetters:
    """Reads and re-drives ``<ns>:<queue>.XQ`` (Dramatiq's Redis dead-letter layout)."""

    def __init__(self, client: redis.Redis, broker: dramatiq.Broker,
                 namespace: str = BROKER_NAMESPACE) -> None:
        self.client = client
        self.broker = broker
        self.namespace = namespace

    def _keys(self, queue: str) -> tuple[str, str]:
        return (dead_letter_key(self.namespace, queue),
                dead_letter_messages_key(self.namespace, queue))

    def size(self, queue: str) -> int:
        return int(self.client.zcard(self._keys(queue)[0]))

    def list(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        zset, msgs = self._keys(queue)
        out = []
        for rid, score in self.client.zrange(zset, 0, limit - 1, withscores=True):
            raw = self.client.hget(msgs, rid)
            if raw is None:
                continue
            out.append(DeadLetter(queue, rid.decode(), dramatiq.Message.decode(raw), int(score)))
        return out

    def retry(self, queue: str, redis_ids: builtins.list[str] | None = None) -> int:
        """Enqueue dead letters again (all, or the given ids) with their retry count reset."""
        zset, msgs = self._keys(queue)
        count = 0
        for letter in self.list(queue, limit=100_000):
            if redis_ids is not None and letter.redis_id not in redis_ids:
                continue
            self.broker.declare_queue(queue)
            self.broker.enqueue(as_new(letter.message, queue))
            pipe = self.client.pipeline()
            pipe.zrem(zset, letter.redis_id)
            pipe.hdel(msgs, letter.redis_id)
            pipe.execute()
            count += 1
        return count

    def purge(self, queue: str) -> int:
        zset, msgs = self._keys(queue)
        n = self.size(queue)
        self.client.delete(zset, msgs)
        return n
