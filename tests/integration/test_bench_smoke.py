"""The benchmark command at smoke size, so bench/ cannot rot (no pass/fail on speed here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_service

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_every_benchmark_runs_and_reports_its_figures(tmp_path: Path) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    out = tmp_path / "RESULTS.md"
    run = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    text = out.read_text()
    for bench in ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9"):
        assert f"| {bench} |" in text, f"{bench} missing from the results"
    assert "did not complete" not in text
    assert "Python 3." in text and "Packages:" in text
