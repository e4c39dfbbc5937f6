"""Counters the agent keeps about itself: what was sent, acknowledged and retried, and health.

One :class:`Telemetry` per agent, shared by the sink workers (the tail sources keep their own
counters, which the agent reads). Updates are a few integer additions under one lock, cheap next to
a batch. Readers (the final summary, the status file and the metrics endpoint) take a consistent
:meth:`snapshot`.

Each collector's reply latency goes into a fixed-bucket histogram (:data:`LATENCY_BUCKETS`,
cumulative counts as Prometheus wants them), so the metrics endpoint can export it without keeping
its own state.

Health (:func:`stall_verdict`) answers one question other shippers leave to the operator: are
events waiting while nothing is being delivered? A collector that accepts TCP and never answers,
a penalty box that never empties, a TLS mismatch: each looks like "running" from outside, but
events pile up in the channel and no acknowledgement arrives. The verdict is "stalled" when the
channel holds events, the oldest has waited at least ``stall_timeout``, and no batch was
acknowledged for ``stall_timeout`` (counted from the agent's start, so a backlog found at start
gets the full timeout to begin moving).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from shipper.ops.progress import counted


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def stall_verdict(*, queued: int, oldest_age: float | None, since_progress: float,
                  stall_timeout: float) -> tuple[bool, str]:
    """(healthy, why) for the stall rule in the module docstring."""
    if queued and oldest_age is not None and oldest_age >= stall_timeout and since_progress >= stall_timeout:
        return False, (f"stalled: {counted(queued, 'event')} queued, the oldest {oldest_age:.0f}s old, and nothing "
                       f"acknowledged for {since_progress:.0f}s (stall_timeout {stall_timeout:g}s)")
    if queued:
        return True, f"shipping: {counted(queued, 'event')} queued"
    return True, "idle: the channel is empty"


@dataclass
class CollectorStats:
    address: str
    batches_ok: int = 0
    events_ok: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_success: float | None = None  # wall-clock seconds
    last_error: str | None = None
    last_latency: float | None = None
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_count: int = 0
    latency_sum: float = 0.0

    def observe(self, latency: float) -> None:
        self.last_latency = latency
        self.latency_count += 1
        self.latency_sum += latency
        for i, bound in enumerate(LATENCY_BUCKETS):
            if latency <= bound:
                self.latency_buckets[i] += 1


@dataclass
class Telemetry:
    events_acked: int = 0
    bytes_acked: int = 0
    batches_acked: int = 0
    retries: int = 0
    events_sent: int = 0  # events a collector answered OK to (before the channel ack)
    send_failures: int = 0  # failed attempts, any collector
    last_ack: float | None = None  # wall-clock seconds
    started: float = field(default_factory=time.time)
    collectors: dict[str, CollectorStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _collector(self, address: str) -> CollectorStats:
        stats = self.collectors.get(address)
        if stats is None:
            stats = self.collectors[address] = CollectorStats(address)
        return stats

    def acked(self, events: int, nbytes: int) -> None:
        with self._lock:
            self.events_acked += events
            self.bytes_acked += nbytes
            self.batches_acked += 1
            self.last_ack = time.time()

    def retried(self) -> None:
        with self._lock:
            self.retries += 1

    def collector_success(self, address: str, latency: float, events: int) -> None:
        with self._lock:
            self.events_sent += events
            c = self._collector(address)
            c.batches_ok += 1
            c.events_ok += events
            c.consecutive_failures = 0
            c.last_success = time.time()
            c.observe(latency)

    def collector_failure(self, address: str, error: str) -> None:
        with self._lock:
            self.send_failures += 1
            c = self._collector(address)
            c.failures += 1
            c.consecutive_failures += 1
            c.last_error = error

    def keep_collectors(self, addresses) -> None:
        """Forget collectors no longer configured (after a reload), so they leave status and metrics."""
        wanted = {str(a) for a in addresses}
        with self._lock:
            for key in [k for k in self.collectors if k not in wanted]:
                del self.collectors[key]
            for key in wanted:
                self._collector(key)

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "events_acked": self.events_acked,
                "bytes_acked": self.bytes_acked,
                "batches_acked": self.batches_acked,
                "retries": self.retries,
                "events_sent": self.events_sent,
                "send_failures": self.send_failures,
                "last_ack": self.last_ack,
                "uptime": time.time() - self.started,
                "started": self.started,
                "collectors": {k: {**vars(v), "latency_buckets": list(v.latency_buckets)}
                               for k, v in self.collectors.items()},
            }
