"""The mailer port: one dynamic-template request for up to 1,000 recipients."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

MAX_PERSONALIZATIONS = 1000


@dataclass(frozen=True)
class Recipient:
    """One personalization: who, and the template data for them."""

    customer_id: str
    email: str
    name: str | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MailResult:
    """``transient`` failures (429, 5xx, network) are retried; others are recorded as failed."""

    ok: bool
    status: int | None = None
    error: str | None = None
    transient: bool = False
    retry_after: float | None = None


class Mailer(abc.ABC):
    @abc.abstractmethod
    def send(self, template_id: str, recipients: list[Recipient],
             custom_args: dict[str, str]) -> MailResult:
        """Send one request with one personalization per recipient; never raises for the
        provider's errors."""
