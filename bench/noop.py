"""B1's limit: a Flask route that reads the body and answers 201, nothing else.

Served by the Procfile's own ``web`` command with only the app swapped
(``gunicorn 'bench.noop:create_app()' ...``), so both sides share the gunicorn configuration.
"""

from __future__ import annotations

from flask import Flask, Response, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/api/v1/events")
    @app.post("/api/v1/events/batch")
    def accept() -> Response:
        request.get_data(cache=False)
        return Response(b'{"ok":true}', status=201, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    return app
