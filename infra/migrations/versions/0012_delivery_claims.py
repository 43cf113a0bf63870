"""Deliveries are claimed for an attempt (a lease) instead of locked through the send, and the
deliveries of a FIFO subscription carry their message group so a failing one holds back the
later ones of its group.

Existing deliveries are unclaimed and carry no group (they are sent as before: a FIFO
subscription's deliveries created before this revision are not held back).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("claim", sa.String(32)))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("group_key", sa.String(255)))
    op.create_index("ix_deliveries_fifo_group", "deliveries",
                    ["tenant", "subscription_id", "group_key", "id"],
                    postgresql_where=sa.text("group_key IS NOT NULL AND status = 'pending'"),
                    sqlite_where=sa.text("group_key IS NOT NULL AND status = 'pending'"))


def downgrade() -> None:
    op.drop_index("ix_deliveries_fifo_group", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("group_key")
        batch.drop_column("claimed_until")
        batch.drop_column("claim")
