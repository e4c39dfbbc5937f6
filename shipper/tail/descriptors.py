"""Descriptors for tailed files: a budget under RLIMIT_NOFILE, shared fairly by the sources.

A host may hold more log files than the process may hold descriptors: one file per container, per
tenant or per day, under a soft ``RLIMIT_NOFILE`` of 1,024 (systemd's and most containers'
default). Running out is not an error of any one file, and must never look like one.

* At start the agent raises its soft limit to the hard limit (:func:`raise_open_file_limit`,
  logged), the way most servers do.
* Tailed files get a **budget** below that limit (:func:`open_file_budget`): the limit less a
  reserve for what else the agent opens (the channel's SQLite files and lock, the collectors'
  sockets, the metrics endpoint and its clients, watchdog's inotify descriptor, the transient
  opens of discovery and identity checks). ``max_open_files`` sets it by hand, like Filebeat's
  ``harvester_limit``; it is never allowed above the limit less the reserve.
* One :class:`DescriptorBudget` is shared by every source of the agent. A source takes a slot per
  open file (:meth:`DescriptorBudget.acquire`). When none is free the source closes one of its own
  files to take its slot (``shipper.tail.source`` chooses: files at their end first, the least
  recently grown next, never a rotated or deleted file with lines left), and a file that finds no
  slot waits its turn. A source that waits while another holds more than its fair share (the
  budget split evenly between the sources that want slots) is **starving**; the other gives slots
  back at its next pass (:meth:`DescriptorBudget.excess`), so every source, and every file, advances.
"""

from __future__ import annotations

import logging
import resource
import threading
from dataclasses import dataclass

log = logging.getLogger("flume-ship.tail")

RESERVE_MIN = 64  # descriptors kept back for everything but tailed files...
RESERVE_SHARE = 8  # ...or 1/8 of the limit, whichever is more
BUDGET_MIN = 4  # below this, tailing in turns would mostly open and close


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (logged); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20  # Linux caps it at nr_open anyway
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d (%s); tailing within %d", soft, hard,
                        exc, soft)
            return soft
        log.info("open-file limit raised from %d to %d", soft, hard)
        return hard
    return soft if soft != resource.RLIM_INFINITY else hard


def current_open_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else (hard if hard != resource.RLIM_INFINITY else 1 << 20)


def open_file_budget(limit: int, configured: int = 0) -> int:
    """Descriptors for tailed files under a process limit of ``limit`` (``configured``: 0 is automatic)."""
    ceiling = max(BUDGET_MIN, limit - max(RESERVE_MIN, limit // RESERVE_SHARE))
    if configured <= 0:
        return ceiling
    if configured > ceiling:
        log.warning("max_open_files = %d leaves too little room under the open-file limit of %d; using %d",
                    configured, limit, ceiling)
        return ceiling
    return max(BUDGET_MIN, configured)


@dataclass(frozen=True, slots=True)
class DescriptorStatus:
    """What `status` and /metrics show about one source's descriptors."""

    budget: int  # slots for tailed files, shared by all sources
    open: int  # held by this source
    waiting: int  # this source's files waiting for a slot


class DescriptorBudget:
    """Slots for open tailed files, shared by the sources of one agent (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}  # owner -> slots held
        self._starving: set[int] = set()

    def register(self, owner: int) -> None:
        with self._lock:
            self._held.setdefault(owner, 0)

    def unregister(self, owner: int) -> None:
        with self._lock:
            self._held.pop(owner, None)
            self._starving.discard(owner)

    def acquire(self, owner: int) -> bool:
        """Take a slot if one is free."""
        with self._lock:
            if sum(self._held.values()) >= self.limit:
                return False
            self._held[owner] = self._held.get(owner, 0) + 1
            return True

    def release(self, owner: int) -> None:
        with self._lock:
            if self._held.get(owner, 0) > 0:
                self._held[owner] -= 1

    def starve(self, owner: int, starving: bool) -> None:
        """Say that ``owner`` has files waiting and nothing of its own to close (or no longer)."""
        with self._lock:
            if starving:
                self._starving.add(owner)
            else:
                self._starving.discard(owner)

    def excess(self, owner: int) -> int:
        """How many slots ``owner`` should give back because another source is starving."""
        with self._lock:
            if not self._starving or self._starving == {owner}:
                return 0
            share = max(1, self.limit // max(1, len(self._held)))
            return max(0, self._held.get(owner, 0) - share)

    def in_use(self) -> int:
        with self._lock:
            return sum(self._held.values())
