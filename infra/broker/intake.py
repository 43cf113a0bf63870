"""The intake port: atomically remember accepted events and enqueue them for the persist pool."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from infra.broker.ratelimit import Charge


class IntakeUnavailable(Exception):
    """The broker could not be reached: nothing was accepted, the client should retry."""


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # new: enqueued for the persist pool
    DUPLICATE = "duplicate"  # same id and body seen before: nothing enqueued
    CONFLICT = "conflict"  # same id, different body: nothing enqueued


@dataclass(frozen=True)
class Pending:
    """An event ready to be accepted: its stored document and the hash of its client body."""

    document: dict[str, Any]
    body_hash: str


@dataclass(frozen=True)
class IntakeResult:
    outcome: Outcome
    document: dict[str, Any]  # the accepted one, or the one seen first for DUPLICATE/CONFLICT


class Intake(abc.ABC):
    """Accepts events: one atomic step records each id and enqueues the new ones together.

    A result of ACCEPTED means the broker holds the message; an exception means nothing was
    enqueued for the events of that call.
    """

    @abc.abstractmethod
    def accept(self, tenant: str, items: list[Pending],
               charge: Charge | None = None) -> list[IntakeResult]:
        """Accept ``items`` in order; raise IntakeUnavailable when the broker is unreachable.

        With ``charge``, first take it from the tenant's rate-limit bucket in the same step;
        raise RateLimited (nothing accepted) when the bucket cannot pay.
        """

    @abc.abstractmethod
    def lookup(self, tenant: str, event_id: str) -> dict[str, Any] | None:
        """The document of a recently accepted event (read-your-writes), or None."""

    @abc.abstractmethod
    def ping(self) -> bool:
        """True when the broker answers."""
