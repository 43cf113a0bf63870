"""What the benchmarks run on: a fresh PostgreSQL database on this machine's server, a private
Redis, fauxqs (a local SQS/SNS in Node, bench/fauxqs.mjs) as the destination the product delivers
to, moto in server mode when asked for, and the Procfile's own commands as real processes (with
their RSS sampled for B7 and their CPU time read for B6)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("EC_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
TOKEN_SECRET = "bench-signing-secret-" + "b" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        key, sep, command = line.partition(":")
        if sep and key.strip() == name:
            return command.strip()
    raise KeyError(name)


def _children(pid: int) -> list[int]:
    try:
        raw = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in raw.split()]


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Proc:
    """One Procfile process type (a process group) with its output in a log file."""

    def __init__(self, kind: str, command: str, env: dict[str, str], log_dir: Path) -> None:
        self.kind = kind
        self.log_path = log_dir / f"{kind}-{int(time.time() * 1000)}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        full_env = {**os.environ, **env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        self.popen = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=full_env,
                                      stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def workers(self) -> list[int]:
        """The processes doing the work: gunicorn's workers, dramatiq's worker processes."""
        return _children(self.popen.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 30) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)  # the group: workers and forks too
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        except ProcessLookupError:
            pass
        self._log.close()

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


@dataclass
class RssTracker:
    """Samples every live process's workers; keeps the peak per process type and a history."""

    peaks: dict[str, float] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def sample(self) -> dict[str, list[float]]:
        """Current RSS (MB) of every worker process, by type."""
        now: dict[str, list[float]] = {}
        for proc in list(self.procs):
            if not proc.alive():
                continue
            for pid in proc.workers():
                rss = _rss_mb(pid)
                if rss is not None:
                    now.setdefault(proc.kind, []).append(rss)
        return now

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for kind, values in self.sample().items():
                self.peaks[kind] = max(self.peaks.get(kind, 0.0), *values)

    def stop(self) -> None:
        self._stop.set()


class Moto:
    """moto in server mode (account 123456789012)."""

    name = "moto"
    account = "123456789012"

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self._log = open(log_dir / "moto.log", "wb")  # noqa: SIM115
        self.popen = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p",
                                       str(self.port)], stdout=self._log, stderr=subprocess.STDOUT)
        _wait_port(self.port, 30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str = "sqs") -> Any:
        import boto3

        return boto3.client(service, region_name="us-east-1", endpoint_url=self.url,
                            aws_access_key_id="bench", aws_secret_access_key="bench")

    def pids(self) -> list[int]:
        return [self.popen.pid]

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)
        self._log.close()


BENCH_DIR = ROOT / "bench"


def ensure_fauxqs(log: Path) -> None:
    """fauxqs from bench/package-lock.json: ``npm ci --prefix bench`` when it is not there yet."""
    if (BENCH_DIR / "node_modules" / "fauxqs" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("fauxqs is not installed and npm is not on the PATH: install Node 20+ "
                           "and run `npm ci --prefix bench`")
    with open(log, "ab") as out:
        done = subprocess.run([npm, "ci", "--prefix", str(BENCH_DIR), "--no-audit", "--no-fund"],
                              stdout=out, stderr=subprocess.STDOUT, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"npm ci --prefix bench failed:\n{log.read_text(errors='replace')}")


class Fauxqs:
    """fauxqs (npm, bench/package.json) started by bench/fauxqs.mjs on 127.0.0.1 and a free
    port; its queue URLs are http://127.0.0.1:<port>/000000000000/<name>, so clients must use
    exactly ``url`` (fauxqs finds a queue by its whole URL)."""

    name = "fauxqs"
    account = "000000000000"

    def __init__(self, log_dir: Path) -> None:
        ensure_fauxqs(log_dir / "npm-ci.log")
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on the PATH (fauxqs needs Node 20+)")
        self._log = open(log_dir / "fauxqs.log", "wb")  # noqa: SIM115
        self.popen = subprocess.Popen([node, str(BENCH_DIR / "fauxqs.mjs"), "0"], cwd=BENCH_DIR,
                                      stdout=subprocess.PIPE, stderr=self._log)
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.popen.stdout.readline()),
                                  daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(30)
        if not line or not line[0].strip():
            self.popen.kill()
            raise RuntimeError("fauxqs did not start:\n" +
                               (log_dir / "fauxqs.log").read_text(errors="replace")[-2000:])
        self.port = int(json.loads(line[0])["port"])
        import requests

        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("fauxqs /health never answered")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str = "sqs") -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, region_name="us-east-1", endpoint_url=self.url,
                            aws_access_key_id="bench", aws_secret_access_key="bench",
                            config=Config(max_pool_connections=32))

    def pids(self) -> list[int]:
        return [self.popen.pid]

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
        self._log.close()


class PrivateRedis:
    """A redis-server of our own (so FLUSHALL between runs harms nothing else)."""

    def __init__(self) -> None:
        self.port = free_port()
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.popen = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(self.port),
                                       "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, 10)
        self.client = redis.Redis(port=self.port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


METRICS_TOKEN = "bench-metrics-" + "m" * 24  # /metrics needs a bearer token (B9 reads it)
# What the product delivers to: fauxqs (default) or moto (EC_BENCH_DESTINATION=moto, the old
# setting, whose own ceiling is 50-150 messages/s on this machine).
DESTINATION = os.environ.get("EC_BENCH_DESTINATION", "fauxqs")


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15 of proc(5))


def postgres_pids() -> list[int]:
    """Every process of this machine's PostgreSQL server (backends and its own workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Stack:
    """Everything a benchmark needs; ``close()`` stops it all and drops the database."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.db_name = f"ec_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.pg_dsn = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db_name
        self.redis = PrivateRedis()
        self._moto: Moto | None = None
        self.fauxqs = Fauxqs(workdir)
        self.destination: Moto | Fauxqs = self.moto if DESTINATION == "moto" else self.fauxqs
        self.results: dict[str, float] = {}  # figures one benchmark leaves for another (B2 → B6)
        self.fanout_tenants: list[tuple[str, dict[str, str]]] = []  # B4 fan-out's, made once
        self.web_port = free_port()
        self.env = {
            "DATABASE_URL": self.pg_dsn, "REDIS_URL": self.redis.url,
            "EC_TOKEN_SECRET": TOKEN_SECRET, "PORT": str(self.web_port), "WEB_BIND": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            # boto3 applies it to every service (SQS, SNS, STS) in every product process.
            "AWS_ENDPOINT_URL": self.destination.url, "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prom"), "dramatiq_prom_host": "127.0.0.1",
            "EC_METRICS_TOKEN": METRICS_TOKEN,
        }
        self.rss = RssTracker()
        self.rss.start()
        self.procs: dict[str, Proc] = {}
        self.profiling = False
        self.profiles: dict[str, str] = {}
        release = self.start("release")
        if release.popen.wait(120) != 0:
            raise RuntimeError("release failed:\n" + release.log_tail())
        self.tenant, self.token = self._tenant()

    @property
    def moto(self) -> Moto:
        """moto, started on first use (nothing delivers to it unless EC_BENCH_DESTINATION=moto)."""
        if self._moto is None:
            self._moto = Moto(self.workdir)
        return self._moto

    # processes -------------------------------------------------------------------------
    def start(self, kind: str, command: str | None = None, **env: str) -> Proc:
        proc = Proc(kind, command or procfile_command(kind), {**self.env, **env}, self.workdir)
        self.procs[kind] = proc
        if kind != "release":
            self.rss.procs.append(proc)
        return proc

    def start_web(self, app: str | None = None, **env: str) -> Proc:
        command = procfile_command("web")
        if app:
            command = command.replace("'api.app:create_app()'", f"'{app}'")
        kind = "web" if app is None else "noop-web"
        proc = self.start(kind, command, **env)
        port = int(env.get("PORT", self.web_port))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{kind} exited:\n{proc.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        # Every worker has imported the app once a run of health checks all answer quickly.
        import requests

        ok = 0
        while ok < 20 and time.monotonic() < deadline + 60:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                ok = ok + 1 if r.status_code == 200 else 0
            except requests.RequestException:
                ok = 0
            time.sleep(0.05)
        return proc

    def profile(self, label: str, kind: str, seconds: float) -> Any:
        """Start sampling one worker of ``kind`` (or ``moto``); ``keep()`` stores the summary.
        fauxqs is Node, not Python: py-spy cannot sample it (B6 reports its CPU time)."""
        from bench import profile

        if not self.profiling or not profile.available() or seconds < 1 or kind == "fauxqs":
            return None
        pids = [self.moto.popen.pid] if kind == "moto" else self.procs[kind].workers()
        return (label, profile.Recording(pids[0], seconds, self.workdir / f"{label}.raw"))

    def keep(self, *recordings: Any) -> None:
        for rec in recordings:
            if rec is not None:
                self.profiles[rec[0]] = rec[1].summary()

    def stop(self, kind: str) -> None:
        proc = self.procs.pop(kind, None)
        if proc is not None:
            proc.stop()

    # data ------------------------------------------------------------------------------
    def _cli(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "eventcollector"), *args], env={**os.environ, **self.env},
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"eventcollector {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def _tenant(self, name: str = "bench") -> tuple[str, str]:
        tenant = json.loads(self._cli("tenant", "create", name, "--json"))["tenant"]
        # The per-tenant rate limiter stays in the measured path, with room for the load.
        self._cli("tenant", "limits", tenant, "--per-second", "10000000", "--burst", "100000000")
        # Every benchmark run creates subscriptions (reset_data retires them, the quota counts
        # them still): room for B4's fan-out and B6's search steps.
        self._cli("tenant", "quota", tenant, "--subscriptions", "100000")
        # B4-B7 deliver with the deliver pool's own credentials, to moto's and fauxqs's default
        # accounts.
        self._cli("tenant", "allow-platform-credentials", tenant, "--accounts",
                  f"{Moto.account},{Fauxqs.account}")
        from tenants.auth import SCOPES, mint_token

        token = mint_token(TOKEN_SECRET, tenant=tenant, client_id="bench",
                           scopes=frozenset(SCOPES), ttl_seconds=6 * 3600)
        return tenant, token

    def other_tenant(self, name: str) -> tuple[str, dict[str, str]]:
        """Another tenant set up like the main one; its id and its request headers."""
        tenant, token = self._tenant(name)
        return tenant, {"Authorization": f"Bearer {token}", "X-TWC-Tenant": tenant}

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-TWC-Tenant": self.tenant}

    # CPU time ----------------------------------------------------------------------------
    def cpu_pids(self) -> dict[str, list[int]]:
        """Every process by type: each Procfile process with its workers, the destination
        (fauxqs or moto), Redis and the whole PostgreSQL server."""
        kinds = {kind: _descendants(proc.popen.pid) for kind, proc in self.procs.items()
                 if proc.alive()}
        kinds[self.destination.name] = self.destination.pids()
        kinds["redis"] = [self.redis.popen.pid]
        kinds["postgres"] = postgres_pids()
        return kinds

    def cpu_snapshot(self) -> tuple[float, dict[str, dict[int, int]], float]:
        """(wall time, ticks per pid per type, this process's and its waited children's CPU
        seconds: the load generator, py-spy)."""
        import resource

        ticks = {kind: {p: t for p in pids if (t := _cpu_ticks(p)) is not None}
                 for kind, pids in self.cpu_pids().items()}
        own = sum(getattr(resource.getrusage(who), f) for who in
                  (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))
        return time.time(), ticks, own

    @staticmethod
    def cpu_shares(before: tuple[float, dict[str, dict[int, int]], float],
                   after: tuple[float, dict[str, dict[int, int]], float]) -> dict[str, float]:
        """Share (%) of the machine's cores each process type used between two snapshots (a
        process started in between counts from its start; one that ended in between is lost)."""
        hz = os.sysconf("SC_CLK_TCK")
        capacity = max(after[0] - before[0], 1e-9) * (os.cpu_count() or 1)
        shares = {}
        for kind, now in after[1].items():
            was = before[1].get(kind, {})
            used = sum(t - was.get(p, 0) for p, t in now.items()) / hz
            shares[kind] = used / capacity * 100
        shares["bench (load generator, py-spy)"] = (after[2] - before[2]) / capacity * 100
        return shares

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.pg_dsn, autocommit=True) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []

    def reset_data(self) -> None:
        """Empty the event and delivery tables and the broker between runs (pools stopped),
        and retire every subscription."""
        for kind in ("persist", "deliver"):
            self.stop(kind)
        self.sql("TRUNCATE events, deliveries, delivery_attempts")
        self.sql("UPDATE subscriptions SET active = false")
        self.sql("UPDATE tenants SET subscriptions_version = subscriptions_version + 1")
        self.redis.client.flushall()

    def close(self) -> None:
        """Stop everything, whatever fails on the way."""
        steps = [lambda k=kind: self.stop(k) for kind in list(self.procs)]
        steps += [self.rss.stop, self.fauxqs.stop, self.redis.stop, self._drop_database]
        if self._moto is not None:
            steps.insert(-2, self._moto.stop)
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the next step still runs
                print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _drop_database(self) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
