#!/usr/bin/env python3
"""Lanes: `flume-ship tail` of many files with --sinks 1, 2, 4, side by side, into one collector.

F files of N/F log-like lines each (``make_lines``, ~100 bytes or ~1 KiB) are shipped by
``flume-ship tail 'DIR/*.log' --to COLLECTOR --sinks S`` with a fresh state directory, for each S in
``--sinks``; the collector is ``flume-ship collect --format text`` (fsync before every OK). Reported
per S: events/s over the wall time (start-up included) and the steady part, CPU seconds of the agent
per million events, peak RSS. Each file still arrives in order (one lane per file family); the
reliability suite asserts it, this only measures.

Usage: python3 bench/bench_lanes.py [--lines N] [--files F] [--size B] [--sinks 1,2,4] [--delay S]
       [--tail-args "--linger 0 ..."]
``--delay S`` puts a fault proxy that holds every answer S seconds in front of the collector (a far
collector: what lanes are for). Figures are noisy on a shared machine: the load average is printed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import ROOT, loadavg, make_lines, measure_ship, start_collect, stop  # noqa: E402


def run(files: list[Path], size: int, work: Path, sinks: int, delay: float, timeout: float,
        extra: list[str]) -> dict:
    out = work / f"out-{sinks}"
    col, addr = start_collect(out)
    proxy = None
    try:
        if delay:
            proxy = subprocess.Popen([sys.executable, "-m", "tests.faultproxy", "0", addr, "delay"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            addr = proxy.stdout.readline().split()[2]
            proxy.stdin.write(f"delay {delay}\n")
            proxy.stdin.flush()
            proxy.stdout.readline()
        return measure_ship(["tail", str(files[0].parent / "*.log"), "--to", addr, "--state-dir",
                             str(work / f"state-{sinks}"), "--sinks", str(sinks), *extra], out, size, timeout, col)
    finally:
        if proxy is not None:
            proxy.stdin.close()
            proxy.wait(10)
        stop(col)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(work / f"state-{sinks}", ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=400_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--sinks", default="1,2,4")
    ap.add_argument("--delay", type=float, default=0.0, help="hold each answer this long (a far collector)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--tail-args", default="", help="more flags for flume-ship tail, space-separated")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-lanes-"))
    try:
        logs = work / "logs"
        logs.mkdir()
        total = 0
        files = []
        for i in range(a.files):
            f = logs / f"app{i:03d}.log"
            total += make_lines(f, a.lines // a.files, a.size)
            files.append(f)
        n = a.lines // a.files * a.files
        print(f"{a.files} files, {n:,} lines of ~{a.size} B ({total / 1e6:.1f} MB), answers held {a.delay}s, "
              f"tail flags: {a.tail_args or '(defaults)'}")
        print(f"{'sinks':>5} {'events/s':>10} {'steady ev/s':>12} {'MB/s':>7} {'CPU s/M ev':>11} {'RSS MiB':>8}  load")
        for s in [int(x) for x in a.sinks.split(",")]:
            r = run(files, total, work, s, a.delay, a.timeout, a.tail_args.split())
            print(f"{s:>5} {n / r['wall']:>10,.0f} {n / max(r['steady'], 1e-9):>12,.0f} "
                  f"{total / 1e6 / r['wall']:>7.1f} {r['cpu'] / n * 1e6:>11.2f} {r['rss'] / 2**20:>8.1f}  {loadavg()}",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
