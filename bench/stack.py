"""What the benchmarks run on: a fresh PostgreSQL database on this machine's server, a private
Redis, moto in server mode, and the Procfile's own commands as real processes (with their RSS
sampled for B7)."""

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

    def stop(self) -> None:
        self.popen.terminate()
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
        self.moto = Moto(workdir)
        self.web_port = free_port()
        self.env = {
            "DATABASE_URL": self.pg_dsn, "REDIS_URL": self.redis.url,
            "EC_TOKEN_SECRET": TOKEN_SECRET, "PORT": str(self.web_port), "WEB_BIND": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            "AWS_ENDPOINT_URL": self.moto.url, "AWS_ACCESS_KEY_ID": "bench",
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
        """Start sampling one worker of ``kind`` (or ``moto``); ``keep()`` stores the summary."""
        from bench import profile

        if not self.profiling or not profile.available() or seconds < 1:
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
    def _tenant(self) -> tuple[str, str]:
        out = subprocess.run([str(BIN / "eventcollector"), "tenant", "create", "bench", "--json"],
                             env={**os.environ, **self.env}, capture_output=True, text=True,
                             check=True, cwd=ROOT)
        tenant = json.loads(out.stdout)["tenant"]
        # The per-tenant rate limiter stays in the measured path, with room for the load.
        subprocess.run([str(BIN / "eventcollector"), "tenant", "limits", tenant, "--per-second",
                        "10000000", "--burst", "100000000"], env={**os.environ, **self.env},
                       capture_output=True, check=True, cwd=ROOT)
        # B4/B6 deliver with the deliver pool's own credentials, to moto's default account.
        subprocess.run([str(BIN / "eventcollector"), "tenant", "allow-platform-credentials",
                        tenant, "--accounts", "123456789012"], env={**os.environ, **self.env},
                       capture_output=True, check=True, cwd=ROOT)
        from tenants.auth import SCOPES, mint_token

        token = mint_token(TOKEN_SECRET, tenant=tenant, client_id="bench",
                           scopes=frozenset(SCOPES), ttl_seconds=6 * 3600)
        return tenant, token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-TWC-Tenant": self.tenant}

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
        steps += [self.rss.stop, self.moto.stop, self.redis.stop, self._drop_database]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the next step still runs
                print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _drop_database(self) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
