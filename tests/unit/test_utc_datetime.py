"""infra.db.UtcDateTime: every timestamp column reads back as an aware moment in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import Column, Engine, Integer, MetaData, Table, create_engine, insert, select

from infra.db import Base, UtcDateTime


def _table() -> tuple[Table, Engine]:
    meta = MetaData()
    table = Table("t", meta, Column("id", Integer, primary_key=True), Column("at", UtcDateTime))
    engine = create_engine("sqlite://")
    meta.create_all(engine)
    return table, engine


def test_sqlite_reads_back_aware_utc_and_aware_input_is_moved_to_utc() -> None:
    table, engine = _table()
    east = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=timezone(timedelta(hours=2)))
    with engine.begin() as conn:
        conn.execute(insert(table).values(id=1, at=east))
        conn.execute(insert(table).values(id=2, at=datetime(2026, 1, 2, 3, 4, 5)))  # naive: UTC
        conn.execute(insert(table).values(id=3, at=None))
        rows = dict(conn.execute(select(table.c.id, table.c.at)).all())
        # A bound moment is compared in UTC too.
        later = conn.execute(select(table.c.id).where(table.c.at > east - timedelta(seconds=1))
                             ).scalars().all()
    assert rows[1] == east and rows[1].tzinfo is UTC
    assert rows[1].hour == 1
    assert rows[2] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) and rows[2].tzinfo is UTC
    assert rows[3] is None
    assert sorted(later) == [1, 2]


def test_every_timestamp_column_of_the_models_is_utc_datetime() -> None:
    from sqlalchemy import DateTime

    import events.models  # noqa: F401
    import infra.broker.deadletter_store  # noqa: F401
    import jobs.models  # noqa: F401
    import subscriptions.models  # noqa: F401
    import tenants.models  # noqa: F401

    plain = [f"{t.name}.{c.name}" for t in Base.metadata.tables.values() for c in t.columns
             if isinstance(c.type, DateTime)]
    stamped = [c for t in Base.metadata.tables.values() for c in t.columns
               if isinstance(c.type, UtcDateTime)]
    assert plain == []
    assert len(stamped) > 30
