#!/usr/bin/env python3
"""Event rules, side by side with the plain line path, in one run.

    python3 bench/bench_rules.py [--lines 1000000] [--no-pipeline]

The input: N lines of ~100 bytes; every 50th line is a DEBUG line (the exclude regex drops it) and
every 500th log line is followed by a 12-line Java stack trace (the exception line, `at` frames,
`Caused by:`, `... N more`). Cases, each on the same file:

1. hot path alone (cut + encode, no channel): LineCutter vs EventCutter with ``--multiline java``
   plus ``--exclude-lines DEBUG``, and EventCutter with extraction + event time on top;
2. the tail source alone: ``TailSource.run_once()`` into a real SQLite channel (WAL,
   synchronous=FULL), no rules vs java + exclude;
3. the whole pipeline: ``flume-ship tail --once`` into ``flume-ship collect`` (real processes,
   loopback, fsync per batch), no rules vs java + exclude; wall time from start to exit 0 (start-up
   included: every event acknowledged).

Rates are *input lines* per second of wall time. The machine is shared: report the load average.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shipper.channel import Channel  # noqa: E402
from shipper.tail import TailOptions, TailSource  # noqa: E402
from shipper.tail.events import EventCutter  # noqa: E402
from shipper.tail.reader import Cursor, Encoder, LineCutter  # noqa: E402
from shipper.tail.rules import Rules, rules_from  # noqa: E402

TRACE = (b"java.lang.IllegalStateException: connection pool exhausted after 30000 ms\n"
         + b"".join(b"\tat com.example.service.Handler%d.handle(Handler%d.java:%d)\n" % (i, i, 40 + i)
                    for i in range(9))
         + b"Caused by: java.net.SocketTimeoutException: Read timed out\n\t... 9 more\n")
TRACE_LINES = TRACE.count(b"\n")

JAVA_EXCLUDE = dict(multiline="java", exclude_lines=["DEBUG"])
WITH_FIELDS = dict(multiline="java", exclude_lines=["DEBUG"],
                   extract={"regex": r"^(?P<time>\S+) (?P<level>[A-Z]+)"},
                   event_time={"format": "iso8601"})


def make_file(path: Path, n: int) -> tuple[int, int]:
    """Writes about n lines; returns (lines, bytes)."""
    out, count, i = [], 0, 0
    while count < n:
        level = b"DEBUG" if i % 50 == 49 else b"ERROR" if i % 500 == 499 else b"INFO "
        out.append(b"2024-05-01T12:00:00.000Z %s app[%08d]: request served path=/api/v1/items status=200 ms=12\n"
                   % (level, i))
        count += 1
        if i % 500 == 499:
            out.append(TRACE)
            count += TRACE_LINES
        i += 1
        if len(out) >= 10_000:
            with open(path, "ab") as fh:
                fh.write(b"".join(out))
            out = []
    with open(path, "ab") as fh:
        fh.write(b"".join(out))
    return count, path.stat().st_size


def hot_path(data: bytes, lines: int, label: str, rules: dict | None) -> None:
    if rules is None:
        cutter = LineCutter(2 << 20)
    else:
        cutter = EventCutter(rules_from(**rules), 2 << 20)
    enc, cur = Encoder(), Cursor()
    enc.begin({"host": "h", "file": "/var/log/app.log", "timestamp": "1700000000000"}, "g")
    t0 = time.perf_counter()
    events = 0
    for i in range(0, len(data), 256 * 1024):
        events += len(cutter.consume(cur, cur.pending + data[i:i + 256 * 1024], 1 << 30, enc))
    events += len(cutter.flush_partial(cur, enc))
    wall = time.perf_counter() - t0
    print(f"  hot path  {label:34s} {lines / wall:>11,.0f} lines/s  ({events:,} events, {wall:.2f} s)")


def source_alone(path: Path, lines: int, size: int, label: str, rules: dict | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        ch = Channel.open(Path(d) / "state", min_free_bytes=0, capacity_bytes=1 << 40, capacity_events=1 << 40)
        opts = TailOptions(paths=[str(path)], watch=False, rules=rules_from(**rules) if rules else Rules())
        src = TailSource(opts, ch)
        c0, t0 = cpu(), time.perf_counter()
        src.run_once()
        wall, used = time.perf_counter() - t0, cpu() - c0
        stored = ch.stats().events
        ch.close()
    print(f"  source    {label:34s} {lines / wall:>11,.0f} lines/s  {size / wall / 1e6:5.1f} MB/s  "
          f"({stored:,} events stored, {wall:.2f} s; {used:.2f} s CPU: {lines / used:,.0f} lines per CPU-s)")


def cpu(children: bool = False) -> float:
    t = os.times()
    return t.children_user + t.children_system if children else t.user + t.system


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "shipper", *args]


def pipeline(path: Path, lines: int, size: int, label: str, flags: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out"
        col = subprocess.Popen(cli("collect", "--listen", "127.0.0.1:0", "--out", str(out), "--format", "text"),
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=ROOT)
        addr = None
        for raw in iter(col.stderr.readline, b""):
            m = re.search(rb"listening on (\S+:\d+)", raw)
            if m:
                addr = m.group(1).decode()
                break
        try:
            c0, t0 = cpu(children=True), time.perf_counter()
            tail = subprocess.run(cli("tail", str(path), "--to", addr, "--state-dir", str(Path(d) / "state"),
                                      "--once", "--min-free", "1K", *flags),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
            wall, used = time.perf_counter() - t0, cpu(children=True) - c0
        finally:
            col.terminate()
            col.wait(60)
        if tail.returncode:
            raise SystemExit(f"tail --once failed ({tail.returncode}): {tail.stderr.decode()[-2000:]}")
        written = sum(p.stat().st_size for p in out.glob("events-*"))
    print(f"  pipeline  {label:34s} {lines / wall:>11,.0f} lines/s  {size / wall / 1e6:5.1f} MB/s  "
          f"({written / 1e6:.1f} MB written by collect, {wall:.2f} s; tail's CPU {used:.2f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--no-pipeline", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "app.log"
        lines, size = make_file(path, args.lines)
        data = path.read_bytes()
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {lines:,} lines, {size / 1e6:.0f} MB")
        hot_path(data, lines, "no rules (LineCutter)", None)
        hot_path(data, lines, "java + exclude", JAVA_EXCLUDE)
        hot_path(data, lines, "java + exclude + extract + time", WITH_FIELDS)
        source_alone(path, lines, size, "no rules", None)
        source_alone(path, lines, size, "java + exclude", JAVA_EXCLUDE)
        if not args.no_pipeline:
            pipeline(path, lines, size, "no rules", [])
            pipeline(path, lines, size, "java + exclude", ["--multiline", "java", "--exclude-lines", "DEBUG"])
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
