#!/usr/bin/env python3
"""Line-to-acknowledgement latency of flume-ship tail at a steady write rate (default 1,000 lines/s).

A writer appends lines carrying their own write time (``time.time()`` in ns) in chunks every 10 ms;
``flume-ship tail`` (default settings: linger 0.2 s, batches of 1,000) ships them to
``flume-ship collect``, which fsyncs each batch and only then answers OK. This process follows the
collector's output file and, for each line, takes "now minus the time in the line": the time from
the write to the moment the batch holding it was durable at the collector, which is when the OK is
sent (the follow loop polls every 2 ms, so that much may be added). Prints p50/p90/p99/max after a
warm-up of 2 s.

Usage: python3 bench/bench_latency.py [--rate 1000] [--seconds 30] [--plots DIR] [--json OUT] [-- TAIL FLAGS]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import ROOT, cli, loadavg, start_collect, stop  # noqa: E402


def writer(path: Path, rate: int, seconds: float, stop_ev: threading.Event) -> None:
    pad = b"x" * 60
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    seq = 0
    t_end = time.monotonic() + seconds
    with open(path, "ab", buffering=0) as f:
        nxt = time.monotonic()
        while time.monotonic() < t_end and not stop_ev.is_set():
            owed += per_tick
            n = int(owed)
            owed -= n
            now = time.time_ns()
            f.write(b"".join(b"lat %019d %08d %s\n" % (now, seq + i, pad) for i in range(n)))
            seq += n
            nxt += tick
            time.sleep(max(0.0, nxt - time.monotonic()))


def follow(out: Path, until: float, lat: list[float]) -> None:
    pos: dict[Path, int] = {}
    rest: dict[Path, bytes] = {}
    while time.monotonic() < until:
        for p in sorted(out.glob("*.log")):
            with open(p, "rb") as f:
                f.seek(pos.get(p, 0))
                data = f.read()
            if not data:
                continue
            now = time.time_ns()
            pos[p] = pos.get(p, 0) + len(data)
            data = rest.get(p, b"") + data
            lines = data.split(b"\n")
            rest[p] = lines.pop()
            for line in lines:
                if line.startswith(b"lat "):
                    lat.append((now - int(line[4:23])) / 1e9)
        time.sleep(0.002)


def pct(sorted_vals: list[float], q: float) -> float:
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--plots", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("tail_args", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lat-") as tmp:
        tmp = Path(tmp)
        src = tmp / "app.log"
        src.touch()
        col, addr = start_collect(tmp / "out")
        tail = subprocess.Popen(cli("tail", str(src), "--to", addr, "--state-dir", str(tmp / "state"),
                                    *args.tail_args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)
        load = loadavg()
        lat: list[float] = []
        stop_ev = threading.Event()
        w = threading.Thread(target=writer, args=(src, args.rate, args.seconds, stop_ev), daemon=True)
        (tmp / "out").mkdir(exist_ok=True)
        w.start()
        follow(tmp / "out", time.monotonic() + args.seconds + 3, lat)
        stop_ev.set()
        stop(tail)
        stop(col)
    warm = int(2 * args.rate)
    vals = sorted(lat[warm:])
    res = {"rate": args.rate, "seconds": args.seconds, "lines": len(lat), "measured": len(vals), "load": load,
           "p50": pct(vals, 0.50), "p90": pct(vals, 0.90), "p99": pct(vals, 0.99), "max": vals[-1],
           "tail_args": args.tail_args}
    print(f"{args.rate} lines/s for {args.seconds:.0f}s ({len(vals)} lines after warm-up; tail {' '.join(args.tail_args) or 'defaults'}): "
          f"p50 {res['p50'] * 1000:.0f} ms, p90 {res['p90'] * 1000:.0f} ms, p99 {res['p99'] * 1000:.0f} ms, "
          f"max {res['max'] * 1000:.0f} ms (load {load})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.plots:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        Path(args.plots).mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.hist([v * 1000 for v in vals], bins=60, color="tab:blue")
        for q, c in (("p50", "green"), ("p99", "red")):
            ax.axvline(res[q] * 1000, color=c, linestyle="--", label=f"{q} {res[q] * 1000:.0f} ms")
        ax.set_xlabel("line written -> durable at the collector (ms)")
        ax.set_ylabel("lines")
        ax.set_title(f"flume-ship tail latency at {args.rate} lines/s (linger default 0.2 s)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(Path(args.plots) / "latency.png", dpi=110)
        print(f"plot: {Path(args.plots) / 'latency.png'}")


if __name__ == "__main__":
    main()
