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

from store.limits import (
    ACCESS_KEY_MAX,
    CORRELATION_ID_MAX,
    DESTINATION_MAX,
    ENTITY_ID_MAX,
    ENUM_MAX,
    ERROR_TEXT_MAX,
    EVENT_ID_MAX,
    JOB_TEXT_MAX,
    REGION_MAX,
    TENANT_MAX,
    TIMEZONE_MAX,
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
SequenceType = BigInteger().with_variant(Integer(), "sqlite")
JsonType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    """A retailer: every event, subscription and job belongs to exactly one."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(TENANT_MAX), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # Bumped in the same transaction as any change to the tenant's subscriptions, so a
    # worker's cached matching index knows when to reload.
    subscriptions_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Requests per second and burst for this tenant; NULL = the deployment's defaults.
    rate_per_second: Mapped[float | None] = mapped_column()
    rate_burst: Mapped[int | None] = mapped_column(Integer)


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
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        UniqueConstraint("tenant", "event_id", name="uq_events_tenant_event_id"),
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
    quarantined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    retries: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("tenant", "event_id", name="uq_quarantined_events_tenant_event_id"),
        Index("ix_quarantined_events_tenant_id", "tenant", "id"),
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


class Job(Base):
    """A notification job: a cron schedule that mails wishlist items through a template."""

    __tablename__ = "jobs"

    pk: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(EVENT_ID_MAX), nullable=False)
    tenant: Mapped[str] = mapped_column(String(TENANT_MAX), nullable=False)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False)
    is_scheduled: Mapped[bool] = mapped_column(Boolean, nullable=False)
    job_parameters: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False)
    notification: Mapped[str] = mapped_column(String(16), nullable=False)
    number_of_items_in_email: Mapped[int] = mapped_column(Integer, nullable=False)
    schedule: Mapped[str | None] = mapped_column(String(JOB_TEXT_MAX))
    schedule_expression: Mapped[str | None] = mapped_column(String(JOB_TEXT_MAX))
    timezone: Mapped[str] = mapped_column(String(TIMEZONE_MAX), nullable=False)
    template_id: Mapped[str] = mapped_column(String(JOB_TEXT_MAX), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_fire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("tenant", "id", name="uq_jobs_tenant_id"),
        Index("ix_jobs_due", "next_run_at"),
    )


class JobRun(Base):
    """One firing of a job (a cron slot or a manual run); unique per (job, fire time)."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64), nullable=False)
    job_pk: Mapped[int] = mapped_column(BigInteger, nullable=False)
    fire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)  # schedule | manual
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    recipients: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    skipped: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(String(1024))
    # While a notify worker carries the run out; another message for the run waits for it.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("job_pk", "fire_time", name="uq_job_runs_slot"),
        Index("ix_job_runs_unsent", "status", "enqueued_at"),
    )


class RunRecipient(Base):
    """A customer mailed (or failed) in one run: a retried run never mails them twice."""

    __tablename__ = "run_recipients"

    id: Mapped[int] = mapped_column(SequenceType, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    customer_id: Mapped[str] = mapped_column(String(255), nullable=False)
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # sent | failed
    items: Mapped[int] = mapped_column(Integer, nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (UniqueConstraint("run_id", "customer_id", name="uq_run_recipients"),)


class Customer(Base):
    """Read model: a customer's name and e-mail (CUSTOMER and wishlist events)."""

    __tablename__ = "rm_customers"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    first_name: Mapped[str | None] = mapped_column(String(255))
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class Wishlist(Base):
    """Read model: a wishlist and whose it is."""

    __tablename__ = "rm_wishlists"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    wishlist_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), nullable=False)
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


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
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    notified_price: Mapped[float | None] = mapped_column()
    notified_restock_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notified_low_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Price(Base):
    """Read model: the current price of a product or variant."""

    __tablename__ = "rm_prices"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    variant_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    price: Mapped[float] = mapped_column(nullable=False)
    currency: Mapped[str | None] = mapped_column(String(8))
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class StockLevel(Base):
    """Read model: units available, when it last came back from 0, when it last rose."""

    __tablename__ = "rm_stock"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    variant_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    available: Mapped[int] = mapped_column(Integer, nullable=False)
    restocked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_rise_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ProjectionSkip(Base):
    """How many events of a kind the read-model projection skipped, and why."""

    __tablename__ = "projection_skips"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    entity_name: Mapped[str] = mapped_column(String(32), primary_key=True)
    reason: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, nullable=False)
    last_event_id: Mapped[str] = mapped_column(String(128), nullable=False)
