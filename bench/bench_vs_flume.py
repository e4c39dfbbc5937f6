#!/usr/bin/env python3
"""flume-ship tail against a real Flume 1.11 agent, side by side on the same data, into the same collector.

For each data set (N lines of ~100 bytes, N lines of ~1 KiB; N = 1,000,000 by default) this runs,
one after the other on an idle collector each time:

* **cost floor**: one Python process reads the file in 256 KiB blocks, cuts lines and Avro-encodes
  each as an AvroFlumeEvent with the same headers (``shipper.avroipc.flume_event.encode_event_with``): what any
  Python shipper must pay before it stores or sends anything;
* **flume-ship**: ``flume-ship tail FILE --to COLLECTOR`` with a fresh state directory, defaults
  otherwise (SQLite channel with ``synchronous=FULL``: every batch put is fsynced before the offsets
  move; batches of 1,000);
* **Flume 1.11.0**: TAILDIR source -> file channel (fsync per transaction, its default) -> AvroSink
  (batch-size 1,000) in one JVM started through ``tests/interop/flume.py`` (Maven-resolved jars),
  with C2 enabled and ``-Xmx512m`` (the interop suite's JVM options favour start-up instead);
* ``flume-ship collect`` receive rate: ``flume-ship send`` (one, then two clients at once) into a
  fresh collector.

The collector is ``flume-ship collect --format text`` (fsync before every OK) for every case, so
"done" is "the output directory holds as many bytes as the input" (see bench/benchlib.py). Reported
per case: events/s and MB/s of line payload, over the wall time from process start to the last byte
(start-up included) and over the steady part (first byte to last byte); CPU seconds of the shipping
process per million events (start-up included); its peak RSS (VmHWM).

Usage: python3 bench/bench_vs_flume.py [--lines N] [--sizes 100,1024] [--json OUT] [--plots DIR]
Figures are noisy on a shared machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import (  # noqa: E402
    Meter, ROOT, cli, loadavg, machine, make_lines, measure_ship, start_collect, stop, wait_bytes,
)

FLUME_VERSION = "1.11.0"


def floor(src: Path, n: int) -> dict:
    """Read + cut + encode in this process, the same headers flume-ship adds by default."""
    from shipper.avroipc.flume_event import encode_event_with, encode_headers

    t0, c0 = time.perf_counter(), time.process_time()
    count = 0
    pending = b""
    with open(src, "rb", buffering=0) as f:
        while True:
            block = f.read(256 * 1024)
            if not block:
                break
            headers = encode_headers({"timestamp": str(int(time.time() * 1000)), "host": "bench",
                                      "file": str(src)})
            lines = (pending + block).split(b"\n")
            pending = lines.pop()
            encoded = [encode_event_with(headers, body) for body in lines]
            count += len(encoded)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert count == n, (count, n)
    import resource
    return {"wall": wall, "steady": wall, "cpu": cpu, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def run_shipper(src: Path, size: int, work: Path, timeout: float) -> dict:
    out = work / "out-ship"
    col, addr = start_collect(out)
    try:
        return measure_ship(["tail", str(src), "--to", addr, "--state-dir", str(work / "state-ship")],
                            out, size, timeout, col)
    finally:
        stop(col)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(work / "state-ship", ignore_errors=True)


def run_flume(src: Path, size: int, work: Path, timeout: float, n: int) -> dict:
    from tests.interop import flume

    out = work / "out-flume"
    col, addr = start_collect(out)
    agent = None
    try:
        cp = flume.resolve(FLUME_VERSION)  # the interop pom declares flume-taildir-source too
        fdir = work / "flume"
        props = {
            "sources.r1.type": "TAILDIR",
            "sources.r1.channels": "c1",
            "sources.r1.filegroups": "f1",
            "sources.r1.filegroups.f1": src,
            "sources.r1.positionFile": fdir / "taildir_position.json",
            "sources.r1.batchSize": 1000,
            "channels.c1.type": "file",
            "channels.c1.checkpointDir": fdir / "checkpoint",
            "channels.c1.dataDirs": fdir / "data",
            "channels.c1.capacity": max(2 * n, 100000),
            "channels.c1.transactionCapacity": 10000,
            "sinks.k1.type": "avro",
            "sinks.k1.channel": "c1",
            "sinks.k1.hostname": "127.0.0.1",
            "sinks.k1.port": addr.rsplit(":", 1)[1],
            "sinks.k1.batch-size": 1000,
        }
        fdir.mkdir(parents=True, exist_ok=True)
        conf = fdir / "a1.properties"
        conf.write_text(flume.render_conf("a1", props))
        t0 = time.monotonic()
        agent = flume.Jvm(f"flume {FLUME_VERSION} agent", cp, "org.apache.flume.node.Application",
                          ["-n", "a1", "-f", str(conf), "--no-reload-conf"], fdir / "a1.log",
                          extra_jvm=["-Xmx512m", "-XX:TieredStopAtLevel=4"])
        meter = Meter(agent.popen.pid)
        try:
            first, last = wait_bytes(out, size, timeout, [agent.popen, col])
        except RuntimeError as err:
            raise RuntimeError(f"{err}\n{agent.log_tail(40)}") from None
        res = {"wall": last - t0, "steady": last - first, "cpu": meter.cpu(), "rss": meter.peak_rss}
        return res
    finally:
        if agent is not None:
            agent.stop()
        stop(col)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(work / "flume", ignore_errors=True)


def run_collect(src: Path, size: int, work: Path, timeout: float, clients: int, *send_flags: str) -> dict:
    import subprocess

    out = work / "out-collect"
    col, addr = start_collect(out)
    meter = Meter(col.pid)
    try:
        t0 = time.monotonic()
        senders = [subprocess.Popen(cli("send", str(src), "--to", addr, *send_flags), cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(clients)]
        first, last = wait_bytes(out, size * clients, timeout, [col])
        for s in senders:
            s.wait(60)
        return {"wall": last - t0, "steady": last - first, "cpu": meter.cpu(), "rss": meter.peak_rss}
    finally:
        stop(col)
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--sizes", default="100,1024", help="mean line sizes in bytes, comma-separated")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a new one under /tmp)")
    ap.add_argument("--json", default=None, help="write the results here too")
    ap.add_argument("--plots", default=None, help="directory for PNG plots (matplotlib)")
    ap.add_argument("--skip-flume", action="store_true")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-vs-flume-", dir=args.dir))
    results = {"machine": machine(work), "lines": args.lines, "cases": []}
    for k, v in results["machine"].items():
        print(f"{k:>13}: {v}")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            src = work / f"in-{size}.log"
            nbytes = make_lines(src, args.lines, size)
            print(f"\n{args.lines:,} lines of ~{size} B ({nbytes / 1e6:.0f} MB); load average {loadavg()}")
            cases = [("cost floor (read + encode, 1 process)", lambda: floor(src, args.lines)),
                     ("flume-ship tail", lambda: run_shipper(src, nbytes, work, args.timeout))]
            if not args.skip_flume:
                cases.append((f"Flume {FLUME_VERSION} TAILDIR->file->Avro",
                              lambda: run_flume(src, nbytes, work, args.timeout, args.lines)))
            cases += [("flume-ship collect receive (1 send)", lambda: run_collect(src, nbytes, work, args.timeout, 1)),
                      ("flume-ship collect receive (2 sends)", lambda: run_collect(src, nbytes, work, args.timeout, 2))]
            for name, fn in cases:
                load = loadavg()
                try:
                    r = fn()
                except Exception as err:  # one failed case must not lose the others' figures
                    print(f"  {name}: FAILED: {err}")
                    results["cases"].append({"size": size, "case": name, "error": str(err)})
                    continue
                events = args.lines * (2 if "2 sends" in name else 1)
                mbytes = nbytes * (2 if "2 sends" in name else 1) / 1e6
                row = {"size": size, "case": name, "events": events, "load": load, **r,
                       "eps_wall": events / r["wall"], "eps_steady": events / r["steady"],
                       "mbs_steady": mbytes / r["steady"], "cpu_per_m": r["cpu"] / events * 1e6}
                results["cases"].append(row)
                print(f"  {name:<42} {row['eps_wall']:>9,.0f} ev/s wall  {row['eps_steady']:>9,.0f} ev/s steady "
                      f"{row['mbs_steady']:>6.1f} MB/s  {row['cpu_per_m']:>6.1f} CPU s/M ev  "
                      f"peak RSS {r['rss'] / 2**20:>6.1f} MiB  (load {load})")
            src.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = loadavg()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.plots:
        plot(results, Path(args.plots))


def plot(results: dict, outdir: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in results["cases"] if "error" not in r and "collect receive" not in r["case"]]
    sizes = sorted({r["size"] for r in rows})
    names = list(dict.fromkeys(r["case"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    metrics = [("eps_steady", "events/s (steady, log scale)", 1), ("cpu_per_m", "CPU seconds per million events", 1),
               ("rss", "peak RSS (MiB)", 2**20)]
    width = 0.8 / max(1, len(names))
    for ax, (key, title, div) in zip(axes, metrics):
        for i, name in enumerate(names):
            vals = [next((r[key] / div for r in rows if r["case"] == name and r["size"] == s), 0) for s in sizes]
            bars = ax.bar([x + i * width for x in range(len(sizes))], vals, width, label=name)
            ax.bar_label(bars, fmt="%.0f" if max(vals or [0]) > 20 else "%.1f", fontsize=7)
        ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(sizes))])
        ax.set_xticklabels([f"~{s} B lines" for s in sizes])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        if key == "eps_steady":
            ax.set_yscale("log")  # the in-process floor is an order of magnitude above both shippers
    axes[1].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{results['lines']:,} lines per set; load average at start {results['machine']['load average']}")
    fig.tight_layout()
    fig.savefig(outdir / "vs_flume.png", dpi=110)
    print(f"plot: {outdir / 'vs_flume.png'}")


if __name__ == "__main__":
    main()
