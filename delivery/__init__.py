"""Delivering matched events to subscribers' SQS queues and SNS topics, with retries."""
