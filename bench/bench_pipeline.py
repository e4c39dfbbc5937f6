#!/usr/bin/env python3
"""Ordered pipelining: ``tail --in-flight 1 / 2 / 4`` beside other checkouts, and collect's
one-sender receive rate, all in one run.

Issue 17's end-to-end measure: ``flume-ship tail FILE --to COLLECTOR`` of a fresh file of log-like
lines (``make_lines``: ~100 B and ~1 KiB) with a fresh state directory and default flags but the
one under test, into ``flume-ship collect --format text`` (fsync before every OK). The collector is
always this tree's, which advertises ordered pipelining; an older tree's agent ignores that and
sends one call at a time. Cases, per size and round, one after the other:

* this tree with ``--in-flight 1`` (today's one-at-a-time path), 2 (the default) and 4;
* each ``--base NAME=DIR`` checkout (e.g. main, or a commit and its parent for an A/B) with its defaults;
* ``flume-ship send FILE`` into a fresh collector, ``--in-flight 1`` and ``4``: collect's receive
  rate from one sender, the issue's yardstick (target: tail >= 0.7 x that).

Reported per case: steady events/s (first byte to last at the collector), MB/s of line payload,
the agent's CPU s per million events, peak RSS and the load average; with ``--rounds`` > 1 each
round's figure, then the median.

Usage: python3 bench/bench_pipeline.py [--lines N] [--sizes 100,1024] [--rounds R] [--base NAME=DIR ...]
Figures are noisy on a shared machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import (  # noqa: E402
    ROOT, Meter, cli, loadavg, make_lines, measure_ship, start_collect, stop, wait_bytes,
)


def ship(root: Path, src: Path, size: int, work: Path, tag: str, timeout: float, *flags: str) -> dict:
    out, state = work / f"out-{tag}", work / f"state-{tag}"
    col, addr = start_collect(out)
    try:
        return measure_ship(["tail", str(src), "--to", addr, "--state-dir", str(state), *flags], out, size,
                            timeout, col, root=root)
    finally:
        stop(col)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def receive(src: Path, size: int, work: Path, timeout: float, in_flight: int) -> dict:
    out = work / "out-send"
    col, addr = start_collect(out)
    meter = Meter(col.pid)
    try:
        sender = subprocess.Popen(cli("send", str(src), "--to", addr, "--in-flight", str(in_flight)), cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first, last = wait_bytes(out, size, timeout, [col])
        sender.wait(60)
        return {"steady": last - first, "cpu": meter.cpu(), "rss": meter.peak_rss}
    finally:
        stop(col)
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--sizes", default="100,1024")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--in-flight", default="1,2,4", help="this tree's --in-flight values")
    ap.add_argument("--base", action="append", default=[], help="NAME=DIR: another checkout, run with its defaults")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    bases = [(name, Path(d).resolve()) for name, d in (b.split("=", 1) for b in args.base)]
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            src = work / f"lines-{size}.log"
            nbytes = make_lines(src, args.lines, size)
            cases = [(f"this tree --in-flight {n}", lambda n=n: ship(ROOT, src, nbytes, work, f"if{n}", args.timeout,
                                                                     "--in-flight", n))
                     for n in args.in_flight.split(",")]
            cases += [(f"{name} (defaults)", lambda d=d, name=name: ship(d, src, nbytes, work, name, args.timeout))
                      for name, d in bases]
            cases += [(f"collect receive, 1 send --in-flight {n}",
                       lambda n=n: receive(src, nbytes, work, args.timeout, n)) for n in (1, 4)]
            rows: dict[str, list[tuple[dict, str]]] = {name: [] for name, _ in cases}
            for r in range(args.rounds):
                for name, run in cases:
                    load = loadavg().split()[0]
                    res = run()
                    rows[name].append((res, load))
                    print(f"  round {r + 1} ~{size} B  {name}: {args.lines / res['steady']:,.0f} events/s, "
                          f"{nbytes / res['steady'] / 1e6:.1f} MB/s, load {load}", flush=True)
            print(f"\n~{size} B lines, {args.lines:,} lines ({nbytes / 1e6:.0f} MB), "
                  f"{time.strftime('%H:%M UTC', time.gmtime())}")
            print("| case | events/s steady (rounds) | median | MB/s | CPU s/M | peak RSS | load |")
            print("|---|---|---:|---:|---:|---:|---|")
            for name, got in rows.items():
                rates = [args.lines / res["steady"] for res, _ in got]
                med = statistics.median(rates)
                cpu = statistics.median(res["cpu"] for res, _ in got) / args.lines * 1e6
                rss = max(res["rss"] for res, _ in got) / 2**20
                print(f"| {name} | {' / '.join(f'{x:,.0f}' for x in rates)} | {med:,.0f} | "
                      f"{med * nbytes / args.lines / 1e6:.1f} | {cpu:.1f} | {rss:.1f} MiB | "
                      f"{' / '.join(load for _, load in got)} |", flush=True)
            src.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
