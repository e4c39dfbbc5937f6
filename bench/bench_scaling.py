#!/usr/bin/env python3
"""How flume-ship tail's end-to-end rate scales with --batch-size and with --sinks.

Same data and collector as bench/bench_vs_flume.py (N lines of ~100 B, default 300,000; collector
fsyncs before every OK). One run per setting, a fresh state directory each time; the rate is over
the steady part (first byte at the collector to the last). Sweeps --batch-size at --sinks 1, then
--sinks at the default batch size.

Usage: python3 bench/bench_scaling.py [--lines N] [--batches 100,250,1000,2000,5000] [--sinks 1,2,4,8]
                                      [--plots DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import Meter, ROOT, cli, loadavg, make_lines, start_collect, stop, wait_bytes  # noqa: E402


def one(src: Path, size: int, work: Path, *flags: str) -> dict:
    out, state = work / "out", work / "state"
    col, addr = start_collect(out)
    try:
        t0 = time.monotonic()
        proc = subprocess.Popen(cli("tail", str(src), "--to", addr, "--state-dir", str(state), *flags),
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        meter = Meter(proc.pid)
        first, last = wait_bytes(out, size, 900, [proc, col])
        cpu = meter.cpu()
        stop(proc)
        return {"wall": last - t0, "steady": last - first, "cpu": cpu, "load": loadavg()}
    finally:
        stop(col)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--batches", default="100,250,1000,2000,5000")
    ap.add_argument("--sinks", default="1,2,4,8")
    ap.add_argument("--plots", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    res = {"lines": args.lines, "batch": [], "sinks": []}
    try:
        src = work / "in.log"
        size = make_lines(src, args.lines, 100)
        print(f"{args.lines:,} lines of ~100 B; load average {loadavg()}")
        for b in (int(x) for x in args.batches.split(",")):
            r = one(src, size, work, "--batch-size", str(b))
            r.update(batch=b, eps=args.lines / r["steady"])
            res["batch"].append(r)
            print(f"  --batch-size {b:>5}: {r['eps']:>9,.0f} ev/s  CPU {r['cpu']:.1f}s  (load {r['load']})")
        for s in (int(x) for x in args.sinks.split(",")):
            r = one(src, size, work, "--sinks", str(s))
            r.update(sinks=s, eps=args.lines / r["steady"])
            res["sinks"].append(r)
            print(f"  --sinks {s:>2}: {r['eps']:>9,.0f} ev/s  CPU {r['cpu']:.1f}s  (load {r['load']})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.plots:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        Path(args.plots).mkdir(parents=True, exist_ok=True)
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        a.plot([r["batch"] for r in res["batch"]], [r["eps"] for r in res["batch"]], "o-")
        a.set_xscale("log")
        a.set_xlabel("--batch-size (events, log scale; --sinks 1)")
        a.set_ylabel("events/s (steady)")
        a.set_title("rate vs batch size")
        b.plot([r["sinks"] for r in res["sinks"]], [r["eps"] for r in res["sinks"]], "o-", color="tab:orange")
        b.set_xlabel("--sinks (batches in flight; --batch-size 1000)")
        b.set_ylabel("events/s (steady)")
        b.set_title("rate vs sinks")
        for ax in (a, b):
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
        fig.suptitle(f"flume-ship tail -> collect, {args.lines:,} lines of ~100 B")
        fig.tight_layout()
        fig.savefig(Path(args.plots) / "scaling.png", dpi=110)
        print(f"plot: {Path(args.plots) / 'scaling.png'}")


if __name__ == "__main__":
    main()
