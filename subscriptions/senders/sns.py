"""SNS sender: ``Publish`` / ``PublishBatch`` with message attributes (so filter policies work);
FIFO topics too."""

from __future__ import annotations

from subscriptions.senders.aws import BatchingSender


class SnsSender(BatchingSender):
    service = "sns"
    single_call, batch_call = "publish", "publish_batch"
    target_param, body_param, entries_param = "TopicArn", "Message", "PublishBatchRequestEntries"
