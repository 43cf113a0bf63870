"""SQS sender: ``SendMessage`` / ``SendMessageBatch`` with string message attributes; FIFO group
and dedup ids."""

from __future__ import annotations

from typing import Any

from subscriptions.senders.aws import ClientCache, call, call_batch, message_kwargs
from subscriptions.senders.base import MAX_BATCH, Destination, OutgoingMessage, Sender, SendResult

# SendMessageBatch refuses a request whose bodies and attributes add up to more than this.
MAX_BATCH_BYTES = 256 * 1024


def _size(message: OutgoingMessage) -> int:
    return len(message.body.encode()) + sum(len(k) + len(v) + 6 for k, v in
                                            message.attributes.items())


class SqsSender(Sender):
    def __init__(self, clients: ClientCache | None = None) -> None:
        self.clients = clients or ClientCache()

    def send(self, destination: Destination, message: OutgoingMessage) -> SendResult:
        return call(self.clients, "sqs", destination, "send_message", QueueUrl=destination.target,
                    MessageBody=message.body, **message_kwargs(destination, message))

    def send_batch(self, destination: Destination,
                   messages: list[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        for chunk in _chunks(messages):
            results += self._one_batch(destination, chunk)
        return results

    def _one_batch(self, destination: Destination,
                   messages: list[OutgoingMessage]) -> list[SendResult]:
        if len(messages) == 1:
            return [self.send(destination, messages[0])]
        entries: list[dict[str, Any]] = [
            {"Id": str(i), "MessageBody": m.body, **message_kwargs(destination, m)}
            for i, m in enumerate(messages)]
        return call_batch(self.clients, "sqs", destination, "send_message_batch", len(entries),
                          QueueUrl=destination.target, Entries=entries)


def _chunks(messages: list[OutgoingMessage]) -> list[list[OutgoingMessage]]:
    """At most ten messages and 256 KiB per request, in order."""
    chunks: list[list[OutgoingMessage]] = [[]]
    size = 0
    for m in messages:
        s = _size(m)
        if chunks[-1] and (len(chunks[-1]) == MAX_BATCH or size + s > MAX_BATCH_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(m)
        size += s
    return [c for c in chunks if c]
