"""Tail source figures: its own rate into the real channel, and idle CPU with many quiet files.

    python3 bench/bench_tail.py [--lines 1000000] [--files 1000] [--idle-seconds 20]

1. rate: one file of N lines of ~100 bytes, read by TailSource.run_once() into a real SQLite
   channel (WAL, synchronous=FULL) in a temporary directory; lines/s and MB/s of wall time, and
   the process CPU time. Repeated with event ids on.
2. hot path alone: the same bytes through LineCutter.consume with no channel (the Python cost).
3. idle: F files tailed by TailSource.run() (watchdog on), nothing written; process CPU seconds
   over the idle window (the first full scan excluded).

The machine is shared: figures are noisy, report them as measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shipper.channel import Channel  # noqa: E402
from shipper.tail import TailOptions, TailSource  # noqa: E402
from shipper.tail.reader import Cursor, Encoder, LineCutter  # noqa: E402


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def make_lines(path: Path, n: int) -> int:
    # ~100 bytes a line: a timestamp-ish prefix, a counter, padding.
    with open(path, "wb") as fh:
        for start in range(0, n, 10_000):
            fh.write(b"".join(b"2024-05-01T12:00:00.000Z INFO app[%08d]: request served path=/api/v1/items status=200 ms=12\n"
                              % i for i in range(start, min(n, start + 10_000))))
    return path.stat().st_size


def bench_rate(n: int, **options) -> None:
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "app.log"
        size = make_lines(log, n)
        ch = Channel.open(Path(d) / "state", min_free_bytes=0, capacity_bytes=1 << 40,
                          capacity_events=1 << 40)
        src = TailSource(TailOptions(paths=[str(log)], watch=False, **options), ch)
        c0, t0 = cpu(), time.perf_counter()
        src.run_once()
        wall, used = time.perf_counter() - t0, cpu() - c0
        stored = ch.stats().events
        ch.close()
        label = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
        print(f"rate [{label}]: {n:,} lines ({size / 1e6:.0f} MB) in {wall:.2f} s wall, {used:.2f} s CPU: "
              f"{n / wall:,.0f} lines/s, {size / wall / 1e6:.1f} MB/s; "
              f"{src.counters['batches']} transactions, {stored:,} events stored")


def bench_cutter(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "app.log"
        make_lines(log, n)
        data = log.read_bytes()
    cutter, enc, cur = LineCutter(2 << 20), Encoder(), Cursor()
    enc.begin({"host": "h", "file": "/var/log/app.log", "timestamp": "1700000000000"}, "g")
    t0 = time.perf_counter()
    count = 0
    for i in range(0, len(data), 256 * 1024):
        buf = cur.pending + data[i:i + 256 * 1024]
        count += len(cutter.consume(cur, buf, 1 << 30, enc))
    wall = time.perf_counter() - t0
    print(f"hot path alone (cut + encode, no channel): {count:,} lines in {wall:.2f} s: {count / wall:,.0f} lines/s")


def bench_idle(files: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        logs = Path(d) / "logs"
        logs.mkdir()
        for i in range(files):
            (logs / f"f{i:04d}.log").write_bytes(b"one line\n")
        ch = Channel.open(Path(d) / "state", min_free_bytes=0)
        src = TailSource(TailOptions(paths=[str(logs / "*.log")]), ch)
        stop = threading.Event()
        t = threading.Thread(target=src.run, args=(stop,))
        t.start()
        deadline = time.monotonic() + 60
        while ch.stats().events < files and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        fds = len(os.listdir("/proc/self/fd"))
        threads = threading.active_count()
        c0, t0 = cpu(), time.perf_counter()
        time.sleep(seconds)
        used, wall = cpu() - c0, time.perf_counter() - t0
        stop.set()
        src.wakeup()
        t.join()
        ch.close()
        print(f"idle: {files} quiet files for {wall:.0f} s: {used:.3f} s CPU ({100 * used / wall:.2f}% of one core); "
              f"open fds while idle {fds}; threads {threads} (this one, run(), watchdog's)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus (shared machine: figures are noisy)")
    bench_cutter(args.lines)
    bench_rate(args.lines)
    bench_rate(args.lines, batch_max_events=10_000, batch_max_bytes=8 << 20)
    bench_rate(args.lines, add_event_id=True)
    bench_rate(args.lines, add_host=False, add_file=False, add_timestamp=False)
    bench_idle(args.files, args.idle_seconds)


if __name__ == "__main__":
    main()
