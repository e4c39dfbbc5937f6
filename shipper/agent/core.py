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
  the channel. A final status file is written; exit 0. A second signal exits at once (130): that
  loses nothing either, since leases live in memory and unacknowledged events are taken again at
  the next start.
* ``--once`` (cron): read every file to its current end, ship until the channel is empty, exit 0;
  exit 6 when ``deadline`` passes first (the rest waits in the channel for the next run).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Callable

from shipper.agent.config import Config
from shipper.agent.reload import reload
from shipper.agent.runners import Delivery, SourceRunner
from shipper.agent.snapshot import health, snapshot, status_line, write_snapshot
from shipper.errors import EXIT_DEADLINE, EXIT_INTERRUPTED, EXIT_OK
from shipper.ops.document import StatusDocument
from shipper.ops.notify import Notifier
from shipper.ops.telemetry import Telemetry

log = logging.getLogger("flume-ship.agent")

_TICK = 0.2  # the main loop looks at its flags this often


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
        from shipper.channel import Channel

        c = self.config.channel
        d = min((g for _, g in self.config.groups), key=lambda g: g.batch_size, default=self.config.delivery)
        # Chunks no bigger than a batch: a lease is then always sent as one call, and a crash
        # re-sends at most one batch. (A reload that shrinks the batch splits leases instead.)
        self.channel = Channel.open(self.config.state_path(), capacity_bytes=c.capacity,
                                    min_free_bytes=c.min_free,
                                    chunk_events=min(1000, d.batch_size),
                                    chunk_bytes=min(1 << 20, d.batch_bytes))
        if self.config.groups:  # routes: one queue and one set of sink workers per group
            from shipper.agent.routes import open_routes

            self.delivery, routers = open_routes(self.config, self.channel, self.telemetry)
        else:
            self.telemetry.keep_collectors(self.config.addresses())
            self.delivery, routers = Delivery(self.config, self.channel, self.telemetry), {}
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
        paths = " ".join(p for s in self.config.sources for p in s.paths)
        if self.config.groups:
            return f"{paths} to " + "; ".join(f"{n}: {','.join(g.collectors)}" for n, g in self.config.groups)
        return f"{paths} to {','.join(self.config.delivery.collectors)}"

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
            failed = next((r for r in self.sources.values() if r.error is not None), None)
            if failed is not None or not self.delivery.alive:
                break
        self.state = "stopping"
        self.notifier.stopping("draining in-flight batches")
        deadline = time.monotonic() + self.config.agent.drain_timeout
        for r in self.sources.values():
            r.stop(max(0.0, deadline - time.monotonic()))
        self.delivery.stopping.set()
        self.delivery.join(deadline)
        for r in self.sources.values():
            if r.error is not None:
                raise r.error
        if self.delivery.error() is not None:
            raise self.delivery.error()
        return EXIT_OK

    def _run_once(self, started: float) -> int:
        self.delivery.start()
        self.state = "running"
        log.info("shipping %s once", self._what())
        self.notifier.ready("shipping once")
        for r in self.sources.values():
            try:
                r.source.run_once()
            finally:
                r.source.close()
        self.delivery.exit_when_empty.set()
        end = started + self.deadline if self.deadline else None
        while self.delivery.alive:
            if self._stop_requested:
                self.delivery.stop(self.config.agent.drain_timeout)
                return EXIT_OK
            if end is not None and time.monotonic() >= end:
                self.delivery.abort.set()
                self.delivery.join(time.monotonic() + 5)
                left = self.channel.stats().events
                log.error("--deadline of %.0fs passed with %d events still queued; they stay in the "
                          "channel for the next run", self.deadline, left)
                return EXIT_DEADLINE
            for t in self.delivery.threads:
                t.join(_TICK)
        if self.delivery.error() is not None:
            raise self.delivery.error()
        return EXIT_OK

    def _shutdown(self, started: float) -> None:
        snap = self.telemetry.snapshot()
        log.info(
            "shipped %d events (%d bytes) in %d batches in %.1fs; %d retries",
            snap["events_acked"], snap["bytes_acked"], snap["batches_acked"],
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
        write_snapshot(self)

    def health(self, stats=None) -> tuple[bool, str]:
        """The stall verdict (shipper.ops.telemetry.stall_verdict); progress counts from start or last reload."""
        return health(self, stats)

    def snapshot(self) -> StatusDocument:
        """Everything `flume-ship status` and /metrics show (shipper.agent.snapshot)."""
        return snapshot(self)
