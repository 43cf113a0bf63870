"""SQS sender: ``SendMessage`` with string message attributes; FIFO group and dedup ids."""

from __future__ import annotations

from delivery.sender import Destination, OutgoingMessage, Sender, SendResult
from delivery.senders.aws import ClientCache, call, message_kwargs


class SqsSender(Sender):
    def __init__(self, clients: ClientCache | None = None) -> None:
        self.clients = clients or ClientCache()

    def send(self, destination: Destination, message: OutgoingMessage) -> SendResult:
        client = self.clients.get("sqs", destination)
        return call(client.send_message, QueueUrl=destination.target, MessageBody=message.body,
                    **message_kwargs(destination, message))
