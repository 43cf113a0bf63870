"""Subscriptions: contract, storage, matching, deliveries and the SQS/SNS senders."""
