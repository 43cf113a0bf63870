"""Tenants, API clients and events.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "api_clients",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column(
            "tenant",
            sa.String(64),
            sa.ForeignKey("tenants.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("secret_hash", sa.String(255), nullable=False),
        sa.Column("scopes", sa.String(255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_api_clients_tenant", "api_clients", ["tenant"])
    op.create_table(
        "events",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("entity_id", sa.String(255)),
        sa.Column("entity_name", sa.String(32)),
        sa.Column("event_source", sa.String(32), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("operation", sa.String(32)),
        sa.Column("payload_entity_id", sa.String(255)),
        sa.Column("payload_b64", sa.Text()),
        sa.Column("fault_b64", sa.Text()),
        sa.Column("key_attributes", JSON, nullable=False),
        sa.Column("correlation_id", sa.String(255)),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant", "event_id", name="uq_events_tenant_event_id"),
    )
    op.create_index("ix_events_tenant_seq", "events", ["tenant", "seq"])
    op.create_index("ix_events_tenant_entity", "events", ["tenant", "entity_name", "seq"])
    op.create_index("ix_events_tenant_type", "events", ["tenant", "event_type", "seq"])
    op.create_index("ix_events_tenant_correlation", "events", ["tenant", "correlation_id"])
    op.create_index("ix_events_tenant_entity_id", "events", ["tenant", "entity_id"])
    op.create_index("ix_events_tenant_received", "events", ["tenant", "received_at"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("api_clients")
    op.drop_table("tenants")
