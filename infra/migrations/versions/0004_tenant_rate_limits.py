"""Per-tenant rate limits.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("rate_per_second", sa.Float()))
        batch.add_column(sa.Column("rate_burst", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("rate_burst")
        batch.drop_column("rate_per_second")
