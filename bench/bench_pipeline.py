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
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_cpu import ship  # noqa: E402
from bench.bench_vs_flume import run_collect  # noqa: E402
from bench.benchlib import ROOT, loadavg, make_lines  # noqa: E402


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
                       lambda n=n: run_collect(src, nbytes, work, args.timeout, 1, "--in-flight", str(n)))
                      for n in (1, 4)]
            rows: dict[str, list[tuple[dict, str]]] = {name: [] for name, _ in cases}
            for r in range(args.rounds):
                for name, run in cases:
                    load = loadavg().split()[0]
                    res = run()
                    res["steady"] = res["steady"] or res["wall"]  # (a tiny file lands in one write)
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
