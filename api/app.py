"""The web process's composition root: ``create_app`` wires settings, runtime and blueprints."""

from __future__ import annotations

import sys

from flask import Flask, Response
from sqlalchemy import text

from api import observability
from api.http import json_response, register_error_handlers
from config.logging import configure_logging
from config.runtime import Runtime, build_runtime
from config.settings import ConfigError, Settings, load_settings


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    """Build the Flask app; with no arguments, settings come from the environment."""
    if runtime is None:
        if settings is None:
            try:
                settings = load_settings()
            except ConfigError as exc:  # one line, not a traceback per gunicorn worker
                print(f"configuration error: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(3) from None  # gunicorn's "failed to boot": it stops, no respawn
        configure_logging(settings.log_level, settings.log_format)
        runtime = build_runtime(settings)
    app = Flask("eventcollector")
    app.extensions["ec.runtime"] = runtime
    # The largest body any route takes; routes lower it for themselves.
    app.config["MAX_CONTENT_LENGTH"] = runtime.settings.max_batch_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]

    from api import events, jobs, open_loyalty, openapi, quarantine, subscriptions, token
    from ingest import routes as ingest_routes

    for blueprint in (ingest_routes.bp, events.bp, open_loyalty.bp, token.bp, subscriptions.bp,
                      jobs.bp, quarantine.bp, openapi.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    observability.install(app, runtime.redis_client, runtime.settings.metrics_token)

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        checks = {"database": False, "broker": runtime.intake.ping()}
        try:
            with runtime.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = True
        except Exception:  # noqa: BLE001 - any failure means not ready
            pass
        ready = all(checks.values())
        return json_response({"status": "ready" if ready else "unavailable", "checks": checks},
                             200 if ready else 503)

    return app
