"""The same-run limit of B4: plain boto3 batch loops, no product code, P processes × T threads.

A ``Plan`` lists the messages (bodies and attributes, once each) and the batches to send: each
batch names its destination (a queue URL or a topic ARN) and up to ten messages, and has a
*lane*. Lane ``l`` goes to process ``l % P`` and, inside it, to thread ``(l // P) % T``, which
sends its lanes' batches in the plan's order: round-robin lanes spread a standard queue's load
over every thread, one lane per FIFO message group keeps each group's order (as a sender that
respects groups must).

Each process builds every request before a common start time, then its threads call
``SendMessageBatch`` or ``PublishBatch`` back to back with one client each (boto3 tries once,
as the product's senders do); an entry counts as sent only when the response lists it under
``Successful`` (fauxqs's PublishBatch silently leaves out entries it rejects, such as an empty
Message, so everything else counts as failed).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Plan:
    service: str  # "sqs" or "sns"
    bodies: list[str] = field(default_factory=list)
    attributes: list[dict[str, str]] = field(default_factory=list)
    groups: list[str | None] = field(default_factory=list)  # FIFO: MessageGroupId per message
    batches: list[tuple[int, str, list[int]]] = field(default_factory=list)  # lane, target, ids

    def add(self, body: str, attributes: dict[str, str], group: str | None = None) -> int:
        self.bodies.append(body)
        self.attributes.append(attributes)
        self.groups.append(group)
        return len(self.bodies) - 1

    @property
    def messages(self) -> int:
        return sum(len(ids) for _, _, ids in self.batches)


@dataclass
class PlainResult:
    sent: int
    failed: int
    seconds: float
    processes: int
    threads: int
    calls: int

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else float("nan")

    def describe(self, call: str) -> str:
        return (f"plain boto3 loops of {call} (10), {self.processes} processes × {self.threads} "
                "threads, same messages, same fauxqs")


def _attrs(values: dict[str, str]) -> dict[str, Any]:
    return {k: {"DataType": "String", "StringValue": v} for k, v in values.items()}


def _requests(plan: dict[str, Any], lanes: list[tuple[int, str, list[int]]]) -> list[dict[str, Any]]:
    out = []
    bodies, attributes, groups = plan["bodies"], plan["attributes"], plan["groups"]
    for _, target, ids in lanes:
        if plan["service"] == "sqs":
            entries = []
            for j, m in enumerate(ids):
                entry: dict[str, Any] = {"Id": str(j), "MessageBody": bodies[m],
                                         "MessageAttributes": _attrs(attributes[m])}
                if groups[m] is not None:
                    entry["MessageGroupId"] = groups[m]
                    entry["MessageDeduplicationId"] = f"plain-{m}"
                entries.append(entry)
            out.append({"QueueUrl": target, "Entries": entries})
        else:
            out.append({"TopicArn": target, "PublishBatchRequestEntries": [
                {"Id": str(j), "Message": bodies[m], "MessageAttributes": _attrs(attributes[m])}
                for j, m in enumerate(ids)]})
    return out


def _worker(endpoint: str, spec: str, index: int, processes: int, threads: int,
            ready: mp.Queue, go: Any, result: mp.Queue) -> None:
    import boto3
    from botocore.config import Config

    plan = orjson.loads(Path(spec).read_bytes())
    mine = [b for b in plan["batches"] if b[0] % processes == index]
    per_thread: list[list[tuple[int, str, list[int]]]] = [[] for _ in range(threads)]
    for b in mine:
        per_thread[(b[0] // processes) % threads].append(b)
    config = Config(connect_timeout=3, read_timeout=10, retries={"total_max_attempts": 1})
    counts = {"sent": 0, "failed": 0, "calls": 0}
    lock = threading.Lock()
    ends: list[float] = []
    prepared = threading.Semaphore(0)
    session = boto3.session.Session()

    def run(batches: list[tuple[int, str, list[int]]]) -> None:
        with lock:  # boto3 sessions are not thread-safe while making clients
            client = session.client(
                plan["service"], region_name="us-east-1", endpoint_url=endpoint,
                aws_access_key_id="bench", aws_secret_access_key="bench", config=config)
        requests = _requests(plan, batches)
        call = client.send_message_batch if plan["service"] == "sqs" else client.publish_batch
        sent = failed = 0
        prepared.release()
        go.wait()
        for req in requests:
            n = len(req.get("Entries") or req["PublishBatchRequestEntries"])
            try:
                ok = len(call(**req).get("Successful", []))
            except Exception:  # noqa: BLE001 - counted as failed, as the product would retry
                ok = 0
            sent += ok
            failed += n - ok
        with lock:
            counts["sent"] += sent
            counts["failed"] += failed
            counts["calls"] += len(requests)
            ends.append(time.time())

    workers = [threading.Thread(target=run, args=(b,)) for b in per_thread if b]
    for t in workers:
        t.start()
    for _ in workers:
        prepared.acquire()
    ready.put(index)
    go.wait()
    started = time.time()
    for t in workers:
        t.join()
    result.put({**counts, "start": started, "end": max(ends, default=started)})


def run(endpoint: str, plan: Plan, workdir: Path, processes: int, threads: int) -> PlainResult:
    """Send ``plan`` with ``processes`` × ``threads`` loops; the time runs from the common start
    to the last thread's end."""
    spec = workdir / f"plain-{time.time_ns()}.json"
    spec.write_bytes(orjson.dumps({"service": plan.service, "bodies": plan.bodies,
                                   "attributes": plan.attributes, "groups": plan.groups,
                                   "batches": plan.batches}))
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    ready: mp.Queue = ctx.Queue()
    go = ctx.Event()  # set once every thread of every process has its client and requests
    procs = [ctx.Process(target=_worker, args=(endpoint, str(spec), i, processes, threads,
                                               ready, go, queue)) for i in range(processes)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)
    spec.unlink(missing_ok=True)
    go.set()
    outs = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return PlainResult(sent=sum(o["sent"] for o in outs), failed=sum(o["failed"] for o in outs),
                       seconds=max(o["end"] for o in outs) - min(o["start"] for o in outs),
                       processes=processes, threads=threads,
                       calls=sum(o["calls"] for o in outs))
