"""The agent: tail source -> channel -> sink workers, with signals and a graceful drain.

Threads: the tail source runs in one thread, each sink worker in its own, and the main thread only
waits and handles signals. The channel (SQLite) is the only thing they share, plus the collector
pool (selector and penalty box) that the sink workers share.

Lifecycle:

* start: open the channel (which takes the state directory's lock: a second agent stops here with
  exit 4), start the sinks, then the source; log one line saying what is shipped where.
* SIGTERM / SIGINT: the source stops reading and commits; the sinks take nothing new and finish
  their in-flight batch. Whatever is still in flight when ``drain_timeout`` runs out is given back to
  the channel. Exit 0. A second signal exits at once (130): that loses nothing either, since leases
  live in memory and unacknowledged events are taken again at the next start.
* ``--once`` (cron): read every file to its current end, ship until the channel is empty, exit 0;
  exit 6 when ``deadline`` passes first (the rest waits in the channel for the next run).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from shipper.errors import EXIT_DEADLINE, EXIT_INTERRUPTED, EXIT_OK, ShipperError
from shipper.policy import Balance, Selector
from shipper.sink import CollectorPool, SinkOptions, SinkWorker
from shipper.telemetry import Telemetry

log = logging.getLogger("flume-ship.agent")


@dataclass(frozen=True)
class AgentOptions:
    state_dir: Path
    collectors: list  # list[net.Address]
    tail: object  # tail.TailOptions
    client: object  # net.ClientOptions
    sink: SinkOptions = field(default_factory=SinkOptions)
    balance: Balance = Balance.FAILOVER
    max_penalty: float = 30.0
    sinks: int = 1
    drain_timeout: float = 10.0
    once: bool = False
    deadline: float | None = None
    capacity_bytes: int = 1 << 30
    capacity_events: int = 10_000_000
    min_free_bytes: int = 500 * 1024 * 1024


class Agent:
    def __init__(self, options: AgentOptions):
        self.options = options
        self.telemetry = Telemetry()
        self.stopping = threading.Event()  # take nothing new, finish in-flight batches
        self.abort = threading.Event()  # give in-flight batches back now
        self.source_stop = threading.Event()
        self.exit_when_empty = threading.Event()
        self._signals = 0
        self.channel = None
        self.source = None
        self.workers: list[SinkWorker] = []
        self._threads: list[threading.Thread] = []
        self._source_error: BaseException | None = None

    # --- signals ---------------------------------------------------------------------------

    def _on_signal(self, signum, _frame) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info("%s received: stopping (draining in-flight batches for up to %.0fs)", name,
                     self.options.drain_timeout)
            self.source_stop.set()
            self.stopping.set()
        else:
            log.warning("%s received again: exiting now; unacknowledged events stay in the channel", name)
            os._exit(EXIT_INTERRUPTED)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    # --- wiring ----------------------------------------------------------------------------

    def _open(self) -> None:
        from shipper.channel import Channel
        from shipper.client import CollectorClient
        from shipper.tail import TailSource

        o = self.options
        self.channel = Channel.open(
            o.state_dir,
            capacity_bytes=o.capacity_bytes,
            capacity_events=o.capacity_events,
            min_free_bytes=o.min_free_bytes,
        )
        self.source = TailSource(o.tail, self.channel)
        selector = Selector(len(o.collectors), o.balance, o.max_penalty)
        pool = CollectorPool(o.collectors, selector, o.sink, self.telemetry)
        client_options = o.client

        def make_client(address):
            return CollectorClient(address, client_options)

        for n in range(o.sinks):
            self.workers.append(
                SinkWorker(
                    self.channel, pool, make_client, o.sink,
                    stopping=self.stopping, abort=self.abort, exit_when_empty=self.exit_when_empty,
                    telemetry=self.telemetry, name=f"sink-{n}",
                )
            )

    def _start_sinks(self) -> None:
        for w in self.workers:
            t = threading.Thread(target=w.run, name=w.name, daemon=True)
            t.start()
            self._threads.append(t)

    def _run_source(self) -> None:
        try:
            self.source.run(self.source_stop)
        except BaseException as exc:  # the agent stops and reports it
            self._source_error = exc
            self.stopping.set()
            if not isinstance(exc, ShipperError):
                log.exception("the tail source stopped by an unexpected error")

    # --- run -------------------------------------------------------------------------------

    def run(self) -> int:
        started = time.monotonic()
        self._open()
        try:
            return self._run_once(started) if self.options.once else self._run_forever()
        finally:
            self._summary(started)

    def _run_forever(self) -> int:
        o = self.options
        self._start_sinks()
        source_thread = threading.Thread(target=self._run_source, name="tail", daemon=True)
        source_thread.start()
        log.info("shipping %s to %s", " ".join(o.tail.paths), ",".join(map(str, o.collectors)))
        while not self.stopping.wait(1.0):
            if not any(t.is_alive() for t in self._threads):
                break
        self.source_stop.set()
        self.stopping.set()
        deadline = time.monotonic() + o.drain_timeout
        source_thread.join(max(0.0, deadline - time.monotonic()))
        self._join_sinks(deadline)
        if self._source_error is not None:
            raise self._source_error
        self._raise_worker_error()
        return EXIT_OK

    def _run_once(self, started: float) -> int:
        o = self.options
        self._start_sinks()
        log.info("shipping %s to %s once", " ".join(o.tail.paths), ",".join(map(str, o.collectors)))
        self.source.run_once()
        self.exit_when_empty.set()
        end = started + o.deadline if o.deadline else None
        while any(t.is_alive() for t in self._threads):
            if self.stopping.is_set():
                self._join_sinks(time.monotonic() + o.drain_timeout)
                return EXIT_OK
            if end is not None and time.monotonic() >= end:
                self.abort.set()
                self._join_sinks(time.monotonic() + 5)
                left = self.channel.stats().events
                log.error("--deadline of %.0fs passed with %d events still queued; they stay in the "
                          "channel for the next run", o.deadline, left)
                return EXIT_DEADLINE
            for t in self._threads:
                t.join(0.2)
        self._raise_worker_error()
        return EXIT_OK

    def _join_sinks(self, deadline: float) -> None:
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            log.warning("drain timeout: giving in-flight batches back to the channel")
            self.abort.set()
            for t in self._threads:
                t.join(5.0)

    def _raise_worker_error(self) -> None:
        for w in self.workers:
            if w.error is not None:
                raise w.error

    def _summary(self, started: float) -> None:
        snap = self.telemetry.snapshot()
        log.info(
            "shipped %d events (%d bytes) in %d batches in %.1fs; %d retries",
            snap["events_acked"], snap["bytes_acked"], snap["batches_acked"],
            time.monotonic() - started, snap["retries"],
        )
        if self.channel is not None and not any(t.is_alive() for t in self._threads):
            self.channel.close()
