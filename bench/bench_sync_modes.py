#!/usr/bin/env python3
"""Append + sync on this disk, the ways a collector's writer could do it, side by side in one run.

Each case appends ``--chunk`` bytes (100,000 by default: one batch of 1,000 ~100 B events) and
makes them durable, ``--count`` times, in ``--procs`` processes at once (1 and 2: ``collect
--workers 1`` and ``2``, each worker with its own file), and prints the rate and the
per-append latency (write + sync) at p50 / p90 / p99. The cases:

* ``plain``: ``write`` (O_APPEND) then ``fdatasync``: what ``collect``'s writer does.
* ``reserve``: the same, with the file's blocks reserved ahead of the end
  (``fallocate(FALLOC_FL_KEEP_SIZE)``, 8 MiB at a time), so the sync does not allocate them; the
  size still changes with each append. (Built into collect's writer on branch ``fsync`` and
  measured there: no gain, not kept; docs/benchmarks.md.)
* ``odsync``: the file opened ``O_DSYNC``: each ``write`` returns once its bytes are durable.
* ``zeroed``: overwriting blocks written with zeros beforehand (8 MiB at a time, synced), so the
  sync has no metadata at all to write; shown for what it would buy, not as an option: the zeros
  cost a second write of every byte, and a file cut by a crash would end in zeros.

Cases alternate round by round, so a change in the machine's load hits them all; the summary is
the median of the rounds, with the load average.

Usage: python3 bench/bench_sync_modes.py [--chunk B] [--count N] [--rounds R] [--procs 1,2] [--dir D]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from multiprocessing import Process, Queue
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import loadavg  # noqa: E402

PREALLOCATE = 8 * 1024 * 1024  # reserved (or zeroed) ahead, at a time
MODES = ("plain", "reserve", "odsync", "zeroed")


def _load_fallocate():
    """fallocate(2) with FALLOC_FL_KEEP_SIZE from the C library (os.posix_fallocate cannot keep
    the size): a function (fd, offset, length) -> 0 or the errno; None off Linux."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return None
    fn = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).fallocate
    fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    return lambda fd, offset, length: 0 if fn(fd, 1, offset, length) == 0 else ctypes.get_errno()


_fallocate = _load_fallocate()


def one(mode: str, directory: str, chunk: int, count: int, out: Queue) -> None:
    data = os.urandom(chunk)
    path = os.path.join(directory, f"f{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | (os.O_DSYNC if mode == "odsync" else 0)
    flags |= 0 if mode == "zeroed" else os.O_APPEND
    fd = os.open(path, flags, 0o600)
    size = reserved = 0
    took = []
    try:
        for _ in range(count):
            if size + chunk > reserved and mode == "reserve":
                err = _fallocate(fd, reserved, size + chunk + PREALLOCATE - reserved)
                if err:
                    raise SystemExit(f"fallocate: {os.strerror(err)}")
                reserved = size + chunk + PREALLOCATE
            if size + chunk > reserved and mode == "zeroed":
                os.pwrite(fd, bytes(PREALLOCATE), reserved)
                os.fdatasync(fd)
                reserved += PREALLOCATE
            t = time.perf_counter()
            if mode == "zeroed":
                os.pwrite(fd, data, size)
            else:
                os.write(fd, data)
            if mode != "odsync":
                os.fdatasync(fd)
            took.append(time.perf_counter() - t)
            size += chunk
    finally:
        os.close(fd)
        os.unlink(path)
    out.put(took)


def run(mode: str, procs: int, chunk: int, count: int, directory: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-sync-", dir=directory) as d:
        q: Queue = Queue()
        ps = [Process(target=one, args=(mode, d, chunk, count, q)) for _ in range(procs)]
        t0 = time.perf_counter()
        for p in ps:
            p.start()
        took = [x for _ in ps for x in q.get()]
        for p in ps:
            p.join()
        wall = time.perf_counter() - t0
    took.sort()
    n = len(took)
    return {"mbs": procs * count * chunk / wall / 1e6, "p50": took[n // 2], "p90": took[int(n * 0.9)],
            "p99": took[int(n * 0.99)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk", type=int, default=100_000, help="bytes per append (one batch)")
    ap.add_argument("--count", type=int, default=1000, help="appends per process and case")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--procs", default="1,2", help="processes appending at once, each to its own file")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="a directory on the disk to measure")
    args = ap.parse_args()
    if _fallocate is None:
        raise SystemExit("no fallocate here (Linux only)")
    cases = [(m, int(p)) for p in args.procs.split(",") for m in args.modes.split(",")]
    print(f"{args.count} appends of {args.chunk:,} B + sync per process, in {args.dir}; {os.cpu_count()} CPUs; "
          f"load {loadavg()}")
    results: dict[tuple[str, int], list[dict]] = {c: [] for c in cases}
    for rnd in range(args.rounds):
        for mode, procs in cases:
            r = run(mode, procs, args.chunk, args.count, args.dir)
            results[(mode, procs)].append(r)
            print(f"round {rnd + 1} {mode:8s} x{procs}: {r['mbs']:7.0f} MB/s, append+sync p50 {r['p50'] * 1e3:.2f} "
                  f"p90 {r['p90'] * 1e3:.2f} p99 {r['p99'] * 1e3:.2f} ms, load {loadavg()}", flush=True)
    print("summary (median of the rounds):")
    for mode, procs in cases:
        rs = results[(mode, procs)]
        med = {k: statistics.median(r[k] for r in rs) for k in ("mbs", "p50", "p90", "p99")}
        print(f"  {mode:8s} x{procs}: {med['mbs']:7.0f} MB/s, p50 {med['p50'] * 1e3:.2f} p90 {med['p90'] * 1e3:.2f} "
              f"p99 {med['p99'] * 1e3:.2f} ms")
    print(f"load average at the end: {loadavg()}")


if __name__ == "__main__":
    main()
