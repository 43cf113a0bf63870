"""SQS sender: ``SendMessage`` / ``SendMessageBatch`` with string message attributes; FIFO group
and dedup ids."""

from __future__ import annotations

from subscriptions.senders.aws import BatchingSender


class SqsSender(BatchingSender):
    service = "sqs"
    single_call, batch_call = "send_message", "send_message_batch"
    target_param, body_param, entries_param = "QueueUrl", "MessageBody", "Entries"
