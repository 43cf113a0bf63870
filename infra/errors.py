"""Which errors go away by themselves (retry) and which never will (quarantine, dead-letter)."""

from __future__ import annotations

import dramatiq.errors
import redis
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from infra.broker.dispatch import BrokerUnavailable
from infra.db import is_permanent_operational


def is_transient(exc: BaseException) -> bool:
    """True for errors that go away by themselves: the database or the broker unreachable.

    A broker error matters after the commit: the events are stored but their deliveries were
    not enqueued; the retried message finds them still unattempted and enqueues them. An
    OperationalError that says a value can never be stored (SQLSTATE class 54: an index entry or
    a row too large) is not transient.
    """
    if is_permanent_operational(exc):
        return False
    if isinstance(exc, OperationalError | PoolTimeout | redis.ConnectionError | redis.TimeoutError
                  | dramatiq.errors.BrokerConnectionError | BrokerUnavailable):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
