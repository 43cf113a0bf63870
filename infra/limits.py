"""Every length and value range the API accepts, in one place.

The pydantic input models (store/domain.py, store/subscriptions.py, store/jobs.py, the query
models under api/) and the SQLAlchemy columns they land in (store/models.py) both read these
numbers, so what validation accepts always fits the store on PostgreSQL and SQLite;
``tests/unit/test_limits.py`` walks the models and the columns and fails on any mismatch.

A pattern-validated string is matched whole: ``full_pattern`` compiles it for ``fullmatch`` with
ASCII classes (Python's ``$`` also matches before a final newline, and its ``\\d`` and ``\\s``
match any Unicode digit or space), and ``anchored`` gives pydantic (Rust regex) and JSON Schema
(ECMA) the same pattern anchored at both ends, where ``$`` is the end of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TENANT_MAX = 64  # tenant names
EVENT_ID_MAX = 128  # event, subscription and job ids
ENTITY_ID_MAX = 255  # entity_id and event_payload.entity_id
ENUM_MAX = 32  # entity names, event sources and types, operations
MAX_KEY_ATTRIBUTES = 64
ATTR_KEY_MAX = 128
ATTR_VALUE_MAX = 2048
CORRELATION_ID_MAX = ATTR_VALUE_MAX  # events.correlation_id holds a key attribute's value

DESTINATION_MAX = 1024  # queueUrl / topicArn
REGION_MAX = 32
ACCESS_KEY_MIN = 16
ACCESS_KEY_MAX = 128
ACCESS_SECRET_MAX = 256  # stored Fernet-encrypted (Text)
ROLE_ARN_MAX = 2048  # IAM role ARNs (STS takes up to 2,048)
EXTERNAL_ID_MAX = 1224  # STS ExternalId; ours are 35 characters, kept in a String(64)

JOB_TEXT_MAX = 255  # template_id, schedule, scheduleExpression
TIMEZONE_MAX = 64
JOB_PARAM_KEY_MAX = 64
JOB_PARAMS_MAX = 32
ITEMS_IN_EMAIL_MAX = 1000

SEQ_MAX = 2**62  # cursors (sequence numbers, attempt ids): within BIGINT and SQLite's INTEGER
INT32_MAX = 2**31 - 1  # INTEGER on PostgreSQL
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # BIGINT; also what orjson can write back

RATE_PER_SECOND_MAX = 10_000_000  # a tenant's rate limit (requests/s); float column
RATE_BURST_MAX = 100_000_000  # a tenant's burst; INTEGER column

ERROR_TEXT_MAX = 1024  # stored error messages and reasons


def full_pattern(body: str) -> re.Pattern[str]:
    """``body`` compiled for ``fullmatch`` (never ``match``/``search``), ASCII classes only."""
    if body.startswith("^") or body.endswith("$"):
        raise ValueError("give the pattern without ^ and $: it is always matched whole")
    return re.compile(body, re.ASCII)


def anchored(pattern: re.Pattern[str]) -> str:
    """The pattern for pydantic's ``pattern=`` (Rust regex) and JSON Schema (ECMA-262), where
    ``$`` without a multiline flag is the end of the text."""
    return f"^(?:{pattern.pattern})$"


# Per-tenant quotas (store/quotas.py applies them; config/settings.py reads the defaults).
QUOTA_MAX = 100_000_000  # any quota; INTEGER column


@dataclass(frozen=True)
class Quotas:
    """A set of limits: the defaults, or one tenant's effective values."""

    subscriptions: int = 100
    jobs: int = 100
    replay_events: int = 100_000

    def get(self, name: str) -> int:
        return int(getattr(self, name))


EVENT_ID_RE = full_pattern(rf"[A-Za-z0-9][A-Za-z0-9._:\-]{{0,{EVENT_ID_MAX - 1}}}")
TENANT_RE = full_pattern(rf"[A-Za-z0-9][A-Za-z0-9._\-]{{0,{TENANT_MAX - 1}}}")
EVENT_ID_PATTERN = anchored(EVENT_ID_RE)
TENANT_PATTERN = anchored(TENANT_RE)
