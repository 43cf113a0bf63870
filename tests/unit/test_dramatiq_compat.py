"""Each assumption infra/broker/dramatiq_compat.py makes about Dramatiq, checked against the
installed Dramatiq: an upgrade that changes one fails the test named after it."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import dramatiq.cli
import fakeredis
import orjson
import pytest
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from infra.broker import dramatiq_compat as compat
from infra.broker.intake import Pending
from infra.broker.intakes.redis import RedisIntake
from infra.broker.queues import PERSIST_ACTOR, PERSIST_QUEUE

NS = "compat-ns"
ROOT = Path(__file__).resolve().parents[2]


def message(queue: str = "q", *args: Any) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue, actor_name="act", args=args or (1,), kwargs={},
                            options={})


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def broker(client: fakeredis.FakeRedis) -> Iterator[RedisBroker]:
    b = RedisBroker(client=client, namespace=NS, maintenance_chance=0)
    b.declare_queue("q")
    yield b
    b.close()


def keys(client: fakeredis.FakeRedis) -> set[str]:
    return {k.decode() for k in client.keys("*")}


def test_enqueue_writes_the_message_hash_and_the_queue_list(client: Any, broker: Any) -> None:
    sent = broker.enqueue(message())
    rid = sent.options[compat.REDIS_MESSAGE_ID]
    assert sent.options == compat.enqueue_options(rid)
    assert keys(client) == {compat.queue_key(NS, "q"), compat.messages_key(NS, "q"),
                            compat.heartbeats_key(NS)}
    assert client.lrange(compat.queue_key(NS, "q"), 0, -1) == [rid.encode()]
    assert client.hgetall(compat.messages_key(NS, "q")) == {rid.encode(): sent.encode()}


def test_a_delayed_message_waits_on_the_delay_queue_with_an_eta(client: Any, broker: Any) -> None:
    sent = broker.enqueue(message(), delay=60_000)
    assert sent.queue_name == compat.delayed_queue("q") == "q.DQ"
    assert compat.ETA in sent.options
    assert client.llen(compat.queue_key(NS, compat.delayed_queue("q"))) == 1
    assert compat.queue_sizes(client, NS, "q") == (0, 1, 0)


def test_canonical_queue_drops_the_delay_and_dead_letter_suffixes() -> None:
    assert compat.canonical_queue("q.DQ") == compat.canonical_queue("q.XQ") == "q"
    assert compat.canonical_queue("q") == "q"


def test_fetched_ids_wait_in_the_acks_set_named_by_broker_id(client: Any, broker: Any) -> None:
    sent = broker.enqueue(message())
    consumer = broker.consume("q", prefetch=1, timeout=100)
    got = next(consumer)
    assert got.message_id == sent.message_id
    held = compat.acks_key(NS, broker.broker_id, "q")
    assert client.smembers(held) == {sent.options[compat.REDIS_MESSAGE_ID].encode()}
    assert client.zscore(compat.heartbeats_key(NS), broker.broker_id) is not None
    consumer.ack(got)
    assert not client.exists(held)
    assert compat.queue_sizes(client, NS, "q") == (0, 0, 0)
    consumer.close()


def test_a_nacked_message_is_a_dead_letter_in_the_xq_set_and_hash(client: Any,
                                                                  broker: Any) -> None:
    sent = broker.enqueue(message())
    rid = sent.options[compat.REDIS_MESSAGE_ID].encode()
    consumer = broker.consume("q", prefetch=1, timeout=100)
    consumer.nack(next(consumer))
    assert client.zrange(compat.dead_letter_key(NS, "q"), 0, -1) == [rid]
    assert compat.dead_letter_key(NS, "q.DQ") == compat.dead_letter_key(NS, "q")
    dead = dramatiq.Message.decode(client.hget(compat.dead_letter_messages_key(NS, "q"), rid))
    assert dead.message_id == sent.message_id
    assert compat.queue_sizes(client, NS, "q") == (0, 0, 1)
    consumer.close()


def test_the_intake_writes_what_a_redis_broker_consumer_reads(client: Any) -> None:
    """The Lua intake's message is fetched, decoded and acknowledged by Dramatiq's own consumer,
    and has the same fields as a message RedisBroker.enqueue writes."""
    intake = RedisIntake(client, 60, namespace=NS)
    doc = {"id": "e-1", "type": "x"}
    intake.accept("acme", [Pending(doc, "0" * 64)])
    [(rid, raw)] = client.hgetall(compat.messages_key(NS, PERSIST_QUEUE)).items()
    assert client.lrange(compat.queue_key(NS, PERSIST_QUEUE), 0, -1) == [rid]

    broker = RedisBroker(client=client, namespace=NS, maintenance_chance=0)
    broker.declare_queue(PERSIST_QUEUE)
    enqueued = broker.enqueue(dramatiq.Message(queue_name=PERSIST_QUEUE, actor_name=PERSIST_ACTOR,
                                               args=("acme", [doc]), kwargs={}, options={}))
    written = orjson.loads(client.hget(compat.messages_key(NS, PERSIST_QUEUE),
                                       enqueued.options[compat.REDIS_MESSAGE_ID]))
    assert set(orjson.loads(raw)) == set(written)

    consumer = broker.consume(PERSIST_QUEUE, prefetch=2, timeout=100)
    got = next(consumer)
    assert (got.actor_name, list(got.args)) == (PERSIST_ACTOR, ["acme", [doc]])
    assert got.options[compat.REDIS_MESSAGE_ID] == rid.decode()
    consumer.ack(got)
    assert not client.hexists(compat.messages_key(NS, PERSIST_QUEUE), rid)
    consumer.close()
    broker.close()


def test_every_broker_command_goes_through_dispatch(client: Any) -> None:
    assert "command" in inspect.signature(RedisBroker._dispatch).parameters
    seen: list[str] = []

    class Recording(compat.DispatchHookRedisBroker):
        def call_dispatch(self, dispatch: compat.Dispatch, queue_name: str, *args: Any) -> Any:
            seen.append(queue_name)
            return super().call_dispatch(dispatch, queue_name, *args)

    broker = Recording(client=client, namespace=NS, maintenance_chance=0)
    broker.declare_queue("q")
    broker.enqueue(message())
    consumer = broker.consume("q", prefetch=1, timeout=100)
    consumer.ack(next(consumer))  # fetch, ack
    assert len(seen) >= 3 and set(seen) == {"q"}
    consumer.close()
    broker.close()


def test_renew_broker_id_heartbeats_and_holds_under_the_new_id(client: Any) -> None:
    broker = compat.DispatchHookRedisBroker(client=client, namespace=NS, maintenance_chance=0)
    broker.declare_queue("q")
    old = broker.broker_id
    broker.renew_broker_id("fresh-id")
    broker.enqueue(message())
    consumer = broker.consume("q", prefetch=1, timeout=100)
    next(consumer)
    assert client.scard(compat.acks_key(NS, "fresh-id", "q")) == 1
    assert not client.exists(compat.acks_key(NS, old, "q"))
    assert client.zscore(compat.heartbeats_key(NS), "fresh-id") is not None
    consumer.close()
    broker.close()


class Seen(logging.Handler):
    """Each record's message and arguments as Dramatiq's logger emits them (before the root
    handler's MessageBodyFilter, which a test that configured logging may have left, replaces
    the messages among them)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((str(record.msg), record.args))


Failed = tuple[StubBroker, str, Seen]


@pytest.fixture
def failed() -> Iterator[Failed]:
    """A StubBroker whose actor failed once, was retried once and dead-lettered."""
    seen = Seen()
    dramatiq_logger = logging.getLogger("dramatiq")
    dramatiq_logger.addHandler(seen)
    stub = StubBroker(fail_fast_default=False)
    stub.emit_after("process_boot")

    @dramatiq.actor(broker=stub, queue_name="q", max_retries=1, min_backoff=1, max_backoff=2)
    def boom() -> None:
        raise ValueError("boom")

    worker = dramatiq.Worker(stub, worker_timeout=50)
    worker.start()
    try:
        boom.send()
        stub.join("q")
        worker.join()
        yield stub, "q", seen
    finally:
        worker.stop()
        stub.close()
        dramatiq_logger.removeHandler(seen)


def test_retries_middleware_options_and_as_new(failed: Failed) -> None:
    stub, queue, _ = failed
    [dead] = compat.stub_dead_letters(stub, queue)
    assert dead.options[compat.RETRIES] == 2  # counted before giving up
    assert "ValueError" in dead.options[compat.TRACEBACK]
    assert dataclasses.is_dataclass(dramatiq.Message)
    fresh = compat.as_new(dramatiq.Message.decode(dead.encode()), "other")
    assert fresh.queue_name == "other" and fresh.message_id == dead.message_id
    assert not set(fresh.options) & set(compat.DELIVERY_STATE_OPTIONS)


def test_stub_dead_letters_are_the_live_list(failed: Failed) -> None:
    stub, queue, _ = failed
    [dead] = stub.dead_letters
    assert compat.stub_dead_letters(stub, queue) == [dead]
    compat.drop_stub_dead_letter(stub, queue, dead.message_id)
    assert stub.dead_letters == [] and compat.stub_dead_letters(stub, queue) == []
    assert compat.stub_dead_letters(stub, "never-declared") == []


def test_stub_queue_sizes() -> None:
    stub = StubBroker()
    stub.declare_queue("q")
    stub.enqueue(message())
    stub.enqueue(message(), delay=60_000)
    assert compat.stub_queue_size(stub, "q") == 1
    assert compat.stub_queue_size(stub, compat.delayed_queue("q")) == 1
    assert compat.stub_queue_size(stub, "unknown") == 0
    stub.close()


def test_the_worker_logs_a_failure_with_the_message_as_argument(failed: Failed) -> None:
    _, _, seen = failed
    args = [a for msg, a in seen.records if msg.startswith("Failed to process message")]
    assert len(args) == 2  # the first attempt and its retry
    assert all(isinstance(a, tuple) and compat.is_message(a[0]) for a in args)
    assert not compat.is_message("text") and not compat.is_message(object())


def test_the_cli_worker_sigterm_handler_stops_then_kills() -> None:
    """dramatiq.cli.worker_process's SIGTERM handler: named as compat expects, the first call
    asks for a graceful stop and a second one exits at once (why workers/main.py wraps it)."""
    source = inspect.getsource(dramatiq.cli.worker_process)
    assert "signal.signal(signal.SIGTERM, termhandler)" in source
    [code] = [c for c in dramatiq.cli.worker_process.__code__.co_consts
              if isinstance(c, types.CodeType) and c.co_name == "termhandler"]
    cells = {"logger": logging.getLogger("test"), "running": True}
    handler = types.FunctionType(code, vars(dramatiq.cli), "termhandler", None,
                                 tuple(types.CellType(cells[n]) for n in code.co_freevars))
    assert compat.is_cli_worker_sigterm_handler(handler)
    assert not compat.is_cli_worker_sigterm_handler(signal.default_int_handler)
    assert handler(signal.SIGTERM, None) is None
    with pytest.raises(SystemExit):
        handler(signal.SIGTERM, None)


PROBE = """
import os, signal
import dramatiq
from dramatiq.brokers.stub import StubBroker
from infra.broker.dramatiq_compat import is_cli_worker_sigterm_handler

handler = signal.getsignal(signal.SIGTERM)
with open(os.environ["EC_COMPAT_PROBE"], "w") as out:
    out.write(f"{getattr(handler, '__qualname__', '')}|{is_cli_worker_sigterm_handler(handler)}")
broker = StubBroker()
dramatiq.set_broker(broker)
"""


def test_a_real_cli_worker_process_has_that_sigterm_handler(tmp_path: Path) -> None:
    (tmp_path / "compat_probe.py").write_text(PROBE)
    out = tmp_path / "probe.txt"
    env = {**os.environ, "EC_COMPAT_PROBE": str(out),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "compat_probe", "--processes", "1", "--threads", "1",
         "--path", str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        qualname, recognised = out.read_text().split("|")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert qualname.startswith(compat.CLI_WORKER_HANDLER_PREFIX)
    assert recognised == "True"
