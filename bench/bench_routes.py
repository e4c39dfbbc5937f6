"""Routes figures: the channel with per-group queues, and a source's rate limit held end to end.

    python3 bench/bench_routes.py [--events 200000] [--rate-seconds 30] [--skip-rate]

1. channel: N events of ~100 bytes put in batches of 1,000 and taken/acked in leases of 1,000,
   side by side: one queue (no routes), one group, two groups replicating (each acks every
   event), two groups multiplexed (half each). Events/s of wall time and process CPU seconds.
2. rate: a real agent (`flume-ship tail`) on a backlog of lines, shipping to a real
   `flume-ship collect`, limited to 1,000 lines/s once by the source (max_lines_per_second) and
   once by its collector group (max_events_per_second); lines delivered over a window of
   --rate-seconds, counted after a 3 s warm-up, as lines/s and the deviation from the limit.

The machine is shared: figures are noisy, report them as measured, with the load average.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import ROOT, cli, loadavg, make_lines, start_collect, stop  # noqa: E402
from shipper.channel import Channel  # noqa: E402
from shipper.channel.groups import GroupQueues  # noqa: E402


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def channel_case(name: str, n: int, groups: tuple[str, ...] | None, route) -> None:
    events = [b"%08d " % i + b"x" * 91 for i in range(1000)]
    with tempfile.TemporaryDirectory() as d:
        ch = Channel.open(d, min_free_bytes=0)
        views = [ch]
        if groups:
            q = GroupQueues(ch, groups)
            views = [q.view(g) for g in groups]
        t0, c0 = time.perf_counter(), cpu()
        for i in range(n // 1000):
            if groups:
                ch.put(events, groups=route(i))
            else:
                ch.put(events)
        put_s = time.perf_counter() - t0
        acked = 0
        for v in views:
            while (lease := v.take(1000, 1 << 30)) is not None:
                v.ack(lease)
                acked += lease.count
        wall, used = time.perf_counter() - t0, cpu() - c0
        assert ch.stats().events == 0
        ch.close()
    print(f"  {name:<28} {n / wall:>10,.0f} events/s put+deliver  put {n / put_s:>10,.0f}/s  "
          f"acks {acked:>8,}  cpu {used:5.2f}s  wall {wall:5.2f}s")


def rate_case(seconds: float, where: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        log = d / "app.log"
        make_lines(log, int(1000 * (seconds + 20)))
        col, addr = start_collect(d / "out")
        cfg = d / "ship.toml"
        group = "max_events_per_second = 1000\n" if where == "group" else ""
        source = "max_lines_per_second = 1000\n" if where == "source" else ""
        cfg.write_text(f'[channel]\nstate_dir = "{d / "state"}"\n[delivery]\nlinger = 0.05\n'
                       f'[groups.main]\ncollectors = ["{addr}"]\n{group}'
                       f'[sources.app]\npaths = ["{log}"]\n{source}')
        agent = subprocess.Popen(cli("tail", "--config", str(cfg)), stderr=subprocess.DEVNULL, cwd=ROOT)

        def delivered() -> int:
            return sum(sum(1 for _ in open(p, "rb")) for p in (d / "out").rglob("*") if p.is_file())

        try:
            time.sleep(3.0)
            a, ta = delivered(), time.monotonic()
            time.sleep(seconds)
            b, tb = delivered(), time.monotonic()
        finally:
            stop(agent)
            stop(col)
    rate = (b - a) / (tb - ta)
    print(f"  {where:<6} limit 1000 lines/s over {tb - ta:.1f}s: {b - a:,} lines = {rate:,.0f} lines/s "
          f"({(rate / 1000 - 1) * 100:+.1f}% from the limit)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rate-seconds", type=float, default=30.0)
    ap.add_argument("--skip-rate", action="store_true")
    args = ap.parse_args()
    print(f"load average {loadavg()}")
    print("channel (1,000-event batches and leases):")
    channel_case("one queue (no routes)", args.events, None, None)
    channel_case("one group", args.events, ("a",), lambda i: [("a",)] * 1000)
    channel_case("two groups, replicating", args.events, ("a", "b"), lambda i: [("a", "b")] * 1000)
    channel_case("two groups, multiplexed", args.events, ("a", "b"),
                 lambda i: [("a",) if i % 2 else ("b",)] * 1000)
    if not args.skip_rate:
        print("rate limits, end to end (a source's, then a collector group's):")
        rate_case(args.rate_seconds, "source")
        rate_case(args.rate_seconds, "group")


if __name__ == "__main__":
    main()
