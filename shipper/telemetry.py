"""Counters the agent keeps about itself: what was read, put, sent, acknowledged and retried.

One :class:`Telemetry` per agent, shared by the source and the sink workers. Updates are a few
integer additions under one lock, cheap next to a batch. Readers (the final summary, and later the
status command and the metrics endpoint) take a consistent :meth:`snapshot`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


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


@dataclass
class Telemetry:
    events_acked: int = 0
    bytes_acked: int = 0
    batches_acked: int = 0
    retries: int = 0
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
            c = self._collector(address)
            c.batches_ok += 1
            c.events_ok += events
            c.consecutive_failures = 0
            c.last_success = time.time()
            c.last_latency = latency

    def collector_failure(self, address: str, error: str) -> None:
        with self._lock:
            c = self._collector(address)
            c.failures += 1
            c.consecutive_failures += 1
            c.last_error = error

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "events_acked": self.events_acked,
                "bytes_acked": self.bytes_acked,
                "batches_acked": self.batches_acked,
                "retries": self.retries,
                "last_ack": self.last_ack,
                "uptime": time.time() - self.started,
                "collectors": {k: dict(vars(v)) for k, v in self.collectors.items()},
            }
