"""The ``eventcollector`` command: dev server, migrations, tenants, tokens."""
