"""Revocation: tenants can be disabled, clients revoked or rotated (a generation their tokens
carry), tokens revoked by jti, and all operator tokens at once (a generation counter).

Existing tenants stay enabled, existing clients keep generation 0 (the generation tokens
issued before this revision are read as carrying), no token is revoked.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("api_clients") as batch:
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("rotated_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False,
                                   server_default="0"))
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "revocation_counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("revocation_counters")
    op.drop_table("revoked_tokens")
    with op.batch_alter_table("api_clients") as batch:
        batch.drop_column("generation")
        batch.drop_column("rotated_at")
        batch.drop_column("revoked_at")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("disabled_at")
