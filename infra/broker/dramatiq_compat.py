"""Every use of Dramatiq beyond its documented API, in one module.

The product relies on a few Dramatiq internals: the Redis broker's key layout (the Lua intake
writes persist messages straight into it, the metrics and ``eventcollector dlq`` read it), its
``_dispatch`` method and ``broker_id`` (infra/broker/redis_broker.py), the option names its
broker and Retries middleware put on a message, the StubBroker's queues and dead-letter lists
(the embedded default), the name of the dramatiq CLI's SIGTERM handler (workers/main.py) and the
form of the worker's "Failed to process message" log records (config/logging.py). Everything
else imports those names from here. ``dramatiq`` is pinned to one minor series in pyproject.toml;
tests/unit/test_dramatiq_compat.py checks each assumption below against the installed Dramatiq,
so an upgrade that breaks one fails a test named after it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeGuard

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name, q_name

# --- the Redis broker's key layout (dramatiq/brokers/redis/dispatch.lua) ------------------------
#
# enqueue: HSET <ns>:<queue>.msgs <redis message id> <encoded message>, then
#          RPUSH <ns>:<queue> <redis message id>; a delayed message goes to the queue "<queue>.DQ"
#          with the option "eta". Fetched, unacknowledged ids wait in
#          <ns>:__acks__.<broker id>.<queue> while <broker id> heartbeats in <ns>:__heartbeats__;
#          dead letters are the sorted set <ns>:<queue>.XQ (scored by when they died) and the
#          hash <ns>:<queue>.XQ.msgs.

# The option RedisBroker.enqueue gives each message: its field in the ``.msgs`` hash and its
# entry in the queue list (unique per enqueue, unlike the message id, which a retry keeps).
REDIS_MESSAGE_ID = "redis_message_id"
# The option a delayed message carries: when it is due (ms since the epoch).
ETA = "eta"
# The options Dramatiq's Retries middleware keeps on a failed message.
RETRIES = "retries"
TRACEBACK = "traceback"


def delayed_queue(queue: str) -> str:
    """The delay queue of ``queue`` (retries and delayed messages wait there): ``<queue>.DQ``."""
    return str(dq_name(queue))


def canonical_queue(queue: str) -> str:
    """``queue`` without a ``.DQ``/``.XQ`` suffix (a message's queue name may carry one)."""
    return str(q_name(queue))


def queue_key(namespace: str, queue: str) -> str:
    """The list of redis message ids waiting on ``queue``."""
    return f"{namespace}:{queue}"


def messages_key(namespace: str, queue: str) -> str:
    """The hash of ``queue``'s messages: redis message id -> encoded message."""
    return f"{queue_key(namespace, queue)}.msgs"


def dead_letter_key(namespace: str, queue: str) -> str:
    """The sorted set of ``queue``'s dead-lettered redis message ids, scored by when (ms)."""
    return f"{namespace}:{canonical_queue(queue)}.XQ"


def dead_letter_messages_key(namespace: str, queue: str) -> str:
    """The hash of ``queue``'s dead letters: redis message id -> encoded message."""
    return f"{dead_letter_key(namespace, queue)}.msgs"


def acks_key(namespace: str, broker_id: str, queue: str) -> str:
    """The set of ``queue``'s ids fetched by the broker ``broker_id`` and not yet acknowledged."""
    return f"{namespace}:__acks__.{broker_id}.{queue}"


def heartbeats_key(namespace: str) -> str:
    """The sorted set of broker ids by their last heartbeat (ms)."""
    return f"{namespace}:__heartbeats__"


def enqueue_options(redis_message_id: str) -> dict[str, Any]:
    """The options RedisBroker.enqueue adds to a message it enqueues without a delay."""
    return {REDIS_MESSAGE_ID: redis_message_id}


def queue_sizes(client: Any, namespace: str, queue: str) -> tuple[int, int, int]:
    """(waiting, delayed, dead-lettered) messages of ``queue`` in the broker's Redis."""
    return (int(client.llen(queue_key(namespace, queue))),
            int(client.llen(queue_key(namespace, delayed_queue(queue)))),
            int(client.zcard(dead_letter_key(namespace, queue))))


# --- RedisBroker._dispatch and broker_id --------------------------------------------------------

Dispatch = Callable[..., Any]  # (queue name, *command args) -> the script's answer


class DispatchHookRedisBroker(RedisBroker):
    """A RedisBroker whose every Redis command (enqueue, fetch, ack, nack, requeue, purge, qsize:
    each one call of its dispatch script, built by ``_dispatch``) goes through
    :meth:`call_dispatch`, and which can take a new identity (``broker_id``: the name of its
    heartbeat and of its sets of unacknowledged messages)."""

    def call_dispatch(self, dispatch: Dispatch, queue_name: str, *args: Any) -> Any:
        """Run one broker command; a subclass may wrap it."""
        return dispatch(queue_name, *args)

    def renew_broker_id(self, broker_id: str) -> None:
        """Heartbeat and hold messages under ``broker_id`` from now on; the old id's
        unacknowledged messages are requeued once its heartbeat is older than the timeout."""
        self.broker_id = broker_id

    def _dispatch(self, command: str) -> Dispatch:
        dispatch = super()._dispatch(command)

        def hooked(queue_name: str, *args: Any) -> Any:
            return self.call_dispatch(dispatch, queue_name, *args)

        return hooked


# --- messages -----------------------------------------------------------------------------------

# What the broker and the Retries middleware add to a message's options as it goes round.
DELIVERY_STATE_OPTIONS = (RETRIES, TRACEBACK, REDIS_MESSAGE_ID, ETA)


def as_new(message: dramatiq.Message[Any], queue: str) -> dramatiq.Message[Any]:
    """``message`` to enqueue again as new on ``queue``: no retry count, traceback or broker ids.
    (Not ``Message.copy``, which merges the options given into the old ones, so it kept the
    retry count.)"""
    options = {k: v for k, v in message.options.items() if k not in DELIVERY_STATE_OPTIONS}
    return dataclasses.replace(message, options=options, queue_name=queue)


def is_message(value: object) -> TypeGuard[Any]:
    """A Dramatiq message or a broker's proxy of one (the worker logs "Failed to process message
    %s" with the message itself as the argument)."""
    return (type(value).__module__.startswith("dramatiq.")
            and hasattr(value, "message_id") and hasattr(value, "actor_name"))


# --- StubBroker (the embedded default's in-process broker) --------------------------------------

def stub_dead_letters(broker: dramatiq.Broker, queue: str) -> list[Any]:
    """The dead letters a StubBroker holds for ``queue`` (the live list: consumers append to
    it); empty for another broker."""
    by_queue = getattr(broker, "dead_letters_by_queue", None)
    if by_queue is None or queue not in by_queue:
        return []
    held: list[Any] = by_queue[queue]
    return held


def drop_stub_dead_letter(broker: dramatiq.Broker, queue: str, message_id: str) -> None:
    """Forget a StubBroker's dead letter (in place: its consumers hold the same list)."""
    held = stub_dead_letters(broker, queue)
    held[:] = [m for m in held if m.message_id != message_id]


def stub_queue_size(broker: dramatiq.Broker, queue: str) -> int:
    """Messages waiting in a StubBroker's in-memory ``queue`` (0 for an unknown queue)."""
    found = getattr(broker, "queues", {}).get(queue)
    return int(found.qsize()) if found is not None and hasattr(found, "qsize") else 0


# --- the dramatiq CLI ---------------------------------------------------------------------------

# The SIGTERM handler the dramatiq CLI installs in each worker process is a closure defined in
# dramatiq.cli.worker_process; its first SIGTERM stops gracefully, a second one exits at once.
CLI_WORKER_HANDLER_PREFIX = "worker_process."


def is_cli_worker_sigterm_handler(handler: object) -> TypeGuard[Callable[..., Any]]:
    """True for the dramatiq CLI worker process's SIGTERM handler."""
    return callable(handler) and getattr(handler, "__qualname__", "").startswith(
        CLI_WORKER_HANDLER_PREFIX)
