#!/usr/bin/env python3
"""Idle CPU of flume-ship tail with many quiet files (default 1,000).

Creates N files of a few lines each, starts ``flume-ship tail DIR/*.log`` (default settings) into
``flume-ship collect``, waits until every line was delivered and a further settle time passed (the
descriptors of idle files close after 60 s by default, so by default the settle covers that), then
reads the process's CPU time over a quiet window and prints it as % of one core. Also prints the
number of threads and open descriptors, and peak RSS.

Usage: python3 bench/bench_idle.py [--files 1000] [--settle 65] [--window 60] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import Meter, ROOT, cli, loadavg, start_collect, stop, wait_bytes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--settle", type=float, default=65)
    ap.add_argument("--window", type=float, default=60)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        tmp = Path(tmp)
        logs = tmp / "logs"
        logs.mkdir()
        total = 0
        for i in range(args.files):
            data = b"".join(b"file %05d line %d some quiet text\n" % (i, k) for k in range(5))
            (logs / f"f{i:05d}.log").write_bytes(data)
            total += len(data)
        col, addr = start_collect(tmp / "out")
        tail = subprocess.Popen(cli("tail", str(logs / "*.log"), "--to", addr, "--state-dir", str(tmp / "state")),
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        meter = Meter(tail.pid)
        try:
            wait_bytes(tmp / "out", total, 300, [tail, col])
            time.sleep(args.settle)
            load = loadavg()
            c0, t0 = meter.cpu(), time.monotonic()
            time.sleep(args.window)
            c1, t1 = meter.cpu(), time.monotonic()
            fds = len(os.listdir(f"/proc/{tail.pid}/fd"))
            threads = len(os.listdir(f"/proc/{tail.pid}/task"))
            res = {"files": args.files, "window": t1 - t0, "cpu_pct": (c1 - c0) / (t1 - t0) * 100,
                   "fds": fds, "threads": threads, "rss": meter.peak_rss, "load": load}
        finally:
            stop(tail)
            stop(col)
    print(f"{args.files} quiet files: {res['cpu_pct']:.2f} % of one core over {res['window']:.0f}s "
          f"(after a {args.settle:.0f}s settle), {res['threads']} threads, {res['fds']} open fds, "
          f"peak RSS {res['rss'] / 2**20:.1f} MiB (load {load})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
