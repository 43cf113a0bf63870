"""The README's walkthrough, run as written: its first block (moto + `eventcollector dev`) is
started here on free ports, the others are pasted into one bash, in a fresh directory, as a new
user would paste them into a second terminal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.support.aws import MotoServer
from tests.support.procs import ROOT, Proc

pytestmark = pytest.mark.integration

SECTION = re.compile(r"^## Walkthrough with curl\n(.*?)^## ", re.S | re.M)
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def walkthrough_blocks() -> list[str]:
    match = SECTION.search((ROOT / "README.md").read_text())
    assert match, "README.md has no '## Walkthrough with curl' section"
    return BLOCK.findall(match.group(1))


def test_the_walkthrough_starts_moto_and_dev_in_its_first_block() -> None:
    first, *rest = walkthrough_blocks()
    assert "moto_server -H 127.0.0.1 -p 5055" in first
    assert ".venv/bin/eventcollector dev" in first
    assert len(rest) >= 5


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    _first, *blocks = walkthrough_blocks()
    # A fresh directory with the project's virtualenv where the README expects it (.venv/bin)
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    (workdir / ".venv").symlink_to(Path(sys.executable).parent.parent)
    moto = MotoServer()
    port = free_port()
    aws = {"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("EC_", "DATABASE_URL", "REDIS_URL", "AWS_", "LOG_"))}
    env = {**clean, **aws, "EC_DATA_DIR": str(workdir / ".eventcollector")}
    dev = Proc("dev", f"{workdir}/.venv/bin/eventcollector dev --port {port}", env, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        import requests

        while time.monotonic() < deadline:
            assert dev.alive(), dev.log()
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            pytest.fail(f"eventcollector dev did not answer:\n{dev.log()}")
        # When the blocks are pasted into one shell (that stops at the first failing command)
        script = "set -euo pipefail\n" + "\n".join(blocks)
        result = subprocess.run(["bash", "-c", script], cwd=workdir, capture_output=True,
                                text=True, timeout=100,
                                env={**clean, **aws, "BASE": base,
                                     "EC_DATA_DIR": str(workdir / ".eventcollector")})
        out = result.stdout
        assert result.returncode == 0, f"stdout:\n{out}\nstderr:\n{result.stderr}\n" \
                                       f"dev:\n{dev.log()[-3000:]}"
        # Then each step did what the README says
        assert "HTTP/1.1 201" in out and "Location: /api/v1/events/evt-0001" in out
        assert '"access_token"' in out
        # the SQS message, received: its attributes as boto3 prints them, its body the event
        assert "'entity_name': {'StringValue': 'ORDER', 'DataType': 'String'}" in out
        assert out.count('"entity_id":"o-1"') >= 2  # the POST's answer and the message body
        assert "ExternalId" in out or "externalId" in out  # tenant show
        runs = json.loads(out[out.rindex('{"runs":'):].strip())  # curl adds no newline
        assert runs["runs"], out
        # And the dev log shows the would-be SendGrid request for ann@example.com
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "ann@example.com" not in dev.log():
            time.sleep(0.5)
        mail = [line for line in dev.log().splitlines() if "would send to SendGrid" in line]
        assert mail and "ann@example.com" in mail[-1] and '"old_price":100.0' in mail[-1], \
            dev.log()[-3000:]
    finally:
        dev.stop()
        moto.stop()
