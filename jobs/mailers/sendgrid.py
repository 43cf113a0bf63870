"""SendGrid mailer: the real ``sendgrid`` library, dynamic templates, one request per batch."""

from __future__ import annotations

import time
import urllib.error
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from jobs.mailers.base import MAX_PERSONALIZATIONS, Mailer, MailResult, Recipient


def request_body(from_email: str, template_id: str, recipients: list[Recipient],
                 custom_args: dict[str, str]) -> dict[str, Any]:
    """The v3 mail/send body (also what the log mailer writes)."""
    return {
        "from": {"email": from_email},
        "template_id": template_id,
        "personalizations": [
            {"to": [{"email": r.email, **({"name": r.name} if r.name else {})}],
             "dynamic_template_data": r.data}
            for r in recipients
        ],
        "custom_args": custom_args,
    }


class SendGridMailer(Mailer):
    """Sends through SendGrid's v3 API (``host`` may point at a local stand-in in tests).

    Attributes:
        timeout: seconds before a request is abandoned (then retried as transient).
    """

    def __init__(self, api_key: str, from_email: str, host: str, timeout: float = 10.0) -> None:
        self.from_email = from_email
        self.client = SendGridAPIClient(api_key=api_key, host=host)
        self.client.client.timeout = timeout

    def send(self, template_id: str, recipients: list[Recipient],
             custom_args: dict[str, str]) -> MailResult:
        if len(recipients) > MAX_PERSONALIZATIONS:
            raise ValueError("at most 1,000 personalizations per request")
        body = request_body(self.from_email, template_id, recipients, custom_args)
        try:
            response = self.client.client.mail.send.post(request_body=body)
        except HTTPError as exc:
            status = int(exc.status_code)
            headers = {k.lower(): v for k, v in dict(exc.headers or {}).items()}
            retry_after = None
            reset = str(headers.get("x-ratelimit-reset", "")).strip()
            if reset.isdigit():
                retry_after = max(0.0, float(reset) - time.time())
            elif str(headers.get("retry-after", "")).strip().isdigit():
                retry_after = float(headers["retry-after"])
            detail = exc.body.decode("utf-8", "replace")[:300] if isinstance(exc.body, bytes) else ""
            return MailResult(False, status=status, error=f"HTTP {status}: {detail}",
                              transient=status == 429 or status >= 500, retry_after=retry_after)
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
            return MailResult(False, error=f"network error: {type(exc).__name__}", transient=True)
        return MailResult(True, status=response.status_code)
