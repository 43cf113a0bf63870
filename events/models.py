"""Tables of events, quarantined events, and the read models projected from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base, JsonType, SequenceType, UtcDateTime
from infra.limits import (
    CORRELATION_ID_MAX,
    ENTITY_ID_MAX,
    ENUM_MAX,
    ERROR_TEXT_MAX,
    EVENT_ID_MAX,
    TENANT_MAX,
)


class EventRecord(Base):
    """One stored event. ``seq`` is the monotonically increasing sequence number (commit order),
    internal; ``tenant_seq`` the tenant's own sequence number, the ``id``/``fromId`` shown to it
    (store.events.TENANT_SEQ_BASE)."""

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_MAX), nullable=False)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_MAX), nullable=False)
    entity_id: Mapped[str | None] = mapped_column(String(ENTITY_ID_MAX))
    entity_name: Mapped[str | None] = mapped_column(String(ENUM_MAX))
    event_source: Mapped[str] = mapped_column(String(ENUM_MAX), nullable=False)
    event_type: Mapped[str] = mapped_column(String(ENUM_MAX), nullable=False)
    operation: Mapped[str | None] = mapped_column(String(ENUM_MAX))
    payload_entity_id: Mapped[str | None] = mapped_column(String(ENTITY_ID_MAX))
    payload_b64: Mapped[str | None] = mapped_column(Text)
    fault_b64: Mapped[str | None] = mapped_column(Text)
    key_attributes: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False)
    # A key attribute's value (up to 2,048 characters, 8 KiB in UTF-8): too long for a btree
    # index entry on PostgreSQL (2,704 bytes), so its index is a hash index there (equality is
    # all the list filter needs).
    correlation_id: Mapped[str | None] = mapped_column(String(CORRELATION_ID_MAX))
    body_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    stored_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    tenant_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = (
        UniqueConstraint("tenant", "event_id", name="uq_events_tenant_event_id"),
        Index("uq_events_tenant_seq", "tenant", "tenant_seq", unique=True),
        Index("ix_events_tenant_seq", "tenant", "seq"),
        Index("ix_events_tenant_entity", "tenant", "entity_name", "seq"),
        Index("ix_events_tenant_type", "tenant", "event_type", "seq"),
        Index("ix_events_correlation", "correlation_id", postgresql_using="hash"),
        Index("ix_events_tenant_entity_id", "tenant", "entity_id"),
        Index("ix_events_tenant_received", "tenant", "received_at"),
    )


class QuarantinedEvent(Base):
    """An accepted event the database refused for a data reason (not transient): kept here with
    the reason, never retried on its own and never dropped, until an operator re-drives it
    (``eventcollector quarantine retry``) or purges it. One row per (tenant, event id)."""

    __tablename__ = "quarantined_events"

    id: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_MAX), nullable=False)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_MAX), nullable=False)
    # The event document as accepted (the intake's), as ASCII JSON: text any database holds.
    document: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(String(ERROR_TEXT_MAX), nullable=False)
    error_class: Mapped[str] = mapped_column(String(128), nullable=False)
    quarantined_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    retries: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_retry_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("tenant", "event_id", name="uq_quarantined_events_tenant_event_id"),
        Index("ix_quarantined_events_tenant_id", "tenant", "id"),
    )


class Customer(Base):
    """Read model: a customer's name and e-mail (CUSTOMER and wishlist events)."""

    __tablename__ = "rm_customers"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    first_name: Mapped[str | None] = mapped_column(String(255))
    as_of: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class Wishlist(Base):
    """Read model: a wishlist and whose it is."""

    __tablename__ = "rm_wishlists"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    wishlist_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), nullable=False)
    as_of: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class WishlistItem(Base):
    """Read model: an item on a wishlist, with what was last mailed about it."""

    __tablename__ = "rm_wishlist_items"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    wishlist_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    variant_id: Mapped[str] = mapped_column(String(255), primary_key=True)  # "" when absent
    title: Mapped[str | None] = mapped_column(String(1024))
    url: Mapped[str | None] = mapped_column(String(2048))
    image_url: Mapped[str | None] = mapped_column(String(2048))
    price_at_add: Mapped[float | None] = mapped_column()
    currency: Mapped[str | None] = mapped_column(String(8))
    added_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    notified_price: Mapped[float | None] = mapped_column()
    notified_restock_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    notified_low_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Price(Base):
    """Read model: the current price of a product or variant."""

    __tablename__ = "rm_prices"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    variant_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    price: Mapped[float] = mapped_column(nullable=False)
    currency: Mapped[str | None] = mapped_column(String(8))
    as_of: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class StockLevel(Base):
    """Read model: units available, when it last came back from 0, when it last rose."""

    __tablename__ = "rm_stock"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    variant_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    available: Mapped[int] = mapped_column(Integer, nullable=False)
    restocked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_rise_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    as_of: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class ProjectionSkip(Base):
    """How many events of a kind the read-model projection skipped, and why."""

    __tablename__ = "projection_skips"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    entity_name: Mapped[str] = mapped_column(String(32), primary_key=True)
    reason: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, nullable=False)
    last_event_id: Mapped[str] = mapped_column(String(128), nullable=False)
