#!/usr/bin/env python3
"""More files than descriptors: flume-ship tail over 10,000 and 50,000 files under RLIMIT_NOFILE 1,024.

For each file count: N files of a few lines each, a few hundred of them growing (one line a second
each, from a writer thread) while the agent ships; ``flume-ship tail 'DIR/*.log'`` with default
settings runs under a soft and hard open-file limit of 1,024 (so it cannot raise it) into
``flume-ship collect``. Printed per case: seconds until every line written so far arrived, the peak
number of open descriptors of the agent (sampled every 50 ms from /proc), peak RSS, and the agent's
CPU over a quiet window once the writers stopped and idle files closed (``close_inactive``, 60 s by
default, so the settle covers it). Side by side, the cost floor: one Python process that opens,
reads and closes every file once.

Usage: python3 bench/bench_many_files.py [--files 10000 50000] [--growing 300] [--settle 65] [--window 30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import Meter, ROOT, cli, dir_bytes, loadavg, start_collect, stop  # noqa: E402

LIMIT = 1024


def limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def line(i: int, k: int) -> bytes:
    return b"file %06d line %06d some text a user might log here\n" % (i, k)


def floor(logs: Path) -> float:
    t0 = time.monotonic()
    for p in os.scandir(logs):
        with open(p.path, "rb") as fh:
            fh.read()
    return time.monotonic() - t0


def run_case(n: int, growing: int, settle: float, window: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-many-") as tmp:
        tmp = Path(tmp)
        logs = tmp / "logs"
        logs.mkdir()
        total = 0
        for i in range(n):
            data = b"".join(line(i, k) for k in range(3))
            (logs / f"f{i:06d}.log").write_bytes(data)
            total += len(data)
        floor_s = floor(logs)
        col, addr = start_collect(tmp / "out")
        tail = subprocess.Popen(cli("tail", str(logs / "*.log"), "--to", addr, "--state-dir", str(tmp / "state")),
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp / "tail.err", "wb"),
                                preexec_fn=limit_fds)
        meter = Meter(tail.pid)
        peak_fds = [0]
        stop_flag = threading.Event()
        written = [total]
        lock = threading.Lock()

        def sample() -> None:
            while not stop_flag.is_set():
                try:
                    peak_fds[0] = max(peak_fds[0], len(os.listdir(f"/proc/{tail.pid}/fd")))
                except OSError:
                    pass
                time.sleep(0.05)

        def write() -> None:
            k = 3
            while not stop_flag.is_set():
                for i in range(0, n, max(1, n // growing))[:growing]:
                    data = line(i, k)
                    with open(logs / f"f{i:06d}.log", "ab") as fh:
                        fh.write(data)
                    with lock:
                        written[0] += len(data)
                k += 1
                stop_flag.wait(1.0)

        threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=write, daemon=True)]
        start = time.monotonic()
        for t in threads:
            t.start()
        try:
            # Let the writers run for 20 s or until the initial files are shipped, whichever is later.
            while True:
                got = dir_bytes(tmp / "out")
                if got >= total and time.monotonic() - start >= 20:
                    break
                if tail.poll() is not None or time.monotonic() - start > 900:
                    raise SystemExit(f"tail exited or timed out:\n{(tmp / 'tail.err').read_text()[-2000:]}")
                time.sleep(0.1)
            stop_flag.set()
            threads[1].join()
            with lock:
                expected = written[0]
            while dir_bytes(tmp / "out") < expected:
                if tail.poll() is not None or time.monotonic() - start > 900:
                    raise SystemExit(f"tail exited or timed out:\n{(tmp / 'tail.err').read_text()[-2000:]}")
                time.sleep(0.1)
            shipped_s = time.monotonic() - start
            stop_flag.clear()
            threads[0] = threading.Thread(target=sample, daemon=True)
            threads[0].start()
            time.sleep(settle)
            load = loadavg()
            c0, t0 = meter.cpu(), time.monotonic()
            time.sleep(window)
            c1, t1 = meter.cpu(), time.monotonic()
            fds_quiet = len(os.listdir(f"/proc/{tail.pid}/fd"))
            stop_flag.set()
            dups = dir_bytes(tmp / "out") - expected
            warnings = (tmp / "tail.err").read_text().count("Too many open files")
            return {"files": n, "growing": growing, "bytes": expected, "shipped_s": shipped_s,
                    "peak_fds": peak_fds[0], "fds_quiet": fds_quiet, "rss": meter.peak_rss,
                    "idle_cpu_pct": (c1 - c0) / (t1 - t0) * 100, "extra_bytes": dups,
                    "emfile_lines": warnings, "floor_read_all_s": floor_s, "load": load}
        finally:
            stop_flag.set()
            stop(tail)
            stop(col)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--growing", type=int, default=300)
    ap.add_argument("--settle", type=float, default=65)
    ap.add_argument("--window", type=float, default=30)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    results = []
    for n in args.files:
        r = run_case(n, args.growing, args.settle, args.window)
        results.append(r)
        print(f"{n} files ({args.growing} growing), limit {LIMIT}: all shipped in {r['shipped_s']:.1f}s "
              f"(floor: read every file once {r['floor_read_all_s']:.2f}s); peak {r['peak_fds']} open fds, "
              f"{r['fds_quiet']} when quiet; peak RSS {r['rss'] / 2**20:.1f} MiB; idle CPU "
              f"{r['idle_cpu_pct']:.2f} % of a core; {r['extra_bytes']} bytes beyond those written; "
              f"{r['emfile_lines']} EMFILE lines (load {r['load']})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
