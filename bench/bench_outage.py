"""How long delivery takes to resume after an outage of the only collector.

Runs a real ``flume-ship collect`` and ``flume-ship tail`` (default flags: backoff capped at 30 s,
penalty box capped at 30 s), writes lines at a steady rate, kills the collector with SIGKILL for
``--outage`` seconds, starts it again on the same port, and measures the time from the restart to
the first line written during the outage arriving. Repeats ``--runs`` times and prints each figure
and the median. Usage::

    python3 bench/bench_outage.py [--outage 10] [--runs 5] [--rate 1000]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def start_collector(out: Path, port: int) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen(
        [sys.executable, "-m", "shipper", "collect", "--listen", f"127.0.0.1:{port}", "--out", str(out)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    for line in p.stderr:
        if "listening on" in line:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    raise SystemExit(f"collector did not start (exit {p.wait()})")


def arrived(out: Path, marker: bytes) -> bool:
    for f in out.glob("*"):
        if f.is_file() and marker in f.read_bytes():
            return True
    return False


def one_run(outage: float, rate: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log, out = tmp / "app.log", tmp / "out"
        log.touch()
        collector, port = start_collector(out, 0)
        tail = subprocess.Popen(
            [sys.executable, "-m", "shipper", "tail", str(log), "--to", f"127.0.0.1:{port}",
             "--state-dir", str(tmp / "state"), "--connect-timeout", "1", *extra],
            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )
        stop = threading.Event()
        counter = {"n": 0}

        def writer() -> None:
            with open(log, "ab", buffering=0) as f:
                while not stop.is_set():
                    f.write(f"line {counter['n']:09d} {'x' * 80}\n".encode())
                    counter["n"] += 1
                    time.sleep(1.0 / rate)

        threading.Thread(target=writer, daemon=True).start()
        try:
            time.sleep(3)
            collector.send_signal(signal.SIGKILL)
            collector.wait()
            time.sleep(0.5)
            marker = f"line {counter['n']:09d} ".encode()  # written during the outage
            time.sleep(max(0.0, outage - 0.5))
            collector, _ = start_collector(out, port)
            restarted = time.monotonic()
            while not arrived(out, marker):
                if time.monotonic() - restarted > 120:
                    raise SystemExit("delivery did not resume within 120 s")
                time.sleep(0.05)
            return time.monotonic() - restarted
        finally:
            stop.set()
            tail.send_signal(signal.SIGTERM)
            tail.wait(30)
            collector.send_signal(signal.SIGTERM)
            collector.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outage", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rate", type=int, default=1000, help="lines per second written during the run")
    ap.add_argument("tail_args", nargs="*", help="extra flags for flume-ship tail (after --)")
    args = ap.parse_args()
    print(f"outage {args.outage:.0f} s of the only collector, {args.rate} lines/s, tail flags: "
          f"{' '.join(args.tail_args) or '(defaults)'}; load average {os.getloadavg()[0]:.1f}")
    figures = []
    for i in range(args.runs):
        took = one_run(args.outage, args.rate, args.tail_args)
        figures.append(took)
        print(f"run {i + 1}: delivery resumed {took:.2f} s after the collector came back")
    print(f"median {statistics.median(figures):.2f} s, max {max(figures):.2f} s over {len(figures)} runs")


if __name__ == "__main__":
    main()
