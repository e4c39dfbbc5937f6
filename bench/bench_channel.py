"""Channel throughput: put + take + ack events/s, next to raw append + fsync of the same bytes.

    python3 bench/bench_channel.py [--dir DIR] [--events N] [--size BYTES]

For each batch size (100 and 1,000 events of ~100 bytes):
  * channel, serial:    put(batch) -> take(batch) -> ack(lease), one thread (2 commits per batch;
                        each put is one stored chunk, since the default chunk is 1,000 events);
  * channel, pipelined: a writer thread puts while a sink thread takes and acks (as in the agent);
  * raw file:           append the batch (4-byte length + bytes per event) and fsync, per batch.
All three run in the same directory in the same run (default: a temporary directory under /tmp;
pass --dir to measure the disk the state directory will live on). The machine is shared, so
figures are noisy: compare them within one run, not across runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import tempfile
import threading
import time

from shipper.channel import CHUNK_BYTES, CHUNK_EVENTS, Channel


def fs_type(path: str) -> str:
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            _, mnt, typ = line.split()[:3]
            if path.startswith(mnt) and len(mnt) > len(best):
                best, kind = mnt, typ
    return kind


def channel_serial(d: str, batch: list[bytes], rounds: int) -> float:
    with Channel.open(d, min_free_bytes=0) as ch:
        t0 = time.perf_counter()
        for i in range(rounds):
            ch.put(batch, {"f": b"%d" % i})
            ch.ack(ch.take(len(batch), 1 << 30))
        return rounds * len(batch) / (time.perf_counter() - t0)


def channel_pipelined(d: str, batch: list[bytes], rounds: int) -> float:
    total = rounds * len(batch)
    with Channel.open(d, min_free_bytes=0) as ch:
        def sink():
            done = 0
            while done < total:
                lease = ch.take(len(batch), 1 << 30)
                if lease is None:
                    ch.wait_for_events(1.0)
                    continue
                ch.ack(lease)
                done += lease.count  # the sink sends lease.payload: no per-event work

        t = threading.Thread(target=sink)
        t0 = time.perf_counter()
        t.start()
        for i in range(rounds):
            ch.put(batch, {"f": b"%d" % i})
        t.join()
        return total / (time.perf_counter() - t0)


def raw_fsync(d: str, batch: list[bytes], rounds: int) -> float:
    path = os.path.join(d, "raw.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(rounds):
            os.write(fd, b"".join(struct.pack(">I", len(e)) + e for e in batch))
            os.fsync(fd)
        return rounds * len(batch) / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where to create the scratch directories (default /tmp)")
    ap.add_argument("--events", type=int, default=100_000, help="events per measurement")
    ap.add_argument("--size", type=int, default=100, help="bytes per event")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bench-channel-", dir=args.dir)
    print(f"scratch: {base} ({fs_type(os.path.realpath(base))}); {args.events} events of {args.size} bytes each; "
          f"chunks of up to {CHUNK_EVENTS} events / {CHUNK_BYTES} bytes; load average {os.getloadavg()[0]:.2f}")
    print(f"{'batch':>6} {'channel serial':>16} {'channel pipelined':>18} {'raw append+fsync':>17}   (events/s)")
    try:
        for size in (100, 1000):
            batch = [(b"%08d " % i).ljust(args.size, b"x") for i in range(size)]
            rounds = max(1, args.events // size)
            figures = []
            for fn in (channel_serial, channel_pipelined, raw_fsync):
                d = tempfile.mkdtemp(dir=base)
                figures.append(fn(d, batch, rounds))
                shutil.rmtree(d)
            print(f"{size:>6} {figures[0]:>16,.0f} {figures[1]:>18,.0f} {figures[2]:>17,.0f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
