"""The app's route table and the URLs of its rules (the isolation matrix and the client-input
tests walk the same routes)."""

from __future__ import annotations

import re
from types import SimpleNamespace

from tests.conftest import make_settings

# Routes that hold no tenant data, with the reason they are out of this matrix.
SKIPPED = {
    "/healthz": "liveness probe: a constant body, no tenant data",
    "/readyz": "readiness probe: database/broker booleans, no tenant data",
    "/metrics": "Prometheus counters labelled by method, route and status only (no tenant)",
    "/openapi.json": "the public API document",
    "/docs": "Swagger UI page (public, static)",
    "/docs/static/<path:filename>": "Swagger UI assets (public, static)",
    "/api/v1/auth/token": "unauthenticated by design: client credentials in, a token of the "
                          "client's own tenant out (test_auth covers it)",
    "/static/<path:filename>": "Flask's built-in static route: public files, no tenant data",
}


def _route_table() -> list[tuple[str, str]]:
    """(method, rule) of every route create_app registers. Routes do not depend on the runtime,
    so a stand-in lets pytest collect one test per route; test_the_route_table_is_the_apps
    checks it against the real app."""
    from api.app import create_app

    stand_in = SimpleNamespace(settings=make_settings("sqlite://"), redis_client=None)
    app = create_app(runtime=stand_in)  # type: ignore[arg-type]
    return sorted((method, rule.rule) for rule in app.url_map.iter_rules()
                  for method in rule.methods - {"HEAD", "OPTIONS"})


ROUTES = _route_table()


PROTECTED = [(m, r) for m, r in ROUTES if r not in SKIPPED]


def route_id(route: tuple[str, str]) -> str:
    return f"{route[0]} {route[1]}"


_ARG = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def urls(rule: str, ids: dict[str, list[str]]) -> list[str]:
    """The rule with each path argument replaced by each of acme's values for it."""
    names = _ARG.findall(rule)
    if not names:
        return [rule]
    [name] = names  # no route takes two ids today; extend here if one does
    assert name in ids, f"{rule} takes <{name}>: give acme a resource and its id for it"
    return [_ARG.sub(value, rule) for value in ids[name]]
