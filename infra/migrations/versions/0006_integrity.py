"""Integrity: the quarantine table; events.correlation_id holds what the validator accepts.

A ``key_attributes.correlationId`` may be 2,048 characters (the contract's attribute value
limit) but the column held 255: such an event was answered 201 and then refused by the database.
The column is widened to 2,048; its btree index (tenant, correlation_id) could not hold such a
value either (2,704 bytes per entry, a 2,048-character value is up to 8 KiB), so on PostgreSQL
it becomes a hash index on correlation_id (the list filter only tests equality). On SQLite,
which enforces no length, the column is left as it is and the index is rebuilt the same way.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quarantined_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        sa.Column("error_class", sa.String(128), nullable=False),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_retry_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("tenant", "event_id", name="uq_quarantined_events_tenant_event_id"),
    )
    op.create_index("ix_quarantined_events_tenant_id", "quarantined_events", ["tenant", "id"])

    op.drop_index("ix_events_tenant_correlation", table_name="events")
    if op.get_bind().dialect.name == "postgresql":
        # Widening a varchar is a catalogue change on PostgreSQL: no table rewrite.
        op.alter_column("events", "correlation_id", type_=sa.String(2048),
                        existing_type=sa.String(255))
    op.create_index("ix_events_correlation", "events", ["correlation_id"],
                    postgresql_using="hash")


def downgrade() -> None:
    op.drop_index("ix_events_correlation", table_name="events")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("events", "correlation_id", type_=sa.String(255),
                        existing_type=sa.String(2048))
    op.create_index("ix_events_tenant_correlation", "events", ["tenant", "correlation_id"])
    op.drop_index("ix_quarantined_events_tenant_id", table_name="quarantined_events")
    op.drop_table("quarantined_events")
