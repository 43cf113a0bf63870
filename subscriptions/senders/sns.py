"""SNS sender: ``Publish`` with message attributes (so filter policies work); FIFO topics too."""

from __future__ import annotations

from subscriptions.senders.aws import ClientCache, call, message_kwargs
from subscriptions.senders.base import Destination, OutgoingMessage, Sender, SendResult


class SnsSender(Sender):
    def __init__(self, clients: ClientCache | None = None) -> None:
        self.clients = clients or ClientCache()

    def send(self, destination: Destination, message: OutgoingMessage) -> SendResult:
        return call(self.clients, "sns", destination, "publish", TopicArn=destination.target,
                    Message=message.body, **message_kwargs(destination, message))
