"""The embedded default's in-process broker keeps its dead letters in the database.

Dramatiq's StubBroker holds dead letters in a list inside the ``eventcollector dev`` process,
where no other process can see them. :class:`KeepDeadLetters` hands each one to a ``keep``
callback (which stores it: store/deadletters.py) and drops it from that list;
:func:`redrive` enqueues stored ones again, their retry count reset, as ``eventcollector dlq
retry`` does on Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq

from infra.broker.dramatiq_compat import as_new, canonical_queue, drop_stub_dead_letter

log = logging.getLogger(__name__)

Keep = Callable[[str, str, str], None]  # (queue, message id, encoded message)


class KeepDeadLetters(dramatiq.Middleware):
    def __init__(self, keep: Keep) -> None:
        self.keep = keep

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        queue = canonical_queue(message.queue_name)
        try:
            self.keep(queue, message.message_id, message.encode().decode())
        except Exception:  # noqa: BLE001 - it stays in the process's list, as before
            log.exception("could not store dead letter %s of %s", message.message_id, queue)
            return
        drop_stub_dead_letter(broker, queue, message.message_id)


def redrive(broker: dramatiq.Broker, queue: str, encoded: str) -> None:
    """Enqueue a stored dead letter again, as new: no retries, no traceback."""
    broker.declare_queue(queue)
    broker.enqueue(as_new(dramatiq.Message.decode(encoded.encode()), queue))
