"""A busy collector beside a dead one: how long 50,000 lines take to deliver.

    python3 bench/bench_busy.py [--lines N] [--tree DIR ...]

The scenario of issue 16: the first collector is black-holed (connections accepted, nothing ever
answered: each try costs --request-timeout), the second answers FAILED five times (alive, its
channel full) and then OK. `tail --once --connect-timeout 1 --request-timeout 2` ships N lines
to them; the script prints the wall time, the lines delivered and the duplicates, once per source
tree given with --tree (default: this tree), in one run, so a tree from before the busy back-off
(`git worktree add /tmp/before main`) can be measured side by side. The collector and the fault
proxies come from this tree; only the shipper under test changes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faultproxy import FaultProxy  # noqa: E402
from tests.reliability.harness import Collector  # noqa: E402


def run(tree: Path, lines: int) -> tuple[float, int, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        log = t / "a.log"
        log.write_bytes(b"".join(b"line %08d\n" % i for i in range(lines)))
        col = Collector(t / "out")
        hole = FaultProxy(("127.0.0.1", col.port), "blackhole")
        busy = FaultProxy(("127.0.0.1", col.port), "failed", failed_budget=5)
        try:
            started = time.monotonic()
            rc = subprocess.run([sys.executable, "-m", "shipper", "tail", "--once", str(log), "--to",
                                 f"{hole.address},{busy.address}", "--state-dir", str(t / "st"),
                                 "--connect-timeout", "1", "--request-timeout", "2"], cwd=str(tree),
                                env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
                                timeout=600).returncode
            took = time.monotonic() - started
            bodies = col.bodies()
            return took, len(set(bodies)), len(bodies) - len(set(bodies)), rc
        finally:
            hole.close()
            busy.close()
            col.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=50_000)
    ap.add_argument("--tree", action="append", type=Path, help="a source tree to measure (repeatable)")
    args = ap.parse_args()
    trees = args.tree or [ROOT]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'tree':40} {'seconds':>8} {'delivered':>10} {'duplicates':>10} {'exit':>5}")
    for tree in trees:
        took, got, dup, rc = run(tree, args.lines)
        print(f"{str(tree):40} {took:8.1f} {got:10d} {dup:10d} {rc:5d}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
