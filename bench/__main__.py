"""``python -m bench``: run B1–B9 and write bench/RESULTS.md.

    .venv/bin/python -m bench                 # the full run (< 40 min), writes bench/RESULTS.md
    .venv/bin/python -m bench --smoke         # seconds per benchmark, writes nothing unless --out
    .venv/bin/python -m bench --only B3,B4    # some of them
    .venv/bin/python -m bench --only B4 --b4 sqs,fifo --plain-threads 8   # B4 variants
    .venv/bin/python -m bench --only B1 --repeats 5 --out /tmp/b1.md   # more runs per figure

Nothing here passes or fails on speed: a missed target is reported, not raised.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

from bench.benchmarks import ALL, B4_VARIANTS, FULL, SMOKE, Figure
from bench.stack import ROOT, Stack

PACKAGES = ("flask", "gunicorn", "pydantic", "orjson", "dramatiq", "redis", "sqlalchemy",
            "psycopg", "boto3", "moto")


def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine() -> list[str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in PACKAGES)
    return [
        f"- Machine: {os.cpu_count()} cores ({cpu}), {mem_kb / 1024 / 1024:.0f} GiB, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; PostgreSQL "
        f"{_cmd(['psql', '--version']).split()[-1]} (this machine's server, a fresh database); "
        f"{_cmd(['redis-server', '--version']).split(' v=')[-1].split()[0]} Redis (a private "
        f"redis-server); {_fauxqs()} as the SQS/SNS destination of B4-B7 (EC_BENCH_DESTINATION="
        f"{os.environ.get('EC_BENCH_DESTINATION', 'fauxqs')})",
        f"- Packages: {versions}",
        f"- Commit: {_cmd(['git', '-C', str(ROOT), 'rev-parse', '--short', 'HEAD'])}",
    ]


def _fauxqs() -> str:
    try:
        import json

        pkg = json.loads((ROOT / "bench" / "node_modules" / "fauxqs" / "package.json").read_text())
        version = pkg["version"]
    except (OSError, ValueError, KeyError):
        version = "?"
    return f"fauxqs {version} on Node {_cmd(['node', '--version']).lstrip('v')}"


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if value != value:  # NaN
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) < 10 else \
        f"{value:.1f}"
    return f"{text} {unit}".strip()


def table(figures: list[Figure]) -> list[str]:
    rows = ["| id | what | median [min – max] | limit (same run) | ratio | target | met |",
            "|---|---|---|---|---|---|---|"]
    for f in figures:
        runs = (f" [{fmt(min(f.runs))} – {fmt(max(f.runs))}] ×{len(f.runs)}"
                if len(f.runs) > 1 else "")
        limit = f"{fmt(f.limit)} ({f.limit_what})" if f.limit is not None else f.limit_what or "—"
        met = "—" if f.met is None else ("yes" if f.met else "**no**")
        what = f.what + (f" — {f.note}" if f.note else "")
        rows.append(f"| {f.bench} | {what} | {fmt(f.value, f.unit)}{runs} | {limit} | "
                    f"{fmt(f.ratio)} | {f.target} | {met} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI): code runs")
    parser.add_argument("--only", default="", help="comma-separated: B1 (with B2),B3,…,B9")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs per figure (default 3, 1 with --smoke)")
    parser.add_argument("--out", default=None, help="results file (default bench/RESULTS.md "
                        "for a full run, none for --smoke)")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the py-spy profiles (a full run takes them)")
    parser.add_argument("--b4", default="", help="B4 variants, comma-separated: "
                        f"{','.join(B4_VARIANTS)} (default all)")
    parser.add_argument("--plain-threads", type=int, default=None,
                        help="threads per process of B4's plain loops (default: the deliver "
                        "pool's DELIVER_THREADS; processes: its DELIVER_PROCESSES)")
    args = parser.parse_args(argv)
    scale = SMOKE if args.smoke else FULL
    if args.repeats is not None:
        if args.repeats < 1:
            parser.error("--repeats must be at least 1")
        scale = dataclasses.replace(scale, repeats=args.repeats, b4_repeats=args.repeats)
    if args.b4:
        variants = tuple(v.strip().lower() for v in args.b4.split(",") if v.strip())
        unknown = [v for v in variants if v not in B4_VARIANTS]
        if unknown:
            parser.error(f"--b4: unknown {unknown}; choose from {list(B4_VARIANTS)}")
        scale = dataclasses.replace(scale, b4_variants=variants)
    if args.plain_threads is not None:
        if args.plain_threads < 1:
            parser.error("--plain-threads must be at least 1")
        scale = dataclasses.replace(scale, plain_threads=args.plain_threads)
    chosen = [b.strip().upper() for b in args.only.split(",") if b.strip()] or list(ALL)
    out = Path(args.out) if args.out else (None if args.smoke else ROOT / "bench" / "RESULTS.md")

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    # A SIGTERM (a CI timeout, kill) still stops every process and drops the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="ec-bench-"))
    log(f"logs in {workdir}")
    figures: list[Figure] = []
    failures: list[str] = []
    started = time.time()
    stack = Stack(workdir)
    stack.profiling = not args.smoke and not args.no_profile
    try:
        for name in chosen:
            log(f"== {name}")
            try:
                figures += ALL[name](stack, scale, log)
                log("peak RSS so far (MB): " + ", ".join(
                    f"{k} {v:.0f}" for k, v in sorted(stack.rss.peaks.items())))
            except Exception:  # noqa: BLE001 - reported, the other benchmarks still run
                failures.append(f"{name}: {traceback.format_exc(limit=3)}")
                log(f"{name} FAILED:\n{failures[-1]}")
    finally:
        stack.close()
    elapsed = time.time() - started
    lines = table(figures)
    print("\n".join(lines))
    if out is not None:
        notes = ROOT / "bench" / "NOTES.md"
        command = "python -m bench" + (" --smoke" if args.smoke else "") + \
            (f" --only {args.only}" if args.only else "") + \
            (f" --repeats {args.repeats}" if args.repeats is not None else "") + \
            (f" --b4 {args.b4}" if args.b4 else "") + \
            (f" --plain-threads {args.plain_threads}" if args.plain_threads is not None else "")
        text = ["# Benchmark results", "",
                f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
                f"in {elapsed / 60:.1f} min. Every figure is the median of the runs shown "
                "(spread in brackets), next to a limit measured in the same run on the same "
                "machine; nothing here is a pass/fail test.", "", *machine(), "",
                "## Figures", "", *lines, ""]
        if failures:
            text += ["## Benchmarks that did not complete", "", "```", *failures, "```", ""]
        if stack.profiles:
            text += ["## Profiles taken during this run (py-spy, GIL holder only)", ""]
            for label, summary in stack.profiles.items():
                text += [f"### {label}", "", "```", summary, "```", ""]
        if notes.exists():
            text += [notes.read_text()]
        out.write_text("\n".join(text))
        log(f"wrote {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
