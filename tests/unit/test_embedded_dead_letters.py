"""The embedded default's dead letters (issue 16): kept in its database, counted on /metrics with
the queue depths, listed, re-driven and purged by `eventcollector dlq` from another process."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from cli.main import main as cli
from config.runtime import Runtime
from infra.broker.deadletter_store import counts
from infra.broker.queues import PERSIST_ACTOR, PERSIST_QUEUE
from scheduler.loop import redrive_requested
from tests.conftest import SECRET


def runtime_of(app: Any) -> Runtime:
    return app.extensions["ec.runtime"]  # type: ignore[no-any-return]


def kill_one(app: Any) -> str:
    """Enqueue a persist message that fails for a data reason (dead-lettered at once); wait
    until the database holds its dead letter; return its message id."""
    runtime = runtime_of(app)
    message = dramatiq.Message(queue_name=PERSIST_QUEUE, actor_name=PERSIST_ACTOR,
                               args=("acme", "not a list of events"), kwargs={}, options={})
    runtime.broker.enqueue(message)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with runtime.sessions() as session:
            if counts(session).get(PERSIST_QUEUE):
                return message.message_id
        time.sleep(0.05)
    pytest.fail("the message was not dead-lettered into the database")


def sample(text: str, name: str, queue: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{queue="{queue}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{queue={queue}}} missing from /metrics:\n{text}")


@pytest.fixture
def cli_env(embedded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI pointed at the embedded app's SQLite file, as a second process would be."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", str(runtime_of(embedded).settings.database_url))
    monkeypatch.setenv("EC_TOKEN_SECRET", SECRET)
    return embedded


def test_dead_letters_are_kept_in_the_database_and_counted_on_metrics(embedded: Any) -> None:
    # Given the embedded default's /metrics (served with EC_METRICS_TOKEN set): every queue's
    # gauges are there, no dead letter
    from api.app import create_app

    runtime = runtime_of(embedded)
    token = "metrics-" + "e" * 24
    app = create_app(runtime=dataclasses.replace(
        runtime, settings=dataclasses.replace(runtime.settings, metrics_token=token)))
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    before = client.get("/metrics", headers=auth).get_data(as_text=True)
    for queue in (PERSIST_QUEUE, "deliveries", "notifications"):
        assert sample(before, "ec_queue_depth", queue) == 0
        assert sample(before, "ec_queue_delayed", queue) == 0
        assert sample(before, "ec_dead_letters", queue) == 0
    # When a message dies
    kill_one(embedded)
    # Then it is in the database, not in the process's memory, and /metrics counts it
    assert runtime_of(embedded).broker.dead_letters == []  # type: ignore[attr-defined]
    after = client.get("/metrics", headers=auth).get_data(as_text=True)
    assert sample(after, "ec_dead_letters", PERSIST_QUEUE) == 1
    assert sample(after, "ec_dead_letters", "deliveries") == 0


def test_dlq_list_retry_and_purge_work_on_the_embedded_default(
        cli_env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    runtime = runtime_of(cli_env)
    message_id = kill_one(cli_env)
    # When an operator lists the dead letters from another process
    assert cli(["dlq", "list", "--queue", PERSIST_QUEUE]) == 0
    out, err = capsys.readouterr()
    [letter] = [json.loads(line) for line in out.splitlines()]
    # Then it is there: actor, message id, no event body
    assert (letter["actor"], letter["message_id"], letter["retry_requested"]) == \
        (PERSIST_ACTOR, message_id, False)
    assert f"# {PERSIST_QUEUE}: 1 dead-lettered" in err
    # When they ask for a re-drive, Then it is marked, and the running process's scheduler
    # tick enqueues it again (it fails the same way: dead-lettered anew, retries reset)
    assert cli(["dlq", "retry", "--queue", PERSIST_QUEUE]) == 0
    assert "re-enqueue requested for 1" in capsys.readouterr().out
    assert cli(["dlq", "list", "--queue", PERSIST_QUEUE]) == 0
    assert json.loads(capsys.readouterr().out)["retry_requested"] is True
    assert redrive_requested(runtime.sessions, runtime.broker) == 1
    deadline = time.monotonic() + 20
    again: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not again:
        cli(["dlq", "list", "--queue", PERSIST_QUEUE])
        again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        time.sleep(0.05)
    # (the count starts again: one failure, as the first time, not two)
    assert letter["retries"] == 1
    assert [(a["message_id"], a["retry_requested"], a["retries"]) for a in again] == \
        [(message_id, False, 1)]
    # When they purge without --yes, nothing goes; with it, the dead letter is gone
    assert cli(["dlq", "purge", "--queue", PERSIST_QUEUE]) == 1
    assert cli(["dlq", "purge", "--queue", PERSIST_QUEUE, "--yes"]) == 0
    assert f"{PERSIST_QUEUE}: purged 1" in capsys.readouterr().out
    with runtime.sessions() as session:
        assert counts(session) == {}
