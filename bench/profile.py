"""Sampling profiles of the running processes (py-spy), summarised as text for RESULTS.md.

Only the thread holding the GIL is sampled (``--gil``): the summary shows where CPU time goes,
not where threads wait.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def available() -> bool:
    return Path(PY_SPY).exists() or shutil.which("py-spy") is not None


class Recording:
    def __init__(self, pid: int, seconds: float, raw: Path) -> None:
        self.raw = raw
        self.popen = subprocess.Popen(
            [PY_SPY, "record", "-d", str(int(seconds)), "-r", "100", "-f", "raw", "-o",
             str(raw), "-p", str(pid), "--gil", "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def summary(self, top: int = 12) -> str:
        self.popen.wait(120)
        if not self.raw.exists():
            return "(no samples)"
        own: collections.Counter[str] = collections.Counter()
        incl: collections.Counter[str] = collections.Counter()
        total = 0
        for line in self.raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            frames = [f for f in stack.split(";") if not f.startswith(("thread (", "process "))]
            if not frames:
                continue
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                incl[frame] += n
        if not total:
            return "(no samples)"
        lines = [f"{total} samples; self time:"]
        lines += [f"  {c / total * 100:5.1f}%  {f}" for f, c in own.most_common(top)]
        lines.append("inclusive (project code and the libraries it calls):")
        skip = ("threading.py", "<module>", "gunicorn/", "dramatiq/worker.py", "socketserver.py",
                "multiprocessing/", "dramatiq:", "gunicorn:", "werkzeug/serving.py",
                "http/server.py", "concurrent/futures")
        shown = [(f, c) for f, c in incl.most_common(200) if not any(s in f for s in skip)]
        lines += [f"  {c / total * 100:5.1f}%  {f}" for f, c in shown[:top * 2]]
        return "\n".join(lines)
