"""Tenant identity on AWS: each tenant's ExternalId and platform-credential opt-in, and each
subscription's credential mode (keys | role | platform) with its role ARN.

Existing tenants get a fresh ExternalId and no opt-in. Existing subscriptions with keys become
``keys``; those without (delivered with the platform's credentials until now) become
``platform``: the deliver pool keeps delivering them only if an operator opts their tenant in
for the destination's account, and otherwise deactivates them with the reason
"platform credentials are no longer allowed for this tenant: use keys or a role".

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-01
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("external_id", sa.String(64)))
        batch.add_column(sa.Column("platform_accounts", sa.Text()))
    conn = op.get_bind()
    tenants = sa.table("tenants", sa.column("id", sa.Integer()),
                       sa.column("external_id", sa.String()))
    for (tenant_id,) in conn.execute(sa.select(tenants.c.id)).all():
        conn.execute(sa.update(tenants).where(tenants.c.id == tenant_id)
                     .values(external_id="ec-" + secrets.token_urlsafe(24)))
    with op.batch_alter_table("tenants") as batch:
        batch.alter_column("external_id", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_tenants_external_id", ["external_id"])

    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("credentials", sa.String(16)))
        batch.add_column(sa.Column("role_arn", sa.String(2048)))
    subs = sa.table("subscriptions", sa.column("access_key", sa.String()),
                    sa.column("credentials", sa.String()))
    conn.execute(sa.update(subs).where(subs.c.access_key.is_not(None)).values(credentials="keys"))
    conn.execute(sa.update(subs).where(subs.c.access_key.is_(None))
                 .values(credentials="platform"))
    with op.batch_alter_table("subscriptions") as batch:
        batch.alter_column("credentials", existing_type=sa.String(16), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("role_arn")
        batch.drop_column("credentials")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_constraint("uq_tenants_external_id", type_="unique")
        batch.drop_column("platform_accounts")
        batch.drop_column("external_id")
