"""Gunicorn settings for the web process (``--config python:config.gunicorn``).

The Procfile's ``web`` line passes the same serving settings as flags (a test checks that the
two agree): the gevent worker ``api.serving.Worker`` (slow or idle connections cost a greenlet,
not a thread; body deadline ``EC_REQUEST_BODY_TIMEOUT_SECONDS``), ``WEB_CONNECTIONS``
connections per worker, ``--reuse-port`` (each worker listens on its own socket, so the kernel
spreads new connections evenly) and a 5-second keep-alive, which is also the deadline for a
request's headers.

This module must not import the application (nor psycopg, redis, SQLAlchemy): the worker
patches the standard library for gevent after the fork, before the application is loaded.

Prometheus multiprocess mode: every worker writes its metrics to a shared directory that
``/metrics`` aggregates; a dead worker's live gauges are cleaned up.
"""

import os
import shutil
import tempfile

worker_class = "api.serving.Worker"
worker_connections = int(os.environ.get("WEB_CONNECTIONS") or 1000)
reuse_port = True
keepalive = 5
# The access log: remote address, method, path without its query string (a token may arrive
# there), HTTP version, status, bytes, duration, user agent. Never the Referer, never the
# query string, never the basic-auth user name.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'


def on_starting(server):  # type: ignore[no-untyped-def]
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(
        tempfile.gettempdir(), f"ec-prometheus-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
