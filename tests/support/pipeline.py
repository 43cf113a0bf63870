"""An in-process app on the real PostgreSQL and Redis (the integration pipeline tests')."""

from __future__ import annotations

from typing import Any

from config.runtime import build_runtime
from tenants.auth import create_tenant


def _app(settings: Any) -> Any:
    from api.app import create_app

    runtime = build_runtime(settings)
    app = create_app(runtime=runtime)
    app.testing = True
    return app, runtime


def _ensure_tenant(runtime: Any, name: str) -> None:
    from tenants.auth import tenant_exists

    with runtime.sessions() as session:
        if not tenant_exists(session, name):
            create_tenant(session, name)
        session.commit()


def _set_limits(runtime: Any, tenant: str, per_second: float, burst: int) -> None:
    from tenants.models import Tenant

    with runtime.sessions() as session:
        session.query(Tenant).filter(Tenant.name == tenant).update(
            {Tenant.rate_per_second: per_second, Tenant.rate_burst: burst})
        session.commit()
