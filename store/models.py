"""SQLAlchemy tables: tenants, their API clients, and events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
SequenceType = BigInteger().with_variant(Integer(), "sqlite")
JsonType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    """A retailer: every event, subscription and job belongs to exactly one."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # Bumped in the same transaction as any change to the tenant's subscriptions, so a
    # worker's cached matching index knows when to reload.
    subscriptions_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class ApiClient(Base):
    """OAuth 2.0 client credentials of a tenant; the secret is stored as a salted scrypt hash."""

    __tablename__ = "api_clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(
        String(64), ForeignKey("tenants.name", ondelete="CASCADE"), nullable=False, index=True
    )
    secret_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    scopes: Mapped[str] = mapped_column(String(255), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class EventRecord(Base):
    """One stored event. ``seq`` is the monotonically increasing sequence number (commit order)."""

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64), nullable=False)
    event_id: Mapped[str] = mapped_column(String(128), nullable=False)
    entity_id: Mapped[str | None] = mapped_column(String(255))
    entity_name: Mapped[str | None] = mapped_column(String(32))
    event_source: Mapped[str] = mapped_column(String(32), nullable=False)
    event_type: Mapped[str] = mapped_column(String(32), nullable=False)
    operation: Mapped[str | None] = mapped_column(String(32))
    payload_entity_id: Mapped[str | None] = mapped_column(String(255))
    payload_b64: Mapped[str | None] = mapped_column(Text)
    fault_b64: Mapped[str | None] = mapped_column(Text)
    key_attributes: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False)
    correlation_id: Mapped[str | None] = mapped_column(String(255))
    body_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        UniqueConstraint("tenant", "event_id", name="uq_events_tenant_event_id"),
        Index("ix_events_tenant_seq", "tenant", "seq"),
        Index("ix_events_tenant_entity", "tenant", "entity_name", "seq"),
        Index("ix_events_tenant_type", "tenant", "event_type", "seq"),
        Index("ix_events_tenant_correlation", "tenant", "correlation_id"),
        Index("ix_events_tenant_entity_id", "tenant", "entity_id"),
        Index("ix_events_tenant_received", "tenant", "received_at"),
    )


class Subscription(Base):
    """A tenant's standing order: events of ``entity_type`` go to an SQS queue or SNS topic."""

    __tablename__ = "subscriptions"

    pk: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(128), nullable=False)
    tenant: Mapped[str] = mapped_column(String(64), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False)
    entity_type: Mapped[str] = mapped_column(String(32), nullable=False)
    subscribe_create: Mapped[bool] = mapped_column(Boolean, nullable=False)
    subscribe_change: Mapped[bool] = mapped_column(Boolean, nullable=False)
    subscribe_delete: Mapped[bool] = mapped_column(Boolean, nullable=False)
    event_types: Mapped[str] = mapped_column(String(128), nullable=False)  # space-separated
    destination_type: Mapped[str] = mapped_column(String(8), nullable=False)  # SQS | SNS
    target: Mapped[str] = mapped_column(String(1024), nullable=False)  # queue URL / topic ARN
    region: Mapped[str] = mapped_column(String(32), nullable=False)
    access_key: Mapped[str | None] = mapped_column(String(128))
    access_secret_enc: Mapped[str | None] = mapped_column(Text)  # Fernet token, never returned
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    first_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    message_id: Mapped[str | None] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(String(1024))

    __table_args__ = (
        Index("ix_deliveries_tenant_event", "tenant", "event_id"),
        Index("ix_deliveries_subscription", "subscription_id", "id"),
        Index("ix_deliveries_status", "status", "next_attempt_at"),
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
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # succeeded|retrying|failed
    error_code: Mapped[str | None] = mapped_column(String(128))
    error_message: Mapped[str | None] = mapped_column(String(1024))
    message_id: Mapped[str | None] = mapped_column(String(255))
    latency_ms: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (
        Index("ix_attempts_subscription", "tenant", "subscription_id", "id"),
        Index("ix_attempts_delivery", "delivery_id"),
    )
