"""The unit of work (infra/db.py) owns every transaction: commit is explicit, anything else rolls
back; a writer begins IMMEDIATE on SQLite, so a second writer waits instead of failing; and no
repository or feature function commits or rolls back on its own (checked on the source)."""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from infra.db import UnitOfWork, make_engine, make_session_factory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'uow.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO counter VALUES (0)"))
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def _count(sessions: sessionmaker[Session]) -> int:
    with UnitOfWork(sessions) as uow:
        return int(uow.session.execute(text("SELECT n FROM counter")).scalar_one())


def _bump(session: Session) -> None:
    n = session.execute(text("SELECT n FROM counter")).scalar_one()
    session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})


def test_commit_keeps_the_work(sessions: sessionmaker[Session]) -> None:
    with UnitOfWork(sessions, write=True) as uow:
        _bump(uow.session)
        uow.commit()
    assert _count(sessions) == 1


def test_an_exception_rolls_back_and_goes_up(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ZeroDivisionError), UnitOfWork(sessions, write=True) as uow:
        _bump(uow.session)
        uow.session.flush()
        1 / 0  # noqa: B018
    assert _count(sessions) == 0


def test_leaving_without_commit_rolls_back(sessions: sessionmaker[Session]) -> None:
    with UnitOfWork(sessions, write=True) as uow:
        _bump(uow.session)
    assert _count(sessions) == 0
    # Work after a commit needs a commit of its own.
    with UnitOfWork(sessions, write=True) as uow:
        _bump(uow.session)
        uow.commit()
        _bump(uow.session)
    assert _count(sessions) == 1


def test_an_explicit_rollback_discards_the_work(sessions: sessionmaker[Session]) -> None:
    with UnitOfWork(sessions, write=True) as uow:
        _bump(uow.session)
        uow.rollback()
        uow.commit()
    assert _count(sessions) == 0


def test_the_session_is_closed_on_exit(sessions: sessionmaker[Session]) -> None:
    uow = UnitOfWork(sessions)
    with uow:
        session = uow.session
        session.execute(text("SELECT 1"))
        assert session.in_transaction()
    assert not session.in_transaction()
    with pytest.raises(RuntimeError, match="not open"):
        uow.session  # noqa: B018


def _begins(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("BEGIN"):
            seen.append(statement)

    return seen


def test_a_writer_begins_every_transaction_immediate_and_a_reader_deferred(
        engine: Engine, sessions: sessionmaker[Session]) -> None:
    seen = _begins(engine)
    with UnitOfWork(sessions, write=True) as uow:
        _bump(uow.session)
        uow.commit()
        _bump(uow.session)  # the next transaction of the same writer
        uow.commit()
    assert seen == ["BEGIN IMMEDIATE", "BEGIN IMMEDIATE"]
    seen.clear()
    assert _count(sessions) == 2
    assert seen == ["BEGIN"]


def test_a_second_sqlite_writer_waits_for_the_first_instead_of_failing(
        sessions: sessionmaker[Session]) -> None:
    """Both read and then write. Deferred, the second would fail "database is locked" (or
    lose an update); IMMEDIATE, it waits at BEGIN until the first commits, then reads its
    result."""
    first_in = threading.Event()
    order: list[str] = []
    errors: list[BaseException] = []

    def second() -> None:
        try:
            first_in.wait(5)
            with UnitOfWork(sessions, write=True) as uow:
                _bump(uow.session)  # blocks at BEGIN IMMEDIATE while the first holds the lock
                order.append("second in")
                uow.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    with UnitOfWork(sessions, write=True) as uow:
        uow.session.execute(text("SELECT n FROM counter"))  # holds the write lock from here
        first_in.set()
        time.sleep(0.5)  # the second writer is waiting meanwhile
        _bump(uow.session)
        order.append("first commits")
        uow.commit()
    thread.join(10)
    assert errors == []
    assert order == ["first commits", "second in"]
    assert _count(sessions) == 2


def test_nested_use_of_one_unit_of_work_is_refused_and_sequential_use_is_fresh(
        sessions: sessionmaker[Session]) -> None:
    uow = UnitOfWork(sessions, write=True)
    with uow:
        first = uow.session
        with pytest.raises(RuntimeError, match="already open"), uow:
            pass
        assert uow.session is first  # the refused entry left the open one alone
        _bump(uow.session)
        uow.commit()
    with uow:
        assert uow.session is not first
    assert _count(sessions) == 1


# --- no one else commits -------------------------------------------------------------------

FEATURES = ("events", "subscriptions", "jobs", "tenants", "infra/broker/deadletter_store.py")
ENTRY_POINTS = ("api", "ingest", "workers", "scheduler", "cli", "config")


def transaction_calls(source: str) -> list[str]:
    """Each ``x.commit()``/``x.rollback()`` and ``begin_write(...)`` call in ``source`` whose
    receiver is not a unit of work named ``uow``, as "line: code"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("commit", "rollback"):
            if isinstance(func.value, ast.Name) and func.value.id == "uow":
                continue
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(func, ast.Name | ast.Attribute) and (
                getattr(func, "id", None) == "begin_write" or getattr(func, "attr", None)
                == "begin_write"):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def _files(*roots: str) -> list[Path]:
    paths: list[Path] = []
    for name in roots:
        path = ROOT / name
        paths += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return [p for p in paths if "migrations" not in p.parts]


def test_the_checker_finds_a_commit_a_rollback_and_begin_write() -> None:
    source = ("def f(session, uow):\n    session.commit()\n    self.session.rollback()\n"
              "    begin_write(session)\n    uow.commit()\n    with session.begin_nested():\n"
              "        pass\n")
    assert transaction_calls(source) == ["2: session.commit()", "3: self.session.rollback()",
                                         "4: begin_write(session)"]


def test_repositories_and_feature_functions_never_commit_or_roll_back() -> None:
    """They work inside the caller's transaction. A service that needs several transactions
    (jobs/notifications.py, subscriptions/persist.py, and subscriptions/service.py: claim, then
    record, around the sends) opens UnitOfWorks and commits them."""
    found = {str(p.relative_to(ROOT)): calls for p in _files(*FEATURES)
             if (calls := transaction_calls(p.read_text()))}
    assert found == {}
    opened = {str(p.relative_to(ROOT)) for p in _files(*FEATURES)
              if "uow.commit()" in p.read_text()}
    assert opened == {"jobs/notifications.py", "subscriptions/persist.py",
                      "subscriptions/service.py"}


def test_entry_points_commit_only_through_a_unit_of_work() -> None:
    found = {str(p.relative_to(ROOT)): calls for p in _files(*ENTRY_POINTS)
             if (calls := transaction_calls(p.read_text()))}
    assert found == {}
