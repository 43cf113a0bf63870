"""JSON log lines with the request id, tenant and correlationId of whatever is being handled."""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime

import orjson

from infra.broker.dramatiq_compat import is_message
from infra.redact import needs_scrub, scrub

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)
correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None)


def without_message_bodies(record: logging.LogRecord) -> logging.LogRecord:
    """Replace each Dramatiq message among ``record.args`` by its actor, id and queue (in place,
    so every handler sees the short form): Dramatiq logs "Failed to process message %s" with
    the message itself when a persist fails."""
    args = record.args
    if isinstance(args, tuple) and any(is_message(a) for a in args):
        record.args = tuple(
            f"{a.actor_name}[{a.message_id}] on {a.queue_name}" if is_message(a) else a
            for a in args)
    elif isinstance(args, dict) and any(is_message(a) for a in args.values()):
        record.args = {k: (f"{v.actor_name}[{v.message_id}]" if is_message(v) else v)
                       for k, v in args.items()}
    return record


class MessageBodyFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        without_message_bodies(record)
        return True


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        without_message_bodies(record)
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, var in (("request_id", request_id), ("tenant", tenant),
                          ("correlation_id", correlation_id)):
            value = var.get()
            if value:
                entry[name] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # An exception's text may quote signed request headers (botocore's does): never write
        # a credential, signature or key id (delivery/redact.py). One substring pass decides.
        texts = [v for v in entry.values() if isinstance(v, str)]
        if needs_scrub("\n".join(texts)):
            entry = {k: scrub(v) if isinstance(v, str) else v for k, v in entry.items()}
        return orjson.dumps(entry).decode()


def configure_logging(level: str, log_format: str | None = None, *, default: str = "json") -> None:
    """Root logging for a process on stderr: JSON lines or plain text (``LOG_FORMAT``; when it is
    unset, ``default``: JSON for the Procfile's processes, text for ``eventcollector dev``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MessageBodyFilter())
    handler.setFormatter(JsonFormatter() if (log_format or default) == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
