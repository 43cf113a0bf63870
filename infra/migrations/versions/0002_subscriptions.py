"""Event subscriptions, deliveries and their attempt log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("subscriptions_version", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "subscriptions",
        sa.Column("pk", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("entity_type", sa.String(32), nullable=False),
        sa.Column("subscribe_create", sa.Boolean(), nullable=False),
        sa.Column("subscribe_change", sa.Boolean(), nullable=False),
        sa.Column("subscribe_delete", sa.Boolean(), nullable=False),
        sa.Column("event_types", sa.String(128), nullable=False),
        sa.Column("destination_type", sa.String(8), nullable=False),
        sa.Column("target", sa.String(1024), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("access_key", sa.String(128)),
        sa.Column("access_secret_enc", sa.Text()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("failing_since", TS),
        sa.Column("deactivated_at", TS),
        sa.Column("deactivation_reason", sa.String(1024)),
        sa.UniqueConstraint("tenant", "id", name="uq_subscriptions_tenant_id"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("subscription_id", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("replay", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("first_attempt_at", TS),
        sa.Column("last_attempt_at", TS),
        sa.Column("next_attempt_at", TS),
        sa.Column("delivered_at", TS),
        sa.Column("message_id", sa.String(255)),
        sa.Column("last_error", sa.String(1024)),
    )
    op.create_index("ix_deliveries_tenant_event", "deliveries", ["tenant", "event_id"])
    op.create_index("ix_deliveries_subscription", "deliveries", ["subscription_id", "id"])
    op.create_index("ix_deliveries_status", "deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("subscription_id", sa.String(128), nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempted_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(128)),
        sa.Column("error_message", sa.String(1024)),
        sa.Column("message_id", sa.String(255)),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ix_attempts_subscription", "delivery_attempts", ["tenant", "subscription_id", "id"]
    )
    op.create_index("ix_attempts_delivery", "delivery_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("delivery_attempts")
    op.drop_table("deliveries")
    op.drop_table("subscriptions")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("subscriptions_version")
