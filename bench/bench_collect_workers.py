#!/usr/bin/env python3
"""``collect --workers 1`` against ``--workers 2``: the collector's receive rate, side by side in one run.

Writes N log-like lines of about 100 bytes (``--size``: another mean size, e.g. 1024; ``benchlib.make_lines``). Each sender is a light
process of this script: it reads the file, encodes it into batches of ``--batch-size`` events
once, connects, says it is ready, and on "go" sends every batch through ``CollectorClient``
with ``--in-flight`` calls pipelined (so what is measured is the collector, not the senders'
line splitting). ``--senders`` of them (4 by default) send the whole file each to a fresh
``collect`` (fsync per batch, the default, or ``--no-fsync``; ``--format text``); the rate is all events over the
time from "go" to the last acknowledgement, checked against the bytes in the output directory.
Collector CPU is the parent's plus every worker's (from /proc). Each run also prints where the
collector's threads spent the run (``/proc/<pid>/task/*/schedstat``, sampled every 20 ms so the
connection threads are counted before they end; a few small reads of /proc per sample): seconds
on a CPU, seconds runnable but waiting for one, and time slices (a thread that blocks, in a sync
or a read, starts a new one); and the machine's idle and iowait share over the run
(``/proc/stat``). The cases alternate (1, 2, 1,
2, ... for ``--rounds``) so a change in the machine's load hits both. Prints one line per run
and a summary with the load average.

With ``--base DIR`` (another checkout, e.g. ``git worktree add --detach /tmp/base main``) every
case runs on both trees in turn, each round alternating, with the same senders (this tree's) and
the same input; the summary gives each tree's medians and ratio.

Usage: python3 bench/bench_collect_workers.py [--lines N] [--size B] [--senders S] [--rounds R] [--workers 1,2]
                                              [--base DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import ROOT, Meter, cli, dir_bytes, loadavg, make_lines, stop  # noqa: E402


def sender(addr: str, path: str, batch: int, in_flight: int) -> None:
    from shipper.avroipc.flume_event import encode_event
    from shipper.sink.client import CollectorClient
    from shipper.transport import Address, ClientOptions

    lines = Path(path).read_bytes().splitlines()
    payloads = [(len(lines[i:i + batch]), b"".join(encode_event({}, b) for b in lines[i:i + batch]))
                for i in range(0, len(lines), batch)]
    with CollectorClient(Address.parse(addr), ClientOptions(connect_timeout=30, request_timeout=120)) as client:
        client.append_payload(0, b"")  # connected and handshaken before the clock starts
        print("ready", flush=True)
        sys.stdin.readline()
        t = os.times()
        client.append_payloads(payloads, window=in_flight)
        after = os.times()
    print(f"cpu {after.user + after.system - t.user - t.system}", flush=True)


def start_collect(out: Path, workers: int, *extra: str, tree: Path = ROOT) -> tuple[subprocess.Popen, str, list[int]]:
    import re
    import threading

    proc = subprocess.Popen(cli("collect", "--listen", "127.0.0.1:0", "--out", str(out), "--workers", str(workers),
                                *extra),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=tree)
    for raw in iter(proc.stderr.readline, b""):
        m = re.search(rb"listening on (\S+:\d+) \((?:\d+ workers, pids ([\d ]+); )?", raw)
        if m:
            threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
            pids = [int(p) for p in m.group(2).split()] if m.group(2) else []
            return proc, m.group(1).decode(), pids
    raise SystemExit("collect did not start")


class Sched:
    """The threads of some processes, sampled from ``/proc/<pid>/task/*/schedstat`` every 20 ms
    from :meth:`start` to :meth:`stop`: CPU seconds, seconds runnable waiting for a CPU, time
    slices. Threads that begin or end in between are counted for the part that was seen."""

    def __init__(self, pids: list[int]) -> None:
        import threading

        self.pids = pids
        self.first: dict[str, list[int]] = {}
        self.last: dict[str, list[int]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self, into_first: bool) -> None:
        for pid in self.pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                        v = [int(x) for x in f.read().split()[:3]]
                except (OSError, ValueError):
                    continue
                key = f"{pid}/{tid}"
                self.first.setdefault(key, v if into_first else [0, 0, 0])
                self.last[key] = v

    def _loop(self) -> None:
        while not self._done.wait(0.02):
            self._sample(False)

    def start(self) -> None:
        self._sample(True)
        self._thread.start()

    def stop(self) -> tuple[float, float, int]:
        self._done.set()
        self._thread.join()
        total = [0, 0, 0]
        for key, last in self.last.items():
            total = [t + b - a for t, a, b in zip(total, self.first[key], last)]
        return total[0] / 1e9, total[1] / 1e9, total[2]


def cpu_times() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def run(src: Path, size: int, lines: int, workers: int, senders: int, batch: int, in_flight: int,
        fsync: bool = True, tree: Path = ROOT) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as out:
        col, addr, pids = start_collect(Path(out) / "out", workers, *([] if fsync else ["--no-fsync"]), tree=tree)
        meters = [Meter(pid) for pid in [col.pid, *pids]]
        try:
            procs = [subprocess.Popen([sys.executable, __file__, "--sender", addr, str(src), str(batch), str(in_flight)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT) for _ in range(senders)]
            for p in procs:
                assert p.stdout.readline().strip() == b"ready"
            load = loadavg()
            sched = Sched([col.pid, *pids])
            sched.start()
            stat0 = cpu_times()
            t0 = time.monotonic()
            for p in procs:
                p.stdin.write(b"go\n")
                p.stdin.flush()
            sender_cpu = 0.0
            for p in procs:
                line = p.stdout.readline().split()
                if p.wait(600) != 0 or not line:
                    raise SystemExit("a sender failed")
                sender_cpu += float(line[1])
            took = time.monotonic() - t0
            stat = [b - a for a, b in zip(stat0, cpu_times())]
            on_cpu, waiting, slices = sched.stop()
            cpu = sum(m.cpu_since_start() for m in meters)
        finally:
            stop(col)
        written = dir_bytes(Path(out) / "out")
        assert written == size * senders, (written, size * senders)
    total = lines * senders
    return {"workers": workers, "rate": total / took, "took": took, "cpu_per_m": cpu / total * 1e6,
            "sender_cpu_per_m": sender_cpu / total * 1e6, "load": load, "on_cpu": on_cpu, "waiting": waiting,
            "slices": slices, "idle": stat[3] / sum(stat), "iowait": stat[4] / sum(stat)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--sender":
        sender(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=300_000, help="lines per sender (each sends the whole file)")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--size", type=int, default=100, help="mean line size in bytes (log-like lines)")
    ap.add_argument("--no-fsync", action="store_true", help="collect --no-fsync (takes the disk out of the figure)")
    ap.add_argument("--base", type=Path, help="another checkout whose collect runs each case too, alternating")
    args = ap.parse_args()
    trees = {"this": ROOT, **({"base": args.base.resolve()} if args.base else {})}
    cases = [(t, int(w)) for t in trees for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-workers-in-") as tmp:
        src = Path(tmp) / "in.log"
        size = make_lines(src, args.lines, args.size)
        print(f"{args.lines:,} lines of ~{args.size} B ({size / 1e6:.1f} MB) x {args.senders} senders, batches of "
              f"{args.batch_size}, in-flight {args.in_flight}, {'no fsync' if args.no_fsync else 'fsync per batch'}; {os.cpu_count()} CPUs; load {loadavg()}")
        results: dict[tuple[str, int], list[dict]] = {case: [] for case in cases}
        for rnd in range(args.rounds):
            for tree, w in cases:
                r = run(src, size, args.lines, w, args.senders, args.batch_size, args.in_flight, not args.no_fsync,
                        trees[tree])
                results[(tree, w)].append(r)
                print(f"round {rnd + 1} {tree} workers={w}: {r['rate']:>10,.0f} events/s ({r['took']:.2f} s), collector "
                      f"CPU {r['cpu_per_m']:.2f} s per M events (senders {r['sender_cpu_per_m']:.2f}), load {r['load']}",
                      flush=True)
                print(f"    collector threads: on a CPU {r['on_cpu']:.2f} s, runnable waiting for one {r['waiting']:.2f} s, "
                      f"{r['slices']:,} time slices; machine idle {r['idle']:.0%}, iowait {r['iowait']:.0%}", flush=True)
        print("summary (median of the rounds):")
        for tree in trees:
            base = None
            for t, w in cases:
                if t != tree:
                    continue
                rates = sorted(r["rate"] for r in results[(t, w)])
                median = rates[len(rates) // 2]
                base = base or median
                print(f"  {tree} workers={w}: {median:>10,.0f} events/s  ({median / base:.2f}x workers={cases[0][1]}); "
                      f"all: {', '.join(f'{x:,.0f}' for x in rates)}")
        print(f"load average at the end: {loadavg()}")


if __name__ == "__main__":
    main()
