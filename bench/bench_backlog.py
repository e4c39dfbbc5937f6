#!/usr/bin/env python3
"""Peak RSS of the agent while it fills its channel with a 1 GB backlog and then drains it.

One file of log-like ~1 KiB lines (default 1,000,000 lines, ~1 GB) is tailed with
``flume-ship tail FILE --capacity 2GiB --backoff-max 2`` to a port where nothing listens yet, so
every line lands in the channel; once the status file says the channel holds them all, a
``flume-ship collect`` is started on that port and the agent drains the channel into it (done when
the collector's files hold every byte; then the agent is stopped). Printed
per phase: its duration and the agent's peak RSS (``VmHWM`` of the process, polled every 0.2 s,
cross-checked at the end with ``getrusage(RUSAGE_CHILDREN).ru_maxrss``), with the load average.

Usage: python3 bench/bench_backlog.py [--lines 1000000] [--size 1024] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import Meter, ROOT, cli, dir_bytes, loadavg, make_lines, stop  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def queued(state: Path) -> int:
    try:
        doc = json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return -1
    return int(doc.get("channel", {}).get("events") or 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        tmp = Path(tmp)
        src = tmp / "big.log"
        size = make_lines(src, args.lines, args.size)
        port = free_port()
        state = tmp / "state"
        load0 = loadavg()
        t0 = time.monotonic()
        tail = subprocess.Popen(cli("tail", str(src), "--to", f"127.0.0.1:{port}", "--state-dir", str(state),
                                    "--capacity", "2GiB", "--backoff-max", "2",
                                    "--status-interval", "0.5"),
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp / "tail.err", "wb"))
        meter = Meter(tail.pid)
        col = None
        try:
            while queued(state) < args.lines:
                if tail.poll() is not None or time.monotonic() - t0 > 1800:
                    raise SystemExit(f"tail exited or timed out while filling:\n"
                                     f"{(tmp / 'tail.err').read_text()[-2000:]}")
                time.sleep(0.2)
            fill_s = time.monotonic() - t0
            fill_rss = meter.peak_rss
            db = sum(p.stat().st_size for p in state.glob("channel.db*"))
            load1 = loadavg()
            t1 = time.monotonic()
            col = subprocess.Popen(cli("collect", "--listen", f"127.0.0.1:{port}", "--out", str(tmp / "out")),
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            peak = fill_rss
            while dir_bytes(tmp / "out") < size:
                peak = max(peak, meter.peak_rss)
                if tail.poll() is not None or time.monotonic() - t1 > 1800:
                    raise SystemExit(f"tail exited or the drain timed out:\n"
                                     f"{(tmp / 'tail.err').read_text()[-2000:]}")
                time.sleep(0.2)
            drain_s = time.monotonic() - t1
            peak = max(peak, meter.peak_rss)
            stop(tail)
            rc = tail.returncode
            children_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
            delivered = dir_bytes(tmp / "out")
            load2 = loadavg()
        finally:
            stop(tail)
            if col is not None:
                stop(col)
    res = {"lines": args.lines, "bytes": size, "channel_bytes_on_disk": db, "fill_s": fill_s,
           "fill_peak_rss": fill_rss, "drain_s": drain_s, "peak_rss": peak, "children_max_rss": children_max,
           "exit": rc, "delivered_bytes": delivered, "load": [load0, load1, load2]}
    print(f"fill {args.lines} lines ({size / 1e6:.0f} MB; channel {db / 1e6:.0f} MB on disk): {fill_s:.1f}s, "
          f"peak RSS {fill_rss / 2**20:.1f} MiB (load {load0})")
    print(f"drain to collect: {drain_s:.1f}s ({args.lines / drain_s:,.0f} events/s), exit {rc} after SIGTERM, "
          f"{delivered} bytes delivered (of {size}); peak RSS overall {peak / 2**20:.1f} MiB "
          f"(children's ru_maxrss, collect included: {children_max / 2**20:.1f} MiB) (load {load1} -> {load2})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
