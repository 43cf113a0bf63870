"""B1–B7 from issue 5. Each returns a ``Figure`` list: the product's number, the limit measured in
the same run, their ratio and the target."""

from __future__ import annotations

import base64
import dataclasses
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from bench import loadgen, plain
from bench.stack import Stack


@dataclass(frozen=True)
class Scale:
    repeats: int
    seconds: float  # one closed-loop measurement
    latency_seconds: float  # B1's latency run
    b3_events: int
    b4_events: int  # B4 SQS and SNS: pending deliveries drained
    b5_seconds: float
    b6_seconds: float
    soak_seconds: float
    b4_repeats: int = 1  # runs per B4 variant (SQS, SNS, fan-out)
    drain_timeout: float = 100  # a B4 drain stops here; the rate is over what was delivered
    fanout_subs: int = 100  # B4 fan-out: subscriptions (and queues) per tenant
    fanout_events: int = 500  # (a): events of the one tenant, each matching fanout_subs
    fanout_tenants: int = 10  # (b)
    fanout_events_per_tenant: int = 50  # (b)
    fifo_events: int = 10_000
    fifo_groups: int = 8
    b4_variants: tuple[str, ...] = ("sqs", "sns", "fanout", "fifo")
    plain_threads: int = 0  # threads per plain-loop process; 0: the deliver pool's own
    b6_offered: float = 3_300  # events/s offered in B6's main run
    b6_step_seconds: float = 20  # each step of B6's search for the highest flat rate
    b6_steps: int = 5


FULL = Scale(repeats=3, seconds=10, latency_seconds=15, b3_events=100_000, b4_events=100_000,
             b5_seconds=60, b6_seconds=60, soak_seconds=600)
SMOKE = Scale(repeats=1, seconds=1, latency_seconds=1, b3_events=500, b4_events=200,
              b5_seconds=3, b6_seconds=4, soak_seconds=4, drain_timeout=30, fanout_subs=10,
              fanout_events=20, fanout_tenants=2, fanout_events_per_tenant=10, fifo_events=200,
              fifo_groups=4, b6_offered=1_000, b6_step_seconds=3, b6_steps=1)


@dataclass
class Figure:
    bench: str
    what: str
    value: float
    unit: str
    runs: list[float] = field(default_factory=list)
    limit: float | None = None
    limit_what: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""


def spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def order_event(seq: str = "@SEQ@", entity_id: str | None = None,
                entity_name: str = "ORDER") -> dict[str, Any]:
    """A seed-sized ORDER CREATE (≈1 KB on the wire, like the seed's example); ``entity_id``
    (default order-<seq>) is its FIFO message group."""
    order = {"id": f"order-{seq}", "number": f"R{seq}", "currency": "USD", "total": 129.95,
             "status": "PLACED", "customer": {"id": "cust-42", "email": "shopper@example.com"},
             "lines": [{"sku": f"SKU-{i}", "qty": i + 1, "price": 19.99} for i in range(4)],
             "shipping": {"method": "GROUND", "country": "US", "postcode": "94107"}}
    entity_id = entity_id or f"order-{seq}"
    return {
        "entity_id": entity_id,
        "entity_name": entity_name,
        "event_payload": {
            "base64_encoded_payload_json": base64.b64encode(orjson.dumps(order)).decode(),
            "base64_encoded_fault_json": None,
            "entity_id": entity_id,
            "key_attributes": {"correlationId": f"bench-{seq}", "referenceId": f"ref-{seq}"},
            "operation": "CREATE",
        },
        "event_source": "APPLICATION",
        "event_type": "ENTITY_EVENT",
    }


def single_target(stack: Stack, port: int | None = None) -> loadgen.Target:
    return loadgen.Target("127.0.0.1", port or stack.web_port, "/api/v1/events",
                          orjson.dumps(order_event()), stack.headers)


def batch_target(stack: Stack, size: int) -> loadgen.Target:
    # Every event of a request shares the request's number; ids are assigned by the server.
    events = [order_event(f"@SEQ@-{i}") for i in range(size)]
    return loadgen.Target("127.0.0.1", stack.web_port, "/api/v1/events/batch",
                          orjson.dumps({"events": events}), stack.headers)


def _rates(target: loadgen.Target, scale: Scale, connections: int) -> tuple[list[float], int]:
    runs, bad = [], 0
    for _ in range(scale.repeats):
        out = loadgen.closed(target, connections=connections, duration=scale.seconds)
        runs.append(out.ok / scale.seconds)
        bad += out.other + out.errors
    return runs, bad


# B1 / B2 ---------------------------------------------------------------------------------
def b1_b2(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    """The no-op and the product servers both run (on two ports) and are measured in turn, a
    no-op run then a product run, ``repeats`` times: a change in the machine's load between
    runs hits both sides of the ratio alike."""
    conns = 16
    from bench.stack import free_port

    noop_port = free_port()
    stack.start_web("bench.noop:create_app()", PORT=str(noop_port))
    stack.start_web()
    once = dataclasses.replace(scale, repeats=1)
    warm = dataclasses.replace(scale, repeats=1, seconds=min(2.0, scale.seconds))
    for port in (noop_port, stack.web_port):  # warm-up (connections, pools), not counted
        _rates(single_target(stack, port), warm, conns)
    stack.redis.client.flushall()
    noop_runs, product_runs, bad = [], [], 0
    for i in range(scale.repeats):
        noop_runs += _rates(single_target(stack, noop_port), once, conns)[0]
        rec = stack.profile("B1 web worker, single-event POSTs", "web",
                            scale.seconds - 1) if i == 0 else None
        runs, n = _rates(single_target(stack), once, conns)
        stack.keep(rec)
        product_runs += runs
        bad += n
        stack.redis.client.flushall()  # the queued messages are not part of this benchmark
        log(f"B1 run {i + 1}: no-op {noop_runs[-1]:.0f}/s, product {product_runs[-1]:.0f}/s "
            f"(ratio {product_runs[-1] / noop_runs[-1]:.2f})")
    stack.stop("noop-web")
    pair_ratios = [p / n for p, n in zip(product_runs, noop_runs, strict=True)]
    log(f"B1 no-op: {spread(noop_runs)}")
    log(f"B1 product: {spread(product_runs)} (non-2xx/errors {bad}); "
        f"ratio per pair {spread(pair_ratios)}")
    b1_rate = statistics.median(product_runs)
    noop_rate = statistics.median(noop_runs)

    half = b1_rate / 2
    out, _ = loadgen.open_loop(single_target(stack), rate=half, duration=scale.latency_seconds)
    stack.redis.client.flushall()
    p50 = loadgen.percentile(out.latencies, 50) * 1000
    p99 = loadgen.percentile(out.latencies, 99) * 1000
    log(f"B1 latency at {half:.0f}/s: p50 {p50:.1f} ms p99 {p99:.1f} ms")

    size = 500
    rec = stack.profile("B2 web worker, 500-event batches", "web", scale.seconds - 1)
    b2_runs_req, bad2 = _rates(batch_target(stack, size), scale, 4)
    stack.keep(rec)
    stack.redis.client.flushall()
    b2_runs = [r * size for r in b2_runs_req]
    b2 = statistics.median(b2_runs)
    stack.results["B2"] = b2  # B6's same-run limit
    log(f"B2: {spread(b2_runs)} events/s (non-2xx/errors {bad2})")
    ratio1 = b1_rate / noop_rate
    return [
        Figure("B1", "single-event POST /api/v1/events, max rate (16 connections)", b1_rate,
               "req/s", product_runs, noop_rate, "no-op Flask route, same gunicorn command",
               ratio1, "≥ 0.6 of no-op", ratio1 >= 0.6,
               (f"{bad} non-2xx/errors; " if bad else "") + "ratio of each (no-op, product) "
               f"pair: median {statistics.median(pair_ratios):.2f} [{min(pair_ratios):.2f} – "
               f"{max(pair_ratios):.2f}] ×{len(pair_ratios)}"),
        Figure("B1", f"p99 latency at half the max rate ({half:.0f} req/s open loop)", p99, "ms",
               [p99], None, f"p50 {p50:.1f} ms", None, "p99 ≤ 25 ms", p99 <= 25,
               f"{out.ok} ok, {out.other} non-2xx, {out.errors} errors"),
        Figure("B2", f"POST /api/v1/events/batch, {size} events per request (4 connections)",
               b2, "events/s", b2_runs, b1_rate, "B1 events/s", b2 / b1_rate,
               "≥ 25,000 events/s and ≥ 10× B1", b2 >= 25_000 and b2 / b1_rate >= 10,
               f"{bad2} non-2xx/errors" if bad2 else ""),
    ]


# B3 -------------------------------------------------------------------------------------
def _prefill(stack: Stack, n: int, per_message: int, tenant: str | None = None,
             make: Callable[[int], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Put ``n`` events (``order_event()``, or ``make(i)``) of ``tenant`` (the main one) on the
    persist queue exactly as the web does (RedisIntake)."""
    from events.contract import EventIn
    from events.service import prepare
    from infra.broker.intakes.redis import RedisIntake

    intake = RedisIntake(stack.redis.client, 3600)
    now = datetime.now(UTC)
    template = orjson.dumps(order_event())

    def event(i: int) -> EventIn:
        if make is not None:
            return EventIn.model_validate_json(orjson.dumps(make(i)))
        return EventIn.model_validate_json(template.replace(b"@SEQ@", str(i).encode()))

    docs = []
    for start in range(0, n, per_message):
        chunk = [prepare(event(i), now) for i in range(start, min(n, start + per_message))]
        intake.accept(tenant or stack.tenant, chunk)
        docs.extend(p.document for p in chunk)
    return docs


def _wait_count(stack: Stack, query: str, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = int(stack.sql(query)[0][0])
        if count >= n:
            return count
        time.sleep(0.2)
    return count


def _stored_rate(stack: Stack) -> float:
    n, first, last = stack.sql("SELECT count(*), min(stored_at), max(stored_at) FROM events")[0]
    span = (last - first).total_seconds()
    return n / span if span > 0 else float("nan")


def _copy_rate(stack: Stack, docs: list[dict[str, Any]]) -> float:
    import psycopg
    from psycopg.types.json import Jsonb

    from events.repository import _row_values

    now = datetime.now(UTC)
    # tenant_seq: the tenant's own numbers (store.events.TENANT_SEQ_BASE), as persist assigns them
    rows = [{**_row_values(stack.tenant, d, now), "tenant_seq": 10**12 + i}
            for i, d in enumerate(docs, 1)]
    cols = list(rows[0])
    stack.sql("TRUNCATE events")
    with psycopg.connect(stack.pg_dsn) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(
                f"COPY events ({', '.join(cols)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row([Jsonb(r[c]) if c == "key_attributes" else r[c] for c in cols])
        conn.commit()
        elapsed = time.perf_counter() - started
    stack.sql("TRUNCATE events")
    return len(rows) / elapsed


def b3(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    n = scale.b3_events
    figures = []
    copy_runs: list[float] = []
    for label, per_message in (("batched (500 per message)", 500), ("single-event", 1)):
        runs = []
        for _ in range(scale.repeats):
            stack.reset_data()
            docs = _prefill(stack, n, per_message)
            if per_message > 1:
                copy_runs.append(_copy_rate(stack, docs))
            proc = stack.start("persist")
            rec = None
            if not runs:
                time.sleep(1.5)
                rec = stack.profile(f"B3 persist process, {label}", "persist", 5)
            got = _wait_count(stack, "SELECT count(*) FROM events", n, timeout=max(60, n / 200))
            stack.keep(rec)
            stack.stop("persist")
            if got < n:
                raise RuntimeError(f"B3: only {got} of {n} stored:\n{proc.log_tail()}")
            runs.append(_stored_rate(stack))
            log(f"B3 {label}: {runs[-1]:.0f} events/s")
        figures.append((label, runs))
    copy_rate = statistics.median(copy_runs)
    log(f"B3 COPY: {spread(copy_runs)}")
    (blabel, bruns), (slabel, sruns) = figures
    batched, single = statistics.median(bruns), statistics.median(sruns)
    return [
        Figure("B3", f"persist pool draining {n:,} events, {blabel}", batched, "events/s", bruns,
               copy_rate, "psycopg COPY of the same rows into the same table",
               batched / copy_rate, "≥ 10,000 events/s and ≥ 0.25 of COPY",
               batched >= 10_000 and batched / copy_rate >= 0.25),
        Figure("B3", f"persist pool draining {n:,} events, {slabel} messages", single,
               "events/s", sruns, copy_rate, "COPY (as above)", single / copy_rate,
               "≥ 2,500 events/s", single >= 2_500),
    ]


# B4 -------------------------------------------------------------------------------------
def _queue(stack: Stack, name: str) -> str:
    attrs = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
    return str(stack.destination.client().create_queue(QueueName=name,
                                                        Attributes=attrs)["QueueUrl"])


def _topic(stack: Stack, name: str) -> tuple[str, str]:
    """An SNS topic with one SQS queue subscribed (RawMessageDelivery): (topic ARN, queue URL)."""
    sqs, sns = stack.destination.client("sqs"), stack.destination.client("sns")
    url = _queue(stack, name)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    topic = str(sns.create_topic(Name=name)["TopicArn"])
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    return topic, url


def _subscription(stack: Stack, target: str, kind: str = "SQS",
                  headers: dict[str, str] | None = None) -> str:
    """A subscription to every ORDER CREATE, sending to ``target`` (a queue URL or topic ARN)
    with the platform's credentials; returns its id."""
    import requests

    if "web" not in stack.procs:
        stack.start_web()
    dest = ({"type": "SQS", "sqs": {"queueUrl": target, "region": "us-east-1",
                                     "credentials": "platform"}} if kind == "SQS" else
            {"type": "SNS", "sns": {"topicArn": target, "region": "us-east-1",
                                     "credentials": "platform"}})
    r = requests.post(f"http://127.0.0.1:{stack.web_port}/api/v1/event-subscription",
                      headers=headers or stack.headers, timeout=30,
                      json={"entityType": "ORDER", "subscribeCreate": True, "destination": dest})
    if r.status_code != 201:
        raise RuntimeError(f"subscription: {r.status_code} {r.text}")
    return str(r.json().get("id", ""))


def _parallel(fn: Callable[[Any], Any], items: list[Any], threads: int = 4) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


def _attributes(tenant: str, doc: dict[str, Any]) -> dict[str, str]:
    """The message attributes the product sends with an event (subscriptions.service)."""
    payload = doc.get("event_payload") or {}
    values = {"tenant": tenant, "event_type": doc.get("event_type"),
              "entity_name": doc.get("entity_name"), "operation": payload.get("operation"),
              "event_id": doc.get("id")}
    return {k: str(v) for k, v in values.items() if v}


def pool_size(stack: Stack) -> tuple[int, int]:
    """The deliver pool's processes and threads: the environment's, else the Procfile's."""
    import os
    import re

    from bench.stack import procfile_command

    command = procfile_command("deliver")

    def value(name: str) -> int:
        given = stack.env.get(name) or os.environ.get(name)
        if given:
            return int(given)
        found = re.search(r"\$\{" + name + r":-([0-9]+)\}", command)
        return int(found.group(1)) if found else 1

    return value("DELIVER_PROCESSES"), value("DELIVER_THREADS")


def plain_size(stack: Stack, scale: Scale) -> tuple[int, int]:
    processes, threads = pool_size(stack)
    return processes, scale.plain_threads or threads


def _plan(service: str, tenant: str, docs: list[dict[str, Any]], targets: list[str],
          group: Callable[[dict[str, Any]], str] | None = None) -> plain.Plan:
    """Every doc to every target in batches of ten; lanes round-robin, or one per FIFO group."""
    plan = plain.Plan(service)
    ids = [plan.add(orjson.dumps(d).decode(), _attributes(tenant, d),
                    group(d) if group else None) for d in docs]
    lane = 0
    for target in targets:
        if group is None:
            for i in range(0, len(ids), 10):
                plan.batches.append((lane, target, ids[i:i + 10]))
                lane += 1
        else:
            by_group: dict[str, list[int]] = {}
            for m in ids:
                by_group.setdefault(str(plan.groups[m]), []).append(m)
            for g, members in enumerate(by_group.values()):
                for i in range(0, len(members), 10):
                    plan.batches.append((lane + g, target, members[i:i + 10]))
            lane += len(by_group)
    return plan


@dataclass
class Drain:
    expected: int
    delivered: int
    rate: float  # deliveries/s, from deliveries.delivered_at
    persist_seconds: float  # events handed to the running persist pool → all deliveries exist
    statuses: dict[str, int]
    plain: plain.PlainResult

    @property
    def complete(self) -> bool:
        return self.delivered >= self.expected

    def note(self, timeout: float) -> str:
        missing = ("" if self.complete else f"only {self.delivered:,} of {self.expected:,} "
                   f"delivered within {timeout:.0f} s (the rate is over those); ")
        failed = "" if not self.plain.failed else f"; the plain loops' failed entries: " \
            f"{self.plain.failed}"
        return (f"{missing}deliveries by status at the end {self.statuses}; plain loops "
                f"{self.plain.sent:,} sent in {self.plain.seconds:.1f} s "
                f"({self.plain.calls:,} calls){failed}")


def _drain(stack: Stack, scale: Scale, log: Callable[[str], None], label: str, expected: int,
           fill: Callable[[], list[dict[str, Any]]],
           plan_of: Callable[[list[dict[str, Any]]], plain.Plan], profile: bool,
           after_plain: Callable[[], None] | None = None) -> Drain:
    """The subscriptions exist (after reset_data). The persist pool turns the events ``fill``
    puts on its queue into ``expected`` pending deliveries and their deliver messages, and
    stops; the plain loops send ``plan_of(docs)`` with nothing else running; then the deliver
    pool starts on the backlog and is timed from ``deliveries.delivered_at``."""
    persist = stack.start("persist")
    # Warm-up: the pool is consuming (one event no subscription matches) before the clock runs.
    _prefill(stack, 1, 1, make=lambda i: order_event(f"warm-{i}", entity_name="OTHER"))
    if _wait_count(stack, "SELECT count(*) FROM events", 1, 60) < 1:
        raise RuntimeError(f"{label}: persist pool not consuming:\n{persist.log_tail()}")
    started = time.perf_counter()
    docs = fill()
    made = _wait_count(stack, "SELECT count(*) FROM deliveries", expected,
                       timeout=max(120, expected / 500))
    persist_seconds = time.perf_counter() - started
    if made < expected:
        raise RuntimeError(f"{label}: {made} of {expected} deliveries created:\n"
                           f"{persist.log_tail()}")
    # Committed is not yet enqueued: stop the pool only once every deliver message is queued
    # (up to ten deliveries per message today; a pool that claims from the table instead
    # enqueues fewer, so the count only has to stop growing).
    deadline, last, steady_since = time.monotonic() + 60, -1, time.monotonic()
    while time.monotonic() < deadline:
        queued = int(stack.redis.client.llen("dramatiq:deliveries"))
        if queued >= -(-expected // 10):
            break
        if queued != last:
            last, steady_since = queued, time.monotonic()
        elif time.monotonic() - steady_since > 2:
            break
        time.sleep(0.1)
    stack.stop("persist")
    processes, threads = plain_size(stack, scale)
    limit = plain.run(stack.destination.url, plan_of(docs), stack.workdir, processes, threads)
    del docs
    if after_plain is not None:
        after_plain()
    log(f"{label}: plain loops ({processes} × {threads}) {limit.rate:.0f}/s ({limit.sent} sent, "
        f"{limit.failed} failed)")
    deliver = stack.start("deliver")
    recs = []
    if profile:
        time.sleep(1.5)
        recs = [stack.profile(f"{label} deliver process", "deliver", 8)]
    got = _wait_count(stack, "SELECT count(*) FROM deliveries WHERE status = 'succeeded'",
                      expected, timeout=scale.drain_timeout)
    stack.keep(*recs)
    stack.stop("deliver")
    if got == 0:
        raise RuntimeError(f"{label}: nothing delivered:\n{deliver.log_tail()}")
    statuses = {str(s): int(n) for s, n in
                stack.sql("SELECT status, count(*) FROM deliveries GROUP BY status")}
    drain = Drain(expected, got, _delivered_rate(stack), persist_seconds, statuses, limit)
    log(f"{label}: deliver pool {drain.rate:.0f}/s ({got} of {expected}), plain "
        f"{limit.rate:.0f}/s, ratio {drain.rate / limit.rate:.2f}; persist "
        f"{persist_seconds * 1000 / max(1, expected):.3f} ms per delivery created")
    return drain


def _queue_depth(stack: Stack, urls: list[str]) -> int:
    sqs = stack.destination.client()
    return sum(int(sqs.get_queue_attributes(QueueUrl=u, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        .get("ApproximateNumberOfMessages", 0)) for u in urls)


def _purge(stack: Stack, urls: list[str]) -> None:
    sqs = stack.destination.client()
    for u in urls:
        sqs.purge_queue(QueueUrl=u)


def _drop_queues(stack: Stack, urls: list[str], topics: tuple[str, ...] | list[str] = ()) -> None:
    sqs, sns = stack.destination.client("sqs"), stack.destination.client("sns")
    for u in urls:
        sqs.delete_queue(QueueUrl=u)
    for t in topics:
        sns.delete_topic(TopicArn=t)


def _delivered_rate(stack: Stack) -> float:
    n, first, last = stack.sql("SELECT count(*), min(delivered_at), max(delivered_at) "
                               "FROM deliveries WHERE status = 'succeeded'")[0]
    span = (last - first).total_seconds() if n else 0
    return n / span if span > 0 else float("nan")


def _ratio_figure(name: str, what: str, drains: list[Drain], call: str, scale: Scale,
                  extra: str = "") -> Figure:
    runs = [d.rate for d in drains]
    rate, limit = statistics.median(runs), statistics.median(d.plain.rate for d in drains)
    ratio = rate / limit
    complete = all(d.complete for d in drains)
    return Figure(name, what, rate, "deliveries/s", runs, limit, drains[0].plain.describe(call),
                  ratio, "≥ 0.5 of the plain loops", ratio >= 0.5 and complete,
                  "; ".join(x for x in (extra, drains[-1].note(scale.drain_timeout)) if x))


def _b4_sqs(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    n = scale.b4_events
    drains = []
    for i in range(scale.b4_repeats):
        stack.reset_data()
        tag = time.time_ns()
        url, fresh = _queue(stack, f"b4-sqs-{tag}"), _queue(stack, f"b4-sqs-plain-{tag}")
        _subscription(stack, url)
        drains.append(_drain(
            stack, scale, log, "B4 SQS", n, lambda: _prefill(stack, n, 100),
            lambda docs, f=fresh: _plan("sqs", stack.tenant, docs, [f]), profile=i == 0))
        depth = _queue_depth(stack, [url])
        _drop_queues(stack, [url, fresh])
    stack.results["b4_persist_per_event_1"] = drains[-1].persist_seconds / n
    return [_ratio_figure(
        "B4", f"SQS: deliver pool draining {n:,} pending deliveries to one standard queue "
        f"({stack.destination.name})", drains, "SendMessageBatch", scale,
        f"messages in the queue at the end: {depth:,}")]


def _b4_sns(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    n = scale.b4_events
    drains = []
    for i in range(scale.b4_repeats):
        stack.reset_data()
        tag = time.time_ns()
        topic, url = _topic(stack, f"b4-sns-{tag}")
        fresh, fresh_url = _topic(stack, f"b4-sns-plain-{tag}")
        _subscription(stack, topic, "SNS")
        drains.append(_drain(
            stack, scale, log, "B4 SNS", n, lambda: _prefill(stack, n, 100),
            lambda docs, f=fresh: _plan("sns", stack.tenant, docs, [f]), profile=i == 0))
        depth = _queue_depth(stack, [url])
        _drop_queues(stack, [url, fresh_url], [topic, fresh])
    return [_ratio_figure(
        "B4", f"SNS: deliver pool draining {n:,} pending deliveries to one topic (one SQS queue "
        "subscribed, raw delivery)", drains, "PublishBatch", scale,
        f"messages in the subscribed queue at the end: {depth:,}")]


def _b4_fanout(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    figures = []
    subs, tenants_n = scale.fanout_subs, scale.fanout_tenants
    # (a) one tenant, every event matching `subs` subscriptions on as many queues
    n_a = scale.fanout_events
    drains = []
    for i in range(scale.b4_repeats):
        stack.reset_data()
        tag = time.time_ns()
        urls = _parallel(lambda k, t=tag: _queue(stack, f"b4-fan-{t}-{k}"), list(range(subs)))
        _parallel(lambda u: _subscription(stack, u), urls)
        drains.append(_drain(
            stack, scale, log, f"B4 fan-out {subs}", n_a * subs, lambda: _prefill(stack, n_a, 100),
            lambda docs, u=urls: _plan("sqs", stack.tenant, docs, u), profile=i == 0,
            after_plain=lambda u=urls: _purge(stack, u)))
        depth = _queue_depth(stack, urls)
        _drop_queues(stack, urls)
    figures.append(_ratio_figure(
        "B4", f"fan-out: {n_a:,} events each matching {subs} subscriptions on {subs} queues (one "
        f"tenant): {n_a * subs:,} deliveries", drains, "SendMessageBatch", scale,
        f"messages in the queues at the end: {depth:,}"))
    per_100 = drains[-1].persist_seconds / n_a
    per_1 = stack.results.get("b4_persist_per_event_1")
    if per_1 is not None:
        extra = (per_100 - per_1) / max(1, subs - 1)
        figures.append(Figure(
            "B4", f"fan-out: matching cost, persist pool time per event with {subs} matching "
            "subscriptions (events handed to the running pool → all their deliveries exist)",
            per_100 * 1000, "ms/event", [per_100 * 1000], per_1 * 1000,
            f"the same with 1 matching subscription (B4 SQS, {scale.b4_events:,} events)",
            per_100 / per_1, "reported", None,
            f"≈ {extra * 1e6:.1f} µs per additional matching subscription per event: matching, "
            "one delivery row and its share of a deliver message (the persist profile of this "
            "run shows the matching itself)"))
    # (b) `tenants_n` tenants × `subs` subscriptions each
    n_b = scale.fanout_events_per_tenant
    while len(stack.fanout_tenants) < tenants_n:
        stack.fanout_tenants += _parallel(
            lambda k: stack.other_tenant(f"b4-fanout-{k}"),
            list(range(len(stack.fanout_tenants), tenants_n)))
    drains = []
    for _ in range(scale.b4_repeats):
        stack.reset_data()
        tag = time.time_ns()
        # tenant-major: tenant ti's queues are urls[ti * subs:(ti + 1) * subs]
        pairs = [(ti, h, k) for ti, (_, h) in enumerate(stack.fanout_tenants[:tenants_n])
                 for k in range(subs)]
        urls = _parallel(lambda p, g=tag: _queue(stack, f"b4-fant-{g}-{p[0]}-{p[2]}"), pairs)
        _parallel(lambda pu: _subscription(stack, pu[1], headers=pu[0][1]),
                  list(zip(pairs, urls, strict=True)))

        def fill() -> list[dict[str, Any]]:
            return [d for t, _ in stack.fanout_tenants[:tenants_n]
                    for d in _prefill(stack, n_b, 100, tenant=t)]

        def plan_of(docs: list[dict[str, Any]], u: list[str] = urls) -> plain.Plan:
            plan = plain.Plan("sqs")
            for k, (t, _) in enumerate(stack.fanout_tenants[:tenants_n]):
                part = _plan("sqs", t, docs[k * n_b:(k + 1) * n_b], u[k * subs:(k + 1) * subs])
                base, lanes = len(plan.bodies), len(plan.batches)
                plan.bodies += part.bodies
                plan.attributes += part.attributes
                plan.groups += part.groups
                plan.batches += [(lane + lanes, target, [m + base for m in ids])
                                 for lane, target, ids in part.batches]
            return plan

        drains.append(_drain(stack, scale, log, f"B4 fan-out {tenants_n}×{subs}",
                             n_b * subs * tenants_n, fill, plan_of, profile=False,
                             after_plain=lambda u=urls: _purge(stack, u)))
        depth = _queue_depth(stack, urls)
        _drop_queues(stack, urls)
    figures.append(_ratio_figure(
        "B4", f"fan-out: {tenants_n} tenants × {subs} subscriptions ({tenants_n * subs:,} queues), "
        f"{n_b:,} events per tenant: {n_b * subs * tenants_n:,} deliveries", drains,
        "SendMessageBatch", scale, f"messages in the queues at the end: {depth:,}"))
    return figures


def _b4_fifo(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    """Events of a few entities (message group = tenant:entity_id) to a FIFO queue: the rate,
    and whether each group arrived in its stored order (tenant_seq)."""
    n, groups = scale.fifo_events, scale.fifo_groups
    stack.reset_data()
    tag = time.time_ns()
    url, fresh = _queue(stack, f"b4-fifo-{tag}.fifo"), _queue(stack, f"b4-fifo-plain-{tag}.fifo")
    _subscription(stack, url)
    drain = _drain(
        stack, scale, log, "B4 FIFO", n,
        lambda: _prefill(stack, n, 100,
                         make=lambda i: order_event(str(i), entity_id=f"order-g{i % groups}")),
        lambda docs: _plan("sqs", stack.tenant, docs, [fresh],
                           group=lambda d: f"{stack.tenant}:{d['entity_id']}"), profile=True)
    order = {str(e): int(s) for e, s in stack.sql(
        "SELECT event_id, tenant_seq FROM events WHERE tenant = %s", stack.tenant)}
    received = _receive_all(stack, url)
    _drop_queues(stack, [url, fresh])
    by_group: dict[str, list[int]] = {}
    ids = [i for _, i in received]
    for group, event_id in received:
        by_group.setdefault(group, []).append(order.get(event_id, -1))
    reversed_pairs = sum(1 for seqs in by_group.values() for a, b in zip(seqs, seqs[1:], strict=False)
                         if b < a)
    dupes = len(ids) - len(set(ids))
    missing = drain.delivered - len(set(ids))
    log(f"B4 FIFO: {len(received)} received in {len(by_group)} groups, {reversed_pairs} "
        f"out-of-order pairs, {dupes} duplicates, {missing} delivered but not received")
    ratio = drain.rate / drain.plain.rate
    return [Figure(
        "B4", f"FIFO: deliver pool draining {n:,} pending deliveries of {groups} message groups "
        "to one FIFO queue", drain.rate, "deliveries/s", [drain.rate], drain.plain.rate,
        drain.plain.describe("SendMessageBatch") + ", each group's batches in order on one "
        "thread", ratio, "each group in stored order (0 out-of-order pairs), rate reported",
        reversed_pairs == 0 and missing == 0 and drain.complete,
        f"received {len(received):,} in {len(by_group)} groups: {reversed_pairs} out-of-order "
        f"pairs (consecutive receipts of one group whose tenant_seq goes down), {dupes} "
        f"received twice, {missing} succeeded but not received; "
        + drain.note(scale.drain_timeout))]


def _receive_all(stack: Stack, url: str) -> list[tuple[str, str]]:
    """Every message of a queue, in the order one receiver gets them: (group, event id)."""
    sqs = stack.destination.client()
    out: list[tuple[str, str]] = []
    empty = 0
    while empty < 3:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                   AttributeNames=["MessageGroupId"]).get("Messages", [])
        if not msgs:
            empty += 1
            time.sleep(0.1)
            continue
        empty = 0
        for m in msgs:
            out.append((m.get("Attributes", {}).get("MessageGroupId", ""),
                        str(orjson.loads(m["Body"])["id"])))
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(msgs)])
    return out


B4_VARIANTS = {"sqs": _b4_sqs, "sns": _b4_sns, "fanout": _b4_fanout, "fifo": _b4_fifo}


def b4(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    """Each variant: the deliver pool draining a backlog of pending deliveries to fauxqs,
    against plain batch loops with the pool's process × thread count sending the same messages
    to the same fauxqs, in the same run."""
    processes, threads = plain_size(stack, scale)
    log(f"B4: deliver pool {pool_size(stack)[0]} × {pool_size(stack)[1]}, plain loops "
        f"{processes} × {threads}; destination {stack.destination.name}")
    figures: list[Figure] = []
    for name in scale.b4_variants:
        figures += B4_VARIANTS[name](stack, scale, log)
    return figures


# B5 / B6 ---------------------------------------------------------------------------------
class SqsReceiver:
    """Threads that receive (and delete) from a queue, noting the wall time per correlation id."""

    def __init__(self, stack: Stack, url: str, threads: int = 4) -> None:
        self.seen: dict[str, list[float]] = {}
        # SQS message ids per correlation id: two ids mean the product sent the event twice;
        # one id received twice is the stand-in delivering one message again (moto's
        # ReceiveMessage has no lock: concurrent receivers can both take a message; fauxqs
        # hands a message out again once its visibility timeout passes undeleted).
        self.message_ids: dict[str, set[str]] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(stack, url), daemon=True)
                        for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, stack: Stack, url: str) -> None:
        sqs = stack.destination.client()
        while not self._stop.is_set():
            # Long polls: the destination answers as soon as a message arrives, and an idle
            # poll costs it nothing.
            msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            now = time.time()
            entries = []
            for m in msgs.get("Messages", []):
                corr = orjson.loads(m["Body"])["event_payload"]["key_attributes"]["correlationId"]
                with self.lock:
                    self.seen.setdefault(corr, []).append(now)
                    self.message_ids.setdefault(corr, set()).add(m["MessageId"])
                entries.append({"Id": str(len(entries)), "ReceiptHandle": m["ReceiptHandle"]})
            if entries:
                sqs.delete_message_batch(QueueUrl=url, Entries=entries)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join()


def _pipeline(stack: Stack, queue: str) -> str:
    """Web, persist and deliver running, one matching subscription to a fresh queue."""
    stack.reset_data()
    url = _queue(stack, f"{queue}-{time.time_ns()}")
    _subscription(stack, url)
    for kind in ("persist", "deliver"):
        stack.start(kind)
    # Both pools are consuming once one matching event has gone all the way through (its
    # message is purged; it stays counted in events and deliveries: _offered subtracts it).
    _prefill(stack, 1, 1, make=lambda i: order_event(f"warmup-{i}"))
    if _wait_count(stack, "SELECT count(*) FROM deliveries WHERE status = 'succeeded'", 1,
                   60) < 1:
        raise RuntimeError(f"{queue}: the warm-up event was not delivered:\n"
                           f"{stack.procs['deliver'].log_tail()}")
    _purge(stack, [url])
    return url


def steady(stack: Stack, url: str, rate: float, seconds: float,
           profile: str | None = None) -> dict[str, Any]:
    """``rate`` single-event POSTs/s for ``seconds``; latency POST → received from SQS."""
    receiver = SqsReceiver(stack, url)
    recs = [stack.profile(f"{profile} {kind}", kind, min(10, seconds - 3))
            for kind in ("web", "persist", "deliver", stack.destination.name)] if profile else []
    out, _ = loadgen.open_loop(single_target(stack), rate=rate, duration=seconds, connections=16)
    stack.keep(*recs)
    accepted = {f"bench-{k}": t for k, t in out.sent_at.items()}
    deadline = time.monotonic() + 60
    while receiver.count() < out.ok and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # a duplicate would arrive now
    receiver.stop()
    latencies = [receiver.seen[c][0] - t for c, t in accepted.items() if c in receiver.seen]
    lost = sum(1 for c in accepted if c not in receiver.seen)
    dupes = sum(len(v) - 1 for v in receiver.message_ids.values())
    redelivered = sum(len(v) for v in receiver.seen.values()) - sum(
        len(v) for v in receiver.message_ids.values())
    stored = int(stack.sql("SELECT count(*) FROM events WHERE correlation_id IS DISTINCT FROM "
                           "'bench-warmup-0'")[0][0])  # the pipeline's warm-up left out
    # Where the time goes: received → stored (persist pool) and stored → sent (deliver pool).
    stages = stack.sql(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM e.stored_at - "
        "e.received_at)), percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
        "d.delivered_at - e.stored_at)) FROM events e JOIN deliveries d ON d.event_id = "
        "e.event_id AND d.tenant = e.tenant WHERE d.status = 'succeeded'")[0]
    return {"persist_p50": float(stages[0] or 0) * 1000, "deliver_p50": float(stages[1] or 0) * 1000,
            "sent": len(accepted), "ok": out.ok, "non2xx": out.other + out.errors,
            "received": len(receiver.seen), "lost": lost, "duplicated": dupes, "redelivered": redelivered,
            "stored": stored,
            "p50": loadgen.percentile(latencies, 50) * 1000,
            "p99": loadgen.percentile(latencies, 99) * 1000,
            "post_p99": loadgen.percentile(out.latencies, 99) * 1000}


def b5(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    url = _pipeline(stack, "bench-b5")
    r = steady(stack, url, 200, scale.b5_seconds, profile="B5")
    log(f"B5: {r}")
    met = r["p99"] <= 250 and r["lost"] == 0 and r["duplicated"] == 0
    note = (f"destination {stack.destination.name}; {r['sent']} sent, {r['ok']} answered 2xx, "
            f"{r['stored']} stored, {r['received']} "
            f"received from SQS, {r['lost']} not received within 60 s of the last POST (lost), "
            f"{r['duplicated']} sent twice (two SQS messages for one event), "
            f"{r['redelivered']} receipts of one SQS message again (the stand-in's "
            "at-least-once); "
            f"POST p99 {r['post_p99']:.1f} ms; p50 received → stored {r['persist_p50']:.0f} ms, "
            f"stored → sent to SQS {r['deliver_p50']:.0f} ms")
    return [
        Figure("B5", f"end to end at 200 events/s for {scale.b5_seconds:.0f} s: p50 POST → "
               "received from SQS", r["p50"], "ms", [r["p50"]], target="p50 ≤ 100 ms",
               met=r["p50"] <= 100, note=note),
        Figure("B5", "… p99", r["p99"], "ms", [r["p99"]], target="p99 ≤ 250 ms, zero lost, "
               "zero sent twice", met=met),
    ]


class Purger:
    """Empties the destination queue every ``every`` seconds: the messages need not pile up in
    fauxqs's memory, and no consumer takes CPU from the two cores (B6 reads delivered counts
    from the product's own table)."""

    def __init__(self, stack: Stack, url: str, every: float = 2.0) -> None:
        self._stop = threading.Event()
        sqs = stack.destination.client()

        def run() -> None:
            while not self._stop.wait(every):
                sqs.purge_queue(QueueUrl=url)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Offered:
    """One open-loop run of batched ingest at ``rate`` events/s, sampled once a second."""

    rate: float
    seconds: float
    per_request: int
    start: float
    end: float
    accepted: int
    non2xx: int
    post_p99: float
    samples: list[tuple[float, int, int]]  # (wall time, stored, delivered)
    final: tuple[int, int]  # (stored, delivered) once the load generator returned

    def _offered_by(self, t: float) -> float:
        requests = int(self.rate * self.seconds / self.per_request)
        due = int(max(0.0, t - self.start) * self.rate / self.per_request) + 1
        return min(requests, due) * self.per_request if t >= self.start else 0

    @property
    def steady(self) -> list[tuple[float, int, int]]:
        """The samples after the first quarter (the pools' ramp-up left out)."""
        part = [s for s in self.samples if self.start + self.seconds / 4 <= s[0] <= self.end]
        return part if len(part) >= 2 else self.samples[-2:]

    def _rate(self, index: int) -> float:
        part = self.steady
        if len(part) < 2:
            return float("nan")
        return (part[-1][index] - part[0][index]) / max(part[-1][0] - part[0][0], 1e-9)

    @property
    def stored_rate(self) -> float:
        return self._rate(1)

    @property
    def delivered_rate(self) -> float:
        return self._rate(2)

    @property
    def sustained(self) -> float:
        return min(self.stored_rate, self.delivered_rate)

    def backlog(self) -> list[tuple[float, float]]:
        """(time since start, offered so far − delivered) over the steady part."""
        return [(t - self.start, self._offered_by(t) - d) for t, _, d in self.steady]

    @property
    def slope(self) -> float:
        """Least-squares growth of the backlog over the steady part, events/s."""
        pts = self.backlog()
        if len(pts) < 2:
            return float("nan")
        mx, my = statistics.fmean(p[0] for p in pts), statistics.fmean(p[1] for p in pts)
        den = sum((x - mx) ** 2 for x, _ in pts)
        return sum((x - mx) * (y - my) for x, y in pts) / den if den else float("nan")

    @property
    def halves(self) -> tuple[float, float]:
        pts = [b for _, b in self.backlog()]
        if len(pts) < 2:
            return float("nan"), float("nan")
        mid = len(pts) // 2
        return statistics.fmean(pts[:mid]), statistics.fmean(pts[mid:])

    @property
    def flat(self) -> bool:
        """The backlog grows by less than 3 % of the offered rate (it does not run away)."""
        return self.slope <= 0.03 * self.rate

    def describe(self) -> str:
        first, second = self.halves
        stored, delivered = self.final
        return (f"stored {self.stored_rate:,.0f}/s, delivered {self.delivered_rate:,.0f}/s in the "
                f"steady part; {self.accepted:,} accepted ({self.non2xx} non-2xx), POST p99 "
                f"{self.post_p99:.0f} ms; backlog (offered − delivered) {first:,.0f} → "
                f"{second:,.0f} (first → second half of the steady part), growing "
                f"{self.slope:,.0f} events/s: {'flat' if self.flat else 'GREW'}; at the end "
                f"{self.accepted - stored:,} to store, {stored - delivered:,} to deliver")


def _offered(stack: Stack, rate: float, seconds: float, per_request: int = 100,
             profile: str | None = None, cpu: bool = False
             ) -> tuple[Offered, dict[str, float] | None]:
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    interval = min(1.0, seconds / 8)

    def counts(base: tuple[int, int] = (0, 0)) -> tuple[int, int]:
        stored, delivered = stack.sql(
            "SELECT (SELECT count(*) FROM events), "
            "(SELECT count(*) FROM deliveries WHERE status = 'succeeded')")[0]
        return int(stored) - base[0], int(delivered) - base[1]

    base = counts()  # what was there before (the pipeline's warm-up event)

    def sample() -> None:
        while not stop.wait(interval):
            samples.append((time.time(), *counts(base)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result: dict[str, Any] = {}
    def generate() -> None:
        result["out"], result["start"] = loadgen.open_loop(
            batch_target(stack, per_request), rate=rate / per_request, duration=seconds,
            connections=8)

    load = threading.Thread(target=generate)
    before = stack.cpu_snapshot() if cpu else None
    load.start()
    recs = []
    if profile:  # one worker of each pool, from the end of the ramp-up, for up to 10 s
        time.sleep(1.6 + seconds / 4)
        recs = [stack.profile(f"{profile} {kind}", kind, min(10, seconds / 2))
                for kind in ("web", "persist", "deliver")]
    load.join()
    stack.keep(*recs)  # py-spy has ended: waited for, its CPU time joins the bench's own
    after = stack.cpu_snapshot() if cpu else None
    end = time.time()
    stop.set()
    sampler.join()
    out: loadgen.Outcome = result["out"]
    run = Offered(rate, seconds, per_request, result["start"], end, out.ok * per_request,
                  out.other + out.errors, loadgen.percentile(out.latencies, 99) * 1000, samples,
                  counts(base))
    shares = stack.cpu_shares(before, after) if before and after else None
    return run, shares


def _b2_limit(stack: Stack, scale: Scale, log: Callable[[str], None]) -> tuple[float, str]:
    """B2's figure from this run, else a short B2 (web alone, nothing stored or delivered)."""
    if "B2" in stack.results:
        return stack.results["B2"], "plain ingest: B2 of this run (500 per request, nothing delivered)"
    for kind in ("persist", "deliver"):
        stack.stop(kind)
    if "web" not in stack.procs:
        stack.start_web()
    size = 500
    runs, bad = _rates(batch_target(stack, size), dataclasses.replace(scale, repeats=1), 4)
    stack.redis.client.flushall()
    rate = runs[0] * size
    stack.results["B2"] = rate
    log(f"B6: a short B2 for the limit: {rate:.0f} events/s ({bad} non-2xx/errors)")
    return rate, (f"plain ingest: a short B2 measured here ({scale.seconds:.0f} s, {size} per "
                  "request, 4 connections, nothing delivered)")


def b6(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    """Batched ingest offered at the target for b6_seconds with web, persist, deliver and the
    destination on the same cores: stored and delivered per second in the steady part (first
    quarter left out), the backlog over time, CPU per process type; then a bounded search for
    the highest offered rate whose backlog stays flat."""
    limit, limit_what = _b2_limit(stack, scale, log)
    offered, per_request = scale.b6_offered, 100
    url = _pipeline(stack, "bench-b6")
    purger = Purger(stack, url)
    main, shares = _offered(stack, offered, scale.b6_seconds, per_request, profile="B6", cpu=True)
    purger.stop()
    log(f"B6: offered {offered:.0f}/s: {main.describe()}")
    cores = os.cpu_count() or 1
    shares = shares or {}
    busiest = sorted(shares.items(), key=lambda kv: -kv[1])
    cpu_note = ", ".join(f"{k} {v:.0f} %" for k, v in busiest)
    log(f"B6 CPU share of the {cores} cores: {cpu_note}")
    sustained = main.sustained
    ratio = sustained / offered
    figures = [Figure(
        "B6", f"sustained end to end, batched ingest ({per_request} per request, offered "
        f"{offered:,.0f} events/s for {scale.b6_seconds:.0f} s), one matching SQS subscription "
        f"({stack.destination.name})", sustained, "events/s", [sustained], offered,
        "the offered rate", ratio, "≥ 3,000 events/s stored and delivered (≥ 0.9 of offered), "
        "backlog flat", sustained >= 3_000 and ratio >= 0.9 and main.flat, main.describe()),
        Figure("B6", f"CPU share of the {cores} cores per process type over that run (utime + "
               "stime from /proc; postgres: the whole server)", sum(shares.values()), "%",
               [sum(shares.values())], None, "100 % = every core busy", None, "reported", None,
               cpu_note)]
    stack.reset_data()  # the pools stop before their queue goes
    _drop_queues(stack, [url])
    # The search: up from the target while flat, down when not, then bisection.
    lo: float | None = offered if main.flat else None
    hi: float | None = None if main.flat else offered
    tried = [f"{offered:,.0f} {'flat' if main.flat else 'grew'}"]
    for step in range(scale.b6_steps):
        if hi is None:
            assert lo is not None
            rate = min(lo * 1.5, limit)
            if rate <= lo * 1.02:
                break
        elif lo is None:
            rate = hi / 2
        else:
            if (hi - lo) / hi < 0.05:
                break
            rate = (lo + hi) / 2
        rate = max(per_request, round(rate / 50) * 50)
        url = _pipeline(stack, f"bench-b6-step-{step}")
        purger = Purger(stack, url)
        run, _ = _offered(stack, rate, scale.b6_step_seconds, per_request)
        purger.stop()
        stack.reset_data()
        _drop_queues(stack, [url])
        tried.append(f"{rate:,.0f} {'flat' if run.flat else 'grew'} (delivered "
                     f"{run.delivered_rate:,.0f}/s, backlog +{run.slope:,.0f}/s)")
        log(f"B6 search step {step + 1}: offered {rate:.0f}/s: {run.describe()}")
        if run.flat:
            lo = rate
        else:
            hi = rate
    best = lo if lo is not None else float("nan")
    figures.append(Figure(
        "B6", f"highest offered rate with a flat backlog (search, {scale.b6_step_seconds:.0f} s "
        "per step, same pipeline)", best, "events/s", [best], limit, limit_what,
        best / limit if lo is not None else None, "reported", None,
        "tried: " + "; ".join(tried) + ("" if lo is not None else
                                        f"; none was flat (lowest tried {hi:,.0f})")))
    return figures


# B7 -------------------------------------------------------------------------------------
def b7(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    """Peaks over everything so far, then a soak at B5's steady load."""
    url = _pipeline(stack, "bench-b7")
    warm = steady(stack, url, 200, min(30, scale.soak_seconds / 4))
    before = stack.rss.sample()
    soak = steady(stack, url, 200, scale.soak_seconds)
    after = stack.rss.sample()
    from bench.stack import _rss_mb

    dest_rss = _rss_mb(stack.destination.pids()[0])
    log(f"B7 soak: {soak}; rss before {before} after {after}; {stack.destination.name} "
        f"{dest_rss} MB")
    figures = []
    limits = {"web": 150.0, "persist": 200.0, "deliver": 200.0}
    for kind, limit in limits.items():
        peak = stack.rss.peaks.get(kind, float("nan"))
        b, a = max(before.get(kind, [0.0])), max(after.get(kind, [0.0]))
        growth = (a - b) / b * 100 if b else float("nan")
        figures.append(Figure(
            "B7", f"peak RSS of one {kind} {'worker' if kind == 'web' else 'process'} (B1–B7); "
            f"growth over a {scale.soak_seconds / 60:.0f}-min soak at 200 events/s",
            peak, "MB", [peak], target=f"≤ {limit:.0f} MB, growth ≤ 10 %",
            met=peak <= limit and growth <= 10,
            note=f"largest worker {b:.0f} MB → {a:.0f} MB ({growth:+.1f} %); soak: "
                 f"{soak['ok'] + warm['ok']} accepted, {soak['lost']} not received from SQS "
                 "within 60 s of the soak's end, "
                 f"{soak['duplicated']} sent twice; destination {stack.destination.name} (RSS "
                 f"{dest_rss or 0:.0f} MB at the end)"))
    return figures


# B8 -------------------------------------------------------------------------------------
def b8(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    """Ordinary single-event POSTs (open loop, 200/s) while 50 connections trickle a body at
    1 byte/s, against the same POSTs with nothing trickling, alternately in the same run. The
    trickling connections stay in their body for the whole measurement (it ends well before
    their 30-s body deadline)."""
    if "web" not in stack.procs:
        stack.start_web()
    rate, slow_clients = 200, 50
    base_p50, base_p99, slow_p50, slow_p99 = [], [], [], []
    bad = 0
    loadgen.open_loop(single_target(stack), rate=rate, duration=min(2.0, scale.seconds),
                      connections=16)  # warm-up, not counted
    for _ in range(scale.repeats):
        out, _ = loadgen.open_loop(single_target(stack), rate=rate, duration=scale.seconds,
                                   connections=16)
        bad += out.other + out.errors
        base_p50.append(loadgen.percentile(out.latencies, 50) * 1000)
        base_p99.append(loadgen.percentile(out.latencies, 99) * 1000)
        trickle = loadgen.Trickle(single_target(stack), slow_clients)
        try:
            trickle.wait_in_body()
            out, _ = loadgen.open_loop(single_target(stack), rate=rate, duration=scale.seconds,
                                       connections=16)
            broken = trickle.broken
        finally:
            trickle.close()
        bad += out.other + out.errors
        slow_p50.append(loadgen.percentile(out.latencies, 50) * 1000)
        slow_p99.append(loadgen.percentile(out.latencies, 99) * 1000)
        stack.redis.client.flushall()
        log(f"B8: p50/p99 {base_p50[-1]:.1f}/{base_p99[-1]:.1f} ms without, "
            f"{slow_p50[-1]:.1f}/{slow_p99[-1]:.1f} ms with {slow_clients} trickling "
            f"(their sends failed: {broken}); non-2xx/errors so far {bad}")
    p50, p99 = statistics.median(slow_p50), statistics.median(slow_p99)
    lim50, lim99 = statistics.median(base_p50), statistics.median(base_p99)
    what = (f"single-event POSTs at {rate}/s (open loop) while {slow_clients} connections "
            "trickle a body at 1 byte/s")
    note = f"{bad} non-2xx/errors" if bad else ""
    return [
        Figure("B8", f"{what}: p50", p50, "ms", slow_p50, lim50,
               "the same POSTs, nothing trickling (same run)", p50 / lim50,
               "≤ 2× without trickling", p50 / lim50 <= 2, note),
        Figure("B8", f"{what}: p99", p99, "ms", slow_p99, lim99,
               "the same POSTs, nothing trickling (same run)", p99 / lim99,
               "≤ 2× without trickling, every request answered 2xx",
               p99 / lim99 <= 2 and bad == 0, note),
    ]


# B9 -------------------------------------------------------------------------------------
def _client(stack: Stack, name: str) -> dict[str, str]:
    import json
    import os
    import subprocess

    from bench.stack import BIN, ROOT

    out = subprocess.run([str(BIN / "eventcollector"), "tenant", "create", name, "--json"],
                         env={**os.environ, **stack.env}, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return dict(json.loads(out.stdout))


def _token_target(stack: Stack, creds: dict[str, str], secret: str) -> loadgen.Target:
    return loadgen.Target("127.0.0.1", stack.web_port, "/api/v1/auth/token", orjson.dumps(
        {"grant_type": "client_credentials", "client_id": creds["client_id"],
         "client_secret": secret}))


def _checks(stack: Stack) -> dict[str, float]:
    import re

    import requests

    from bench.stack import METRICS_TOKEN

    text = requests.get(f"http://127.0.0.1:{stack.web_port}/metrics", timeout=10,
                        headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^ec_token_checks_total\{outcome="([a-z_]+)"\} ([0-9.e+]+)$', text, re.M)}


def b9(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    """Token flood: p99 of ordinary requests (another tenant's single-event POSTs at 200/s and
    another client's token requests at 5/s, open loop) alone, then during a flood of wrong
    secrets for one client id (8 connections, closed loop, from this machine): with the default
    failure limits (the flood is refused 429 after 10 a minute), and with the limits off (the
    worst case: every wrong secret reaches the check and is refused by the fingerprint); then
    the same flood against a client without a fingerprint (as before migration 0010, and the
    old code: every wrong secret runs scrypt, bounded by EC_TOKEN_CHECKS_PER_PROCESS)."""
    stack.stop("web")
    victim, ordinary = _client(stack, "b9-victim"), _client(stack, "b9-ordinary")
    api, token = single_target(stack), _token_target(stack, ordinary, ordinary["client_secret"])
    flood = _token_target(stack, victim, "wrong-@SEQ@")
    seconds = max(scale.seconds, 2)
    flood_seconds = 2 * seconds + 8

    def ordinary_p99() -> dict[str, Any]:
        a, _ = loadgen.open_loop(api, rate=200, duration=seconds)
        t, _ = loadgen.open_loop(token, rate=5, duration=seconds, connections=4)
        stack.redis.client.delete("dramatiq:persist", "dramatiq:persist.msgs")
        return {"api": loadgen.percentile(a.latencies, 99) * 1000,
                "token": loadgen.percentile(t.latencies, 99) * 1000,
                "api_bad": a.other + a.errors, "token_bad": t.other + t.errors,
                "token_statuses": t.statuses}

    def flooded(label: str) -> dict[str, Any]:
        result: dict[str, loadgen.Outcome] = {}
        before = _checks(stack)
        attack = threading.Thread(target=lambda: result.setdefault("flood", loadgen.closed(
            flood, connections=8, duration=flood_seconds, processes=1)))
        attack.start()
        time.sleep(2)
        during = ordinary_p99()
        attack.join()
        after = _checks(stack)
        during["flood"] = result["flood"].statuses
        during["flood_rate"] = (result["flood"].ok + result["flood"].other) / flood_seconds
        during["checks"] = {k: v - before.get(k, 0) for k, v in after.items()
                            if v - before.get(k, 0)}
        log(f"B9 {label}: {during}")
        return during

    def start(**env: str) -> None:
        stack.start_web(**env)
        for creds in (victim, ordinary):  # a success each since the upgrade: fingerprints
            out, _ = loadgen.open_loop(_token_target(stack, creds, creds["client_secret"]),
                                       rate=1, duration=1, connections=1, processes=1)
            assert out.ok == 1, out.statuses
        ordinary_p99()  # warm-up: every worker thread, connection and cache in use once

    def alternate(label: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Alone and during a flood, alternately (a machine whose load drifts hits both)."""
        alone, during = [], []
        for _ in range(scale.repeats):
            alone.append(ordinary_p99())
            log(f"B9 alone ({label}): {alone[-1]}")
            during.append(flooded(f"flood, {label}"))
        return alone, during

    start()
    limited = alternate("default limits")
    stack.stop("web")
    stack.redis.client.flushall()
    start(EC_TOKEN_FAILURES_PER_CLIENT="0", EC_TOKEN_FAILURES_PER_SOURCE="0")
    unlimited = alternate("limits off")
    stack.sql("UPDATE api_clients SET secret_fingerprint = NULL WHERE client_id = %s",
              victim["client_id"])
    legacy = flooded("flood, limits off, victim without a fingerprint")
    stack.stop("web")
    figures = []
    for kind, label in (("api", "single-event POSTs of another tenant, 200/s"),
                        ("token", "token requests of another client, 5/s")):
        for name, (alone, during) in (("default limits", limited),
                                      ("failure limits off", unlimited)):
            runs = [d[kind] for d in during]
            value, base = statistics.median(runs), statistics.median(a[kind] for a in alone)
            bad = sum(d[f"{kind}_bad"] for d in during)
            ratio = value / base
            note = (f"non-2xx during the floods: {bad}; alone (median of "
                    f"{[round(a[kind]) for a in alone]} ms)")
            if name != "default limits":
                note += (f"; the same flood against a client without a fingerprint (each wrong "
                         f"secret through scrypt, as the old code did; {legacy['flood_rate']:.0f}"
                         f" refused/s): p99 {legacy[kind]:.0f} ms, {legacy[f'{kind}_bad']} "
                         "non-2xx")
            flood_rate = statistics.median(d["flood_rate"] for d in during)
            figures.append(Figure(
                "B9", f"token flood, {name}: p99 of {label} during a flood of wrong secrets for "
                f"one client id (8 connections, {flood_rate:.0f} answers/s: {during[-1]['flood']}"
                f"; checks {during[-1]['checks']} in the last run)", value, "ms", runs, base,
                "the same requests alone, same web, alternating", ratio, "≤ 2× alone, all 2xx",
                ratio <= 2 and bad == 0, note=note))
    return figures


ALL = {"B1": b1_b2, "B3": b3, "B4": b4, "B5": b5, "B6": b6, "B7": b7, "B8": b8, "B9": b9}
