"""The agent: tail sources -> channel -> sink workers, with signals, reload and a graceful drain.

Threads: each tail source (one per ``[sources.NAME]``) runs in its own thread, each sink worker in
its own, and the main thread only loops: it handles signals, rewrites the status file, pings the
systemd watchdog and notices dead threads. The channel (SQLite) is the only thing sources and
sinks share, plus the collector pool (selector and penalty box) that the sink workers share.
Signal handlers only set flags; the main loop acts on them within a fraction of a second.

Sources and the channel: every source sees the channel through a :class:`SourceChannel`, which
keeps its offset records under the prefix ``src:<name>/`` (none for the source named ``default``,
the one the command line's PATHS make, so state from before config files is kept). A tail source
forgets the records it does not find among its own files, so without the prefix two sources would
delete each other's offsets. The wrapper also counts the events each source put.

Lifecycle:

* start: open the channel (which takes the state directory's lock: a second agent stops here with
  exit 4), start the sinks, then the sources; log one line saying what is shipped where; tell
  systemd READY. Start the metrics endpoint if configured.
* SIGHUP: re-read the configuration (the same file, with the same command-line flags on top). If it
  is invalid, log each problem and keep running as before. Otherwise: sources removed or changed
  are stopped (each commits what it read, with its offsets); if the delivery settings changed, the
  sink workers finish their in-flight batches (up to ``drain_timeout``, then the batch is given back
  to the channel) and new workers start with the new collectors; then new and changed sources
  start and resume from their committed offsets. The channel stays open throughout, so nothing is
  lost, and nothing acknowledged is sent again. Channel and metrics-endpoint settings need a
  restart (a warning says so).
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
import threading
import time
from typing import Callable

from shipper.agent.config import DEFAULT_SOURCE, Config, SourceSection
from shipper.errors import EXIT_DEADLINE, EXIT_INTERRUPTED, EXIT_OK, ConfigError, ShipperError
from shipper.ops.notify import Notifier
from shipper.sink.policy import Balance, Selector
from shipper.sink.worker import CollectorPool, SinkWorker
from shipper.ops.telemetry import Telemetry, stall_verdict

log = logging.getLogger("flume-ship.agent")

_TICK = 0.2  # the main loop looks at its flags this often
STATUS_FILES = 200  # files listed per source in status.json (behind first); the others are counted


def source_prefix(name: str) -> str:
    """The prefix of a source's offset keys in the channel."""
    return "" if name == DEFAULT_SOURCE else f"src:{name}/"


class SourceChannel:
    """The channel as one tail source sees it: its own offset records only; its puts counted."""

    def __init__(self, channel, prefix: str):
        self.channel = channel
        self.prefix = prefix
        self.events_put = 0
        self.bytes_put = 0

    def offsets(self) -> dict[str, bytes]:
        p = self.prefix
        every = self.channel.offsets()
        if not p:
            return {k: v for k, v in every.items() if not k.startswith("src:")}
        return {k[len(p):]: v for k, v in every.items() if k.startswith(p)}

    def put(self, events, offsets=None, timeout=None) -> bool:
        events = list(events)
        if offsets and self.prefix:
            offsets = {self.prefix + k: v for k, v in offsets.items()}
        ok = self.channel.put(events, offsets, timeout=timeout)
        if ok:
            self.events_put += len(events)
            self.bytes_put += sum(map(len, events))
        return ok

    def __getattr__(self, name):  # stats(), wait_for_events(), ...: the shared channel's
        return getattr(self.channel, name)


class SourceRunner:
    """One configured source: its TailSource, its thread and its stop flag."""

    def __init__(self, config: SourceSection, channel, budget=None):
        from shipper.tail import TailSource

        self.config = config
        self.name = config.name
        self.view = SourceChannel(channel, source_prefix(config.name))
        self.source = TailSource(config.tail_options(), self.view, budget)
        self.stop_flag = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"tail-{self.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.source.run(self.stop_flag)
        except BaseException as exc:  # the agent stops and reports it
            self.error = exc
            if not isinstance(exc, ShipperError):
                log.exception("source %s stopped by an unexpected error", self.name)

    def stop(self, timeout: float) -> None:
        self.stop_flag.set()
        self.source.wakeup()
        if self.thread is not None:
            self.thread.join(timeout)
        if not self.alive:
            self.source.close()  # its share of the descriptor budget goes back to the others

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def counts(self) -> dict[str, int]:
        c = self.source.counters
        return {"events_read": c.get("events", 0), "events_put": self.view.events_put,
                "bytes_put": self.view.bytes_put, "rotations": c.get("rotations", 0),
                "truncations": c.get("truncations", 0), "descriptor_waits": c.get("descriptor_waits", 0),
                "incomplete_scans": c.get("incomplete_scans", 0),
                **{f"rules_{k}": v for k, v in self.source.rule_counts().items()}}


class Delivery:
    """The sink workers for one set of delivery settings, with their own stop flags."""

    def __init__(self, config: Config, channel, telemetry: Telemetry):
        d = config.delivery
        self.config = d
        self.addresses = config.addresses()
        self.selector = Selector(len(self.addresses), Balance(d.balance), d.max_penalty)
        sink_options = config.sink_options()
        self.pool = CollectorPool(self.addresses, self.selector, sink_options, telemetry)
        client_options = config.client_options()
        self.stopping = threading.Event()
        self.abort = threading.Event()
        self.exit_when_empty = threading.Event()
        self.threads: list[threading.Thread] = []

        def make_client(address):
            from shipper.sink.client import client_for

            return client_for(address, client_options)

        self.workers = [
            SinkWorker(channel, self.pool, make_client, sink_options, stopping=self.stopping, abort=self.abort,
                       exit_when_empty=self.exit_when_empty, telemetry=telemetry, name=f"sink-{n}")
            for n in range(d.sinks)
        ]

    def start(self) -> None:
        for w in self.workers:
            t = threading.Thread(target=w.run, name=w.name, daemon=True)
            t.start()
            self.threads.append(t)

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def stop(self, drain_timeout: float) -> bool:
        """Finish in-flight batches for up to ``drain_timeout``, then give them back; True when all ended."""
        self.stopping.set()
        self.join(time.monotonic() + drain_timeout)
        return not self.alive

    def join(self, deadline: float) -> None:
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self.alive:
            log.warning("drain timeout: giving in-flight batches back to the channel")
            self.abort.set()
            for t in self.threads:
                t.join(5.0)

    def error(self) -> BaseException | None:
        return next((w.error for w in self.workers if w.error is not None), None)

    def collectors(self, telemetry_snapshot: dict) -> list[dict]:
        now = time.monotonic()
        out = []
        for i, address in enumerate(self.addresses):
            h = self.selector.health[i]
            t = telemetry_snapshot["collectors"].get(str(address), {})
            penalty = max(0.0, h.penalty_until - now)
            if h.failures:
                state = "down" if penalty > 0 else "retrying"
            elif h.last_success is not None or t.get("last_success") is not None:
                state = "up"  # telemetry remembers a success from before a reload
            else:
                state = "standby"
            out.append({
                "address": str(address), "state": state, "last_success": t.get("last_success"),
                "consecutive_failures": h.failures, "penalty_seconds": round(penalty, 3),
                "failures": h.total_failures, "events_ok": t.get("events_ok", 0),
                "batches_ok": t.get("batches_ok", 0), "last_error": h.last_error,
                "last_latency": t.get("last_latency"),
                "latency_buckets": t.get("latency_buckets"), "latency_count": t.get("latency_count", 0),
                "latency_sum": t.get("latency_sum", 0.0),
            })
        return out


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
        self._retired: list[Delivery] = []  # replaced by a reload, still finishing a batch
        self._retired_counts: dict[str, dict[str, int]] = {}  # per source name, from replaced runners
        self._signals = 0
        self._stop_requested = False
        self._reload_requested = False
        self._warned_overlap: set[str] = set()
        self.metrics_server = None
        self.descriptors = None  # the budget of open tailed files, set at run()
        self.started = time.time()
        self._progress_base = time.monotonic()
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
        d = self.config.delivery
        # Chunks no bigger than a batch: a lease is then always sent as one call, and a crash
        # re-sends at most one batch. (A reload that shrinks the batch splits leases instead.)
        self.channel = Channel.open(self.config.state_path(), capacity_bytes=c.capacity,
                                    min_free_bytes=c.min_free,
                                    chunk_events=min(1000, d.batch_size),
                                    chunk_bytes=min(1 << 20, d.batch_bytes))
        self.telemetry.keep_collectors(self.config.addresses())
        self.delivery = Delivery(self.config, self.channel, self.telemetry)
        self.sources = {s.name: SourceRunner(s, self.channel, self.descriptors) for s in self.config.sources}

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
        busy = (self.delivery is not None and self.delivery.alive) or any(d.alive for d in self._retired) \
            or any(r.alive for r in self.sources.values())
        if not busy:
            self._tick_status()
            self.channel.close()
        self.notifier.close()

    # --- reload ----------------------------------------------------------------------------

    def _reload(self) -> None:
        if self._reload_config is None or self.once:
            log.info("SIGHUP: nothing to reload")
            return
        self.notifier.reloading()
        try:
            new = self._reload_config()
        except ConfigError as exc:
            for problem in getattr(exc, "problems", None) or [exc]:
                log.error("reload refused: %s", problem)
            log.error("reload refused: still running the previous configuration")
            self.notifier.ready(self._status_line())
            return
        old = self.config
        if new.channel != old.channel:
            log.warning("reload: [channel] settings changed; they take effect at the next restart")
        if new.agent.metrics_listen != old.agent.metrics_listen:
            log.warning("reload: agent.metrics_listen changed; it takes effect at the next restart")
        from dataclasses import replace

        new = replace(new, channel=old.channel, agent=replace(new.agent, metrics_listen=old.agent.metrics_listen))
        self.reloads += 1
        drain = new.agent.drain_timeout
        wanted = {s.name: s for s in new.sources}
        # 1. Stop sources that go away or change: each commits what it read, with its offsets.
        for name, runner in list(self.sources.items()):
            if wanted.get(name) != runner.config:
                self.notifier.watchdog()  # a long reload must not look like a hang
                runner.stop(drain + 5)
                self._retire_counts(runner)
                del self.sources[name]
                log.info("reload: source %s %s", name, "changed" if name in wanted else "removed")
        # 2. Replace the sink workers if the delivery settings changed.
        if new.delivery != old.delivery:
            old_delivery = self.delivery
            self.notifier.watchdog()
            if not old_delivery.stop(drain):
                self._retired.append(old_delivery)
            self.telemetry.keep_collectors(new.addresses())
            self.delivery = Delivery(new, self.channel, self.telemetry)
            self.delivery.start()
            self._progress_base = time.monotonic()  # new collectors get a full stall_timeout
            log.info("reload: collectors now %s (%s)", ",".join(new.delivery.collectors), new.delivery.balance)
        self._retired = [d for d in self._retired if d.alive]
        # 3. Start sources that are new or changed; they resume from their committed offsets.
        for name, section in wanted.items():
            if name not in self.sources:
                runner = SourceRunner(section, self.channel, self.descriptors)
                runner.start()
                self.sources[name] = runner
                log.info("reload: source %s tails %s", name, " ".join(section.paths))
        self.config = new
        log.info("reloaded configuration: %d sources, %d collectors", len(new.sources), len(new.delivery.collectors))
        self.notifier.ready(self._status_line())

    def _retire_counts(self, runner: SourceRunner) -> None:
        acc = self._retired_counts.setdefault(runner.name, {})
        for k, v in runner.counts().items():
            acc[k] = acc.get(k, 0) + v

    # --- status ----------------------------------------------------------------------------

    def _status_line(self) -> str:
        snap = self.telemetry.snapshot()
        queued = self.channel.stats().events if self.channel is not None else 0
        return f"{snap['events_acked']} events acknowledged, {queued} queued"

    def _tick_status(self) -> None:
        from shipper.ops.status import write_status

        try:
            snap = self.snapshot()
        except Exception as exc:  # status is advice; never let it stop shipping
            log.debug("status snapshot failed: %s", exc)
            return
        self._check_overlaps()
        write_status(self.config.state_path(), snap)
        self.notifier.status(self._status_line())

    def _check_overlaps(self) -> None:
        running = dict(self.sources)
        if len(running) < 2:
            return
        owners: dict[str, str] = {}
        for name, runner in sorted(running.items()):
            for identity in runner.source.identities():
                other = owners.setdefault(identity, name)
                if other != name and identity not in self._warned_overlap:
                    self._warned_overlap.add(identity)
                    path = next((f.path for f in runner.source.status() if f.identity == identity), identity)
                    log.warning("%s is tailed by sources %s and %s: its lines are shipped twice; narrow one "
                                "of the globs", path, other, name)

    def health(self, stats=None) -> tuple[bool, str]:
        """The stall verdict (shipper.ops.telemetry.stall_verdict); progress counts from start or last reload."""
        stats = stats or self.channel.stats()
        since = time.monotonic() - self._progress_base
        last_ack = self.telemetry.last_ack
        if last_ack:
            since = min(since, time.time() - last_ack)
        return stall_verdict(queued=stats.events, oldest_age=stats.oldest_event_age, since_progress=since,
                             stall_timeout=self.config.agent.stall_timeout)

    def snapshot(self) -> dict:
        """Everything `flume-ship status` and /metrics show, as plain data (JSON-ready)."""
        from shipper import __version__

        stats = self.channel.stats()
        tele = self.telemetry.snapshot()
        healthy, why = self.health(stats)
        sources = []
        running = dict(self.sources)  # one atomic copy: a reload may be changing the dict
        for name in sorted(set(running) | set(self._retired_counts)):
            runner = running.get(name)
            counts = dict(self._retired_counts.get(name, {}))
            if runner is not None:
                for k, v in runner.counts().items():
                    counts[k] = counts.get(k, 0) + v
            files = []
            summary = runner.source.summary(STATUS_FILES) if runner is not None else None
            if summary is not None:
                for f in summary.rows:
                    files.append({"path": f.path, "origin": f.origin, "identity": f.identity,
                                  "generation": f.generation, "offset": f.offset, "size": f.size,
                                  "behind": f.behind, "state": f.state})
            fds = runner.source.descriptor_status() if runner is not None else None
            sources.append({"name": name, "active": runner is not None,
                            "paths": list(runner.config.paths) if runner else [],
                            "bytes_behind": summary.bytes_behind if summary else 0, "files": files,
                            "files_total": summary.total if summary else 0,
                            "files_by_state": summary.by_state if summary else {},
                            "open_files": fds.open if fds else 0, "waiting_files": fds.waiting if fds else 0,
                            **counts})
        collectors = self.delivery.collectors(tele) if self.delivery else []
        return {
            "version": __version__, "pid": os.getpid(), "state": self.state, "written_at": time.time(),
            "started_at": self.started, "config_file": self.config.file, "reloads": self.reloads,
            "status_interval": self.config.agent.status_interval,
            "state_dir": str(self.config.state_path()),
            "health": {"healthy": healthy, "reason": why, "stall_timeout": self.config.agent.stall_timeout},
            "channel": {"events": stats.events, "bytes": stats.bytes, "leased_events": stats.leased_events,
                        "oldest_event_age": stats.oldest_event_age, "capacity_bytes": stats.capacity_bytes,
                        "put_blocked": stats.put_blocked, "put_wait_seconds": stats.put_wait_seconds,
                        "disk_free_bytes": stats.disk_free_bytes, "file_bytes": stats.file_bytes,
                        "quarantined": stats.quarantined},
            "sources": sources,
            "descriptors": {"budget": self.descriptors.limit if self.descriptors else 0,
                            "open": sum(s["open_files"] for s in sources),
                            "waiting": sum(s["waiting_files"] for s in sources)},
            "collectors": collectors,
            "totals": {"events_read": sum(s.get("events_read", 0) for s in sources),
                       "events_put": sum(s.get("events_put", 0) for s in sources),
                       "events_acked": tele["events_acked"], "bytes_acked": tele["bytes_acked"],
                       "batches_acked": tele["batches_acked"], "retries": tele["retries"],
                       "events_sent": tele["events_sent"], "send_failures": tele["send_failures"],
                       "last_ack": tele["last_ack"]},
        }
