"""What the agent runs: one runner per tail source, and the sink workers of one delivery setting.

Sources and the channel: every source sees the channel through a :class:`SourceChannel`, which
keeps its offset records under the prefix ``src:<name>/`` (none for the source named ``default``,
the one the command line's PATHS make, so state from before config files is kept). A tail source
forgets the records it does not find among its own files, so without the prefix two sources would
delete each other's offsets. The wrapper also counts the events each source put, and holds the
source's right to commit (a :class:`~shipper.channel.core.Fence`): a source that outlives its stop
at a reload is revoked before the queues change and its successor starts, so nothing it still
holds is committed late (see :meth:`SourceRunner.stop`).
"""

from __future__ import annotations

import logging
import threading
import time

from shipper.agent.config import DEFAULT_SOURCE, Config, SourceSection
from shipper.channel.core import Fence
from shipper.channel.groups import IMPLICIT, GroupQueues, lane_names
from shipper.errors import PutRevoked, ShipperError
from shipper.ops.document import CollectorStatus
from shipper.ops.telemetry import Telemetry
from shipper.sink.policy import Balance, Selector
from shipper.sink.ratelimit import limit_of
from shipper.sink.worker import CollectorPool, SinkWorker

log = logging.getLogger("flume-ship.agent")


def source_prefix(name: str) -> str:
    """The prefix of a source's offset keys in the channel."""
    return "" if name == DEFAULT_SOURCE else f"src:{name}/"


class SourceChannel:
    """The channel as one tail source sees it: its own offset records only; its puts counted."""

    def __init__(self, channel, prefix: str, router=None, limit=None, stop=None):
        self.channel = channel
        self.prefix = prefix
        self.limit = limit  # shipper.sink.ratelimit.RateLimit: the source's max lines/bytes per second
        self.stop = stop
        self.router = router  # shipper.agent.routes.Router: the groups of each event, with routes
        self.events_put = 0
        self.bytes_put = 0
        self.fence = Fence()

    def offsets(self) -> dict[str, bytes]:
        p = self.prefix
        every = self.channel.offsets()
        if not p:
            return {k: v for k, v in every.items() if not k.startswith("src:")}
        return {k[len(p):]: v for k, v in every.items() if k.startswith(p)}

    @property
    def by_family(self) -> bool:
        """Does the channel run lanes (then ``put`` wants each event's file family)?"""
        queues = getattr(self.channel, "groups", None)
        return queues is not None and queues.laned

    def put(self, events, offsets=None, timeout=None, families=None) -> bool:
        """``families``: runs of (family, count) over ``events``, for the lanes (see
        :mod:`shipper.channel.groups`); without them a laned channel puts all in lane 0."""
        return self.put_packed(self.pack(events, families), offsets, timeout)

    def pack(self, events, families=None):
        """The channel's :meth:`~shipper.channel.core.Channel.pack` of ``events``, routed (groups,
        lanes) as :meth:`put` routes them; commit it with :meth:`put_packed`."""
        try:
            if not self.fence.revoked:
                return self._pack(events, families)
        except Exception:
            if not self.fence.revoked:
                raise
        # Revoked (a reload replaced this source), maybe while routing by its rules against the
        # new queues: nothing of it is committed; its successor reads it again.
        raise PutRevoked("pack refused: this source was replaced; what it read is read again")

    def _pack(self, events, families):
        if not isinstance(events, list):
            events = list(events)
        queues = getattr(self.channel, "groups", None)
        runs = None  # (groups, count) in event order
        if self.router is not None:
            runs = self.router.runs(events)
        elif queues is not None:  # lanes without routes: the implicit group
            runs = [((IMPLICIT,), len(events))]
        if runs is not None and queues is not None and queues.laned:
            runs = queues.route(runs, families)
        return self.channel.pack(events, runs=runs)

    def put_packed(self, packed, offsets=None, timeout=None) -> bool:
        if self.limit is not None and packed.count:
            self.limit.acquire(packed.count, packed.nbytes, self.stop)
        if offsets and self.prefix:
            offsets = {self.prefix + k: v for k, v in offsets.items()}
        ok = self.channel.put_packed(packed, offsets, timeout=timeout, fence=self.fence)
        if ok:
            self.events_put += packed.count
            self.bytes_put += packed.nbytes
        return ok

    def revoke(self) -> None:
        """No put of this view commits after this returns (one in progress ends first)."""
        self.channel.revoke(self.fence)

    def __getattr__(self, name):  # stats(), wait_for_events(), ...: the shared channel's
        return getattr(self.channel, name)


class SourceRunner:
    """One configured source: its TailSource, its thread and its stop flag."""

    def __init__(self, config: SourceSection, channel, budget=None, router=None):
        from shipper.tail import TailSource

        self.config = config
        self.name = config.name
        self.stop_flag = threading.Event()
        limit = limit_of(config.max_lines_per_second, config.max_bytes_per_second)
        self.view = SourceChannel(channel, source_prefix(config.name), router, limit, self.stop_flag)
        self.source = TailSource(config.tail_options(), self.view, budget)
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
        finally:
            if self.view.fence.revoked:  # stop() gave up on it: its share of the descriptors goes back now
                self.source.close()

    def stop(self, timeout: float, replaced: bool = False) -> None:
        """Stop the source; it commits what it read within ``timeout``. One that is ``replaced``
        (a reload changes the queues and starts its successor next) and still runs then, stuck in
        a read or a slow commit, is revoked: whatever it committed later would land after its
        successor read the offsets (stored twice, routed to the old groups, its offset record
        behind the successor's), so it commits nothing more and its successor reads it again."""
        self.stop_flag.set()
        self.source.wakeup()
        if self.thread is not None:
            self.thread.join(timeout)
        if replaced and self.alive:
            log.warning("source %s did not stop within %gs (a read or a commit is slow): what it read and did not "
                        "commit yet is left to be read again", self.name, timeout)
            self.view.revoke()
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


def join_workers(threads: list[threading.Thread], abort: threading.Event, deadline: float, grace: float,
                 quiet: bool) -> None:
    """Wait for ``threads`` until ``deadline``; then set ``abort`` (the workers give their batches
    back) and wait ``grace`` more."""
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        if not quiet:
            log.warning("drain timeout: giving in-flight batches back to the channel")
        abort.set()
        until = time.monotonic() + grace
        for t in threads:
            t.join(max(0.0, until - time.monotonic()))


class Delivery:
    """The sink workers for one set of delivery settings, with their own stop flags.

    Each worker takes from its own lane (``lanes``, one channel view per worker: see
    :mod:`shipper.channel.groups`), so ``sinks`` workers send in parallel and every file's events
    stay in order; without lanes, the workers share ``channel``."""

    @classmethod
    def open(cls, config: Config, channel, telemetry: Telemetry) -> "Delivery":
        """The delivery of an agent without routes: with ``sinks`` > 1, one lane per worker in the
        channel (the implicit group's queues); with one sink, the channel's single queue."""
        sinks = config.delivery.sinks
        if sinks <= 1:
            channel.groups = None
            return cls(config, channel, telemetry)
        queues = channel.groups
        if queues is None or queues.lanes_of != {IMPLICIT: lane_names(IMPLICIT, sinks)}:
            queues = GroupQueues(channel, [IMPLICIT], [IMPLICIT], lanes={IMPLICIT: sinks})
        # else (a reload that kept the lanes): the same queues, whose leases the old workers hold
        return cls(config, channel, telemetry, lanes=queues.lane_views(IMPLICIT))

    def __init__(self, config: Config, channel, telemetry: Telemetry, flags=None, name: str = "sink",
                 lanes=None):
        d = config.delivery
        self.config = d
        self.addresses = config.addresses()
        self.selector = Selector(len(self.addresses), Balance(d.balance), d.max_penalty, d.busy_penalty)
        sink_options = config.sink_options()
        self.pool = CollectorPool(self.addresses, self.selector, sink_options, telemetry)
        client_options = config.client_options()
        # flags: (stopping, abort, exit_when_empty) shared with other groups' workers (routes)
        self.stopping, self.abort, self.exit_when_empty = flags or (threading.Event(), threading.Event(),
                                                                    threading.Event())
        self.threads: list[threading.Thread] = []

        def make_client(address):
            from shipper.sink.client import client_for

            return client_for(address, client_options)

        limit = limit_of(d.max_events_per_second, d.max_bytes_per_second)  # shared by the workers
        if lanes is not None and len(lanes) != d.sinks:
            raise ValueError(f"{len(lanes)} lanes for {d.sinks} sinks")
        self.workers = [
            SinkWorker(lanes[n] if lanes else channel, self.pool, make_client, sink_options, stopping=self.stopping, abort=self.abort,
                       exit_when_empty=self.exit_when_empty, telemetry=telemetry, name=f"{name}-{n}", limit=limit)
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

    def join(self, deadline: float, grace: float = 5.0, quiet: bool = False) -> None:
        """Wait for the workers until ``deadline``; then give their batches back and wait ``grace``
        more. A worker still blocked in a call after that is left behind (a daemon thread: its
        lease lives in memory, so its events are taken again at the next start)."""
        join_workers(self.threads, self.abort, deadline, grace, quiet)

    def error(self) -> BaseException | None:
        return next((w.error for w in self.workers if w.error is not None), None)

    def collectors(self, telemetry_snapshot: dict) -> list[CollectorStatus]:
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
            out.append(CollectorStatus(
                address=str(address), state=state, last_success=t.get("last_success"),
                consecutive_failures=h.failures, penalty_seconds=round(penalty, 3),
                failures=h.total_failures, events_ok=t.get("events_ok", 0),
                batches_ok=t.get("batches_ok", 0), last_error=h.last_error,
                last_latency=t.get("last_latency"),
                latency_buckets=t.get("latency_buckets"), latency_count=t.get("latency_count", 0),
                latency_sum=t.get("latency_sum", 0.0),
            ))
        return out
