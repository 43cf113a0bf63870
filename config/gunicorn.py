"""Gunicorn settings for the web process (``--config python:config.gunicorn``).

Prometheus multiprocess mode: every worker writes its metrics to a shared directory that
``/metrics`` aggregates; a dead worker's live gauges are cleaned up.
"""

import os
import shutil
import tempfile

worker_class = "gthread"


def on_starting(server):  # type: ignore[no-untyped-def]
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(
        tempfile.gettempdir(), f"ec-prometheus-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
