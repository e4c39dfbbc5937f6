#!/usr/bin/env python3
"""The channel alone as the agent drives it: CPU, wall time and bytes written per million events.

    python3 bench/bench_channel_io.py [--base OTHER_CHECKOUT] [--events N] [--size B] [--rounds R]
                                      [--page-sizes 4096,16384,65536]

One case = a fresh state directory under /tmp, a source thread putting log-like events
(``bench.benchlib.make_lines``, encoded as AvroFlumeEvents with a header, as the tail source does)
in 2,000-event puts with an offset record, while a sink thread takes 1,000-event leases and acks
each one (the agent's two channel users, without the file reading and the network). Each case
runs in a child process of its own; reported: CPU s (user + system, all threads) and wall s per
million events, bytes the process wrote to the file system (``/proc/self/io`` ``write_bytes``)
per byte of payload, and the time the sink thread spent waiting for the channel (``take``).

Cases: this tree with each ``--page-sizes`` value for a new channel (``PAGE_SIZE`` set before the
channel is created), and with ``--base`` the other checkout as it is. Cases alternate, round after
round. Figures are noisy on a shared machine; the load average is printed beside each.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import loadavg, make_lines  # noqa: E402

CHILD = r"""
import json, os, sys, threading, time, resource
from pathlib import Path
page_size, state, src, rounds_events = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
import shipper.channel.store as store
if page_size != "-":
    store.PAGE_SIZE = int(page_size)
from shipper.channel import Channel
from shipper.avroipc.flume_event import encode_event
lines = open(src, "rb").read().split(b"\n")[:-1]
events = [encode_event({"file": "/var/log/app/big.log"}, l) for l in lines]
payload = sum(map(len, events))
def wb():
    for line in open("/proc/self/io"):
        if line.startswith("write_bytes"):
            return int(line.split()[1])
ch = Channel.open(state, min_free_bytes=0)
w0, t0 = wb(), time.monotonic()
c0 = os.times()
done = threading.Event()
waited = [0.0]
def sink():
    got = 0
    while got < len(events):
        t = time.perf_counter()
        lease = ch.take(1000, 1 << 20)
        waited[0] += time.perf_counter() - t
        if lease is None:
            ch.wait_for_events(0.05)
            continue
        got += lease.count
        ch.ack(lease)
th = threading.Thread(target=sink)
th.start()
for i in range(0, len(events), 2000):
    ch.put(events[i:i + 2000], {"f": str(i).encode()})
th.join()
c1 = os.times()
wall = time.monotonic() - t0
ch.close()
w1 = wb()
ps = store.PAGE_SIZE if hasattr(store, "PAGE_SIZE") else 4096
print(json.dumps({"cpu": (c1.user - c0.user) + (c1.system - c0.system), "wall": wall,
                  "written": w1 - w0, "payload": payload, "take_wait": waited[0],
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run(root: Path, page_size: str, src: Path, work: Path, n: int) -> dict:
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", CHILD, page_size, str(state), str(src), str(n)],
                         env=env, capture_output=True, text=True, check=True).stdout
    shutil.rmtree(state, ignore_errors=True)
    res = json.loads(out.strip().splitlines()[-1])
    res["load"] = loadavg().split()[0]
    return res


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--page-sizes", default="4096,16384,65536")
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    cases = [(f"this tree, page {p}", here, p) for p in args.page_sizes.split(",")]
    if args.base:
        cases.insert(0, ("base", args.base.resolve(), "-"))
    work = Path(tempfile.mkdtemp(prefix="bench-chio-"))
    try:
        src = work / "lines.log"
        make_lines(src, args.events, args.size)
        rows: dict[str, list[dict]] = {name: [] for name, _, _ in cases}
        for r in range(args.rounds):
            for name, root, ps in cases:
                res = run(root, ps, src, work, args.events)
                rows[name].append(res)
                print(f"round {r + 1} {name}: {res['cpu']:.2f} CPU s, {res['wall']:.2f} s, "
                      f"{res['written'] / res['payload']:.2f}x written, load {res['load']}", flush=True)
        m = args.events / 1e6
        print(f"\n{args.events:,} events of ~{args.size} B lines; per million events, each round (median)\n")
        print("| case | CPU s | wall s | written / payload | sink's take s | load |")
        print("|---|---|---|---|---|---|")

        def show(xs, fmt="{:.2f}"):
            return " / ".join(fmt.format(x) for x in xs) + f" ({fmt.format(statistics.median(xs))})"

        for name, rs in rows.items():
            print(f"| {name} | {show([r['cpu'] / m for r in rs])} | {show([r['wall'] / m for r in rs])} "
                  f"| {show([r['written'] / r['payload'] for r in rs])} | {show([r['take_wait'] / m for r in rs])} "
                  f"| {' / '.join(r['load'] for r in rs)} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
