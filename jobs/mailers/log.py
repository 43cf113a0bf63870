"""Log mailer: with no SendGrid key, write each would-be request to the log instead."""

from __future__ import annotations

import logging

import orjson

from jobs.mailers.base import Mailer, MailResult, Recipient
from jobs.mailers.sendgrid import request_body

log = logging.getLogger("eventcollector.mail")


class LogMailer(Mailer):
    def __init__(self, from_email: str = "no-reply@eventcollector.invalid") -> None:
        self.from_email = from_email

    def send(self, template_id: str, recipients: list[Recipient],
             custom_args: dict[str, str]) -> MailResult:
        body = request_body(self.from_email, template_id, recipients, custom_args)
        log.info("no SENDGRID_API_KEY: would send to SendGrid: %s", orjson.dumps(body).decode())
        return MailResult(True, status=202)
