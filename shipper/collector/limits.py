"""What a collector lets its peers have: connections, time, memory, and who may connect.

Theory of operation
-------------------
A collector on a network meets clients it did not choose. Everything a peer can make it spend
has a bound here, checked BEFORE the resource is spent, and every bound that bites is counted
(:class:`CollectorStats`, by reason) and logged at a limited rate (:class:`RateLimitedLog`), so a
flood of refusals costs a few log lines, not a disk:

* **Who** (:class:`AllowList`): client networks (CIDR) allowed to connect, like Flume's
  ``ipFilterRules``; anyone else is closed at accept, before a thread or a buffer exists.
* **How many** (:class:`Admission`): at most ``max_connections`` at once (Flume's AvroSource
  ``threads``). At the limit the server closes the connection idle the longest to make room (an
  idle client reconnects when it has a batch); when none is idle, the new one is accepted and
  closed at once, so it fails fast instead of waiting in the backlog.
* **How long** (:class:`ServerLimits` timeouts): a TLS handshake must finish in
  ``tls_handshake_timeout``; once any byte of a call has arrived the whole call must arrive within
  ``frame_timeout`` (a partial frame, a dribbling "slow loris", a TLS or zlib fragment that never
  becomes a call); between calls a connection may stay silent for ``idle_timeout`` (Flume keeps
  its connections open between batches: the default is generous, and a client whose idle
  connection was closed simply reconnects).
* **How much memory** (:class:`MemoryBudget`): one budget shared by all connections for the bytes
  received and not yet answered. Each connection holds an :class:`Allowance` and charges it before
  it keeps bytes: for what it just read, and with deflate, before inflating, for the most that
  read could inflate to (the inflater is then capped at exactly that, so a deflate bomb cannot
  allocate past the budget); then again for what it keeps after feeding the protocol core. A byte held is charged ``CHARGE_FACTOR`` times, because a complete call exists twice
  while it is decoded (the frame and its decoded events). A connection that cannot get its
  charge is refused (closed); its allowance goes back to the budget. Per call, the protocol
  core's :class:`shipper.avroipc.CallLimits` bound what one call may carry.

Freed memory must also leave the process: glibc's malloc raises its mmap threshold as large
blocks are freed, after which big buffers come from the heap and stay resident when freed (a
deflate bomb would leave its high-water mark behind for ever). :func:`return_freed_memory` pins
the threshold at ``MMAP_THRESHOLD`` (8 MiB): bigger buffers are mapped, and unmapped when freed;
smaller ones come from the heap, where a freed buffer is reused by the next call, and
:func:`trim_freed_memory` hands every free page of every heap back to the OS: the accept loop
calls it about once a second, and a connection that held more than the threshold calls it as it
closes. The threshold used to be 64 KiB, which made each call's buffers
(the frame, its joined payload, the text written: ~1 MB each for 1,000 events of ~1 KiB) fresh
mappings: a page fault per 4 KiB touched and an ``munmap`` per buffer, ~40 % of the collector's
CPU on ~1 KiB events (perf, docs/benchmarks.md "Issue 17: the wire and collect").

None of this touches a socket: the accept loop and the per-connection reader of
``shipper.collector.server`` (and any other protocol's server) use these pieces.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from shipper.avroipc import DEFAULT_CALL_LIMITS, CallLimits
from shipper.errors import LimitRefused

CHARGE_FACTOR = 2
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_connections: int = 256
    idle_timeout: float = 600.0  # seconds of silence between calls (0: never)
    frame_timeout: float = 60.0  # seconds from a call's first byte to its last
    tls_handshake_timeout: float = 10.0
    memory_budget: int = 128 * MiB  # bytes held across all connections (charged CHARGE_FACTOR x)
    max_call_bytes: int = 32 * MiB  # one frame (one call), after inflation
    call: CallLimits = field(default_factory=lambda: DEFAULT_CALL_LIMITS)
    allow: tuple = ()  # ip_network objects; empty: everyone


# --------------------------------------------------------------------------- who


class AllowList:
    """Client networks allowed to connect (IPv4-mapped IPv6 addresses match their IPv4 form)."""

    def __init__(self, networks: tuple = ()) -> None:
        self.networks = tuple(networks)

    @staticmethod
    def parse(items: list[str]) -> tuple:
        """CIDR texts (a bare address is a /32 or /128); ValueError names the bad one."""
        out = []
        for item in items:
            for part in (p.strip() for p in item.split(",")):
                if not part:
                    continue
                try:
                    out.append(ipaddress.ip_network(part, strict=False))
                except ValueError:
                    raise ValueError(f"{part!r} is not a network like 10.0.0.0/8 or an address") from None
        return tuple(out)

    def allows(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr.version == net.version and addr in net for net in self.networks)


# --------------------------------------------------------------------------- how many


class Admission:
    """Counts open connections; :meth:`enter` refuses past ``max_connections``."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._open = 0
        self._left = threading.Condition()

    @property
    def open(self) -> int:
        return self._open

    def enter(self, wait: float = 0.0) -> None:
        """Count one more connection; past the maximum, wait up to ``wait`` seconds for one to
        leave (the caller has just closed one to make room), then LimitRefused."""
        with self._left:
            if self._open >= self.max_connections and wait > 0:
                self._left.wait_for(lambda: self._open < self.max_connections, wait)
            if self._open >= self.max_connections:
                raise LimitRefused("connections", f"already {self._open} connections (--max-connections)")
            self._open += 1

    def leave(self) -> None:
        with self._left:
            self._open -= 1
            self._left.notify()


# --------------------------------------------------------------------------- how much memory


class MemoryBudget:
    """Bytes that all connections together may hold; thread-safe, never blocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def free(self) -> int:
        return max(0, self.limit - self._used)

    def try_take(self, n: int) -> bool:
        with self._lock:
            if self._used + n > self.limit:
                return False
            self._used += n
            return True

    def give_back(self, n: int) -> None:
        with self._lock:
            self._used -= n


class Allowance:
    """One connection's share of the budget: :meth:`charge` sets it to what the connection holds."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held = 0
        self.peak = 0  # the most it held (charged), to tell a connection that held big buffers

    def room(self) -> int:
        """The most bytes this connection could hold in all (uncharged), given what is free."""
        return (self.budget.free() + self.held) // CHARGE_FACTOR

    def charge(self, nbytes: int) -> None:
        """Hold ``nbytes`` (charged CHARGE_FACTOR x); LimitRefused when the budget has not the room."""
        want = nbytes * CHARGE_FACTOR
        if want > self.held:
            if not self.budget.try_take(want - self.held):
                raise LimitRefused(
                    "memory", f"the memory budget ({self.budget.limit // MiB} MiB, --memory-budget) is spent"
                )
        elif want < self.held:
            self.budget.give_back(self.held - want)
        self.held = want
        if want > self.peak:
            self.peak = want

    def release(self) -> None:
        if self.held:
            self.budget.give_back(self.held)
            self.held = 0


# --------------------------------------------------------------------------- counting and logging


class CollectorStats:
    """Counters a collector keeps (read by its /metrics); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connections_total = 0
        self.connections_open = 0
        self.calls_total = 0
        self.events_total = 0
        self.bytes_total = 0  # event body bytes written
        self.rejects: Counter[str] = Counter()
        self.budget: MemoryBudget | None = None

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, n in deltas.items():
                setattr(self, name, getattr(self, name) + n)

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejects[reason] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "connections_total": self.connections_total,
                "connections_open": self.connections_open,
                "calls_total": self.calls_total,
                "events_total": self.events_total,
                "bytes_total": self.bytes_total,
                "rejects": dict(self.rejects),
                "memory_used": self.budget.used if self.budget else 0,
                "memory_budget": self.budget.limit if self.budget else 0,
            }


class RateLimitedLog:
    """At most one line per ``key`` every ``interval`` seconds; the next line says how many were
    left out, so a flood of refusals is visible without filling the disk."""

    MAX_KEYS = 4096

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._dropped: Counter[str] = Counter()

    def log(self, level: int, key: str, msg: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._dropped[key] += 1
                return
            if len(self._last) >= self.MAX_KEYS:  # keys may come from peers: forget the quiet ones
                for old in [k for k, t in self._last.items() if now - t >= self.interval]:
                    del self._last[old]
                    self._dropped.pop(old, None)
            self._last[key] = now
            dropped = self._dropped.pop(key, 0)
        if dropped:
            msg += f" ({dropped} more like this in the last {self.interval:g} s not logged)"
        self.logger.log(level, msg, *args)


MMAP_THRESHOLD = 8 * MiB
_libc = None  # glibc, once return_freed_memory() found it


def return_freed_memory() -> bool:
    """Pin glibc's mmap threshold at ``MMAP_THRESHOLD`` (see the module's docstring); False where
    there is no glibc (the bound on memory in use holds all the same)."""
    global _libc
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD) == 1
        libc.mallopt(m_trim_threshold, MMAP_THRESHOLD)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return False
    _libc = libc
    return ok


GC_YOUNG_THRESHOLD = 100_000


def fewer_gc_passes() -> None:
    """Let the young generation grow to ``GC_YOUNG_THRESHOLD`` objects before the cycle collector
    runs (Python's default is 700). A call of 1,000 events makes ~2,000 container objects (an
    event tuple and its headers dict each) that all die when the call is answered and form no
    cycle; at 700 the collector ran two or three times inside every call, traversing them: ~8 %
    of collect's CPU on ~1 KiB events (perf). Objects that die young are not counted against the
    threshold, so at 100,000 a pass comes only when objects really accumulate."""
    import gc

    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def trim_freed_memory() -> None:
    """Give the free pages of every malloc heap back to the OS (``malloc_trim(0)``); nothing
    unless :func:`return_freed_memory` set glibc up."""
    if _libc is not None:
        _libc.malloc_trim(0)
