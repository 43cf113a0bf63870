"""The benchmark command at smoke size, so bench/ cannot rot (no pass/fail on speed here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_service

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)  # every benchmark at smoke size, B4's five drains included
def test_every_benchmark_runs_and_reports_its_figures(tmp_path: Path) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    out = tmp_path / "RESULTS.md"
    run = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    text = out.read_text()
    for bench in ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9"):
        assert f"| {bench} |" in text, f"{bench} missing from the results"
    rows = [line for line in text.splitlines() if line.startswith("| B")]
    # Issue 15: B4's four variants, B6's search and CPU shares, each delivering to fauxqs.
    for bench, what in (("B4", "SQS: deliver pool draining"), ("B4", "SNS: deliver pool draining"),
                        ("B4", "events each matching"), ("B4", "tenants ×"),
                        ("B4", "matching cost"), ("B4", "FIFO: deliver pool draining"),
                        ("B5", "p99"), ("B6", "sustained end to end"), ("B6", "CPU share"),
                        ("B6", "highest offered rate with a flat backlog"), ("B7", "peak RSS")):
        assert any(r.startswith(f"| {bench} |") and what in r for r in rows), (bench, what)
    # The plain loops run with the deliver pool's own process × thread count.
    assert re.search(r"SendMessageBatch \(10\), \d+ processes × \d+ threads", text)
    assert "PublishBatch (10)" in text
    assert "fauxqs" in text
    assert "did not complete" not in text
    assert "Python 3." in text and "Packages:" in text
