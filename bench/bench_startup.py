#!/usr/bin/env python3
"""Start-up and the reader's hot path, this tree beside another checkout, in one run.

Issue 17's two fixed-and-per-line parts, measured apart from the whole pipeline (whose figure,
``bench_cpu.py``, moves by ±0.2 s per M with the machine's load):

1. start-up: CPU seconds (user + system, the process and its children) of ``flume-ship --version``
   and of ``flume-ship tail FILE --once`` of a 1,000-line file into ``collect`` (what every cron
   run pays), each tree in turn, ``--runs`` times; medians. Both trees' bytecode is written first.
2. reader: the source's pattern over ``--lines`` ~100 B lines held in memory: 256 KiB reads, each
   appended to the leftover and cut by ``LineCutter.consume`` with the room left in a
   2,000-event batch, the batch joined when full (as the channel does). Process CPU seconds, best
   of ``--repeat``, in a child process per tree (each imports its own ``shipper``); both trees
   must produce the same bytes (an MD5 of every batch is compared).

Usage: python3 bench/bench_startup.py --base /path/to/other/checkout [--runs 20] [--lines 1000000]
Figures are noisy on a shared machine: the load average is printed with them.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import ab_parser, ab_trees, cli, loadavg, make_lines, precompile, start_collect, stop  # noqa: E402

READER = r"""
import hashlib, sys, time
sys.path.insert(0, sys.argv[1])
from shipper.tail.reader import Cursor, Encoder, LineCutter
data = open(sys.argv[2], "rb").read()
BATCH, READ = 2000, 256 * 1024

def run():
    enc = Encoder()
    enc.begin({"host": "host.example", "file": "/var/log/app/service.log", "timestamp": "1732960000000"}, "g")
    cutter, cur, pos, batch, digest, n = LineCutter(1 << 20), Cursor(), 0, [], hashlib.md5(), 0
    while True:
        if len(batch) >= BATCH:
            digest.update(b"".join(batch))
            n, batch = n + len(batch), []
        if cur.leftover:
            buf = cur.pending
        else:
            block = data[pos:pos + READ]
            if not block:
                break
            pos += len(block)
            buf = cur.pending + block if cur.pending else block
        batch += cutter.consume(cur, buf, BATCH - len(batch), enc)
    digest.update(b"".join(batch))
    return n + len(batch), digest.hexdigest()

best = None
for _ in range(int(sys.argv[3])):
    t = time.process_time()
    result = run()
    spent = time.process_time() - t
    best = spent if best is None else min(best, spent)
print(result[0], result[1], best)
"""


def cpu_of(argv: list[str], cwd: Path) -> float:
    """CPU seconds of one run of ``argv`` (it and its children), from this process's rusage."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    ap = ab_parser(__doc__)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    trees = ab_trees(args.base)
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    col = None
    try:
        for root in trees.values():
            precompile(root)
        small, big = work / "small.log", work / "big.log"
        make_lines(small, 1_000)
        make_lines(big, args.lines)
        col, addr = start_collect(work / "out")
        cases = {"--version": lambda: cli("--version"),
                 "tail --once, 1,000 lines": lambda: cli("tail", str(small), "--to", addr, "--once",
                                                         "--state-dir", str(work / "state"))}
        print(f"start-up, {args.runs} runs per tree, alternating; load {loadavg()}")
        print("| command | tree | CPU ms, median | mean |")
        print("|---|---|---:|---:|")
        for name, argv in cases.items():
            spent: dict[str, list[float]] = {k: [] for k in trees}
            for _ in range(args.runs):
                for tree, root in trees.items():
                    shutil.rmtree(work / "state", ignore_errors=True)
                    spent[tree].append(cpu_of(argv(), root) * 1000)
            for tree, values in spent.items():
                print(f"| {name} | {tree} | {statistics.median(values):.0f} | {statistics.mean(values):.0f} |")
        print(f"\nreader hot path, {args.lines:,} lines, best of {args.repeat}; load {loadavg()}")
        print("| tree | CPU s | events | MD5 of the batches |")
        print("|---|---:|---:|---|")
        digests = set()
        for tree, root in trees.items():
            out = subprocess.run([sys.executable, "-c", READER, str(root), str(big), str(args.repeat)],
                                 capture_output=True, text=True, check=True).stdout.split()
            digests.add(out[1])
            print(f"| {tree} | {float(out[2]):.3f} | {int(out[0]):,} | {out[1]} |")
        if len(digests) != 1:
            print("\nTHE TREES PRODUCED DIFFERENT BYTES")
    finally:
        if col is not None:
            stop(col)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
