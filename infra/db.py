"""Engines and sessions for PostgreSQL (psycopg 3) and SQLite, the unit of work that owns every
transaction, and the migration runner."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Engine,
    Integer,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DataDirError(RuntimeError):
    """The directory of an SQLite database file cannot be created or written; says what to do."""


def prepare_sqlite_file(url: str) -> None:
    """Create the directory an SQLite URL's file lives in (the embedded default's data
    directory), and check that it can be written: SQLite itself only says "unable to open
    database file". Other URLs are left alone."""
    if not url.startswith("sqlite"):
        return
    path = url.split("///", 1)[-1]
    if not path or path == ":memory:":
        return
    directory = Path(path).parent
    hint = "set EC_DATA_DIR (or DATABASE_URL) to a directory this user can write"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create the data directory {directory}: "
                           f"{exc.strerror or exc}; {hint}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DataDirError(f"the data directory {directory} cannot be written; {hint}")


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Return an engine; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        prepare_sqlite_file(url)
        # hide_parameters: an error's text never carries the statement's values (event bodies).
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # Let SQLAlchemy, not pysqlite, open transactions, so SAVEPOINTs work.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            # A writer UnitOfWork asks for IMMEDIATE: it waits for the write lock up front
            # instead of failing "database is locked" when upgrading a read transaction.
            mode = conn.get_execution_options().get("sqlite_begin", "")
            conn.exec_driver_sql(f"BEGIN {mode}".strip())

        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        hide_parameters=True,
        connect_args={"connect_timeout": 5},
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def upgrade(url: str, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision`` against ``url``."""
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config

    prepare_sqlite_file(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, revision)


class UnitOfWork:
    """The one owner of a transaction: ``with UnitOfWork(sessions, write=True) as uow:`` opens a
    session, work goes through ``uow.session``, and nothing is kept unless ``uow.commit()`` is
    called: leaving the block (normally or by an exception) rolls back what was not committed
    and closes the session. Commit is explicit, so the point where work becomes durable is
    visible in the code that owns it (a send or an enqueue placed after it).

    A writer (``write=True``) begins every transaction of its session with ``BEGIN IMMEDIATE``
    on SQLite: it waits for other writers up front instead of failing "database is locked" when
    a read transaction turns into a write half-way (and, for a delivery, sending twice).
    PostgreSQL begins as usual. A reader begins deferred and commits nothing.

    Repositories and feature functions take a session and never commit or roll back. After
    ``commit()`` the same session may go on (a writer's next transaction begins IMMEDIATE
    again) and must commit again to keep that work. A unit of work may be entered again once
    it has been left (a fresh session each time); entering it while it is open raises.
    """

    def __init__(self, sessions: sessionmaker[Session], *, write: bool = False) -> None:
        self._sessions = sessions
        self.write = write
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("the unit of work is not open: use it in a with block")
        return self._session

    def __enter__(self) -> UnitOfWork:
        if self._session is not None:
            raise RuntimeError("this unit of work is already open: nested use is not allowed")
        session = self._sessions()
        if self.write:
            bind = session.get_bind()
            if isinstance(bind, Engine) and bind.dialect.name == "sqlite":
                # The same pool and events; only the BEGIN differs (make_engine's hook).
                session.bind = bind.execution_options(sqlite_begin="IMMEDIATE")
        self._session = session
        return self

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()

    def __exit__(self, *exc: object) -> None:
        session, self._session = self.session, None
        try:
            session.rollback()
        finally:
            session.close()


# SQLSTATE classes the driver reports as an OperationalError although no retry can help:
# 54, program limit exceeded (an index entry or a row too large for the database).
_PERMANENT_OPERATIONAL = ("54",)


def keyed_lookups(session: Session) -> None:
    """For the rest of this transaction, find rows through indexes (PostgreSQL; a no-op
    elsewhere): for a transaction whose every statement looks rows up by key. A table filled
    faster than autovacuum analyses it (a backlog of deliveries created in seconds) has no
    statistics yet, and the planner then reads it whole for a hundred ids — 100x slower on a
    backlog of 100,000, measured with bench B4."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL enable_seqscan = off"))


def is_permanent_operational(exc: BaseException) -> bool:
    """True for an OperationalError that says the values can never be stored as they are."""
    if not isinstance(exc, OperationalError):
        return False
    state = getattr(exc.orig, "sqlstate", None) or ""
    return state[:2] in _PERMANENT_OPERATIONAL


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
SequenceType = BigInteger().with_variant(Integer(), "sqlite")
JsonType = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """A moment in UTC: ``DateTime(timezone=True)`` in the DDL, an aware UTC datetime in Python.

    SQLite keeps no offset and hands back naive values; PostgreSQL hands back the session's
    zone. Both come back aware, in UTC. On the way in an aware moment is moved to UTC (SQLite
    would otherwise store its wall clock as if it were UTC) and a naive one is taken as UTC, as
    ``infra.timefmt`` does.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
class Base(DeclarativeBase):
    pass
