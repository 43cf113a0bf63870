"""The embedded app (SQLite + StubBroker) in its three configurations, and its template database.

``tests/conftest.py``'s ``embedded`` fixture builds one of these per test, chosen by the module's
``pytest.mark.embedded`` marker; a test that needs other settings calls one directly.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dramatiq
from cryptography.fernet import Fernet

from jobs.mailers.base import Mailer
from subscriptions.senders.stub import StubSender
from tests.conftest import make_settings


def build_template(path: Path) -> Path:
    """A migrated SQLite file at ``path`` holding tenants acme and globex (conftest's session
    fixture ``template_db`` builds it once: migrating and hashing two tenant secrets for every
    test would make the unit tier several times slower)."""
    from infra.db import make_engine, make_session_factory, upgrade
    from tenants.auth import create_tenant

    upgrade(f"sqlite:///{path}")
    engine = make_engine(f"sqlite:///{path}")
    with make_session_factory(engine)() as session:
        create_tenant(session, "acme")
        create_tenant(session, "globex")
        session.commit()
    engine.dispose()  # the last connection checkpoints the WAL into the file
    return path


_MIGRATED_EMPTY: list[Path] = []


def migrated_empty_db() -> Path:
    """An SQLite file migrated to head with no tenants, made once per process: a new database
    file for running_app is a copy of it, which is what ``upgrade`` would make of it, minus the
    second or so alembic takes every time."""
    if not _MIGRATED_EMPTY:
        from infra.db import make_engine, upgrade

        directory = Path(tempfile.mkdtemp(prefix="ec-migrated-"))
        atexit.register(shutil.rmtree, directory, True)
        path = directory / "ec.db"
        upgrade(f"sqlite:///{path}")
        make_engine(f"sqlite:///{path}").dispose()  # checkpoints the WAL into the file
        _MIGRATED_EMPTY.append(path)
    return _MIGRATED_EMPTY[0]


def runtime_of(app: Any) -> Any:
    return app.extensions["ec.runtime"]


@contextmanager
def running_app(db_path: Path, *, migrate: bool = True, **settings_kw: Any) -> Iterator[Any]:
    """The plain embedded app (``embedded``'s default): one persist worker thread consuming
    everything enqueued, with chosen settings and database file."""
    from api.app import create_app
    from config.runtime import build_runtime
    from infra.db import upgrade
    from workers.main import declare_actors

    settings = make_settings(f"sqlite:///{db_path}", **settings_kw)
    if migrate and not Path(db_path).exists():
        copy_db(migrated_empty_db(), Path(db_path).parent, Path(db_path).name)
    elif migrate:
        upgrade(settings.database_url)
    runtime = build_runtime(settings)
    declare_actors(runtime)
    # A short poll makes worker.stop() in teardown quicker.
    worker = dramatiq.Worker(runtime.broker, worker_threads=1, worker_timeout=10)
    worker.start()
    app = create_app(runtime=runtime)
    app.testing = True
    try:
        yield app
    finally:
        worker.stop()
        runtime.close()


@contextmanager
def stub_app(db_path: Path, **settings_kw: Any) -> Iterator[Any]:
    """The embedded app whose deliveries go to one StubSender (for SQS and SNS), with a
    Fernet key, a 50/100 ms retry schedule, and persist + deliver consumed by one worker."""
    from api.app import create_app
    from config.runtime import build_runtime
    from workers.main import declare_actors

    stub = StubSender()
    kw: dict[str, Any] = {"secret_key": Fernet.generate_key().decode(),
                          "delivery_retry_schedule": (0.05, 0.1), "aws_endpoint_sqs": None}
    kw.update(settings_kw)
    settings = make_settings(f"sqlite:///{db_path}", **kw)
    runtime = build_runtime(settings, senders={"SQS": stub, "SNS": stub})
    declare_actors(runtime)
    worker = dramatiq.Worker(runtime.broker, worker_threads=1, worker_timeout=10)
    worker.start()
    app = create_app(runtime=runtime)
    app.testing = True
    try:
        yield app
    finally:
        worker.stop()
        runtime.close()


def copy_db(template: Path, tmp_path: Path, name: str = "ec.db") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    db = tmp_path / name
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{template}{suffix}")
        if source.exists():
            shutil.copyfile(source, f"{db}{suffix}")
    return db


@contextmanager
def notify_app(db: Path, mailer: Mailer, **settings_kw: Any) -> Iterator[Any]:
    """The embedded app built with ``build_runtime(settings, mailer=mailer)``.

    Unlike running_app's, its worker thread (persist, deliveries and notifications queues) runs
    only inside tests/support/jobs.py's ``settle``: what the API or a scheduler tick enqueues
    stays queued until a test settles, so a test decides exactly what the workers have seen
    (e.g. an accepted event still in the persist queue when a run is planned)."""
    from api.app import create_app
    from config.runtime import build_runtime
    from workers.main import declare_actors

    settings = make_settings(f"sqlite:///{db}", **settings_kw)
    runtime = build_runtime(settings, mailer=mailer)
    declare_actors(runtime)
    app = create_app(runtime=runtime)
    app.testing = True
    try:
        yield app
    finally:
        runtime.close()
