"""Sender implementations: ``sqs``, ``sns`` (boto3) and ``stub`` (tests)."""
