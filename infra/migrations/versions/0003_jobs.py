"""Notification jobs, their runs and recipients, and the wishlist/price/stock read models.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("pk", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_scheduled", sa.Boolean(), nullable=False),
        sa.Column("job_parameters", JSON, nullable=False),
        sa.Column("notification", sa.String(16), nullable=False),
        sa.Column("number_of_items_in_email", sa.Integer(), nullable=False),
        sa.Column("schedule", sa.String(255)),
        sa.Column("schedule_expression", sa.String(255)),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("template_id", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("next_run_at", TS),
        sa.Column("last_run_at", TS),
        sa.Column("last_fire_time", TS),
        sa.UniqueConstraint("tenant", "id", name="uq_jobs_tenant_id"),
    )
    op.create_index("ix_jobs_due", "jobs", ["next_run_at"])
    op.create_table(
        "job_runs",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("job_pk", sa.BigInteger(), nullable=False),
        sa.Column("fire_time", TS, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("enqueued_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(1024)),
        sa.UniqueConstraint("job_pk", "fire_time", name="uq_job_runs_slot"),
    )
    op.create_index("ix_job_runs_unsent", "job_runs", ["status", "enqueued_at"])
    op.create_table(
        "run_recipients",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.UniqueConstraint("run_id", "customer_id", name="uq_run_recipients"),
    )
    op.create_table(
        "rm_customers",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(255), primary_key=True),
        sa.Column("email", sa.String(320)),
        sa.Column("first_name", sa.String(255)),
        sa.Column("as_of", TS, nullable=False),
    )
    op.create_table(
        "rm_wishlists",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("wishlist_id", sa.String(255), primary_key=True),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("as_of", TS, nullable=False),
    )
    op.create_table(
        "rm_wishlist_items",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("wishlist_id", sa.String(255), primary_key=True),
        sa.Column("product_id", sa.String(255), primary_key=True),
        sa.Column("variant_id", sa.String(255), primary_key=True),
        sa.Column("title", sa.String(1024)),
        sa.Column("url", sa.String(2048)),
        sa.Column("image_url", sa.String(2048)),
        sa.Column("price_at_add", sa.Float()),
        sa.Column("currency", sa.String(8)),
        sa.Column("added_at", TS, nullable=False),
        sa.Column("notified_price", sa.Float()),
        sa.Column("notified_restock_at", TS),
        sa.Column("notified_low_at", TS),
    )
    op.create_table(
        "rm_prices",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("product_id", sa.String(255), primary_key=True),
        sa.Column("variant_id", sa.String(255), primary_key=True),
        sa.Column("price", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(8)),
        sa.Column("as_of", TS, nullable=False),
    )
    op.create_table(
        "rm_stock",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("product_id", sa.String(255), primary_key=True),
        sa.Column("variant_id", sa.String(255), primary_key=True),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column("restocked_at", TS),
        sa.Column("last_rise_at", TS),
        sa.Column("as_of", TS, nullable=False),
    )
    op.create_table(
        "projection_skips",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("entity_name", sa.String(32), primary_key=True),
        sa.Column("reason", sa.String(255), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_event_id", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    for name in ("projection_skips", "rm_stock", "rm_prices", "rm_wishlist_items", "rm_wishlists",
                 "rm_customers", "run_recipients", "job_runs", "jobs"):
        op.drop_table(name)
