"""The embedded default's dead letters: kept in its database (Redis keeps its own).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("dead_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retry_requested_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_dead_letters_queue_id", "dead_letters", ["queue", "id"])


def downgrade() -> None:
    op.drop_index("ix_dead_letters_queue_id", table_name="dead_letters")
    op.drop_table("dead_letters")
