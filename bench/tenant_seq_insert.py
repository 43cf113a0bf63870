"""The persist pool's PostgreSQL insert with per-tenant numbering (store.events) against the
statement it replaced (the same rows, numbers given): median of 30 batches of 1,000 rows each,
interleaved, in the same run. ``V=noorder`` tries a variant. Run:
``.venv/bin/python -m bench.tenant_seq_insert`` (needs the PostgreSQL on 127.0.0.1:5432)."""
import time
import uuid
from datetime import UTC, datetime

import orjson
import psycopg
from sqlalchemy import text

from config.settings import normalize_database_url
from events import repository as ev
from infra.db import make_engine, make_session_factory, upgrade

admin = "postgresql://postgres@127.0.0.1:5432/postgres"
name = f"ec_bench_{uuid.uuid4().hex[:8]}"
with psycopg.connect(admin, autocommit=True) as c:
    c.execute(f'CREATE DATABASE "{name}"')
try:
    url = normalize_database_url(admin.rsplit("/", 1)[0] + f"/{name}")
    upgrade(url)
    engine = make_engine(url)
    S = make_session_factory(engine)
    cols = ev._NAMES
    OLD = text(f"INSERT INTO events ({cols}, tenant_seq) SELECT {cols}, tenant_seq "
               f"FROM json_to_recordset(CAST(:rows AS json)) AS r("
               f"{', '.join(f'{c} {t}' for c, t in ev._COLUMNS)}, tenant_seq bigint) "
               "ON CONFLICT (tenant, event_id) DO NOTHING RETURNING event_id")
    now = datetime.now(UTC)
    def docs(prefix, n):
        return [ev._row_values("t-" + prefix, {"id": f"{prefix}-{i}", "event_source": "CONNECTOR",
                "event_type": "FAULT", "event_payload": {"key_attributes": {"a": "b"}},
                "received_at": now.isoformat()}, now) for i in range(n)]
    import os
    variant = os.environ.get("V", "cur")
    stmt = ev._RECORDSET_INSERT
    if variant == "noorder":
        stmt = text(str(stmt.text).replace("OVER (ORDER BY r.ord)", "OVER ()"))
    def run_new(k):
        rows = docs(f"n{k}", 1000)
        t = time.perf_counter()
        with S() as s:
            ev.lock_sequence(s)
            s.execute(stmt, {"rows": orjson.dumps(rows).decode(), "tenant": rows[0]["tenant"],
                             "base": 10**12}).all()
            s.commit()
        return time.perf_counter() - t
    def run_old(k):
        rows = docs(f"o{k}", 1000)
        for i, r in enumerate(rows):
            r["tenant_seq"] = 10**12 + i + 1
        t = time.perf_counter()
        with S() as s:
            ev.lock_sequence(s)
            s.execute(OLD, {"rows": orjson.dumps(rows).decode()})
            s.commit()
        return time.perf_counter() - t
    # warm up, then 30 batches each way, interleaved
    run_new(999)
    run_old(999)
    new, old = [], []
    for k in range(30):
        new.append(run_new(k))
        old.append(run_old(k))
    new.sort()
    old.sort()
    print(f"median per 1000-row batch: numbered {new[15] * 1000:.1f} ms, "
          f"old shape {old[15] * 1000:.1f} ms, ratio {new[15] / old[15]:.2f}")
    engine.dispose()
finally:
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
