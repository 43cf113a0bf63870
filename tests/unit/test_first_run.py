"""A new user's first run of the embedded default (issue 16): a fresh directory with the secrets
exported starts, the failures a user can cause each print one line naming what to do (the
traceback only at LOG_LEVEL=DEBUG), the logs are text with one line per request (JSON with
LOG_FORMAT=json)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port

BIN = Path(sys.executable).parent / "eventcollector"
SECRETS = {"EC_TOKEN_SECRET": "s" * 48, "EC_SECRET_KEY": "A" * 43 + "="}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EC_", "DATABASE_URL", "REDIS_URL", "LOG_"))}
    return {**env, **extra}


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], cwd=cwd, env=_env(**env), capture_output=True,
                          text=True, timeout=60)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


class Dev:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.mark = 0  # where the log stood once the process answered

    def since_ready(self) -> str:
        return self.stop()[self.mark:]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.log.read_text()


def _start(cwd: Path, port: int, **env: str) -> Dev:
    log = cwd.parent / f"dev-{port}.log"
    handle = log.open("w")
    proc = subprocess.Popen([str(BIN), "dev", "--port", str(port)], cwd=cwd, env=_env(**env),
                            stdout=handle, stderr=subprocess.STDOUT, text=True)
    dev = Dev(proc, port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"eventcollector dev exited {proc.returncode}:\n{log.read_text()}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                time.sleep(0.3)
                dev.mark = len(log.read_text())
                return dev
        except requests.RequestException:
            pass
        time.sleep(0.2)
    dev.stop()
    pytest.fail(f"eventcollector dev did not answer:\n{log.read_text()}")


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    return directory


@pytest.fixture
def running(fresh: Path) -> Iterator[Dev]:
    dev = _start(fresh, free_port(), **SECRETS)
    try:
        yield dev
    finally:
        dev.stop()


def test_dev_in_a_fresh_directory_with_the_secrets_exported_starts(running: Dev, fresh: Path) -> None:
    # Given a fresh directory and EC_TOKEN_SECRET / EC_SECRET_KEY exported (no secret to
    # generate, so nothing else creates the data directory), When eventcollector dev starts,
    # Then it answers, and its data directory holds the database
    assert (fresh / ".eventcollector" / "eventcollector.db").is_file()
    assert not (fresh / ".eventcollector" / "token_secret").exists()


def test_dev_logs_one_text_line_per_request(running: Dev) -> None:
    # When three requests are made
    for path in ("/healthz", "/readyz", "/api/v1/events"):
        requests.get(f"http://127.0.0.1:{running.port}{path}", timeout=5)
    log = running.since_ready()
    # Then each is logged once, as human-readable text (not JSON, not werkzeug's access line)
    for path, status in (("/healthz", 200), ("/readyz", 200), ("/api/v1/events", 401)):
        lines = [line for line in log.splitlines() if f" {path} " in line or line.endswith(path)]
        assert len(lines) == 1, (path, lines)
        assert f"GET {path} {status}" in lines[0]
        assert not lines[0].startswith("{")
    assert "HTTP/1.1" not in log


def test_log_format_json_makes_dev_log_json_lines(fresh: Path) -> None:
    dev = _start(fresh, free_port(), LOG_FORMAT="json", **SECRETS)
    requests.get(f"http://127.0.0.1:{dev.port}/healthz", timeout=5)
    log = dev.since_ready()
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert [e["msg"] for e in entries if e["logger"] == "eventcollector.http"] == \
        ["GET /healthz 200"]


def test_a_port_in_use_is_one_line_naming_port(fresh: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(["dev", "--port", str(port)], fresh, **SECRETS)
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "--port" in line and "--host" in line


def test_a_data_directory_that_cannot_be_made_is_one_line(fresh: Path) -> None:
    (fresh / "a-file").write_text("")
    for env in ({}, SECRETS):  # with a secret to generate, and without
        result = _run(["dev", "--port", str(free_port())], fresh,
                      EC_DATA_DIR=str(fresh / "a-file" / "data"), **env)
        assert result.returncode in (1, 2), result.stderr
        line = _one_line(result.stderr)
        assert "a-file/data" in line and "EC_DATA_DIR" in line


def test_bad_configuration_is_one_line_naming_the_variable(fresh: Path) -> None:
    result = _run(["dev"], fresh, LOG_FORMAT="xml", **SECRETS)
    assert result.returncode == 2
    assert "LOG_FORMAT" in _one_line(result.stderr)


def test_a_database_that_cannot_be_reached_is_one_line(fresh: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    result = _run(["db", "upgrade"], fresh, DATABASE_URL=url, **SECRETS)
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert "DATABASE_URL" in line and "refused" in line
    # And LOG_LEVEL=DEBUG adds the traceback
    debug = _run(["db", "upgrade"], fresh, DATABASE_URL=url, LOG_LEVEL="DEBUG", **SECRETS)
    assert "Traceback" in debug.stderr


def test_a_broker_that_cannot_be_reached_is_one_line(fresh: Path) -> None:
    db = f"sqlite:///{fresh / 'ec.db'}"
    assert _run(["db", "upgrade"], fresh, DATABASE_URL=db, **SECRETS).returncode == 0
    result = _run(["dlq", "list"], fresh, DATABASE_URL=db,
                  REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", **SECRETS)
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert "REDIS_URL" in line


@pytest.mark.parametrize("command", [
    ["gunicorn", "api.app:create_app()", "-b", "127.0.0.1:0"],
    ["dramatiq", "workers.main:setup", "--processes", "1", "--threads", "1"],
    ["python", "-m", "scheduler"],
], ids=["web", "worker", "scheduler"])
def test_the_procfile_processes_refuse_bad_configuration_in_one_line(
        fresh: Path, command: list[str]) -> None:
    # Given a bad setting, When a Procfile process starts, Then it stops with one line naming
    # the variable, and no traceback (gunicorn: "failed to boot", no respawning)
    exe = str(Path(sys.executable).parent / command[0])
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([exe, *command[1:]], cwd=root, capture_output=True, text=True,
                            timeout=60, env=_env(LOG_FORMAT="xml", REDIS_URL="redis://127.0.0.1:1/0",
                                                 **SECRETS))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert lines == ["configuration error: LOG_FORMAT must be json or text, got 'xml'"], \
        result.stderr
    assert "Traceback" not in result.stderr
