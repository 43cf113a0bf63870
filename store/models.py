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
