"""Stub mailer for unit tests: records requests; ``failures`` are returned first, in order."""

from __future__ import annotations

import threading
from collections import deque

from jobs.mailers.base import Mailer, MailResult, Recipient


class StubMailer(Mailer):
    def __init__(self) -> None:
        self.requests: list[tuple[str, list[Recipient], dict[str, str]]] = []
        self.failures: deque[MailResult] = deque()
        self._lock = threading.Lock()

    def send(self, template_id: str, recipients: list[Recipient],
             custom_args: dict[str, str]) -> MailResult:
        with self._lock:
            if self.failures:
                return self.failures.popleft()
            self.requests.append((template_id, list(recipients), dict(custom_args)))
            return MailResult(True, status=202)
