"""Quotas and ids that reveal nothing: per-tenant quota overrides, per-tenant event numbers.

- ``tenants.quota_subscriptions`` / ``quota_jobs`` / ``quota_replay_events``: NULL = the
  deployment's default (``EC_QUOTA_*``), set by ``eventcollector tenant quota``.
- ``events.tenant_seq``: the ``id`` / ``fromId`` / ``next_from_id`` a tenant sees, numbered per
  tenant from 10^12 + 1 (events.repository.TENANT_SEQ_BASE) so that it never collides with a number
  shown before (the global ``seq``, always below 10^12 here: checked). Existing events are
  renumbered per tenant in ``seq`` order, so ``tenant_seq`` grows with ``seq`` within a tenant;
  a cursor below 10^12 that a client still holds is read as the old global number it was.
- A partial index on a subscription's pending replay deliveries (one replay at a time).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BASE = 10**12


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("quota_subscriptions", sa.Integer()))
        batch.add_column(sa.Column("quota_jobs", sa.Integer()))
        batch.add_column(sa.Column("quota_replay_events", sa.Integer()))

    conn = op.get_bind()
    top = conn.execute(sa.text("SELECT max(seq) FROM events")).scalar()
    if top is not None and top >= BASE:
        raise RuntimeError(f"events.seq reaches {top}: per-tenant numbers from {BASE} would "
                           "collide with numbers already shown; raise the base first")
    op.add_column("events", sa.Column("tenant_seq", sa.BigInteger()))
    # One statement, window function per tenant in seq order (PostgreSQL; SQLite >= 3.33).
    conn.execute(sa.text(
        "UPDATE events SET tenant_seq = r.n FROM (SELECT seq AS s, :base + row_number() "
        "OVER (PARTITION BY tenant ORDER BY seq) AS n FROM events) AS r WHERE events.seq = r.s"),
        {"base": BASE})
    with op.batch_alter_table("events") as batch:
        batch.alter_column("tenant_seq", existing_type=sa.BigInteger(), nullable=False)
    op.create_index("uq_events_tenant_seq", "events", ["tenant", "tenant_seq"], unique=True)
    op.create_index("ix_deliveries_pending_replay", "deliveries", ["tenant", "subscription_id"],
                    postgresql_where=sa.text("replay = true AND status = 'pending'"),
                    sqlite_where=sa.text("replay = 1 AND status = 'pending'"))


def downgrade() -> None:
    op.drop_index("ix_deliveries_pending_replay", "deliveries")
    op.drop_index("uq_events_tenant_seq", "events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("tenant_seq")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("quota_replay_events")
        batch.drop_column("quota_jobs")
        batch.drop_column("quota_subscriptions")
