#!/usr/bin/env python3
"""A backlog drain (acks and no puts) with acks synced per commit (0) and once a second (1), one run.

The channel is filled once (``--events`` log-like ~100 B lines as events in chunks of ``--batch``) and copied; each
round then drains a fresh copy with take + ack of one batch at a time, in this process, once with
``ack_sync_interval = 0`` (every ack commit waits for its fdatasync: the previous behaviour) and
once with 1 s (the default). Printed per setting: drain time, acks/s and events/s, CPU seconds of
the process (user + system) and the medians over the rounds, with the load average.

Usage: python3 bench/bench_ack_drain.py [--events 1000000] [--batch 1000] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import loadavg, make_lines  # noqa: E402
from shipper.channel import Channel  # noqa: E402


def fill(state: Path, events: int, batch: int) -> None:
    """Log-like lines (bench.benchlib.make_lines), put as they are, a batch per put."""
    src = state.parent / "lines.log"
    make_lines(src, events)
    lines = src.read_bytes().splitlines()
    with Channel.open(state, min_free_bytes=0, chunk_events=batch) as ch:
        for i in range(0, events, batch):
            ch.put(lines[i:i + batch], {"file": b"%d" % (i + batch)})


def drain(state: Path, interval: float, batch: int) -> tuple[float, float, int]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    acks = 0
    with Channel.open(state, min_free_bytes=0, chunk_events=batch, ack_sync_interval=interval) as ch:
        while (lease := ch.take(batch, 1 << 30)) is not None:
            ch.ack(lease)
            acks += 1
    return time.perf_counter() - t0, time.process_time() - cpu0, acks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ack-drain-", dir=a.dir))
    try:
        fill(work / "full", a.events, a.batch)
        results: dict[float, list[tuple[float, float, int]]] = {0.0: [], 1.0: []}
        print(f"{a.events} events in batches of {a.batch}, {a.rounds} rounds; load average {loadavg()}")
        for r in range(a.rounds):
            for interval in results:
                state = work / f"drain-{interval:g}-{r}"
                shutil.copytree(work / "full", state)
                wall, cpu, acks = drain(state, interval, a.batch)
                results[interval].append((wall, cpu, acks))
                shutil.rmtree(state)
                print(f"  round {r + 1} ack_sync_interval={interval:g}: {wall:.2f} s, {acks / wall:,.0f} acks/s, "
                      f"{a.events / wall:,.0f} events/s, CPU {cpu:.2f} s")
        for interval, rows in results.items():
            wall = statistics.median(w for w, _, _ in rows)
            cpu = statistics.median(c for _, c, _ in rows)
            print(f"ack_sync_interval={interval:g}: median {wall:.2f} s ({a.events / wall:,.0f} events/s, "
                  f"{rows[0][2] / wall:,.0f} acks/s), CPU {cpu:.2f} s")
        print(f"load average {loadavg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
