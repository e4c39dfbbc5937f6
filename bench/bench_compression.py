#!/usr/bin/env python3
"""The channel with and without LZ4-compressed chunks, side by side in one run, on log-like lines.

    python3 bench/bench_compression.py [--dir DIR] [--mib N] [--sizes 100,1024]

For each line size, the events of ``bench.benchlib.make_lines`` (log-like: ~3x under zlib level 1,
~2x under LZ4, see there), Avro-encoded with the tail source's default headers, go through the
channel as in the agent: a writer thread puts batches of 1,000 with an offset record while a sink
thread takes and acks. Once with ``compress=False`` (format 2's way: payloads stored as they are)
and once with ``compress=True`` (format 3's default). Reported per case: events/s, payload MB/s,
bytes the process wrote to the filesystem per payload byte (``/proc/self/io`` ``write_bytes``:
WAL, checkpoint and database pages together; the write amplification), the channel's bytes on
disk per payload byte at its fullest (the backlog's cost), and CPU seconds per million events.
The machine is shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import loadavg, make_lines  # noqa: E402
from shipper.avroipc.flume_event import encode_event_with, encode_headers  # noqa: E402
from shipper.channel import DB_NAME, Channel  # noqa: E402


def write_bytes() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def events_of(path: Path) -> list[bytes]:
    headers = encode_headers({"timestamp": "1714564800000", "host": "bench", "file": str(path)})
    return [encode_event_with(headers, line) for line in path.read_bytes().split(b"\n")[:-1]]


def run(d: Path, events: list[bytes], compress: bool, batch: int = 1000) -> dict:
    shutil.rmtree(d, ignore_errors=True)
    total = len(events)
    payload = sum(map(len, events))
    peak = [0]
    with Channel.open(d, min_free_bytes=0, compress=compress) as ch:
        def sink():
            done = 0
            while done < total:
                lease = ch.take(batch, 1 << 30)
                if lease is None:
                    ch.wait_for_events(1.0)
                    continue
                ch.ack(lease)
                done += lease.count

        # first fill a backlog of a quarter of the data (a collector was away), then run both ends
        quarter = total // 4 // batch * batch
        w0, c0, t0 = write_bytes(), time.process_time(), time.perf_counter()
        for i in range(0, quarter, batch):
            ch.put(events[i:i + batch], {"f": b"%d" % i})
        peak[0] = sum(p.stat().st_size for p in d.glob(DB_NAME + "*"))
        t = threading.Thread(target=sink)
        t.start()
        for i in range(quarter, total, batch):
            ch.put(events[i:i + batch], {"f": b"%d" % i})
        t.join()
        wall, cpu, written = time.perf_counter() - t0, time.process_time() - c0, write_bytes() - w0
        backlog = sum(len(e) for e in events[:quarter])
    return {"eps": total / wall, "mbps": payload / wall / 1e6, "amp": written / payload,
            "backlog": peak[0] / backlog, "cpu_per_m": cpu / total * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="scratch directory (default: a new one under /tmp)")
    ap.add_argument("--mib", type=int, default=200, help="MiB of lines per size")
    ap.add_argument("--sizes", default="100,1024")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-compress-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {loadavg()}")
    print(f"{'line':>6} {'channel':>12} {'events/s':>10} {'MB/s':>7} {'written/payload':>16} "
          f"{'backlog disk/payload':>21} {'CPU s/M events':>15}")
    try:
        for size in map(int, args.sizes.split(",")):
            src = work / f"lines-{size}"
            make_lines(src, args.mib * (1 << 20) // size, size)
            events = events_of(src)
            src.unlink()
            for compress in (False, True):
                r = run(work / "state", events, compress)
                name = "LZ4 (fmt 3)" if compress else "as is"
                print(f"{size:>6} {name:>12} {r['eps']:>10,.0f} {r['mbps']:>7.1f} {r['amp']:>16.2f} "
                      f"{r['backlog']:>21.2f} {r['cpu_per_m']:>15.2f}", flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
