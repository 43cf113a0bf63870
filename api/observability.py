"""Request ids, JSON request logs and Prometheus metrics for the web process (``/metrics``)."""

from __future__ import annotations

import hmac
import logging
import os
import time
import uuid
from typing import Any

from flask import Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from config import logging as logctx
from infra.limits import full_pattern

log = logging.getLogger("eventcollector.http")
_ID_RE = full_pattern(r"[A-Za-z0-9._:\-]{1,128}")

REQUESTS = Counter("ec_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("ec_http_request_duration_seconds", "HTTP request latency", ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
INGESTED = Counter("ec_events_ingested_total", "Events answered by the ingest API", ["outcome"])


class QueueCollector:
    """Queue depth and dead-letter size per Dramatiq queue, read from Redis at scrape time."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def sizes(self, queue: str) -> tuple[int, int, int]:
        """(waiting, delayed, dead-lettered) of ``queue``."""
        from infra.broker.dramatiq_compat import queue_sizes
        from infra.broker.queues import BROKER_NAMESPACE

        return queue_sizes(self.client, BROKER_NAMESPACE, queue)

    def collect(self) -> Any:
        from infra.broker.deadletters import QUEUES

        depth = GaugeMetricFamily("ec_queue_depth", "Messages waiting", labels=["queue"])
        delayed = GaugeMetricFamily("ec_queue_delayed", "Delayed messages (retries)",
                                    labels=["queue"])
        dead = GaugeMetricFamily("ec_dead_letters", "Dead-lettered messages", labels=["queue"])
        try:
            for q in QUEUES:
                waiting, later, failed = self.sizes(q)
                depth.add_metric([q], waiting)
                delayed.add_metric([q], later)
                dead.add_metric([q], failed)
        except Exception:  # noqa: BLE001 - a scrape must not fail because a store is down
            return []
        return [depth, delayed, dead]


class EmbeddedQueueCollector(QueueCollector):
    """The same gauges for the embedded default: its in-process broker's queues, and the dead
    letters it keeps in the database (broker/embedded.py)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self._dead: dict[str, int] = {}

    def collect(self) -> Any:
        from infra.broker.deadletter_store import counts

        try:
            with self.runtime.sessions() as session:
                self._dead = counts(session)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is busy
            return []
        return super().collect()

    def sizes(self, queue: str) -> tuple[int, int, int]:
        from infra.broker.dramatiq_compat import delayed_queue, stub_dead_letters, stub_queue_size

        broker = self.runtime.broker
        return (stub_queue_size(broker, queue), stub_queue_size(broker, delayed_queue(queue)),
                self._dead.get(queue, 0) + len(stub_dead_letters(broker, queue)))


def valid_request_id(value: str) -> bool:
    """An X-Request-ID worth echoing: 1-128 of A-Z a-z 0-9 . _ : - (anything else is replaced)."""
    return _ID_RE.fullmatch(value) is not None


def metrics_allowed(token: str | None) -> Response | None:
    """None when the request may read ``/metrics``; else the answer: 404 while no
    ``EC_METRICS_TOKEN`` is set (not served on the public port), 401 for a missing or wrong
    bearer token (compared in constant time)."""
    from werkzeug.exceptions import NotFound

    from api.http import error_response

    if not token:  # the same answer as an unknown path
        return error_response(404, "not_found", NotFound.description or "not found")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()):
        return error_response(401, "unauthorized", "/metrics needs the metrics bearer token",
                              headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return None


def install(app: Flask, redis_client: Any, metrics_token: str | None = None) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if valid_request_id(incoming) else uuid.uuid4().hex
        logctx.request_id.set(g.request_id)
        logctx.tenant.set(None)
        logctx.correlation_id.set(None)

    @app.after_request
    def _finish(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - getattr(g, "started", time.perf_counter())
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        LATENCY.labels(route).observe(elapsed)
        response.headers["X-Request-ID"] = getattr(g, "request_id", "")
        principal = getattr(g, "principal", None)
        if principal is not None:
            logctx.tenant.set(principal.tenant)
        log.info("%s %s %s", request.method, request.path, response.status_code,
                 extra={"status": response.status_code, "duration_ms": round(elapsed * 1000, 2),
                        "route": route})
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        refused = metrics_allowed(metrics_token)
        if refused is not None:
            return refused
        registry = CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(registry)
        else:
            from prometheus_client import REGISTRY

            registry = REGISTRY  # type: ignore[assignment]
        body = generate_latest(registry)
        extra = CollectorRegistry()
        extra.register(QueueCollector(redis_client) if redis_client is not None  # type: ignore[arg-type]
                       else EmbeddedQueueCollector(current_app.extensions["ec.runtime"]))
        body += generate_latest(extra)
        return Response(body, mimetype=CONTENT_TYPE_LATEST)
