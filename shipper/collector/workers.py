"""``flume-ship collect --workers N``: N collector processes on one listening port.

Theory of operation
-------------------
One collector process is one Python interpreter: its connection threads share one GIL, so decoding
and formatting use one core however many senders there are. ``--workers N`` runs N processes.

The parent binds the listening socket itself (so a busy port fails before anything else is created,
and port 0 is resolved once: every worker serves the port the "listening on" line names), then
forks N workers and keeps none of the work. Each worker is a whole collector
(:class:`shipper.collector.server.Collector`, Avro or Thrift, with TLS, deflate and every limit)
serving the inherited socket, with its own :class:`shipper.collector.writer.RollingWriter`: worker
K names its files ``events-wK-<UTC start time>-<n>.<ext>`` (one worker keeps the plain
``events-...`` names). A worker answers OK for a batch only once its own writer wrote (and
fsynced) it, exactly as a single collector does, so no acknowledgement depends on another process.

Why one shared socket rather than one ``SO_REUSEPORT`` socket per worker: with ``SO_REUSEPORT`` the
kernel picks the worker from a hash of the client's address and port, and a Flume sink keeps its
connection for hours, so with four sinks and two workers one time in eight all four land on one
worker and stay there. Here the workers share one accept queue and a small table in shared
memory (:class:`Balance`: each worker's count of open connections): a worker takes a waiting
connection only when no running worker has fewer open; otherwise it leaves it for 5 ms to the
one that has. Four sinks on two workers are served two and two.

Limits: the per-call caps (sizes, events, headers, timeouts) apply to each connection as they
are. The two totals, ``--max-connections`` and ``--memory-budget``, stay totals for the whole
collector: each worker gets its share (:func:`share`, the first workers take the remainder), so
``--workers`` does not multiply what clients can make the machine hold. Each worker's share of
the memory budget must still hold two copies of the largest call (``--max-call-bytes``).

Reports: each worker writes one JSON line of its counters to a pipe about once a second and once
more as it exits; the parent keeps the last line of each (:class:`WorkerStats`) and serves their
sum on ``--metrics-listen`` (with ``collect_workers``, the workers running), and its final
"stopped; N events written" line counts every worker's events.

Stopping: SIGTERM or SIGINT to the parent sends SIGUSR1 (stop) to every worker; a worker also
stops on SIGTERM or SIGINT of its own (systemd's default KillMode signals every process of the
unit; Ctrl-C signals the whole process group), and stopping twice is stopping once. A stopping
worker finishes and answers the batches in progress, closes its files and exits 0; the parent
exits 0 when every worker did. A second signal to the parent kills the workers (SIGKILL) and
exits 130 at once, as the single collector does.

A worker that dies (killed, or a crash) is reported by the parent, with its number, pid and how
it ended; the parent stops the others as above and exits ``EXIT_WORKER`` (9). It does not
restart it: every batch the dead worker answered OK is in its files already, and the batches it
had not answered are sent again by their clients (to another collector, or to this one once a
supervisor such as systemd's ``Restart=on-failure`` has started it again), so nothing is lost,
and a crash is one visible event rather than a silent restart loop. A worker whose parent is gone
(killed with SIGKILL) notices within a second and stops cleanly.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import signal
import struct
import threading
import time
from dataclasses import replace
from typing import Callable

from shipper.collector.limits import CHARGE_FACTOR, ServerLimits
from shipper.errors import EXIT_INTERRUPTED, ConfigError, WorkerDied

log = logging.getLogger("flume-ship.collect")

MAX_WORKERS = 64
REPORT_INTERVAL = 1.0
_SLOT = struct.Struct("q")
_GONE = 1 << 62  # a stopped worker's count: never the fewest


def share(total: int, workers: int, k: int) -> int:
    """Worker ``k``'s (0-based) share of ``total``: the first ``total % workers`` get one more."""
    return total // workers + (1 if k < total % workers else 0)


def worker_limits(limits: ServerLimits, workers: int, k: int) -> ServerLimits:
    """The limits of worker ``k``: the totals divided, the per-call caps as they are."""
    return replace(limits, max_connections=share(limits.max_connections, workers, k),
                   memory_budget=share(limits.memory_budget, workers, k))


def check_workers(limits: ServerLimits, workers: int) -> None:
    """ConfigError (naming --workers) when ``workers`` cannot share these totals."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers: use 1 to {MAX_WORKERS} (one or two per core)")
    if limits.max_connections < workers:
        raise ConfigError(f"--workers {workers}: --max-connections {limits.max_connections} is shared among the "
                          "workers and each needs at least one: raise --max-connections or lower --workers")
    smallest = limits.memory_budget // workers
    if smallest < CHARGE_FACTOR * limits.max_call_bytes:
        raise ConfigError(f"--workers {workers}: each worker's share of --memory-budget ({smallest} bytes) must "
                          f"hold {CHARGE_FACTOR}x --max-call-bytes ({limits.max_call_bytes}): raise --memory-budget "
                          "or lower --workers or --max-call-bytes")


class Balance:
    """Open connections per worker, in memory shared by the workers (made before they fork).
    Each worker writes only its own slot; reads of the others may be a moment old, which costs
    at most one connection of imbalance, never a connection left waiting."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._map = mmap.mmap(-1, _SLOT.size * workers)  # anonymous and MAP_SHARED: seen across fork
        self.me = 0

    def publish(self, open_now: int) -> None:
        _SLOT.pack_into(self._map, self.me * _SLOT.size, open_now)

    def leave(self) -> None:
        self.publish(_GONE)

    def counts(self) -> list[int]:
        return [_SLOT.unpack_from(self._map, k * _SLOT.size)[0] for k in range(self.workers)]

    def may_accept(self) -> bool:
        counts = self.counts()
        return counts[self.me] <= min(counts)


class WorkerStats:
    """The parent's view of the workers' counters: the last report of each, summed by
    :meth:`snapshot` in the shape of ``CollectorStats.snapshot`` (what ``--metrics-listen`` reads)."""

    KEYS = ("connections_total", "connections_open", "calls_total", "events_total", "bytes_total", "memory_used",
            "memory_budget", "events_written")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[int, dict] = {}
        self.running = 0

    def update(self, k: int, report: dict) -> None:
        with self._lock:
            self._last[k] = report

    def snapshot(self) -> dict:
        with self._lock:
            reports = list(self._last.values())
            running = self.running
        total = {key: sum(int(r.get(key, 0)) for r in reports) for key in self.KEYS}
        rejects: dict[str, int] = {}
        for r in reports:
            for reason, n in r.get("rejects", {}).items():
                rejects[reason] = rejects.get(reason, 0) + int(n)
        total["rejects"] = rejects
        total["workers"] = running
        return total


class _Worker:
    __slots__ = ("k", "pid", "fd", "buf", "status")

    def __init__(self, k: int, pid: int, fd: int) -> None:
        self.k, self.pid, self.fd, self.buf = k, pid, fd, b""
        self.status: int | None = None  # the wait status once it has exited


def start_workers(workers: int, listener, make_collector: Callable[[int], object]) -> "Supervisor":
    """Fork ``workers`` processes, each serving ``listener`` with ``make_collector(k)`` (k from 1),
    and return the parent's :class:`Supervisor` of them, its handlers of SIGTERM and SIGINT in
    place. Stop signals are blocked until then, so a signal in between is not lost and no worker
    can be stopped before its own handlers are in place. WorkerDied when a worker cannot be
    started (the ones started are stopped first)."""
    balance = Balance(workers)
    procs: list[_Worker] = []
    supervisor = Supervisor(procs)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1})
    try:
        for k in range(1, workers + 1):
            try:
                r, w = os.pipe()
                pid = os.fork()
            except OSError as err:  # out of processes (pids.max, TasksMax) or descriptors
                supervisor.stop()
                supervisor.run(quiet=True)
                raise WorkerDied([f"cannot start collect worker {k}: {err.strerror or err}"]) from None
            if pid == 0:  # the worker: never returns
                os.close(r)
                for other in procs:
                    os.close(other.fd)
                balance.me = k - 1
                _worker_main(k, w, listener, balance, make_collector, old_mask)
            os.close(w)
            os.set_blocking(r, False)
            procs.append(_Worker(k, pid, r))
            supervisor.stats.running = len(procs)
        signal.signal(signal.SIGTERM, supervisor.on_signal)
        signal.signal(signal.SIGINT, supervisor.on_signal)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return supervisor


def _worker_main(k: int, report_fd: int, listener, balance: Balance, make_collector, old_mask) -> None:
    code = 1
    try:
        collector = make_collector(k)
        collector.bind(listener)
        collector.balance = balance
        balance.publish(0)
        parent = os.getppid()
        done = threading.Event()

        def on_signal(_signum, _frame):
            collector.stop()

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, on_signal)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

        def report(final: bool = False) -> bool:
            snap = collector.stats.snapshot()
            snap["events_written"] = collector.writer.events_written
            snap["final"] = final
            try:  # (blocking: a report is one short line, and the parent reads it at once)
                os.write(report_fd, json.dumps(snap, separators=(",", ":")).encode() + b"\n")
            except OSError:
                return False
            return True

        def reporter():
            while not done.wait(REPORT_INTERVAL):
                if os.getppid() != parent or not report():  # the parent is gone: stop cleanly
                    log.warning("worker %d: the parent process is gone; stopping", k)
                    collector.stop()
                    return

        threading.Thread(target=reporter, name="report", daemon=True).start()
        log.debug("worker %d (pid %d) serving", k, os.getpid())
        collector.serve_forever()
        done.set()
        report(final=True)
        code = 0
    except BaseException:  # a bug: say so, and let the parent see a worker that failed
        log.exception("worker %d failed", k)
    finally:
        os._exit(code)


class Supervisor:
    """The parent's loop: read reports, notice workers that end, relay stop signals."""

    def __init__(self, procs: list[_Worker]) -> None:
        self.procs = procs  # (filled in as the workers start)
        self.stats = WorkerStats()
        self.stats.running = len(procs)
        self.stopping = False
        self.signals = 0
        self.failed: list[str] = []

    def on_signal(self, signum, _frame) -> None:
        self.signals += 1
        if self.signals > 1:
            self._signal_all(signal.SIGKILL)
            os._exit(EXIT_INTERRUPTED)
        log.info("%s: stopping the %d workers after the batches in progress", signal.Signals(signum).name,
                 len(self.procs))
        self.stop()

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self._signal_all(signal.SIGUSR1)

    def _signal_all(self, sig: int) -> None:
        for p in self.procs:
            if p.status is None:
                try:
                    os.kill(p.pid, sig)
                except ProcessLookupError:
                    pass

    def run(self, quiet: bool = False) -> None:
        """Supervise until every worker has exited; WorkerDied when one died (unless ``quiet``)."""
        while any(p.status is None for p in self.procs):
            self._read_reports(timeout=0.25)
            for p in self.procs:
                if p.status is None:
                    pid, status = os.waitpid(p.pid, os.WNOHANG)
                    if pid:
                        self._ended(p, status)
        self._read_reports(timeout=0)
        if self.failed and not quiet:
            raise WorkerDied(self.failed)

    def _ended(self, p: _Worker, status: int) -> None:
        p.status = status
        self.stats.running -= 1
        self._drain(p)
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            if not self.stopping:
                log.warning("worker %d (pid %d) stopped on its own (a signal sent to it alone?); stopping the "
                            "others", p.k, p.pid)
                self.stop()
            return
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        self.failed.append(f"collect worker {p.k} (pid {p.pid}) died ({how})")
        log.error("worker %d (pid %d) died (%s): the batches it answered OK are in its files, the others are "
                  "sent again by their clients; stopping the other workers", p.k, p.pid, how)
        self.stop()

    def _read_reports(self, timeout: float) -> None:
        import select

        fds = [p.fd for p in self.procs if p.fd >= 0]
        if not fds:
            if timeout:
                time.sleep(timeout)
            return
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        for p in self.procs:
            if p.fd in ready:
                self._drain(p)

    def _drain(self, p: _Worker) -> None:
        while p.fd >= 0:
            try:
                chunk = os.read(p.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                os.close(p.fd)
                p.fd = -1
                break
            p.buf += chunk
        *lines, p.buf = p.buf.split(b"\n")
        for line in lines[-1:]:
            try:
                self.stats.update(p.k, json.loads(line))
            except ValueError:
                pass
