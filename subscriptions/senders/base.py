"""The sender port: one message to one destination, with the outcome classified for retries."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Destination:
    """Where a subscription's messages go, and as whom.

    ``credentials`` is ``keys`` (``access_key``/``access_secret``, decrypted, never logged),
    ``role`` (``role_arn`` assumed with STS passing ``external_id``, the tenant's, under
    ``session_name``) or ``platform`` (the process's own credential chain).
    """

    kind: str  # SQS | SNS
    target: str  # queue URL or topic ARN
    region: str
    access_key: str | None = None
    access_secret: str | None = field(default=None, repr=False)
    credentials: str = "platform"
    role_arn: str | None = None
    external_id: str | None = None
    session_name: str | None = None

    @property
    def fifo(self) -> bool:
        return self.target.endswith(".fifo")


@dataclass(frozen=True)
class OutgoingMessage:
    body: str
    attributes: dict[str, str]
    group_id: str | None = None
    deduplication_id: str | None = None


@dataclass(frozen=True)
class SendResult:
    """What happened. ``transient`` failures are retried; others fail at once."""

    ok: bool
    message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    transient: bool = False
    retry_after: float | None = None
    # When a permanent failure deactivates the subscription: the reason to record, if not the
    # generic "permanent delivery error: <error>".
    deactivation_reason: str | None = None


# SQS SendMessageBatch and SNS PublishBatch take at most ten entries.
MAX_BATCH = 10


class Sender(abc.ABC):
    """Sends messages to one destination; never raises for the destination's errors."""

    @abc.abstractmethod
    def send(self, destination: Destination, message: OutgoingMessage) -> SendResult:
        """Send ``message``; classify any failure into the result."""

    def send_batch(self, destination: Destination,
                   messages: list[OutgoingMessage]) -> list[SendResult]:
        """Send up to ``MAX_BATCH`` messages; one result per message, in order. This default
        sends them one by one; a sender with a batch call overrides it."""
        return [self.send(destination, m) for m in messages]
