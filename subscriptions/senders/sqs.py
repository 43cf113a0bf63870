"""SQS sender: ``SendMessage`` / ``SendMessageBatch`` with string message attributes; FIFO group
and dedup ids."""

from __future__ import annotations

from typing import Any

from subscriptions.senders.aws import ClientCache, call, call_batch, chunks, message_kwargs
from subscriptions.senders.base import Destination, OutgoingMessage, Sender, SendResult


class SqsSender(Sender):
    def __init__(self, clients: ClientCache | None = None) -> None:
        self.clients = clients or ClientCache()

    def send(self, destination: Destination, message: OutgoingMessage) -> SendResult:
        return call(self.clients, "sqs", destination, "send_message", QueueUrl=destination.target,
                    MessageBody=message.body, **message_kwargs(destination, message))

    def send_batch(self, destination: Destination,
                   messages: list[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        for chunk in chunks(messages):
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
