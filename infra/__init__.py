"""Shared infrastructure: the database layer and unit of work, migrations, broker adapters."""
