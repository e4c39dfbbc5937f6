"""The reliability harness: real processes, numbered lines, and a ledger of what the collectors got.

Theory of operation
-------------------
Every scenario runs the real CLI as separate processes: ``flume-ship tail`` (one or more shippers),
``flume-ship collect`` (one or more collectors) and, where the path to a collector must break, the
fault-injecting proxy ``python -m tests.faultproxy`` driven over its stdin.

What is written is known exactly. A :class:`Stream` is one logical log (one writer): its lines are
``<name> <seq:08d> <padding>``, seq counting from 0, appended to whatever file currently carries the
stream (rotation moves the stream to a new file; the stream name is what ties the pieces together).
Collectors write one event body per line (``--format text``) into rolling files; the harness reads
them back per collector, in file-name order (names start with the UTC time the file was opened, so
name order is write order), and :func:`tally` compares them with the streams:

* **lost**: a seq of a stream that no collector holds. Some scenarios name seqs that may be lost
  without blame (``allowed_loss``: the copytruncate window, which no tailer can read); those are
  counted apart and must stay inside the named set.
* **duplicated**: every copy of a line beyond the first, over all collectors.
* **order**: within each collector, the first copies of the lines of one physical file must have
  rising seqs. A duplicate is a re-sent batch and may come later than newer lines; its first copy
  may not. A stream spread over several files by rotation (:meth:`Stream.new_file` marks where) is
  also checked across files, but that count (``cross_file_reorders``) is reported, not asserted:
  the promise is order per file.

A row of the session report (:data:`REPORT`) is written for every scenario: lines written, lost,
duplicated, the duplicate bound the scenario asserted (the batches in flight at its faults), and
the time to recover: from the moment the fault was repaired (or the shipper restarted) until the
last expected line was in a collector's file. That time is reported, never asserted (the machine is
shared); every wait has a generous timeout that only guards against a hang.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from shipper.sink.worker import SinkOptions
from tests.support import ROOT, Proc

BATCH = 200
SINKS = 1  # the default --sinks: one lane (more lanes: docs/channel.md, "Lanes")
# What one kill may make the agent send again: per lane, the leases in flight (--in-flight into
# collect, which promises ordered pipelining) plus the delivered one whose ack commits meanwhile
# (shipper/sink/worker.py, "Ordered pipelining"). Faults that leave the process alive keep the
# one-batch bound per lane: every delivered lease is still acked.
IN_FLIGHT = (SinkOptions().in_flight + 1) * BATCH * SINKS
LINE_PAD = 80  # bodies of ~100 bytes
# A failure guard for every wait (never a timing assertion); --soak scenarios get more.
DELIVERY_TIMEOUT = 120.0
STALL = 20.0  # no new line for this long while lines are missing: they are not coming

REPORT: list["Row"] = []

_LINE = re.compile(rb"^(\S+) (\d{8}) ")


# --- what we write --------------------------------------------------------------------------------

class Stream:
    """One writer's numbered lines; ``n`` lines were written so far (seqs 0..n-1)."""

    def __init__(self, name: str, path: Path, pad: int = LINE_PAD, noise: bool = False):
        self.name = name
        self.path = Path(path)
        self.pad = b"x" * pad
        self.noise = noise  # pad each line with its own random-looking hex: it does not compress
        self.n = 0
        self.lock = threading.Lock()
        self.breaks: list[int] = []  # seqs that start a new physical file (after a rotation)

    def new_file(self) -> None:
        """Mark that the lines from now on go to another file (a rename rotation happened)."""
        with self.lock:
            if not self.breaks or self.breaks[-1] != self.n:
                self.breaks.append(self.n)

    def segment(self, seq: int) -> int:
        return bisect.bisect_right(self.breaks, seq)

    def line(self, seq: int) -> bytes:
        pad = self.pad
        if self.noise:
            digest = hashlib.blake2b(b"%d" % seq).hexdigest().encode()
            pad = (digest * (len(pad) // len(digest) + 1))[:len(pad)]
        return b"%s %08d %s" % (self.name.encode(), seq, pad)

    def chunk(self, count: int) -> bytes:
        data = b"".join(self.line(i) + b"\n" for i in range(self.n, self.n + count))
        self.n += count
        return data

    def write(self, count: int, path: Path | None = None) -> None:
        """Append ``count`` lines in one write(2) (O_APPEND: whole lines even beside a truncation)."""
        with self.lock:
            data = self.chunk(count)
            fd = os.open(path or self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)


class SteadyWriter:
    """A thread appending ``chunk`` lines to each stream every ``interval`` seconds until stopped.

    ``before_write(stream)`` may return another path for this chunk (a writer that reopens its file
    by name after a rotation does exactly this).
    """

    def __init__(self, streams: list[Stream], chunk: int = 100, interval: float = 0.05):
        self.streams, self.chunk, self.interval = streams, chunk, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "SteadyWriter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            for s in self.streams:
                s.write(self.chunk)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)


# --- the processes --------------------------------------------------------------------------------

class Collector:
    """``flume-ship collect`` on 127.0.0.1; restartable on the same port and output directory."""

    def __init__(self, out: Path, port: int = 0, fmt: str = "text"):
        self.out, self.fmt = out, fmt
        self.proc: Proc | None = None
        self.port = port
        self.start()

    def start(self) -> None:
        self.proc = Proc("collect", "--listen", f"127.0.0.1:{self.port}", "--out", str(self.out),
                         "--format", self.fmt)
        m = self.proc.wait_for(r"listening on \S+:(\d+)")
        self.port = int(m.group(1))

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def files(self) -> list[Path]:
        if not self.out.exists():
            return []
        return sorted(p for p in self.out.iterdir() if p.is_file() and not p.name.startswith("."))

    def bodies(self) -> list[bytes]:
        out: list[bytes] = []
        for p in self.files():
            data = p.read_bytes()
            cut = data.rfind(b"\n") + 1  # a batch being written right now is seen whole next time
            out.extend(data[:cut].splitlines())
        return out


class ProxyProc:
    """The fault-injecting proxy as its own process (``python -m tests.faultproxy``)."""

    def __init__(self, upstream: str, mode: str = "pass"):
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.faultproxy", "0", upstream, mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=ROOT, text=True, bufsize=1,
        )
        first = self.popen.stdout.readline()
        m = re.match(r"proxy on (\S+)", first)
        if not m:
            self.close()
            raise AssertionError(f"the proxy did not start: {first!r}")
        self.address = m.group(1)

    def command(self, word: str) -> str:
        self.popen.stdin.write(word + "\n")
        self.popen.stdin.flush()
        answer = self.popen.stdout.readline()
        if not answer:
            raise AssertionError(f"the proxy exited ({self.popen.poll()}) on {word!r}")
        return answer.strip()

    def set_mode(self, mode: str, drop: bool = False) -> None:
        """Switch mode; ``drop`` also resets the open connections so the fault applies at once."""
        self.command(mode)
        if drop:
            self.command("drop")

    @property
    def connections(self) -> int:
        return int(self.command("stats").split()[1])

    def close(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.stdin.close()
                self.popen.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.popen.kill()
                self.popen.wait()


def tail_argv(paths: list[str], to: str, state: Path, *extra: str, batch: int = BATCH) -> list[str]:
    return [
        "tail", *paths, "--to", to, "--state-dir", str(state),
        "--batch-size", str(batch), "--linger", "0.05",
        "--connect-timeout", "1", "--request-timeout", "2",
        "--backoff-max", "1", "--max-penalty", "2",
        "--min-free", "1K",
        *extra,
    ]


def start_tail(paths: list[str] | str, to: str, state: Path, *extra: str, batch: int = BATCH) -> Proc:
    if isinstance(paths, str):
        paths = [paths]
    proc = Proc(*tail_argv([str(p) for p in paths], to, state, *extra, batch=batch))
    proc.wait_for(r"shipping ")
    return proc


# --- what arrived ---------------------------------------------------------------------------------

@dataclass
class Tally:
    written: int = 0
    lost: int = 0
    allowed_lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    cross_file_reorders: int = 0
    stalled: bool = False
    logs: str = ""
    other: int = 0  # bodies that are not stream lines (counted by the scenario itself)
    lost_examples: list = field(default_factory=list)
    order_examples: list = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.lost == 0


def tally(streams: list[Stream], per_collector: list[list[bytes]],
          allowed_loss: dict[str, set[int]] | None = None) -> Tally:
    allowed_loss = allowed_loss or {}
    names = {s.name.encode(): s for s in streams}
    counts: dict[bytes, dict[int, int]] = {n: {} for n in names}
    t = Tally(written=sum(s.n for s in streams))
    for bodies in per_collector:
        last: dict[tuple, int] = {}
        last_stream: dict[bytes, int] = {}
        seen_here: dict[bytes, set[int]] = {}
        for body in bodies:
            m = _LINE.match(body)
            if not m or m.group(1) not in names:
                t.other += 1
                continue
            name, seq = m.group(1), int(m.group(2))
            c = counts[name]
            c[seq] = c.get(seq, 0) + 1
            here = seen_here.setdefault(name, set())
            if seq in here:
                continue
            here.add(seq)
            if c[seq] == 1:  # first copy anywhere: must not come before a newer first copy here
                key = (name, names[name].segment(seq))
                if seq < last.get(key, -1):
                    t.out_of_order += 1
                    if len(t.order_examples) < 3:
                        t.order_examples.append((name.decode(), seq, last[key]))
                elif seq < last_stream.get(name, -1):
                    t.cross_file_reorders += 1
                last[key] = max(seq, last.get(key, -1))
                last_stream[name] = max(seq, last_stream.get(name, -1))
    for name, s in names.items():
        c = counts[name]
        t.duplicated += sum(v - 1 for v in c.values())
        ok_to_lose = allowed_loss.get(s.name, set())
        for seq in range(s.n):
            if seq not in c:
                if seq in ok_to_lose:
                    t.allowed_lost += 1
                else:
                    t.lost += 1
                    if len(t.lost_examples) < 3:
                        t.lost_examples.append((s.name, seq))
    return t


def wait_delivered(collectors: list[Collector], streams: list[Stream], procs=(),
                   allowed_loss: dict[str, set[int]] | None = None,
                   timeout: float = DELIVERY_TIMEOUT, stall: float = STALL) -> Tally:
    """Poll until every line of every stream arrived (or is an allowed loss); the tally.

    Gives up, returning a tally with ``stalled`` set and the processes' logs, when a process exits,
    when nothing new arrived for ``stall`` seconds, or after ``timeout``: failure guards that let the
    scenario record what it saw before :func:`check` fails it.
    """
    deadline = time.monotonic() + timeout
    progress, progress_at = -1, time.monotonic()
    while True:
        t = tally(streams, [c.bodies() for c in collectors], allowed_loss)
        if t.lost == 0:
            return t
        now = time.monotonic()
        got = t.written - t.lost
        if got != progress:
            progress, progress_at = got, now
        dead = [p for p in procs if p.popen.poll() is not None]
        if dead or now > deadline or now - progress_at > stall:
            t.stalled = True
            why = (f"{' '.join(dead[0].argv[2:4])} exited {dead[0].popen.returncode}" if dead
                   else f"nothing new for {now - progress_at:.0f}s")
            t.logs = why + "\n" + "\n".join(f"--- {' '.join(p.argv[2:])}\n{p.stderr[-3000:]}" for p in procs)
            return t
        time.sleep(0.25)


def failed_sends(state: Path, timeout: float = 15.0) -> int:
    """Calls the agent's sink saw fail (each one re-sends at most the batch it carried: the
    at-least-once duplicates), from a status file the agent wrote after this call began."""
    import json

    since = time.time()
    deadline = time.monotonic() + timeout
    while True:
        try:
            doc = json.loads((state / "status.json").read_text())
            if doc.get("written_at", 0) > since:
                return int(doc["totals"]["send_failures"])
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no fresh status file in {state} after {timeout:.0f}s")
        time.sleep(0.2)


# --- the report -----------------------------------------------------------------------------------

@dataclass
class Row:
    scenario: str
    written: int
    lost: int
    duplicated: int
    dup_bound: int | None
    recover_s: float | None
    note: str = ""


def record(scenario: str, t: Tally | None, dup_bound: int | None, recover_s: float | None,
           note: str = "") -> Row:
    if t is None:
        row = Row(scenario, 0, 0, 0, dup_bound, recover_s, note)
    else:
        lost_note = f"{t.allowed_lost} lost in copytruncate windows; " if t.allowed_lost else ""
        reorder_note = f"{t.cross_file_reorders} lines before an older file's; " if t.cross_file_reorders else ""
        gave_up = f"gave up: {t.logs.splitlines()[0]}; " if t.stalled else ""
        row = Row(scenario, t.written, t.lost + t.allowed_lost, t.duplicated, dup_bound,
                  None if t.stalled else recover_s, gave_up + lost_note + reorder_note + note)
    REPORT.append(row)
    return row


def check(t: Tally, dup_bound: int) -> None:
    """The assertions every scenario shares: nothing lost (outside an allowed window), order kept,
    duplicates within the batches in flight at the faults."""
    assert t.lost == 0, f"{t.lost} of {t.written} lines lost, e.g. {t.lost_examples}; {t.logs}"
    assert t.out_of_order == 0, f"{t.out_of_order} lines out of order, e.g. (stream, seq, after) {t.order_examples}"
    assert t.duplicated <= dup_bound, f"{t.duplicated} duplicates, over the bound of {dup_bound}; {t.logs}"


def format_report(rows: list[Row]) -> str:
    head = ("scenario", "written", "lost", "duplicated", "dup bound", "recover s", "note")
    body = [
        (r.scenario, str(r.written), str(r.lost), str(r.duplicated),
         "-" if r.dup_bound is None else str(r.dup_bound),
         "-" if r.recover_s is None else f"{r.recover_s:.1f}", r.note)
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head) - 1)]
    lines = []
    for row in [head, *body]:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells) + ("  " + row[-1] if row[-1] else ""))
    lines.insert(1, "-" * max(len(l) for l in lines))
    return "\n".join(lines)
