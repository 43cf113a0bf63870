"""Stub sender for unit tests: records messages, and fails as told."""

from __future__ import annotations

import threading
from collections import deque

from subscriptions.senders.base import Destination, OutgoingMessage, Sender, SendResult


class StubSender(Sender):
    """Records every message; ``failures`` are returned first, in order, one per send."""

    def __init__(self) -> None:
        self.sent: list[tuple[Destination, OutgoingMessage]] = []
        self.failures: deque[SendResult] = deque()
        self._lock = threading.Lock()

    def send(self, destination: Destination, message: OutgoingMessage) -> SendResult:
        with self._lock:
            if self.failures:
                return self.failures.popleft()
            self.sent.append((destination, message))
            return SendResult(True, message_id=f"stub-{len(self.sent)}")
