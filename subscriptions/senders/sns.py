"""SNS sender: ``Publish`` / ``PublishBatch`` with message attributes (so filter policies work);
FIFO topics too."""

from __future__ import annotations

from typing import Any

from subscriptions.senders.aws import ClientCache, call, call_batch, chunks, message_kwargs
from subscriptions.senders.base import Destination, OutgoingMessage, Sender, SendResult


class SnsSender(Sender):
    def __init__(self, clients: ClientCache | None = None) -> None:
        self.clients = clients or ClientCache()

    def send(self, destination: Destination, message: OutgoingMessage) -> SendResult:
        return call(self.clients, "sns", destination, "publish", TopicArn=destination.target,
                    Message=message.body, **message_kwargs(destination, message))

    def send_batch(self, destination: Destination,
                   messages: list[OutgoingMessage]) -> list[SendResult]:
        """``PublishBatch`` of up to ten (and 256 KiB) per call; each entry keeps its own result
        (a partial failure retries only the entries that failed)."""
        results: list[SendResult] = []
        for chunk in chunks(messages):
            results += self._one_batch(destination, chunk)
        return results

    def _one_batch(self, destination: Destination,
                   messages: list[OutgoingMessage]) -> list[SendResult]:
        if len(messages) == 1:
            return [self.send(destination, messages[0])]
        entries: list[dict[str, Any]] = [
            {"Id": str(i), "Message": m.body, **message_kwargs(destination, m)}
            for i, m in enumerate(messages)]
        return call_batch(self.clients, "sns", destination, "publish_batch", len(entries),
                          TopicArn=destination.target, PublishBatchRequestEntries=entries)
