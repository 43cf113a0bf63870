"""B1–B7 from issue 5. Each returns a ``Figure`` list: the product's number, the limit measured in
the same run, their ratio and the target."""

from __future__ import annotations

import base64
import dataclasses
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from bench import loadgen
from bench.stack import Stack


@dataclass(frozen=True)
class Scale:
    repeats: int
    seconds: float  # one closed-loop measurement
    latency_seconds: float  # B1's latency run
    b3_events: int
    b4_events: int
    b5_seconds: float
    b6_seconds: float
    soak_seconds: float


FULL = Scale(repeats=3, seconds=10, latency_seconds=15, b3_events=100_000, b4_events=1_000,
             b5_seconds=60, b6_seconds=40, soak_seconds=600)
SMOKE = Scale(repeats=1, seconds=1, latency_seconds=1, b3_events=500, b4_events=50,
              b5_seconds=3, b6_seconds=3, soak_seconds=4)


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


def order_event(seq: str = "@SEQ@") -> dict[str, Any]:
    """A seed-sized ORDER CREATE (≈1 KB on the wire, like the seed's example)."""
    order = {"id": f"order-{seq}", "number": f"R{seq}", "currency": "USD", "total": 129.95,
             "status": "PLACED", "customer": {"id": "cust-42", "email": "shopper@example.com"},
             "lines": [{"sku": f"SKU-{i}", "qty": i + 1, "price": 19.99} for i in range(4)],
             "shipping": {"method": "GROUND", "country": "US", "postcode": "94107"}}
    return {
        "entity_id": f"order-{seq}",
        "entity_name": "ORDER",
        "event_payload": {
            "base64_encoded_payload_json": base64.b64encode(orjson.dumps(order)).decode(),
            "base64_encoded_fault_json": None,
            "entity_id": f"order-{seq}",
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
def _prefill(stack: Stack, n: int, per_message: int) -> list[dict[str, Any]]:
    """Put ``n`` events on the persist queue exactly as the web does (RedisIntake)."""
    from events.contract import EventIn
    from events.service import prepare
    from infra.broker.intakes.redis import RedisIntake

    intake = RedisIntake(stack.redis.client, 3600)
    now = datetime.now(UTC)
    template = orjson.dumps(order_event())
    docs = []
    for start in range(0, n, per_message):
        chunk = [prepare(EventIn.model_validate_json(template.replace(b"@SEQ@", str(i).encode())),
                         now) for i in range(start, min(n, start + per_message))]
        intake.accept(stack.tenant, chunk)
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
def _subscription(stack: Stack, queue_name: str) -> str:
    import requests

    if "web" not in stack.procs:
        stack.start_web()
    sqs = stack.moto.client()
    url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    r = requests.post(f"http://127.0.0.1:{stack.web_port}/api/v1/event-subscription",
                      headers=stack.headers, timeout=10,
                      json={"entityType": "ORDER", "subscribeCreate": True, "destination": {
                          "type": "SQS", "sqs": {"queueUrl": url, "region": "us-east-1",
                                                 "credentials": "platform"}}})
    if r.status_code != 201:
        raise RuntimeError(f"subscription: {r.status_code} {r.text}")
    return url


def _plain_batch_loop(stack: Stack, name: str, docs: list[dict[str, Any]]) -> float:
    """The limit: one thread sending the same bodies with SendMessageBatch (10) to a fresh
    queue on the same moto."""
    sqs = stack.moto.client()
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    bodies = [orjson.dumps(d).decode() for d in docs]
    started = time.perf_counter()
    for i in range(0, len(bodies), 10):
        entries = [{"Id": str(j), "MessageBody": b, "MessageAttributes": {
            "tenant": {"DataType": "String", "StringValue": stack.tenant},
            "event_type": {"DataType": "String", "StringValue": "ENTITY_EVENT"}}}
            for j, b in enumerate(bodies[i:i + 10])]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    rate = len(bodies) / (time.perf_counter() - started)
    sqs.delete_queue(QueueUrl=url)
    return rate


def _delivered_rate(stack: Stack) -> float:
    n, first, last = stack.sql("SELECT count(*), min(delivered_at), max(delivered_at) "
                               "FROM deliveries WHERE status = 'succeeded'")[0]
    span = (last - first).total_seconds() if n else 0
    return n / span if span > 0 else float("nan")


def b4(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    """Both sides send the same number of messages to an empty queue of their own: moto's
    SendMessage cost grows with the queue's depth, so equal depths keep the ratio fair."""
    n = scale.b4_events
    runs, plain_runs = [], []
    for i in range(scale.repeats):
        stack.reset_data()
        url = _subscription(stack, f"bench-b4-{i}")
        docs = _prefill(stack, n, 500)
        plain_runs.append(_plain_batch_loop(stack, f"bench-b4-plain-{i}", docs))
        persist = stack.start("persist")
        if _wait_count(stack, "SELECT count(*) FROM deliveries", n, 120) < n:
            raise RuntimeError("B4: deliveries not created:\n" + persist.log_tail())
        # Committed is not yet enqueued: stop the pool only once every deliver message is queued
        # (stopping it in between leaves the rest to its redelivery, which this run never sees).
        deadline = time.monotonic() + 60
        while (stack.redis.client.llen("dramatiq:deliveries") < -(-n // 10)
               and time.monotonic() < deadline):
            time.sleep(0.1)
        stack.stop("persist")
        deliver = stack.start("deliver")
        recs = []
        if not runs:
            time.sleep(1.5)
            recs = [stack.profile("B4 deliver process", "deliver", 4),
                    stack.profile("B4 moto", "moto", 4)]
        got = _wait_count(stack, "SELECT count(*) FROM deliveries WHERE status = 'succeeded'", n,
                          timeout=max(120, n / 5))
        stack.keep(*recs)
        stack.stop("deliver")
        if got < n:
            raise RuntimeError(f"B4: {got} of {n} delivered:\n{deliver.log_tail()}")
        runs.append(_delivered_rate(stack))
        stack.moto.client().delete_queue(QueueUrl=url)
        log(f"B4: deliver {runs[-1]:.0f}/s, plain SendMessageBatch loop {plain_runs[-1]:.0f}/s")
    rate, plain = statistics.median(runs), statistics.median(plain_runs)
    return [Figure("B4", f"deliver pool, {n:,} matched events to an empty SQS queue on moto",
                   rate, "messages/s", runs, plain, "plain boto3 loop of SendMessageBatch (10) "
                   "to an empty queue on the same moto", rate / plain, "≥ 0.7 of the plain loop",
                   rate / plain >= 0.7)]


# B5 / B6 ---------------------------------------------------------------------------------
class SqsReceiver:
    """Threads that receive (and delete) from a queue, noting the wall time per correlation id."""

    def __init__(self, stack: Stack, url: str, threads: int = 4) -> None:
        self.seen: dict[str, list[float]] = {}
        # SQS message ids per correlation id: two ids mean the product sent the event twice;
        # one id received twice is the stand-in delivering one message again (moto's
        # ReceiveMessage has no lock: concurrent receivers can both take a message).
        self.message_ids: dict[str, set[str]] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(stack, url), daemon=True)
                        for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, stack: Stack, url: str) -> None:
        sqs = stack.moto.client()
        while not self._stop.is_set():
            # Long polls: moto answers as soon as a message arrives, and an idle poll costs it
            # nothing (each call scans the whole queue, so keeping it short matters).
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
    url = _subscription(stack, queue)
    for kind in ("persist", "deliver"):
        stack.start(kind)
    time.sleep(3)  # the pools are consuming
    return url


def steady(stack: Stack, url: str, rate: float, seconds: float,
           profile: str | None = None) -> dict[str, Any]:
    """``rate`` single-event POSTs/s for ``seconds``; latency POST → received from SQS."""
    receiver = SqsReceiver(stack, url)
    recs = [stack.profile(f"{profile} {kind}", kind, min(10, seconds - 3))
            for kind in ("web", "persist", "deliver", "moto")] if profile else []
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
    stored = int(stack.sql("SELECT count(*) FROM events")[0][0])
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
    met = r["p50"] <= 100 and r["p99"] <= 500 and r["lost"] == 0 and r["duplicated"] == 0
    note = (f"{r['sent']} sent, {r['ok']} answered 2xx, {r['stored']} stored, {r['received']} "
            f"received from SQS, {r['lost']} not received within 60 s of the last POST (lost), "
            f"{r['duplicated']} sent twice (two SQS messages for one event), "
            f"{r['redelivered']} receipts of one SQS message again (moto's at-least-once); "
            f"POST p99 {r['post_p99']:.1f} ms; p50 received → stored {r['persist_p50']:.0f} ms, "
            f"stored → sent to SQS {r['deliver_p50']:.0f} ms")
    return [
        Figure("B5", f"end to end at 200 events/s for {scale.b5_seconds:.0f} s: p50 POST → "
               "received from SQS", r["p50"], "ms", [r["p50"]], target="p50 ≤ 100 ms",
               met=r["p50"] <= 100, note=note),
        Figure("B5", "… p99", r["p99"], "ms", [r["p99"]], target="p99 ≤ 500 ms, zero lost, "
               "zero duplicated", met=met),
    ]


def _moto_ceiling(stack: Stack, seconds: float, producers: int = 4) -> tuple[float, float]:
    """What moto itself sustains with the same receivers and nothing else running: producer
    threads sending SendMessageBatch (10) as fast as they can into a fresh queue for
    ``seconds``; returns messages sent per second and received per second (until the queue is
    drained, at most 30 s more). No product code involved."""
    sqs = stack.moto.client()
    url = sqs.create_queue(QueueName=f"bench-ceiling-{int(time.time())}")["QueueUrl"]
    receiver = SqsReceiver(stack, url)
    template = orjson.dumps(order_event()).decode()
    sent = [0] * producers
    started = time.perf_counter()

    def produce(k: int) -> None:
        client = stack.moto.client()
        while time.perf_counter() - started < seconds:
            entries = [{"Id": str(j), "MessageBody": template.replace(
                "@SEQ@", f"ceiling-{k}-{sent[k] + j}")} for j in range(10)]
            client.send_message_batch(QueueUrl=url, Entries=entries)
            sent[k] += 10

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    send_rate = sum(sent) / (time.perf_counter() - started)
    deadline = time.monotonic() + 30
    while receiver.count() < sum(sent) and time.monotonic() < deadline:
        time.sleep(0.2)
    receive_rate = receiver.count() / (time.perf_counter() - started)
    receiver.stop()
    sqs.delete_queue(QueueUrl=url)
    return send_rate, receive_rate


def b6(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    """Batched ingest offered above the target; the sustained rate is what gets stored and
    delivered per second in the steady part of the run (first quarter left out)."""
    for kind in ("persist", "deliver"):  # moto's own ceiling first, with nothing else sending
        if kind in stack.procs:
            stack.stop(kind)
    moto_sent, moto_received = _moto_ceiling(stack, min(20.0, scale.b6_seconds / 2))
    log(f"B6: moto alone (4 plain producers, the same receivers): sent {moto_sent:.0f}/s, "
        f"received {moto_received:.0f}/s")
    url = _pipeline(stack, "bench-b6")
    receiver = SqsReceiver(stack, url)  # a consumer, as in production (moto slows as it fills)
    per_request, offered = 100, 3_750
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            stored, delivered = stack.sql(
                "SELECT (SELECT count(*) FROM events), "
                "(SELECT count(*) FROM deliveries WHERE status = 'succeeded')")[0]
            samples.append((time.time(), int(stored), int(delivered)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    recs = [stack.profile(f"B6 {kind}", kind, min(10, scale.b6_seconds - 3))
            for kind in ("web", "persist", "deliver", "moto")]
    out, start = loadgen.open_loop(batch_target(stack, per_request), rate=offered / per_request,
                                   duration=scale.b6_seconds, connections=8)
    end = time.time()
    stack.keep(*recs)
    stop.set()
    sampler.join()
    receiver.stop()
    steady_part = [s for s in samples if start + scale.b6_seconds / 4 <= s[0] <= end]
    if len(steady_part) < 2:
        steady_part = samples[-2:] if len(samples) >= 2 else samples * 2
    (t0, s0, d0), (t1, s1, d1) = steady_part[0], steady_part[-1]
    span = max(t1 - t0, 1e-9)
    stored_rate, delivered_rate = (s1 - s0) / span, (d1 - d0) / span
    accepted = out.ok * per_request
    log(f"B6: offered {offered}/s, accepted {accepted}, stored {stored_rate:.0f}/s, "
        f"delivered {delivered_rate:.0f}/s; at the end stored {s1}, delivered {d1}")
    sustained = min(stored_rate, delivered_rate)
    return [Figure(
        "B6", f"sustained end to end, batched ingest ({per_request} per request, offered "
        f"{offered:,} events/s for {scale.b6_seconds:.0f} s), one matching SQS subscription",
        sustained, "events/s", [sustained], 1_700, "RudderStack's published 1,700 events/s "
        "(2-core m5.large; not measured here)", sustained / 1_700, "≥ 3,000 events/s stored and "
        "delivered", sustained >= 3_000,
        f"stored {stored_rate:.0f}/s, delivered {delivered_rate:.0f}/s; {accepted} accepted; "
        f"backlog at the end: {accepted - s1} to store, {s1 - d1} to deliver; moto alone (4 "
        f"threads sending SendMessageBatch as fast as they can, the same receivers, no product "
        f"process running): sent {moto_sent:.0f}/s, received {moto_received:.0f}/s")]


# B7 -------------------------------------------------------------------------------------
def b7(stack: Stack, scale: Scale, log: Callable[[str], None]) -> list[Figure]:
    """Peaks over everything so far, then a soak at B5's steady load."""
    url = _pipeline(stack, "bench-b7")
    warm = steady(stack, url, 200, min(30, scale.soak_seconds / 4))
    before = stack.rss.sample()
    soak = steady(stack, url, 200, scale.soak_seconds)
    after = stack.rss.sample()
    log(f"B7 soak: {soak}; rss before {before} after {after}")
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
                 f"{soak['duplicated']} duplicated"))
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
