"""The sink stage: the one place where retry meets failover.

A sink worker repeats one transaction, Flume's take-send-commit::

    lease = channel.take(batch)            # the oldest whole chunks nobody else holds
    deliver(lease)                         # returns only when a collector answered Status OK
    channel.ack(lease)                     # now, and only now, they leave the channel

The channel stores events as chunks of encoded events joined back to back, which is already the
middle of an appendBatch parameter, so a lease is sent as ``(count, payload)`` with no per-event
work. A lease within ``batch_size`` events (and ``batch_bytes``) is one call. A bigger one (a
stored chunk can be bigger than the configured batch) is cut at event boundaries into batches
of at most ``batch_size`` events, sent as several calls on one connection; the lease is acked
only when every call answered OK, and a retry starts at the first call not answered OK (with
``max_rejects``, a call rejected that often is given up on and the others still go: only its
events are moved aside, in the transaction that acks the rest).

By default (``window`` 1) those calls go one at a time. That keeps a single worker's delivery in
order: the calls answered OK are always a prefix, so resuming after them sends the rest in order,
and at most one batch is in flight to be duplicated. ``window`` > 1 pipelines them, which hides
round trips but may reorder: Flume 1.10+ runs pipelined calls of one connection on different
threads (docs/interop.md), and a refused call sent again lands after its accepted successors.

``deliver`` is a tenacity retry loop that never gives up by default. Each attempt asks the
:class:`~shipper.sink.policy.Selector` for a collector (penalty box + balance mode) and sends the stored
event bytes as they are. Every failure closes that collector's connection (the client does it),
puts the collector in the penalty box and, if another collector is still eligible, fails over at
once; if none is, waits an exponential backoff with full jitter before the next attempt. While no
collector accepts, the events simply stay in the channel.

Overlap: while lease N travels, a helper thread takes lease N+1 (only if it is ready: a whole
batch, or one lingering could not grow) and then commits the ack of lease N-1; the take comes
first so that it never waits for that commit. When N is answered OK, N+1 is sent at once and N's
ack goes to the helper with the next take. SQLite's commits (fsyncs), the
channel's lock (held by the source's put commits too) and the collector's round trip (its own
fsync) then overlap, and the sending thread waits only for the collector. The order of one
worker's batches is unchanged: N+1 is sent only after N was answered OK. The cost is in the crash
bound: a worker may hold TWO delivered-or-in-flight leases whose acks have not committed (N-1,
acked in the background, and N, being sent), so a crash can make it send up to ``2 x batch_size``
events again (one batch before the overlap); a lease taken ahead and not yet sent is only given
back. Nothing can be lost: an ack is only ever for a lease a collector answered OK.

Linger: a partial lease (the channel ran out before a whole batch) is given back and taken again
after ``linger``, so a trickle of events goes in few calls. Not when it comes right after a whole
lease: then it is the remainder of a burst (a file read in bulk, a read's tail), which nothing
would grow, and it is sent at once; the next partial lease lingers again, so a burst costs at
most one small call per ``linger`` and a trickle is batched as before.

Ordered pipelining: a collector that advertised it in its handshake (``flume-ship collect``:
it applies a connection's calls in order and refuses every call behind a refused one, see
shipper/collector/server.py) gets up to ``in_flight`` leases in flight, across leases, on one
connection. After a lease was delivered the one-at-a-time way, if that collector advertised it
(and the balance is failover and no rate limit applies), the worker starts a *run*: the client
pulls the next lease from the channel whenever a call may go out (only leases ready at once, as
for the overlap above; a lease bigger than one call goes back to the one-lease path), answers are
matched to leases, and the leases answered OK are handed to the helper for their acks strictly
in lease order (one helper task, and one channel transaction, per group of consecutive answered
leases). A run ends when no lease is ready, after ``_RUN_LEASES`` leases (so
failover returns to a recovered primary and ``reset_connection_interval`` is honoured between
runs), on ``stopping`` (nothing new is sent; the calls in flight are answered) or on a failure. After a failure every lease of the run not
answered OK is delivered again, in order, one at a time through :meth:`deliver` (retry, failover,
backoff, ``max_rejects``: the refused lease counts as rejected once already); a lease answered
OK behind one not yet delivered is acked only after it. Since the collector refused everything
behind the refused call, resending keeps every file in order. Into any other collector (Flume,
whose 1.10+ runs pipelined calls out of order; Thrift) nothing changes: one call at a time.
The crash bound grows with it: a new lease is sent only while at most ``in_flight`` leases of the
worker are sent and not yet acked for good, so a kill repeats at most ``in_flight + 1`` leases per
worker (3 by default), against two into a collector without the promise.

Shutdown: ``stopping`` means "take nothing new, finish what is in flight"; ``abort`` means "give the
in-flight batch back now" (used when the drain timeout runs out or a deadline passes). A batch that
is given back is nacked, so it is the first one shipped next time; had the process died instead,
the lease would have vanished with it and the events would be taken again after restart. A lease
taken ahead (see Overlap) is still sent once ``stopping`` is set; ``abort`` nacks it.

Several workers (``--sinks N``) run at once, each with its own connections, sharing the
selector; each takes from its own *lane* of the channel (``shipper.channel.groups``: a file family
always goes to the same lane), so every file's events still arrive in order while different files
are sent in parallel. The crash bound above is per worker: a kill may repeat up to
``(in_flight + 1) x batch_size x N`` events into collect (``2 x batch_size x N`` into others),
each file at most its lane's last ``in_flight + 1`` batches.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import tenacity

from shipper.errors import ChannelIOError, CollectorRejected, GaveUp, ShipperError
from shipper.sink.policy import Balance, Selector, is_retriable

log = logging.getLogger("flume-ship.sink")

_STOP_LOOK = 0.1  # a backoff looks at the stop flag this often
_RUN_LEASES = 64  # most leases of one pipelined run (between runs: balance, recycling, the penalty box)


class _Run:
    """One pipelined run of a worker on one collector's connection (``SinkWorker._pipelined``)."""

    __slots__ = ("collector", "first", "sent", "sent_at", "ok", "next_ack", "acks", "committed", "leftover", "base")

    def __init__(self, collector: int, first, owed):
        self.collector = collector
        self.first = first  # the first lease to send (taken already)
        self.leftover = None  # a lease taken and not sent, for the one-lease path
        # The leases sent, in order; the first one delivered before the run (its ack not handed
        # to the helper yet) counts as sent and answered OK.
        self.sent: list = [owed] if owed is not None else []
        self.sent_at: list[float] = [0.0] * len(self.sent)
        self.ok: set[int] = set(range(len(self.sent)))  # indexes in ``sent`` answered OK
        self.base = len(self.sent)  # the client's first call is sent[base]
        self.next_ack = 0  # sent[:next_ack] are handed to the helper for their ack
        self.acks: list[tuple[Future, int]] = []  # the helper's ack tasks, oldest first, and their lease counts
        self.committed = 0  # leases of ``sent`` whose ack committed

    def unsettled(self) -> int:
        """Leases sent whose ack has not committed: what a kill now would send again."""
        return len(self.sent) - self.committed


@dataclass(frozen=True)
class SinkOptions:
    batch_size: int = 1000
    batch_bytes: int = 4 * 1024 * 1024
    linger: float = 0.2  # how long a partial batch may wait for more events
    window: int = 1  # calls in flight when a lease is sent as several batches (>1 may reorder)
    in_flight: int = 2  # leases in flight per lane into a collector that advertises ordered pipelining
    backoff_initial: float = 0.5  # first backoff bound (full jitter draws from [0, bound])
    backoff_max: float = 30.0  # the cap on any single wait
    busy_penalty: float = 5.0  # the cap on a wait (and a penalty) for a collector alive but busy
    max_attempts: int | None = None  # None = retry forever
    max_rejects: int = 0  # a batch collectors rejected this often is dead-lettered (0: never)
    reset_connection_interval: float = 0.0  # reconnect a connection this old, between batches (0: never)
    log_repeat_interval: float = 30.0  # a collector that keeps failing is logged at most this often


class _Aborted(Exception):
    """The in-flight batch must be given back now (drain timeout, deadline)."""


class CollectorPool:
    """The collectors shared by all sink workers: addresses, the selector and failure logging."""

    def __init__(self, addresses: Sequence, selector: Selector, options: SinkOptions, telemetry=None):
        self.addresses = list(addresses)
        self.selector = selector
        self.options = options
        self.telemetry = telemetry
        self._lock = threading.Lock()
        self._last_logged = [0.0] * len(self.addresses)

    def choose(self, tried: frozenset[int]) -> int:
        with self._lock:
            return self.selector.choose(time.monotonic(), tried)

    def next_is_busy(self) -> bool:
        with self._lock:
            return self.selector.next_is_busy()

    def has_untried(self, tried: frozenset[int]) -> bool:
        with self._lock:
            return self.selector.has_untried_eligible(time.monotonic(), tried)

    def success(self, i: int, latency: float, events: int) -> None:
        with self._lock:
            had = self.selector.record_success(i, time.monotonic())
        if had:
            log.info("collector %s recovered after %d failed attempts", self.addresses[i], had)
        if self.telemetry:
            self.telemetry.collector_success(str(self.addresses[i]), latency, events)

    def failure(self, i: int, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            penalty = self.selector.record_failure(i, now, str(exc), busy=getattr(exc, "busy", False))
            n = self.selector.health[i].failures
            due = n == 1 or now - self._last_logged[i] >= self.options.log_repeat_interval
            if due:
                self._last_logged[i] = now
        if due:
            if n == 1:
                log.warning("collector %s failed: %s (skipped for %gs)", self.addresses[i], exc, penalty)
            else:
                log.warning(
                    "collector %s still failing: %d attempts in a row, last: %s (skipped for %gs)",
                    self.addresses[i], n, exc, penalty,
                )
        if self.telemetry:
            self.telemetry.collector_failure(str(self.addresses[i]), str(exc))


class _Wait(tenacity.wait.wait_base):
    """No wait while an untried collector is eligible; otherwise exponential backoff, full jitter."""

    def __init__(self, worker: "SinkWorker"):
        self.worker = worker
        self.backoff = tenacity.wait_random_exponential(
            multiplier=worker.options.backoff_initial, max=worker.options.backoff_max
        )
        self.busy_backoff = tenacity.wait_random_exponential(
            multiplier=worker.options.backoff_initial,
            max=min(worker.options.busy_penalty, worker.options.backoff_max),
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        if self.worker.pool.has_untried(frozenset(self.worker.tried)):
            return 0.0
        self.worker.tried.clear()
        self.worker.backoffs += 1
        # The exponent grows with backoff rounds, not with failovers between collectors.
        state = tenacity.RetryCallState(retry_state.retry_object, None, (), {})
        state.attempt_number = self.worker.backoffs
        # A busy collector (it answered, only not OK) is tried again soon; an unreachable one waits.
        return (self.busy_backoff if self.worker.pool.next_is_busy() else self.backoff)(state)


class SinkWorker:
    """One take -> deliver -> ack loop with its own connection to each collector."""

    def __init__(
        self,
        channel,
        pool: CollectorPool,
        make_client: Callable[[object], object],
        options: SinkOptions,
        *,
        stopping: threading.Event,
        abort: threading.Event,
        exit_when_empty: threading.Event | None = None,
        telemetry=None,
        name: str = "sink-0",
        limit=None,
    ):
        self.channel = channel
        self.pool = pool
        self.options = options
        self.stopping = stopping
        self.abort = abort
        self.exit_when_empty = exit_when_empty or threading.Event()
        self.telemetry = telemetry
        self.name = name
        self._clients = [None] * len(pool.addresses)
        self._since = [0.0] * len(pool.addresses)  # when each client's connection was opened
        self.recycled = 0
        self._make_client = make_client
        self.tried: set[int] = set()
        self.backoffs = 0
        self._part_acked = False  # the lease being delivered has parts acknowledged already
        self.rejects: dict[int, int] = {}  # part index -> rejections, for the lease being delivered
        self.poisoned: dict[int, str] = {}  # part index -> why it was given up on (max_rejects)
        self._dead_bytes = 0
        self.limit = limit  # shipper.sink.ratelimit.RateLimit shared by the group's workers, or None
        self.delivered_events = 0
        self.error: BaseException | None = None
        self._ack_pool: ThreadPoolExecutor | None = None
        self._last_ok: int | None = None  # the collector that answered the last call OK
        # The last lease taken to send was a whole batch: a partial one right after it is the
        # remainder of a burst, sent at once (see _next_lease).
        self._after_whole = False

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        lease = None  # taken, not yet delivered
        owed = None  # delivered, its ack not yet handed to the helper
        ahead: Future | None = None  # the next lease, taken by the helper while ``lease`` travels
        tasks: list[Future] = []  # the helper's tasks (take ahead, then an ack), oldest first
        try:
            while not self.abort.is_set() and (lease is not None or not self.stopping.is_set()):
                if lease is None:  # the channel ran dry: let every ack land first
                    tasks = self._finish(tasks, keep=0)
                    if owed is not None:
                        self._ack(owed)
                        self._acked(owed)
                        owed = None
                    lease = self._next_lease()
                    if lease is None:
                        if self.exit_when_empty.is_set() and self.channel.stats().events == 0:
                            return
                        continue
                # While this lease travels, the helper takes the next one, then commits the
                # previous one's ack: this thread never waits for the channel, and the take
                # never waits for our own ack's commit.
                ahead = Future()
                tasks.append(self._acker().submit(self._take_then_ack, ahead, owed))
                owed = None
                try:
                    if self.limit is not None:
                        self.limit.acquire(lease.count, lease.nbytes, self.abort)
                    ranges = self.deliver(lease)
                    if ranges:  # rejected parts moved aside (dead letters or a secondary), the rest acked
                        self._ack(lease, dead=self.poisoned_reason(), ranges=ranges)
                        self._acked(lease, sum(hi - lo for lo, hi in ranges), self._dead_bytes)
                        lease, ahead = ahead.result(), None
                        continue
                except BaseException:
                    self.channel.nack(lease)
                    lease = None
                    raise
                if hasattr(lease, "release"):
                    lease.release()  # delivered: only its seqs are needed for the ack now
                owed, lease, ahead = lease, ahead.result(), None
                # The previous ack (committed while this lease travelled) must have landed before
                # the next lease is sent: otherwise three leases (that ack's, this one, the next)
                # could be sent again after a kill, not the two the crash bound promises.
                tasks = self._finish(tasks, keep=0)
                if lease is not None and self._may_pipeline():
                    # The collector that took it promised ordered pipelining: keep several in flight.
                    run, owed, lease = _Run(self._last_ok, lease, owed), None, None
                    lease = self._pipelined(run)
        except _Aborted:
            pass
        except BaseException as exc:  # recorded for the agent, which decides the exit code
            self.error = exc
            if not isinstance(exc, ShipperError):
                log.exception("%s stopped by an unexpected error", self.name)
        finally:
            for give_back in (lease, self._result(ahead)):
                if give_back is not None:
                    self.channel.nack(give_back)
            try:
                self._finish(tasks, keep=0)
                if owed is not None:  # delivered: acked now, or sent again next time (a duplicate)
                    self._ack(owed)
                    self._acked(owed)
            except BaseException as exc:  # the batch is sent again next time: a duplicate, not a loss
                log.warning("%s: a delivered batch was not acknowledged: %s", self.name, exc)
            self.close()

    # --- ordered pipelining -------------------------------------------------------------

    def _may_pipeline(self) -> bool:
        """Pipeline now: ``in_flight`` > 1, balance failover (round_robin and random choose a
        collector per batch), no rate limit (its waits would hold answers unread) and the
        collector that answered last advertised ordered pipelining on its connection."""
        if (self.options.in_flight <= 1 or self.limit is not None or self._last_ok is None
                or self.pool.selector.balance is not Balance.FAILOVER):
            return False
        client = self._clients[self._last_ok]
        return client is not None and client.connected and getattr(client, "ordered_pipeline", False)

    def _pipelined(self, run: "_Run"):
        """Send leases with up to ``in_flight`` calls in flight on one connection, across leases,
        for as long as leases are ready at once (at most ``_RUN_LEASES``, so the balance mode and
        connection recycling get their say between runs). Acks go to the helper in lease order,
        only for leases answered OK. On a failure, every lease not answered OK is delivered again,
        in order, through :meth:`deliver` (the usual retry and failover). Returns a lease taken
        but not sent (a bigger one than one call, sent by the caller's loop), or None; when it
        returns, every lease it sent is acked (or moved aside, or, on an error, given back)."""
        i = run.collector
        client = self._clients[i]
        try:
            try:
                client.append_payloads(self._feed(run), window=self.options.in_flight, ordered=True,
                                       on_ack=lambda k, _n: self._answered(run, k))
            except BaseException as exc:
                if not is_retriable(exc):
                    raise
                self.pool.failure(i, exc)
                self._redeliver(run, exc)
            self._settle(run)
            self._drain(run, keep=0)
            return run.leftover
        except BaseException:
            self._give_back(run)
            raise

    def _feed(self, run: "_Run"):
        """The leases the client sends, pulled only when a call may go out."""
        opts = self.options
        while True:
            self._settle(run)
            if run.first is not None:
                lease, run.first = run.first, None
            else:
                if len(run.sent) >= _RUN_LEASES or self.stopping.is_set() or self.abort.is_set():
                    return
                # The crash bound: at most in_flight + 1 leases sent and not yet acked for good.
                while run.unsettled() > opts.in_flight and run.acks:
                    self._drain(run, keep=len(run.acks) - 1)
                lease = self._take_ready()
                if lease is None:
                    return
            if (lease.count > opts.batch_size or lease.nbytes > opts.batch_bytes
                    or self._recycle_due(run.collector, time.monotonic())):
                run.leftover = lease  # more than one call, or a connection to renew: the one-lease path
                return
            run.sent.append(lease)
            run.sent_at.append(time.monotonic())
            yield lease.count, lease.payload

    def _answered(self, run: "_Run", k: int) -> None:
        """The client's ``k``-th call (of this run) was answered OK."""
        k += run.base
        run.ok.add(k)
        lease = run.sent[k]
        self.pool.success(run.collector, time.monotonic() - run.sent_at[k], lease.count)

    def _settle(self, run: "_Run") -> None:
        """Hand the helper the acks of the leases answered OK that follow the acked ones."""
        ready = []
        while run.next_ack < len(run.sent) and run.next_ack in run.ok:
            lease = run.sent[run.next_ack]
            if hasattr(lease, "release"):
                lease.release()
            ready.append(lease)
            run.next_ack += 1
        if ready:
            run.acks.append((self._acker().submit(self._ack_all, ready), len(ready)))

    def _ack_all(self, leases):
        """The helper's task: ack consecutive answered leases, several in one channel transaction
        (one commit instead of one per lease); returns them."""
        self._ack(leases if len(leases) > 1 else leases[0])
        return leases

    def _drain(self, run: "_Run", keep: int) -> None:
        """Wait for all but the newest ``keep`` of the run's ack tasks; count what they acked."""
        while len(run.acks) > keep:
            future, n = run.acks.pop(0)
            for lease in future.result():
                self._acked(lease)
            run.committed += n

    def _redeliver(self, run: "_Run", exc: BaseException) -> None:
        """After a failed pipelined call: ack what was answered OK in order, then deliver every
        other lease again, in order, the usual way; the first refused one counts as rejected once."""
        self._settle(run)
        refused_first = isinstance(exc, CollectorRejected) and exc.about_batch
        while run.next_ack < len(run.sent):
            k = run.next_ack
            lease = run.sent[k]
            if k not in run.ok:
                ranges = self.deliver(lease, prior_rejects=1 if refused_first else 0)
                refused_first = False
                if ranges:
                    self._drain(run, keep=0)
                    self._ack(lease, dead=self.poisoned_reason(), ranges=ranges)
                    self._acked(lease, sum(hi - lo for lo, hi in ranges), self._dead_bytes)
                    run.committed += 1
                    run.next_ack += 1
                    continue
                run.ok.add(k)
            self._settle(run)

    def _give_back(self, run: "_Run") -> None:
        """An error or an abort ends the run: ack the leases answered OK in order, give the rest back."""
        try:
            self._settle(run)
            self._drain(run, keep=0)
        except BaseException as exc:  # sent again next time: a duplicate, never a loss
            log.warning("%s: a delivered batch was not acknowledged: %s", self.name, exc)
        for lease in run.sent[run.next_ack:]:
            self.channel.nack(lease)
        run.sent = run.sent[:run.next_ack]
        for lease in (run.first, run.leftover):
            if lease is not None:
                self.channel.nack(lease)
        run.first = run.leftover = None

    def _take_then_ack(self, ahead: Future, done):
        """The helper's task: take the next lease (into ``ahead``), then ack ``done``; returns it."""
        try:
            ahead.set_result(self._take_ready())
        except BaseException as exc:  # noqa: BLE001 - handed to the sending thread
            ahead.set_exception(exc)
        if done is not None:
            self._ack(done)
        return done

    def _finish(self, tasks: list[Future], keep: int) -> list[Future]:
        """Wait for all but the newest ``keep`` helper tasks; count the batches they acked."""
        while len(tasks) > keep:
            done = tasks.pop(0).result()
            if done is not None:
                self._acked(done)
        return tasks

    @staticmethod
    def _result(future):
        """A read-ahead's lease (None if there is none, or its take failed)."""
        if future is None:
            return None
        try:
            return future.result()
        except BaseException:  # noqa: BLE001 - a failed take holds no lease
            return None

    def _acker(self) -> ThreadPoolExecutor:
        if self._ack_pool is None:
            self._ack_pool = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-ack")
        return self._ack_pool

    def _acked(self, lease, dead_events: int = 0, dead_bytes: int = 0) -> None:
        """Count a lease as delivered (but the events that were moved aside instead)."""
        self.delivered_events += lease.count - dead_events
        if self.telemetry and lease.count > dead_events:
            self.telemetry.acked(lease.count - dead_events, lease.nbytes - dead_bytes)

    def _whole(self, lease) -> bool:
        """A whole batch: full by count or bytes, or stopped at a chunk that did not fit (waiting
        could not grow it). Notes it: a partial batch right after is a burst's remainder."""
        opts = self.options
        whole = lease.count >= opts.batch_size or lease.nbytes >= opts.batch_bytes or getattr(lease, "full", False)
        if whole:
            self._after_whole = True
        return whole

    def _take_ready(self):
        """A lease to send next at once, or None: only one that waiting would not grow (full, a
        whole batch, or --once), and nothing new while stopping."""
        opts = self.options
        if self.stopping.is_set() or self.abort.is_set():
            return None
        ready = getattr(self.channel, "ready", None)
        if (ready is not None and opts.linger > 0 and not self.exit_when_empty.is_set()
                and not ready(opts.batch_size, opts.batch_bytes)):
            return None  # it would be given back to linger: do not read it at all
        lease = self._take(opts.batch_size, opts.batch_bytes)
        if lease is None:
            return None
        if self._whole(lease) or opts.linger <= 0 or self.exit_when_empty.is_set():
            return lease
        self.channel.nack(lease)
        return None

    def _ack(self, lease, dead: str | None = None, ranges=None) -> None:
        """Ack until the channel takes it: a write error here must not drop the worker.

        Should the process stop before the ack lands, the batch is sent again at the next start
        (a duplicate, never a loss). With ``dead`` (why), the events of ``ranges`` (the rejected
        parts) are moved aside instead: to the dead letters or the group's secondary
        (``channel.dead_letter``), in one transaction with the ack of the rest. A list of leases
        is acked in one transaction (``channel.ack_all``).
        """
        failures = 0
        while True:
            try:
                if isinstance(lease, list):  # several, in one transaction
                    self.channel.ack_all(lease)
                elif dead is None:
                    self.channel.ack(lease)
                else:
                    where = self.channel.dead_letter(lease, dead, ranges)
                    moved = sum(hi - lo for lo, hi in ranges)
                    log.error("%s: %s; %d events moved to %s (see flume-ship channel dead-letters)%s",
                              self.name, dead, moved, where,
                              f", the other {lease.count - moved} of the batch delivered" if moved < lease.count
                              else "")
                return
            except ChannelIOError as exc:
                failures += 1
                if failures == 1:
                    log.warning("%s: cannot acknowledge a delivered batch in the channel: %s; retrying",
                                self.name, exc)
                if self.abort.wait(min(5.0, 0.2 * 2**failures)):
                    return

    def _take(self, max_events: int, max_bytes: int):
        try:
            return self.channel.take(max_events, max_bytes)
        except ChannelIOError as exc:
            log.warning("%s: cannot read the channel: %s; retrying", self.name, exc)
            self.abort.wait(1.0)
            return None

    def _next_lease(self):
        opts = self.options
        lease = self._take(opts.batch_size, opts.batch_bytes)
        if lease is None:
            # Nothing will come when --once has read everything and the channel is empty: the
            # caller exits at once instead of after a wait that nobody would cut short.
            if not (self.exit_when_empty.is_set() and self.channel.stats().events == 0):
                self.channel.wait_for_events(0.5)
            return None
        after_whole, self._after_whole = self._after_whole, False
        if not self._whole(lease) and opts.linger > 0 and not (
                after_whole or self.exit_when_empty.is_set() or self.stopping.is_set()):
            # A partial batch that more events could still grow (the channel ran out, rather
            # than its next chunk not fitting): give it back and let events gather for `linger`.
            # Not right after a whole batch: then it is the remainder of a burst, which events
            # outran (a read's tail, a file's end) and which waiting would only delay; should
            # more come, the next partial batch lingers, so this costs at most one small call
            # per linger.
            self.channel.nack(lease)
            if self.stopping.wait(opts.linger) or self.abort.is_set():
                return None
            lease = self._take(opts.batch_size, opts.batch_bytes)
            if lease is not None:
                self._whole(lease)
        return lease

    # --- one batch ------------------------------------------------------------------------

    def deliver(self, lease, prior_rejects: int = 0) -> list[tuple[int, int]]:
        """Send a lease until a collector answered OK for all of it (or the retry budget or abort
        ends it). ``lease`` needs ``count``, ``nbytes``, ``payload`` and ``batches(n, b)``.

        With ``max_rejects``, a part (one call) the collectors rejected that often is given up on
        and the others are still sent; the return value names the given-up parts as event index
        ranges of the lease (empty when every part was answered OK), so exactly those events, and
        never an accepted one, are moved aside. ``prior_rejects``: times a single-call lease was
        rejected already (by a pipelined call that failed)."""
        opts = self.options
        if lease.count <= opts.batch_size and lease.nbytes <= opts.batch_bytes:
            parts = [(lease.count, lease.payload)]
        else:
            parts = lease.batches(opts.batch_size, opts.batch_bytes)
        self.tried.clear()
        self.backoffs = 0
        self.rejects, self.poisoned = {}, {}
        if prior_rejects and len(parts) == 1 and opts.max_rejects:
            self.rejects[0] = prior_rejects
            if prior_rejects >= opts.max_rejects:
                self.poisoned[0] = f"collectors rejected a batch {prior_rejects} times (max_rejects)"
                self._dead_bytes = len(parts[0][1])
                return [(0, lease.count)]
        stop = tenacity.stop_never
        if self.options.max_attempts:
            stop = tenacity.stop_after_attempt(self.options.max_attempts)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_retriable),
            stop=stop,
            wait=_Wait(self),
            sleep=self._sleep,
            reraise=True,
            before_sleep=self._count_retry,
        )
        try:
            retrying(self._attempt, parts, set())
        except ShipperError as exc:
            if exc.retriable:
                raise GaveUp(f"gave up after {self.options.max_attempts} attempts: {exc}") from exc
            raise
        starts = [0]
        for count, _ in parts:
            starts.append(starts[-1] + count)
        self._dead_bytes = sum(len(parts[j][1]) for j in self.poisoned)
        return [(starts[j], starts[j + 1]) for j in sorted(self.poisoned)]

    def poisoned_reason(self) -> str:
        return "; ".join(dict.fromkeys(self.poisoned.values()))

    def _sleep(self, seconds: float) -> None:
        """Back off; a stop or an abort ends the wait and gives the batch back (nothing is on the wire)."""
        until = time.monotonic() + seconds
        while seconds > 0:
            if self.abort.wait(min(seconds, _STOP_LOOK)) or (self.stopping.is_set() and not self._part_acked):
                raise _Aborted()
            seconds = until - time.monotonic()

    def _count_retry(self, retry_state: tenacity.RetryCallState) -> None:
        if self.telemetry:
            self.telemetry.retried()

    def _attempt(self, parts: list[tuple[int, bytes]], done: set[int]) -> None:
        """One collector, the parts not yet answered OK (``done`` holds their indexes; with
        window 1 they are a prefix, so the rest goes out in order)."""
        self._part_acked = bool(done)
        if self.abort.is_set() or (self.stopping.is_set() and not done):
            # Stopping: the drain waits only for calls already on the wire. A lease partly
            # acknowledged is finished instead (giving it back would send those parts twice).
            raise _Aborted()
        todo = [i for i in range(len(parts)) if i not in done]
        i = self.pool.choose(frozenset(self.tried))
        self.tried.add(i)
        client = self._clients[i]
        if client is None:
            client = self._clients[i] = self._make_client(self.pool.addresses[i])
        started = time.monotonic()
        self._recycle(i, client, started)
        try:
            if len(todo) == 1:
                client.append_payload(*parts[todo[0]])
                done.add(todo[0])
            else:
                client.append_payloads([parts[j] for j in todo], window=self.options.window,
                                       on_ack=lambda k, _n: done.add(todo[k]))
        except BaseException as exc:
            if is_retriable(exc):
                self.pool.failure(i, exc)
            if isinstance(exc, CollectorRejected) and exc.about_batch and self.options.max_rejects:
                # The first part not answered OK was refused: parts go out in order and sending
                # stops at a refusal, so every part before it was accepted.
                j = min(k for k in todo if k not in done)
                self.rejects[j] = self.rejects.get(j, 0) + 1
                if self.rejects[j] >= self.options.max_rejects:
                    self.poisoned[j] = (f"collectors rejected a batch {self.rejects[j]} times (max_rejects), "
                                        f"last: {exc}")
                    done.add(j)  # given up on: the others are still sent
                    if len(done) == len(parts):
                        return
            raise
        self._last_ok = i
        self.pool.success(i, time.monotonic() - started, sum(parts[j][0] for j in todo))

    def _recycle_due(self, i: int, now: float) -> bool:
        interval = self.options.reset_connection_interval
        return bool(interval) and now - self._since[i] >= interval

    def _recycle(self, i: int, client, now: float) -> None:
        """Flume's reset-connection-interval: a connection older than the interval is closed before
        the next batch (never with a call in flight, so the switch neither loses nor repeats one)
        and the call below opens a new one, resolving the address again (a VIP's new hosts)."""
        interval = self.options.reset_connection_interval
        if not client.connected:
            self._since[i] = now
        elif interval and now - self._since[i] >= interval:
            client.close()
            self._since[i] = now
            self.recycled += 1
            log.debug("%s: reconnecting to %s (reset_connection_interval %gs)", self.name,
                      self.pool.addresses[i], interval)

    def close(self) -> None:
        if self._ack_pool is not None:
            self._ack_pool.shutdown(wait=True)
            self._ack_pool = None
        for client in self._clients:
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing is best effort; the socket is gone either way
                    pass
