"""Chaos fixtures: private PostgreSQL/Redis, moto, the Procfile's processes, a retrying client.

``EC_CHAOS_SCALE=full pytest tests/chaos`` runs the documented scenarios at full size (10,000
events, 30-60 s outages); the default ``short`` scale (what CI runs) keeps each under a minute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import requests

from tests.conftest import SECRET, free_port, mint, order_event, require_service
from tests.support.aws import MotoServer
from tests.support.procs import Proc, procfile_command, wait_http

from .servers import PrivatePostgres, PrivateRedis

FULL = os.environ.get("EC_CHAOS_SCALE", "short") == "full"
SCALE = {
    "events": 10_000 if FULL else 500,
    "redis_outage": 30 if FULL else 6,
    "pg_outage": 30 if FULL else 6,
    "aws_outage": 60 if FULL else 8,
}
# How long a client keeps posting and a check keeps waiting: the full scale moves 20× the events
# on a 2-core machine that also runs every server.
PATIENCE = 1200.0 if FULL else 240.0


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    require_service("PostgreSQL binaries", "127.0.0.1", 5432)
    import shutil
    import tempfile

    # Outside pytest's root-only tmp tree: the server runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="ec-chaos-pg-"))
    root.chmod(0o755)
    server = PrivatePostgres(root / "pg", free_port())
    yield server
    server.destroy()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def rds(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path, free_port())
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@dataclass
class Stack:
    """The Procfile's processes on private servers; each can be killed and restarted."""

    env: dict[str, str]
    logs: Path
    base: str
    procs: dict[str, Proc] = field(default_factory=dict)

    def start(self, name: str) -> Proc:
        proc = Proc(f"{name}-{int(time.time() * 1000)}", procfile_command(name), self.env,
                    self.logs)
        self.procs[name] = proc
        if name == "web":
            wait_http(self.base + "/healthz", proc)
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Signal the process group; return seconds until it exited."""
        proc = self.procs[name]
        started = time.monotonic()
        os.killpg(proc.popen.pid, sig)
        try:
            proc.popen.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(10)
        return time.monotonic() - started

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop()


@pytest.fixture
def stack_factory(pg: PrivatePostgres, rds: PrivateRedis, moto: MotoServer,
                  tmp_path: Path) -> Iterator[Any]:
    stacks: list[Stack] = []

    def make(*names: str, **extra_env: str) -> Stack:
        port = free_port()
        env = {"DATABASE_URL": pg.url, "REDIS_URL": rds.url, "EC_TOKEN_SECRET": SECRET,
               "PORT": str(port), "WEB_BIND": "127.0.0.1", "WEB_CONCURRENCY": "2",
               "PERSIST_PROCESSES": "1", "DELIVER_PROCESSES": "1", "LOG_LEVEL": "WARNING",
               "AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "EC_DELIVERY_RETRY_SCHEDULE": "0.5,1,2", "EC_RATE_LIMIT_PER_SECOND": "0",
               "EC_BROKER_HEARTBEAT_TIMEOUT_MS": "5000",
               # One batch call in flight: moto's SendMessage and ReceiveMessage cost grows with
               # the queue's depth, and at the default (8) the deliver pool fills the queue
               # faster than the test's receivers empty it, until moto answers a call in more
               # than the 10-s read timeout (measured: 9 deliveries/s, 2,000 queued). The
               # scenarios are about recovery, not speed (that is bench/B4-B6, on fauxqs).
               "EC_DELIVER_SENDS_IN_FLIGHT": "1", **extra_env}
        stack = Stack(env=env, logs=tmp_path, base=f"http://127.0.0.1:{port}")
        release = Proc("release", procfile_command("release"), env, tmp_path)
        assert release.popen.wait(60) == 0, release.log()
        for name in names:
            stack.start(name)
        stacks.append(stack)
        return stack

    yield make
    for s in stacks:
        s.stop_all()


def create_tenant(stack: Stack) -> tuple[str, dict[str, str]]:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "eventcollector"), "tenant", "create",
         f"c-{uuid.uuid4().hex[:6]}", "--json"], env={**os.environ, **stack.env},
        capture_output=True, text=True, check=True)
    tenant = json.loads(out.stdout)["tenant"]
    # Its subscriptions deliver with the deliver pool's own credentials, to moto's account.
    subprocess.run([str(Path(sys.executable).parent / "eventcollector"), "tenant",
                    "allow-platform-credentials", tenant, "--accounts", "123456789012"],
                   env={**os.environ, **stack.env}, capture_output=True, text=True, check=True)
    return tenant, {"Authorization": f"Bearer {mint(tenant, ttl=3600)}", "X-TWC-Tenant": tenant}


def sqs_subscription(stack: Stack, headers: dict[str, str], moto: MotoServer) -> tuple[str, str]:
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto.url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    url = sqs.create_queue(QueueName=f"chaos-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sub = requests.post(stack.base + "/api/v1/event-subscription", headers=headers, timeout=10,
                        json={"entityType": "ORDER", "subscribeCreate": True, "destination": {
                            "type": "SQS", "sqs": {"queueUrl": url, "region": "us-east-1",
                                                   "credentials": "platform"}}})
    assert sub.status_code == 201, sub.text
    return url, sub.json()["id"]


@dataclass
class Ledger:
    """What the client was told, per event id."""

    answers: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, event_id: str, status: int) -> None:
        with self.lock:
            self.answers.setdefault(event_id, []).append(status)

    def accepted(self) -> set[str]:
        with self.lock:
            return {i for i, s in self.answers.items() if 201 in s or 200 in s}

    def count(self, status: int) -> int:
        with self.lock:
            return sum(s.count(status) for s in self.answers.values())


def post_until_accepted(base: str, headers: dict[str, str], ids: list[str], ledger: Ledger,
                        *, threads: int = 8, deadline_s: float = PATIENCE) -> None:
    """Post each event (client id), retrying 503s and connection errors like a connector."""
    session = requests.Session()
    stop_at = time.monotonic() + deadline_s

    def one(event_id: str) -> None:
        while time.monotonic() < stop_at:
            try:
                r = session.post(base + "/api/v1/events", headers=headers, timeout=10,
                                 json=order_event(id=event_id))
            except requests.RequestException:
                ledger.note(event_id, 0)
                time.sleep(0.5)
                continue
            ledger.note(event_id, r.status_code)
            if r.status_code in (200, 201):
                return
            if r.status_code == 503:
                assert r.headers.get("Retry-After", "").isdigit()
            time.sleep(0.3)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, ids))


def stored_counts(pg: PrivatePostgres, tenant: str) -> dict[str, int]:
    with psycopg.connect(pg.url.replace("postgresql+psycopg", "postgresql")) as conn:
        rows = conn.execute("SELECT event_id, count(*) FROM events WHERE tenant = %s "
                            "GROUP BY event_id", (tenant,)).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def wait_stored(pg: PrivatePostgres, tenant: str, expected: set[str],
                timeout: float = PATIENCE) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            counts = stored_counts(pg, tenant)
        except psycopg.OperationalError:
            counts = {}
        if expected <= set(counts):
            return counts
        time.sleep(1)
    return counts


class QueueDrainer:
    """Receives (and deletes) from an SQS queue from the moment it is made, like a retailer would.

    Receiving while events are posted keeps the queue short: moto's SendMessage and ReceiveMessage
    cost grows with the queue's depth, so draining 10,000 messages only at the end would crawl.
    """

    def __init__(self, moto: MotoServer, url: str, threads: int = 4) -> None:
        self.url = url
        self.seen: dict[str, int] = {}
        # SQS message ids per event: two ids = the product sent the event twice; one id
        # received twice = moto handing one message out again (its ReceiveMessage takes no
        # lock, so concurrent receivers can both get a message).
        self.message_ids: dict[str, set[str]] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.client = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto.url,
                                   aws_access_key_id="testing", aws_secret_access_key="testing")
        self.threads = [threading.Thread(target=self._receive, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _receive(self) -> None:
        while not self.stopped.is_set():
            try:
                msgs = self.client.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                                   WaitTimeSeconds=1)
            except Exception:  # moto or its proxy restarting: try again shortly
                time.sleep(0.5)
                continue
            entries = []
            for m in msgs.get("Messages", []):
                event_id = json.loads(m["Body"])["id"]
                with self.lock:
                    self.seen[event_id] = self.seen.get(event_id, 0) + 1
                    self.message_ids.setdefault(event_id, set()).add(m["MessageId"])
                entries.append({"Id": str(len(entries)), "ReceiptHandle": m["ReceiptHandle"]})
            if entries:
                self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)

    def wait_for(self, expected: set[str], timeout: float = PATIENCE) -> dict[str, int]:
        """Wait until every expected id was received; returns id → times received."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if expected <= set(self.seen):
                    break
            time.sleep(0.2)
        time.sleep(1)  # a duplicate in flight still counts
        with self.lock:
            return dict(self.seen)

    def sent_twice(self) -> int:
        """Events that reached the queue as more than one SQS message."""
        with self.lock:
            return sum(1 for ids in self.message_ids.values() if len(ids) > 1)

    def stop(self) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def drainer(moto: MotoServer) -> Iterator[Any]:
    made: list[QueueDrainer] = []

    def make(url: str) -> QueueDrainer:
        made.append(QueueDrainer(moto, url))
        return made[-1]

    yield make
    for d in made:
        d.stop()


def succeeded_deliveries(pg: PrivatePostgres, tenant: str) -> int:
    with psycopg.connect(pg.url.replace("postgresql+psycopg", "postgresql")) as conn:
        row = conn.execute("SELECT count(DISTINCT event_id) FROM deliveries WHERE tenant = %s "
                           "AND status = 'succeeded'", (tenant,)).fetchone()
    return int(row[0]) if row else 0


def wait_delivered(pg: PrivatePostgres, tenant: str, n: int, timeout: float = PATIENCE) -> int:
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        try:
            done = succeeded_deliveries(pg, tenant)
        except psycopg.OperationalError:
            done = 0
        if done >= n:
            break
        time.sleep(0.5)
    return done
