"""The agent: tail sources -> channel -> sink workers, with signals, reload and a graceful drain.

Threads: each tail source (one per ``[sources.NAME]``) runs in its own thread, each sink worker in
its own, and the main thread only loops: it handles signals, rewrites the status file, pings the
systemd watchdog and notices dead threads. The channel (SQLite) is the only thing sources and
sinks share, plus the collector pool (selector and penalty box) that the sink workers share.
Signal handlers only set flags; the main loop acts on them within a fraction of a second.

The parts live beside this module: :mod:`~shipper.agent.runners` (a runner per source, the sink
workers of one delivery setting), :mod:`~shipper.agent.reload` (SIGHUP) and
:mod:`~shipper.agent.snapshot` (the status document, the status file, health).

Lifecycle:

* start: open the channel (which takes the state directory's lock: a second agent stops here with
  exit 4), start the sinks, then the sources; log one line saying what is shipped where; tell
  systemd READY. Start the metrics endpoint if configured.
* SIGHUP: re-read the configuration and apply it (:mod:`shipper.agent.reload`); the channel stays
  open throughout, so nothing is lost, and nothing acknowledged is sent again.
* SIGTERM / SIGINT: the sources stop reading and commit; the sinks take nothing new and finish
  their in-flight batch. Whatever is still in flight when ``drain_timeout`` runs out is given back to
  the channel (a sink that is only backing off gives its batch back at once). A final status file
  is written; exit 0. A second signal exits at once (130): that
  loses nothing either, since leases live in memory and unacknowledged events are taken again at
  the next start.
* ``--once`` (cron): read every file to its current end (in a thread, so signals and the deadline
  are seen while reading), ship until the channel is empty, and exit 0 only if that shipped every
  line of every matched file. Exit 7 when a path matched no regular file or a file could not be
  read (what was readable is shipped first); 6 when ``deadline`` passes: it bounds the whole run,
  so in-flight calls are abandoned, not waited for (their leases live in memory: the events stay in
  the channel for the next run); 8 when a signal stopped it with events queued.
* ``give_up_after`` (off by default): when events are queued and nothing was acknowledged for that
  long, stop as on a signal (``--once``: as at a deadline) and exit 10; the events stay queued.
* Stopping drains only calls on the wire: a worker backing off, or about to retry, gives its batch
  back at once, so a stop with every collector down is immediate.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable

from shipper.agent.config import Config
from shipper.agent.reload import reload
from shipper.agent.memory import limit_malloc_arenas
from shipper.agent.routes import serve_requeues
from shipper.agent.runners import Delivery, SourceRunner
from shipper.agent.snapshot import StatusWriter, health, snapshot, status_line
from shipper.errors import (EXIT_DEADLINE, EXIT_GAVE_UP, EXIT_INTERRUPTED, EXIT_OK, EXIT_QUEUED, DeliveryError,
                             InputError)
from shipper.ops.document import StatusDocument
from shipper.ops.notify import Notifier
from shipper.ops.progress import Progress, Reading, TerminalLine, counted
from shipper.ops.telemetry import Telemetry

log = logging.getLogger("flume-ship.agent")

_TICK = 0.2  # the main loop looks at its flags this often
_GRACE = 0.5  # after a deadline or drain timeout, how long given-back batches may take to be nacked


class Agent:
    def __init__(self, config: Config, *, reload: Callable[[], Config] | None = None, once: bool = False,
                 deadline: float | None = None, notifier: Notifier | None = None):
        self.config = config
        self._reload_config = reload
        self.once = once
        self.deadline = deadline
        self.telemetry = Telemetry()
        self.notifier = notifier or Notifier.from_env()
        self.channel = None
        self.sources: dict[str, SourceRunner] = {}
        self.delivery: Delivery | None = None
        self.retired: list[Delivery] = []  # replaced by a reload, still finishing a batch
        self.retired_counts: dict[str, dict[str, int]] = {}  # per source name, from replaced runners
        self._signals = 0
        self._stop_requested = False
        self._reload_requested = False
        self.warned_overlap: set[str] = set()
        self.metrics_server = None
        self.descriptors = None  # the budget of open tailed files, set at run()
        self.started = time.time()
        self.progress_base = time.monotonic()
        self.state = "starting"
        self.reloads = 0
        self._read_finished: list[bool] = []
        self._progress: Progress | None = None
        self._next_progress = 0.0
        self._terminal: TerminalLine | None = None
        self._acked_seen, self._acked_at, self._next_give_up = -1, time.monotonic(), 0.0  # give_up_after
        self._gave_up = False
        self.status_writer = StatusWriter()

    # --- signals ---------------------------------------------------------------------------

    def _on_signal(self, signum, _frame) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info("%s received: stopping (draining in-flight batches for up to %.0fs)", name,
                     self.config.agent.drain_timeout)
            self._stop_requested = True
        else:
            log.warning("%s received again: exiting now; unacknowledged events stay in the channel", name)
            os._exit(EXIT_INTERRUPTED)

    def _on_hup(self, _signum, _frame) -> None:
        self._reload_requested = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hup)

    def request_stop(self) -> None:
        self._stop_requested = True

    def request_reload(self) -> None:
        self._reload_requested = True

    # --- wiring ----------------------------------------------------------------------------

    def _open(self) -> None:
        from shipper.channel import CHUNK_BYTES, Channel

        c = self.config.channel
        d = min((g for _, g in self.config.groups), key=lambda g: g.batch_size, default=self.config.delivery)
        # Chunks no bigger than a batch: a lease is then always sent as one call, and a crash
        # re-sends at most one batch. (A reload that shrinks the batch splits leases instead.)
        self.channel = Channel.open(self.config.state_path(), capacity_bytes=c.capacity,
                                    min_free_bytes=c.min_free, ack_sync_interval=c.ack_sync_interval,
                                    chunk_events=min(1000, d.batch_size),
                                    chunk_bytes=min(CHUNK_BYTES, d.batch_bytes))
        if self.config.groups:  # routes: one queue and one set of sink workers per group
            from shipper.agent.routes import open_routes

            self.delivery, routers = open_routes(self.config, self.channel, self.telemetry)
        else:
            self.telemetry.keep_collectors(self.config.addresses())
            self.delivery, routers = Delivery.open(self.config, self.channel, self.telemetry), {}
        self.sources = {s.name: SourceRunner(s, self.channel, self.descriptors, routers.get(s.name))
                        for s in self.config.sources}

    def _start_metrics(self) -> None:
        listen = self.config.agent.metrics_listen
        if not listen:
            return
        from shipper.ops.metrics import MetricsServer

        self.metrics_server = MetricsServer(self, listen)
        log.info("metrics on http://%s/metrics, health on http://%s/health", self.metrics_server.address,
                 self.metrics_server.address)

    def _what(self) -> str:
        """The sources (by name, with their patterns) and the collectors (by group, when there are
        groups); the files come from each source's own start lines."""
        srcs = "; ".join(" ".join(s.paths) if s.name == "default" else f"source {s.name} ({' '.join(s.paths)})"
                         for s in self.config.sources)
        if self.config.groups:
            return f"{srcs} to " + "; ".join(f"{n}: {','.join(g.collectors)}" for n, g in self.config.groups)
        d = self.config.delivery
        how = f" ({d.balance})" if len(d.collectors) > 1 else ""
        return f"{srcs} to {','.join(d.collectors)}{how}"

    # --- run -------------------------------------------------------------------------------

    def _budget_descriptors(self) -> None:
        """Raise the open-file limit and set the budget of open tailed files all sources share."""
        from shipper.tail.descriptors import DescriptorBudget, open_file_budget, raise_open_file_limit

        limit = raise_open_file_limit()
        budget = open_file_budget(limit, self.config.agent.max_open_files)
        self.descriptors = DescriptorBudget(budget)
        log.info("tailing with at most %d open files (open-file limit %d); more files are read in turns",
                 budget, limit)

    def run(self) -> int:
        started = time.monotonic()
        limit_malloc_arenas()  # before any thread starts (shipper/agent/memory.py)
        self._budget_descriptors()
        self._open()
        try:
            self._start_metrics()
            return self._run_once(started) if self.once else self._run_forever()
        finally:
            self._shutdown(started)

    def _run_forever(self) -> int:
        self.delivery.start()
        for r in self.sources.values():
            r.start()
        self.state = "running"
        log.info("shipping %s", self._what())
        self.notifier.ready(self._status_line())
        self._start_progress()
        next_status = 0.0
        while not self._stop_requested:
            time.sleep(_TICK)
            now = time.monotonic()
            self.notifier.watchdog(now)
            if self._reload_requested:
                self._reload_requested = False
                self._reload()
                next_status = 0.0
            if now >= next_status:
                next_status = now + self.config.agent.status_interval
                self._tick_status()
            self._tick_progress(now)
            failed = next((r for r in self.sources.values() if r.error is not None), None)
            if failed is not None or not self.delivery.alive:
                break
            if self._given_up(now):
                break
        self.state = "stopping"
        self.notifier.stopping("draining in-flight batches")
        deadline = time.monotonic() + self.config.agent.drain_timeout
        for r in self.sources.values():
            r.stop(max(0.0, deadline - time.monotonic()))
        self.delivery.stopping.set()
        self.delivery.join(deadline, grace=_GRACE)
        for r in self.sources.values():
            if r.error is not None:
                raise r.error
        if self.delivery.error() is not None:
            raise self.delivery.error()
        return EXIT_GAVE_UP if self._gave_up else EXIT_OK

    def _run_once(self, started: float) -> int:
        """Read everything, ship it, and say truthfully how it went (the exit codes in the module
        docstring). The deadline bounds the whole run, reading and draining included."""
        run_began = time.time()  # wall clock, as dead letters are stamped
        self.delivery.start()
        self.state = "running"
        log.info("shipping %s once", self._what())
        self.notifier.ready("shipping once")
        end = started + self.deadline if self.deadline else None
        read_stop = threading.Event()
        finished = self._read_finished = []
        reading = threading.Thread(target=self._read_all, args=(read_stop, finished), name="read-once", daemon=True)
        reading.start()
        self._start_progress()
        while reading.is_alive() or self.delivery.alive:
            if not reading.is_alive() and not self.delivery.exit_when_empty.is_set():
                self.delivery.exit_when_empty.set()
                self.channel.wake_waiters()  # a sink waiting for events looks again, and ends if none
            now = time.monotonic()
            if end is not None and now >= end:
                return self._deadline_passed(read_stop, reading, end)
            if self._stop_requested:
                return self._interrupted(read_stop, reading, end)
            if self._given_up(now):
                return self._deadline_passed(read_stop, reading, now)
            self._tick_progress(now)
            time.sleep(_TICK if end is None else max(0.0, min(_TICK, end - now)))
        for r in self.sources.values():
            if r.error is not None:
                raise r.error
        if self.delivery.error() is not None:
            raise self.delivery.error()
        self._no_dead_letters_since(run_began)
        problems = [p for r in self.sources.values() for p in r.source.problems()]
        if problems:
            for p in problems:
                log.error("input: %s", p)
            raise InputError(f"{counted(len(problems), 'input')} missing or unreadable "
                             f"(first: {problems[0]}); everything readable was shipped")
        return EXIT_OK

    def _no_dead_letters_since(self, began: float) -> None:
        """A batch set aside during this run (``max_rejects``, no secondary) was not delivered:
        ``--once`` must not exit 0 for it (exit 3, the collectors did not accept the events)."""
        from shipper.channel.deadletter import set_aside_since

        batches, events = set_aside_since(self.channel, began)
        if batches:
            raise DeliveryError(f"{counted(events, 'event')} in {counted(batches, 'batch', 'batches')} "
                                f"{'was' if events == 1 else 'were'} dead-lettered: the collectors rejected them "
                                "max_rejects times; everything else was shipped. See flume-ship channel dead-letters "
                                "list, then export, requeue or purge them")

    def _read_all(self, stop: threading.Event, finished: list[bool]) -> None:
        for r in self.sources.values():
            try:
                if not r.source.run_once(stop):
                    return
            except BaseException as exc:  # reported after the run, like a source thread's error
                r.error = exc
                return
            finally:
                r.source.close()
        finished.append(True)

    def _deadline_passed(self, read_stop: threading.Event, reading, end: float) -> int:
        """Give in-flight batches back at once: a call blocked on a silent collector is left to die
        with the process (its lease lives in memory; the events stay in the channel). Giving up
        (``give_up_after``) ends the run the same way."""
        read_stop.set()
        self.delivery.abort.set()
        self.delivery.join(end + _GRACE, grace=0.0, quiet=True)
        reading.join(max(0.0, end + _GRACE - time.monotonic()))
        if self._gave_up:  # why was logged when it gave up
            return EXIT_GAVE_UP
        left = self.channel.stats().events
        log.error("--deadline of %gs passed with %d events still queued%s; they stay in the channel for the "
                  "next run", self.deadline, left, "" if not reading.is_alive() else " and files not read to the end")
        return EXIT_DEADLINE

    def _given_up(self, now: float) -> bool:
        """``give_up_after`` seconds with events queued and nothing acknowledged (checked once a
        second); logs why, once, when it is so."""
        limit = self.config.agent.give_up_after
        if not limit or now < self._next_give_up:
            return False
        self._next_give_up = now + 1.0
        acked = self.telemetry.snapshot()["events_acked"]
        queued = self.channel.stats().events
        if acked != self._acked_seen or not queued:
            self._acked_seen, self._acked_at = acked, now
            return False
        if now - self._acked_at < limit:
            return False
        self._gave_up = True
        log.error("giving up: %d event%s queued and nothing acknowledged for %.0fs (--give-up-after %g); they "
                  "stay in the channel for the next run", queued, "" if queued == 1 else "s", now - self._acked_at,
                  limit)
        return True

    def _interrupted(self, read_stop: threading.Event, reading, end: float | None) -> int:
        """SIGINT/SIGTERM during --once: stop reading, let calls on the wire finish (up to the drain
        timeout, and never past the deadline); exit 0 only if that left nothing behind."""
        read_stop.set()
        until = time.monotonic() + self.config.agent.drain_timeout
        if end is not None:
            until = min(until, end)
        reading.join(max(0.0, until - time.monotonic()))
        self.delivery.stopping.set()
        self.delivery.join(until, grace=_GRACE)
        left = self.channel.stats().events
        if left == 0 and self._read_complete(reading):
            return EXIT_OK
        log.error("interrupted with %d events queued%s; they stay in the channel for the next run", left,
                  "" if self._read_complete(reading) else " and files not read to the end")
        return EXIT_QUEUED

    def _read_complete(self, reading) -> bool:
        """Every source read its files to their end (not stopped half-way)."""
        return not reading.is_alive() and bool(self._read_finished)

    def _shutdown(self, started: float) -> None:
        self._end_progress()
        snap = self.telemetry.snapshot()
        batches = snap["batches_acked"]
        log.info(
            "shipped %d events (%d bytes, headers included) in %d batch%s in %.1fs; %d retries",
            snap["events_acked"], snap["bytes_acked"], batches, "" if batches == 1 else "es",
            time.monotonic() - started, snap["retries"],
        )
        self.state = "stopped"
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.channel is None:
            return
        busy = (self.delivery is not None and self.delivery.alive) or any(d.alive for d in self.retired) \
            or any(r.alive for r in self.sources.values())
        if not busy:
            self._tick_status()
            self.channel.close()
        self.notifier.close()

    # --- progress (shipper.ops.progress) ----------------------------------------------------

    def _reading(self, now: float) -> Reading:
        snap = self.telemetry.snapshot()
        stats = self.channel.stats()
        behind = 0
        for r in self.sources.values():
            try:
                behind += r.source.summary(0).behind
            except Exception:  # a source being replaced by a reload: counted at the next line
                pass
        groups = getattr(self.delivery, "groups", None)  # a GroupedDelivery: one selector per group
        selectors = [g.selector for g in groups.values()] if groups else [self.delivery.selector]
        health = [h for sel in selectors for h in sel.health]
        return Reading(now, snap["events_acked"], snap["bytes_acked"], stats.events, stats.bytes, behind,
                       sum(1 for h in health if h.failures == 0), len(health))

    def _start_progress(self) -> None:
        now = time.monotonic()
        self._progress = Progress(self._reading(now))
        interval = self.config.agent.progress_interval
        if self.once and TerminalLine.wanted():
            self._terminal = TerminalLine()
            self._terminal.attach()
            interval = 1.0
        self._next_progress = now + interval if interval > 0 else float("inf")

    def _tick_progress(self, now: float) -> None:
        if self._progress is None or now < self._next_progress:
            return
        line = self._progress.line(self._reading(now), eta=self.once)
        if self._terminal is not None:
            self._terminal.show(line)
            self._next_progress = now + 1.0
        else:
            log.info("progress: %s", line)
            self._next_progress = now + self.config.agent.progress_interval

    def _end_progress(self) -> None:
        if self._terminal is not None:
            self._terminal.detach()
            self._terminal = None

    # --- reload and status (shipper.agent.reload, shipper.agent.snapshot) -----------------

    def _reload(self) -> None:
        reload(self)

    @property
    def can_reload(self) -> bool:
        return self._reload_config is not None

    def reload_config(self) -> Config:
        """The configuration re-read (the same file, the same command-line flags on top)."""
        return self._reload_config()

    def _status_line(self) -> str:
        return status_line(self)

    def _tick_status(self) -> None:
        serve_requeues(self)
        self.status_writer.tick(self)

    def health(self, stats=None) -> tuple[bool, str]:
        """The stall verdict (shipper.ops.telemetry.stall_verdict); progress counts from start or last reload."""
        return health(self, stats)

    def snapshot(self) -> StatusDocument:
        """Everything `flume-ship status` and /metrics show (shipper.agent.snapshot)."""
        return snapshot(self)
