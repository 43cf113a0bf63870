"""Alembic environment: the URL comes from the caller (``infra.db.upgrade``).

The only module below an entry point that imports every feature: autogenerate needs all tables on
the one metadata. Alembic runs it as a script; it is not part of the import graph."""

from alembic import context
from sqlalchemy import engine_from_config, pool

import events.models  # noqa: F401  (every table on Base.metadata)
import infra.broker.deadletter_store  # noqa: F401
import jobs.models  # noqa: F401
import subscriptions.models  # noqa: F401
import tenants.models  # noqa: F401
from infra.db import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
