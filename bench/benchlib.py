"""Shared pieces of the end-to-end benchmarks: data, processes, and what they cost.

* **Data.** :func:`make_lines` writes N lines of a given mean size (log-like text, a sequence number
  in each line, sizes varying by a few bytes). The collector writes every body back followed by a
  newline (``--format text``), so "everything arrived" is "the output directory holds as many bytes
  as the input file": :func:`wait_bytes` polls sizes, never contents, and costs nothing measurable.
* **Cost of a process.** :class:`Meter` reads ``/proc/PID/stat`` (user + system CPU ticks) and
  ``/proc/PID/status`` (``VmHWM``: the peak resident set, kept by the kernel, so no sample can miss
  the peak) for the process and its threads, including a JVM.
* **Machine.** :func:`machine` describes CPU, memory, kernel, Python, Java and the file system,
  plus the load average at the moment of the call (the machine is shared: figures are noisy).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def ab_parser(doc: str):
    """An argument parser for an A/B benchmark: described by ``doc``'s first line, with ``--base``."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--base", required=True, help="another checkout of flume-ship (e.g. main's tree)")
    return ap


def ab_trees(base: str) -> dict[str, Path]:
    """The two trees of an A/B run: ``base`` (another checkout, checked) and this one."""
    root = Path(base).resolve()
    if not (root / "shipper" / "__main__.py").is_file():
        raise SystemExit(f"--base {root}: not a flume-ship checkout (no shipper/__main__.py)")
    return {"base": root, "this": ROOT}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "shipper", *args]


_VOCAB = (b"user session request response cache miss hit db query timeout retry connection pool worker thread "
          b"queue message payload handler service upstream downstream latency error warning info debug trace auth "
          b"token login logout order item cart checkout payment invoice shipment customer account profile settings "
          b"config reload start stop ready health check metrics export import batch stream file read write open "
          b"close").split()
_KEYS = (b"user_id", b"order", b"trace", b"span", b"bytes", b"ms", b"status", b"path", b"ip", b"host")
_POOL = 20_000  # distinct message tails: 2-20 MB apart, far beyond any codec's window or a 1 MiB chunk


def _tails(size: int, seed: int = 1) -> list[bytes]:
    """Log-like message tails of about ``size`` bytes: words, counters, hex ids and addresses.
    They compress about as real logs do (~3x with zlib level 1, ~2-2.5x with LZ4), not like
    lines padded with one repeated string, which would flatter any compression."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(_POOL):
        parts, n = [], 0
        target = max(8, size + rng.randrange(-size // 10, size // 10 + 1))
        while n < target:
            r = rng.random()
            if r < 0.8:
                p = rng.choice(_VOCAB)
            elif r < 0.92:
                p = rng.choice(_KEYS) + b"=%d" % rng.randrange(100000)
            elif r < 0.97:
                p = b"%s=%08x" % (rng.choice(_KEYS), rng.getrandbits(32))
            else:
                p = b"10.%d.%d.%d" % (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            parts.append(p)
            n += len(p) + 1
        out.append(b" ".join(parts))
    return out


def make_lines(path: Path, n: int, size: int = 100) -> int:
    """``n`` log-like lines of about ``size`` bytes on average (newline included); returns the
    file's size. Each line: a timestamp, a level, a counter, then a message tail (see _tails)."""
    head_len = len(b"2024-05-01T12:00:00.000Z INFO app[0000000]: ")
    tails = [t[:max(1, size - head_len - 1 + (len(t) - size))] for t in _tails(size)]
    levels = (b"INFO", b"INFO", b"INFO", b"WARN", b"DEBUG")
    with path.open("wb", buffering=1 << 20) as f:
        for i in range(n):
            f.write(b"2024-05-01T12:%02d:%02d.%03dZ %s app[%07d]: %s\n" % (
                i // 60000 % 60, i // 1000 % 60, i % 1000, levels[i % 5], i, tails[i % _POOL]))
    return path.stat().st_size


def dir_bytes(d: Path) -> int:
    total = 0
    try:
        with os.scandir(d) as it:
            for e in it:
                if e.is_file() and not e.name.startswith("."):
                    total += e.stat().st_size
    except FileNotFoundError:
        pass
    return total


def wait_bytes(d: Path, expected: int, timeout: float, procs=(), poll: float = 0.05) -> tuple[float, float]:
    """Poll until ``d`` holds ``expected`` bytes; (time of the first byte, time of the last) in
    ``time.monotonic()``. Raises if a process in ``procs`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    first = None
    while True:
        n = dir_bytes(d)
        now = time.monotonic()
        if n and first is None:
            first = now
        if n >= expected:
            return first or now, now
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[:4]} exited {p.returncode} with {n} of {expected} bytes delivered")
        if now > deadline:
            raise RuntimeError(f"only {n} of {expected} bytes arrived in {timeout:.0f}s")
        time.sleep(poll)


class Meter:
    """CPU seconds and peak RSS of one process (all its threads), read from /proc."""

    def __init__(self, pid: int):
        self.pid = pid
        self.cpu0 = self.cpu()

    def cpu(self) -> float:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
        except (FileNotFoundError, ProcessLookupError):
            return float("nan")

    def status(self, key: str) -> int:
        """A kB field of /proc/PID/status (VmHWM, VmRSS), in bytes."""
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
        return 0

    @property
    def peak_rss(self) -> int:
        return self.status("VmHWM")

    def cpu_since_start(self) -> float:
        return self.cpu() - self.cpu0


_COMPILED: set[Path] = set()


def precompile(root: Path = ROOT) -> None:
    """Write the bytecode of ``root``'s ``shipper`` package once, as an installed wheel has it.
    Under ``PYTHONDONTWRITEBYTECODE`` (set in some sandboxes and CI images) every run would
    otherwise compile the whole package again: ~0.08 CPU s no deployed agent pays."""
    if root in _COMPILED:
        return
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "shipper")], env=env,
                   stdout=subprocess.DEVNULL, check=True)
    _COMPILED.add(root)


def measure_ship(args: list[str], out: Path, size: int, timeout: float, col: subprocess.Popen,
                 root: Path = ROOT) -> dict:
    """Run ``flume-ship ARGS`` (the tree at ``root``) until ``out`` holds ``size`` bytes; its wall
    time (from its start), steady time (first byte to last), CPU seconds and peak RSS. Stopped
    afterwards."""
    precompile(root)
    t0 = time.monotonic()
    proc = subprocess.Popen(cli(*args), cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meter = Meter(proc.pid)
    first, last = wait_bytes(out, size, timeout, [proc, col])
    res = {"wall": last - t0, "steady": last - first, "cpu": meter.cpu(), "rss": meter.peak_rss}
    stop(proc)
    return res


def start_collect(out: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cli("collect", "--listen", "127.0.0.1:0", "--out", str(out), *extra),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=ROOT)
    for raw in iter(proc.stderr.readline, b""):
        m = re.search(rb"listening on (\S+:\d+)", raw)
        if m:
            # Keep draining its log so a full pipe never blocks it.
            import threading
            threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
            return proc, m.group(1).decode()
    raise SystemExit("collect did not start")


def stop(proc: subprocess.Popen, sig: int = 15, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _first_line(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def fs_type(path: Path) -> str:
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return kind


def machine(workdir: Path) -> dict[str, str]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical CPUs",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "java": _first_line(["java", "-version"]) if shutil.which("java") else "not installed",
        "filesystem": f"{fs_type(workdir)} ({workdir})",
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
