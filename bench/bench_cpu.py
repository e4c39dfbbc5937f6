#!/usr/bin/env python3
"""CPU of the agent per million ~100 B events, this tree beside another checkout, in one run.

Issue 17's measure: ``flume-ship tail FILE --to COLLECTOR`` of a fresh file (``make_lines``: log-like
lines, ~100 bytes by default) with a fresh state directory and default flags, into
``flume-ship collect --format text`` (fsync before every OK; this tree's collector for both). The
agent's CPU (user + system, all threads, from /proc) is read when the last byte has arrived.

Each round runs, for each tree in turn: the big file (``--lines``), then a 1,000-line file. The
small run is the fixed cost (interpreter, imports, channel open, threads); the difference is the
cost that grows with the events. Reported per tree: CPU s per million events with start-up included
(what bench_vs_flume prints), the fixed cost, the marginal CPU s per million, steady events/s, peak
RSS and the load average. Both trees' bytecode is written first (bench.benchlib.precompile).

Usage: python3 bench/bench_cpu.py --base /path/to/other/checkout [--lines N] [--size B] [--rounds R]
Figures are noisy on a shared machine: the load average is printed with them.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import ab_parser, ab_trees, loadavg, make_lines, measure_ship, start_collect, stop  # noqa: E402

SMALL = 1_000


def ship(root: Path, src: Path, size: int, work: Path, tag: str, timeout: float, *flags: str) -> dict:
    out, state = work / f"out-{tag}", work / f"state-{tag}"
    col, addr = start_collect(out)
    try:
        res = measure_ship(["tail", str(src), "--to", addr, "--state-dir", str(state), *flags], out, size,
                           timeout, col, root=root)
    finally:
        stop(col)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    res["load"] = loadavg().split()[0]
    return res


def main() -> None:
    ap = ab_parser(__doc__)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    trees = ab_trees(args.base)
    work = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    try:
        big, small = work / "big.log", work / "small.log"
        big_size = make_lines(big, args.lines, args.size)
        small_size = make_lines(small, SMALL, args.size)
        rows: dict[str, list[tuple[dict, dict]]] = {k: [] for k in trees}
        for r in range(args.rounds):
            for name, root in trees.items():
                b = ship(root, big, big_size, work, f"{name}-{r}", args.timeout)
                s = ship(root, small, small_size, work, f"{name}-{r}-small", args.timeout)
                rows[name].append((b, s))
                print(f"round {r + 1} {name}: {b['cpu']:.2f} CPU s for {args.lines:,} events, "
                      f"{s['cpu']:.2f} for {SMALL:,}; load {b['load']}", flush=True)
        m = args.lines / 1e6
        print(f"\n{args.lines:,} lines of ~{args.size} B; CPU s per M events, each round (median)\n")
        print("| tree | per M, start-up included | fixed (1,000 lines) | marginal per M | events/s steady "
              "| peak RSS | load |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for name, pairs in rows.items():
            per_m = [b["cpu"] / m for b, _ in pairs]
            fixed = [s["cpu"] for _, s in pairs]
            marg = [(b["cpu"] - s["cpu"]) / ((args.lines - SMALL) / 1e6) for b, s in pairs]
            rate = [args.lines / b["steady"] for b, _ in pairs if b["steady"] > 0]
            rss = max(b["rss"] for b, _ in pairs) / 2**20

            def show(xs, fmt="{:.2f}"):
                return " / ".join(fmt.format(x) for x in xs) + f" ({fmt.format(statistics.median(xs))})"

            print(f"| {name} | {show(per_m)} | {show(fixed)} | {show(marg)} | {show(rate, '{:,.0f}')} "
                  f"| {rss:.1f} MiB | {' / '.join(b['load'] for b, _ in pairs)} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
