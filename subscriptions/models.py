"""Tables of subscriptions, their deliveries and delivery attempts."""

from __future__ import annotations

from datetime import datetime

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
    ENUM_MAX,
    EVENT_ID_MAX,
    REGION_MAX,
    ROLE_ARN_MAX,
    TENANT_MAX,
)


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


class Delivery(Base):
    """One event owed to one subscription; ``status`` pending → succeeded | failed | cancelled."""

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

    __table_args__ = (
        Index("ix_deliveries_tenant_event", "tenant", "event_id"),
        Index("ix_deliveries_subscription", "subscription_id", "id"),
        Index("ix_deliveries_status", "status", "next_attempt_at"),
        # A subscription's pending replay deliveries (one replay at a time: store.quotas).
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
