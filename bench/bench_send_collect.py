#!/usr/bin/env python3
"""send -> collect throughput over loopback, as real processes.

Generates N lines of about 100 bytes, starts ``flume-ship collect`` (fsync per batch, the
default), runs ``flume-ship send`` once per compression setting, checks that the collector wrote
every byte, and prints events/s and MB/s (of line payload) for the send process's wall time,
start-up included. Usage: python3 bench/bench_send_collect.py [--lines N] [--batch-size B]

Figures are noisy on a shared machine: run it more than once.
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


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "shipper", *args]


def make_lines(path: Path, n: int) -> int:
    filler = b"abcdefghijklmnopqrstuvwxyz0123456789" * 4
    with path.open("wb") as f:
        for i in range(n):
            f.write(b"2024-05-01T12:00:00.000Z INFO app[%07d]: request served in %3d ms " % (i, i % 997))
            f.write(filler[: 100 - 60 - (i % 7)] + b"\n")
    return path.stat().st_size


def start_collect(out: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        cli("collect", "--listen", "127.0.0.1:0", "--out", str(out), *extra),
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=ROOT,
    )
    for raw in iter(proc.stderr.readline, b""):
        m = re.search(rb"listening on (\S+:\d+)", raw)
        if m:
            return proc, m.group(1).decode()
    raise SystemExit("collect did not start")


IN_FLIGHT = 4  # set from --in-flight


def run_case(src: Path, size: int, lines: int, batch: int, compress: str, fsync: bool, clients: int = 1) -> None:
    """``clients`` send processes at once, each sending the whole file."""
    with tempfile.TemporaryDirectory(prefix="bench-out-") as out:
        extra = ["--compress", compress] + ([] if fsync else ["--no-fsync"])
        proc, addr = start_collect(Path(out), *extra)
        try:
            t0 = time.perf_counter()
            senders = [
                subprocess.Popen(
                    cli("send", str(src), "--to", addr, "--batch-size", str(batch), "--compress", compress,
                        "--in-flight", str(IN_FLIGHT)),
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                )
                for _ in range(clients)
            ]
            errors = [p.communicate()[1] for p in senders]
            took = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(60)
        if any(p.returncode for p in senders):
            raise SystemExit(f"send failed: {[e.decode() for e in errors]}")
        written = sum(p.stat().st_size for p in Path(out).glob("events-*"))
        assert written == size * clients, (written, size * clients)
    total = lines * clients
    print(
        f"{compress:8s} fsync={'on ' if fsync else 'off'} batch={batch:<5d} clients={clients}"
        f" {total / took:>10,.0f} events/s  {size * clients / took / 1e6:6.1f} MB/s"
        f"  ({took:.2f} s for {total:,} lines)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--in-flight", type=int, default=4, help="send --in-flight (calls pipelined)")
    args = ap.parse_args()
    global IN_FLIGHT
    IN_FLIGHT = args.in_flight
    with tempfile.TemporaryDirectory(prefix="bench-in-") as tmp:
        src = Path(tmp) / "in.log"
        size = make_lines(src, args.lines)
        print(f"{args.lines:,} lines, {size / 1e6:.1f} MB, {os.cpu_count()} CPUs, send --in-flight {IN_FLIGHT}; send and collect are separate processes")
        for compress in ("none", "deflate"):
            run_case(src, size, args.lines, args.batch_size, compress, fsync=True)
        run_case(src, size, args.lines, args.batch_size, "none", fsync=False)
        third = Path(tmp) / "third.log"
        third_size = make_lines(third, args.lines // 3)
        run_case(third, third_size, args.lines // 3, args.batch_size, "none", fsync=True, clients=3)


if __name__ == "__main__":
    main()
