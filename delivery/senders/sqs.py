"""SQS sender: ``SendMessage`` with string message attributes; FIFO group and dedup ids."""

from __future__ import annotations

from typing import Any

from delivery.sender import Destination, OutgoingMessage, Sender, SendResult
from delivery.senders.aws import ClientCache, classify


class SqsSender(Sender):
    def __init__(self, clients: ClientCache | None = None) -> None:
        self.clients = clients or ClientCache()

    def send(self, destination: Destination, message: OutgoingMessage) -> SendResult:
        kwargs: dict[str, Any] = {
            "QueueUrl": destination.target,
            "MessageBody": message.body,
            "MessageAttributes": {
                k: {"DataType": "String", "StringValue": v} for k, v in message.attributes.items()
            },
        }
        if destination.fifo:
            kwargs["MessageGroupId"] = message.group_id
            kwargs["MessageDeduplicationId"] = message.deduplication_id
        try:
            response = self.clients.get("sqs", destination).send_message(**kwargs)
        except Exception as exc:  # noqa: BLE001 - classified, never raised
            return classify(exc)
        return SendResult(True, message_id=response.get("MessageId"))
