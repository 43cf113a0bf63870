"""A multi-process HTTP/1.1 load generator on raw keep-alive sockets.

Requests are pre-built bytes (a ``@SEQ@`` marker in the body becomes a per-request number), so
the client spends a few microseconds per request; the no-op baseline in B1 shows it can drive
gunicorn harder than the product is driven.

Two modes:
- closed loop (``closed``): N connections send back to back for D seconds → rate;
- open loop (``open_loop``): requests at fixed times (rate R) → latency measured from the
  scheduled time, so a slow server cannot hide its queueing (no coordinated omission).
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SEQ_MARK = b"@SEQ@"


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, seq: int | None) -> bytes:
        body = self.body.replace(SEQ_MARK, str(seq).encode()) if seq is not None else self.body
        head = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                "Content-Type: application/json", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Outcome:
    """What one worker process saw."""

    ok: int = 0
    other: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds
    statuses: dict[int, int] = field(default_factory=dict)
    sent_at: dict[int, float] = field(default_factory=dict)  # seq → wall time (open loop)

    def merge(self, other: Outcome) -> None:
        self.ok += other.ok
        self.other += other.other
        self.errors += other.errors
        self.latencies.extend(other.latencies)
        for k, v in other.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + v
        self.sent_at.update(other.sent_at)


class _Conn:
    def __init__(self, host: str, port: int) -> None:
        self.addr = (host, port)
        self.sock: socket.socket | None = None
        self.buf = b""

    def exchange(self, data: bytes) -> int:
        """Send one request, read one response; return its status code."""
        if self.sock is None:
            self.sock = socket.create_connection(self.addr, timeout=30)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        self.sock.sendall(data)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value)
            elif lname == b"connection" and value.strip().lower() == b"close":
                close = True
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-body")
            rest += chunk
        self.buf = rest[length:]
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def _record(out: Outcome, lock: threading.Lock, status: int, latency: float) -> None:
    with lock:
        out.statuses[status] = out.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            out.ok += 1
        else:
            out.other += 1
        out.latencies.append(latency)


def _exchange(conn: _Conn, data: bytes, out: Outcome, lock: threading.Lock) -> int | None:
    """The response's status, or None (counted as an error) when the connection failed."""
    try:
        return conn.exchange(data)
    except OSError:
        conn.close()
        with lock:
            out.errors += 1
        return None


def _in_threads(run: Callable[[], None], count: int) -> None:
    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _closed_worker(target: Target, conns: int, start_at: float, duration: float,
                   seq_base: int, result: mp.Queue) -> None:
    out, lock = Outcome(), threading.Lock()
    counter = iter(range(seq_base, seq_base + 10**9))
    fixed = target.request(None) if SEQ_MARK not in target.body else None

    def run() -> None:
        conn = _Conn(target.host, target.port)
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + duration
        while (now := time.perf_counter()) and time.time() < end:
            data = fixed if fixed is not None else target.request(next(counter))
            status = _exchange(conn, data, out, lock)
            if status is None:
                time.sleep(0.01)
                continue
            _record(out, lock, status, time.perf_counter() - now)
        conn.close()

    _in_threads(run, conns)
    result.put(out)


def _open_worker(target: Target, conns: int, start_at: float, rate: float, count: int,
                 offset: int, stride: int, result: mp.Queue) -> None:
    """Send request k (k = offset, offset+stride, …) at start_at + k/rate."""
    out, lock = Outcome(), threading.Lock()
    slots = iter(range(offset, count, stride))
    slot_lock = threading.Lock()

    def run() -> None:
        conn = _Conn(target.host, target.port)
        while True:
            with slot_lock:
                k = next(slots, None)
            if k is None:
                break
            due = start_at + k / rate
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            data = target.request(k)
            with lock:
                out.sent_at[k] = due
            status = _exchange(conn, data, out, lock)
            if status is not None:
                _record(out, lock, status, time.time() - due)
        conn.close()

    _in_threads(run, conns)
    result.put(out)


def _gather(procs: list[mp.Process], queue: mp.Queue) -> Outcome:
    total = Outcome()
    for _ in procs:
        total.merge(queue.get())
    for p in procs:
        p.join()
    return total


def closed(target: Target, *, connections: int, duration: float, processes: int = 2) -> Outcome:
    """Back-to-back requests on ``connections`` keep-alive connections for ``duration`` s."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    start_at = time.time() + 1.0 + 0.3 * processes  # every process connected and waiting
    per = [connections // processes + (1 if i < connections % processes else 0)
           for i in range(processes)]
    procs = [ctx.Process(target=_closed_worker,
                         args=(target, n, start_at, duration, i * 10**9, queue))
             for i, n in enumerate(per) if n]
    for p in procs:
        p.start()
    return _gather(procs, queue)


def open_loop(target: Target, *, rate: float, duration: float, connections: int = 32,
              processes: int = 2) -> tuple[Outcome, float]:
    """``rate`` requests/s for ``duration`` s; returns the outcome and the start (wall time)."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    count = int(rate * duration)
    start_at = time.time() + 1.0 + 0.3 * processes
    procs = [ctx.Process(target=_open_worker,
                         args=(target, max(1, connections // processes), start_at, rate, count,
                               i, processes, queue))
             for i in range(processes)]
    for p in procs:
        p.start()
    return _gather(procs, queue), start_at


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


class Trickle:
    """``count`` connections that send a request's head at once and then its body at one byte
    per second (never the last byte), until ``close()``: slow clients holding the server."""

    def __init__(self, target: Target, count: int) -> None:
        data = target.request(0)
        head, _, self.body = data.partition(b"\r\n\r\n")
        self.socks = []
        for _ in range(count):
            s = socket.create_connection((target.host, target.port), timeout=30)
            s.sendall(head + b"\r\n\r\n")
            self.socks.append(s)
        self.sent = 0
        self.broken = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0) and self.sent < len(self.body) - 1:
            for s in self.socks:
                try:
                    s.sendall(self.body[self.sent:self.sent + 1])
                except OSError:
                    self.broken += 1
            self.sent += 1

    def wait_in_body(self, nbytes: int = 2) -> None:
        while self.sent < nbytes:
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for s in self.socks:
            s.close()
