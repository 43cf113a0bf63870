"""Client secret fingerprints: an HMAC of each client's secret beside its scrypt hash, so the
token endpoint refuses a wrong secret without the slow hash. Existing clients get NULL and are
backfilled on their next successful token request (the secret is known only then).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_clients") as batch:
        batch.add_column(sa.Column("secret_fingerprint", sa.String(80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_clients") as batch:
        batch.drop_column("secret_fingerprint")
