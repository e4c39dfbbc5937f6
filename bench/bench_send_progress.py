#!/usr/bin/env python3
"""What `send`'s progress display costs on its hot path, side by side in one run.

`send` reads a file line by line and encodes each line as an event; its progress display
(shipper.ops.progress.FileSendProgress) needs lines and bytes read, counted per line in plain
locals and reported once per batch (shipper.cli.send_ping._counted). This times split + encode of N
lines of ~100 bytes without and with that counting (best of 5), in process, no network: the
counting's share of the per-line cost. Usage: python3 bench/bench_send_progress.py [--lines N]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shipper.avroipc.flume_event import encode_event_with, encode_headers  # noqa: E402
from shipper.cli.send_ping import _counted  # noqa: E402
from shipper.ops.progress import FileSendProgress  # noqa: E402
from shipper.sink.client import split_lines  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=500_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    args = ap.parse_args()
    data = b"".join(b"2024-05-01T12:00:00.000Z INFO app[%07d]: request served in %3d ms %s\n"
                    % (i, i % 997, b"x" * (30 - i % 7)) for i in range(args.lines))
    headers = encode_headers({})
    progress = FileSendProgress("bench", len(data), args.batch_size, clock=time.monotonic, interval=0,
                                terminal=None, log=logging.getLogger("bench"))
    runs = {
        "split + encode": lambda: split_lines(io.BytesIO(data)),
        "split + encode + progress counting": lambda: split_lines(_counted(io.BytesIO(data), progress)),
    }
    print(f"{args.lines:,} lines of ~{len(data) // args.lines} bytes; load average {os.getloadavg()[0]:.2f}")
    for name, lines in runs.items():
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for line in lines():
                encode_event_with(headers, line)
            best = min(best, time.perf_counter() - started)
        print(f"  {name:<36} {args.lines / best:>12,.0f} lines/s  {best / args.lines * 1e9:6.0f} ns/line")


if __name__ == "__main__":
    main()
