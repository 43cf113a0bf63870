"""Tables of subscriptions, their deliveries and delivery attempts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base, SequenceType, UtcDateTime
from infra.limits import (
    ACCESS_KEY_MAX,
    DESTINATION_MAX,
    ENTITY_ID_MAX,
    ENUM_MAX,
    EVENT_ID_MAX,
    REGION_MAX,
    ROLE_ARN_MAX,
    TENANT_MAX,
)
from infra.states import IllegalTransition


class SubscriptionState(StrEnum):
    """``active`` is the stored boolean; an inactive subscription says why (and since when)."""

    ACTIVE = "active"
    INACTIVE = "inactive"


class DeliveryStatus(StrEnum):
    """A delivery's ``status`` column: pending until it succeeds, fails or is cancelled."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptStatus(StrEnum):
    """A delivery attempt's ``status`` column, as the attempt log shows it."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"


class Subscription(Base):
    """A tenant's standing order: events of ``entity_type`` go to an SQS queue or SNS topic."""

    __tablename__ = "subscriptions"

    pk: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(EVENT_ID_MAX), nullable=False)
    tenant: Mapped[str] = mapped_column(String(TENANT_MAX), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False)
    entity_type: Mapped[str] = mapped_column(String(ENUM_MAX), nullable=False)
    subscribe_create: Mapped[bool] = mapped_column(Boolean, nullable=False)
    subscribe_change: Mapped[bool] = mapped_column(Boolean, nullable=False)
    subscribe_delete: Mapped[bool] = mapped_column(Boolean, nullable=False)
    event_types: Mapped[str] = mapped_column(String(128), nullable=False)  # space-separated
    destination_type: Mapped[str] = mapped_column(String(8), nullable=False)  # SQS | SNS
    target: Mapped[str] = mapped_column(String(DESTINATION_MAX), nullable=False)  # URL / ARN
    region: Mapped[str] = mapped_column(String(REGION_MAX), nullable=False)
    access_key: Mapped[str | None] = mapped_column(String(ACCESS_KEY_MAX))
    access_secret_enc: Mapped[str | None] = mapped_column(Text)  # Fernet token, never returned
    # How deliveries authenticate: keys | role | platform (store.identity).
    credentials: Mapped[str] = mapped_column(String(16), nullable=False)
    role_arn: Mapped[str | None] = mapped_column(String(ROLE_ARN_MAX))  # credentials == "role"
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    deactivated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    deactivation_reason: Mapped[str | None] = mapped_column(String(1024))

    __table_args__ = (UniqueConstraint("tenant", "id", name="uq_subscriptions_tenant_id"),)

    @property
    def state(self) -> SubscriptionState:
        return SubscriptionState.ACTIVE if self.active else SubscriptionState.INACTIVE

    def activate(self) -> None:
        """Active, with a clean record (also when already active: a PUT with ``active: true``
        restarts the failure clock)."""
        self.active = True
        self.deactivated_at = None
        self.deactivation_reason = None
        self.failing_since = None

    def deactivate(self, reason: str, now: datetime) -> None:
        """Inactive since ``now`` because of ``reason``; an inactive subscription cannot be."""
        if self.active is False:
            raise IllegalTransition("subscription", SubscriptionState.INACTIVE, "deactivate")
        self.active = False
        self.deactivated_at = now
        self.deactivation_reason = reason[:1024]
        self.updated_at = now

    def failing(self, now: datetime) -> datetime:
        """Note a failed delivery; return since when deliveries have been failing."""
        if self.failing_since is None:
            self.failing_since = now
        return self.failing_since

    def recovered(self) -> None:
        """A delivery went through: the subscription is no longer failing."""
        if self.failing_since is not None:
            self.failing_since = None


class Delivery(Base):
    """One event owed to one subscription; ``status`` (DeliveryStatus) pending → succeeded |
    failed | cancelled, through the methods below (anything else raises IllegalTransition)."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64), nullable=False)
    subscription_id: Mapped[str] = mapped_column(String(128), nullable=False)
    event_id: Mapped[str] = mapped_column(String(128), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    replay: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    first_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    message_id: Mapped[str | None] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(String(1024))
    # An attempt in flight: who claimed the delivery (a token per claim) and until when. Another
    # message finding it claimed leaves it alone until then (subscriptions/service.py).
    claim: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # A FIFO subscription's deliveries: the event's message group (its entity id, else its id).
    # A pending one holds back the later ones of its group.
    group_key: Mapped[str | None] = mapped_column(String(ENTITY_ID_MAX))

    def _require_pending(self, action: str) -> None:
        if self.status != DeliveryStatus.PENDING:
            raise IllegalTransition("delivery", self.status, action)

    def start_attempt(self, now: datetime) -> None:
        """Count one attempt made at ``now``."""
        self._require_pending("attempt")
        self.attempts += 1
        self.first_attempt_at = self.first_attempt_at or now
        self.last_attempt_at = now

    def mark_delivered(self, message_id: str | None, now: datetime) -> None:
        self._require_pending("mark delivered")
        self.status = DeliveryStatus.SUCCEEDED
        self.delivered_at = now
        self.message_id = message_id
        self.next_attempt_at = None
        self.last_error = None

    def note_error(self, error: str) -> None:
        """The last attempt's error, kept whatever follows (a retry, failure, cancellation)."""
        self.last_error = error[:1024]

    def schedule_retry(self, at: datetime) -> None:
        """Still pending, due again at ``at`` (a retry, or a disabled tenant's pause)."""
        self._require_pending("schedule a retry")
        self.next_attempt_at = at

    def give_up(self) -> None:
        """Failed for good (a permanent error, or retried for too long)."""
        self._require_pending("give up")
        self.status = DeliveryStatus.FAILED
        self.next_attempt_at = None

    def cancel(self, reason: str | None = None) -> None:
        """Not sent and never will be; ``reason`` replaces the last error when given."""
        self._require_pending("cancel")
        self.status = DeliveryStatus.CANCELLED
        self.next_attempt_at = None
        if reason is not None:
            self.last_error = reason

    def release(self) -> None:
        """The attempt in flight is over (whatever it did): no longer claimed."""
        self.claim = None
        self.claimed_until = None

    __table_args__ = (
        Index("ix_deliveries_tenant_event", "tenant", "event_id"),
        Index("ix_deliveries_subscription", "subscription_id", "id"),
        Index("ix_deliveries_status", "status", "next_attempt_at"),
        # A subscription's pending replay deliveries (one replay at a time: store.quotas).
        # The pending deliveries of a FIFO subscription's message group, in order.
        Index("ix_deliveries_fifo_group", "tenant", "subscription_id", "group_key", "id",
              postgresql_where=text("group_key IS NOT NULL AND status = 'pending'"),
              sqlite_where=text("group_key IS NOT NULL AND status = 'pending'")),
        Index("ix_deliveries_pending_replay", "tenant", "subscription_id",
              postgresql_where=text("replay = true AND status = 'pending'"),
              sqlite_where=text("replay = 1 AND status = 'pending'")),
    )


class DeliveryAttempt(Base):
    """One try at sending a delivery, as it happened."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64), nullable=False)
    subscription_id: Mapped[str] = mapped_column(String(128), nullable=False)
    delivery_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    event_id: Mapped[str] = mapped_column(String(128), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    attempted_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # succeeded|retrying|failed
    error_code: Mapped[str | None] = mapped_column(String(128))
    error_message: Mapped[str | None] = mapped_column(String(1024))
    message_id: Mapped[str | None] = mapped_column(String(255))
    latency_ms: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (
        Index("ix_attempts_subscription", "tenant", "subscription_id", "id"),
        Index("ix_attempts_delivery", "delivery_id"),
    )
