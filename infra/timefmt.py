"""RFC 3339 times in UTC: formatting and parsing."""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a Z."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MomentOutOfRange(ValueError):
    """A moment Python can read but not move to UTC (it falls outside the years 1-9999)."""


def parse_time(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 moment in UTC; ValueError when it is not one, or when it cannot be
    moved to UTC (the year 9999 west of UTC, the year 1 east of it: OverflowError in Python)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except OverflowError:
        raise MomentOutOfRange(text) from None
