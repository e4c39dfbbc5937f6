"""The put stage: threads that pack and commit the tail source's batches while the reader cuts on.

Theory of operation
-------------------
Without it the reader does everything in turn: read and cut a batch, then ``channel.put`` it,
which joins, compresses (LZ4), checksums and commits (an fsync) while the reader waits. The
compression, the checksum and the commit release the GIL, so they can run beside the reader on
the other core. The reader *submits* a closed batch (its events, the offset records encoded when
it was closed, its families) and goes on reading; a *pack* thread makes the batch's stored chunks
(``pack``: join, compress, checksum), and a *commit* thread commits packed batches one by one
(``put``: one transaction with their offset records), in the order they were submitted. So three
batches can be in work at once: one being cut, one being packed, one being committed.

Invariants
  P1. A batch is in the queue from ``submit`` until its put returned; the commit thread removes
      it only then. So a batch is never lost: it is committed, or still queued, where ``drain``
      packs and puts what is left (in the caller's thread) or ``pending_events`` counts it for
      the shutdown warning.
  P2. One commit thread, first in first out: batches commit in the order they were cut, so every
      file's events, and the offset records that follow them, land in read order; an offset record
      travels with the events it covers (one transaction) and is never committed ahead of them.
  P3. Bounded: ``submit`` returns only when at most ``depth`` batches are queued (packing, packed
      or committing), so the reader holds at most one more, being cut. A full channel therefore
      still stops reading (back-pressure), ``depth`` batches later than a serial put would.
  P4. An exception raised by a pack or a put (the source's ``_Stopped``, a corrupt channel's
      StateError, a routing error...) pauses the commit thread at that batch, which stays first in
      the queue; ``submit`` and ``finish`` then raise it in the reader's thread, as the serial code
      raised it there, until ``drain`` or ``discard`` settles it. ``drain`` puts the queue again in
      the caller's thread (what the serial code did with a batch whose put had failed: try it
      again at shutdown, until the deadline).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable


class _Batch:
    __slots__ = ("events", "offsets", "families", "count", "packed", "error", "ready")

    def __init__(self, events: list, offsets: dict, families: list) -> None:
        self.events, self.offsets, self.families = events, offsets, families
        self.count = len(events)
        self.packed = None
        self.error: BaseException | None = None
        self.ready = False  # packed, or its pack raised


class PutStage:
    """Packs and puts submitted batches in two threads of its own, in order (see the module
    docstring). ``pack(events, families)`` returns what ``put(packed, offsets)`` takes."""

    def __init__(self, pack: Callable, put: Callable, depth: int = 2, name: str = "tail") -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._pack = pack
        self._put = put
        self._depth = depth
        self._name = name
        self._queue: deque[_Batch] = deque()  # every batch not yet committed, in order
        self._to_pack: deque[_Batch] = deque()  # those the pack thread has not started
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._putting = False
        self._closing = False
        self._threads: list[threading.Thread] = []

    def submit(self, *batches: tuple) -> None:
        """Queue ``batches`` (events, offsets, families); return once at most ``depth`` batches are
        queued. Raises a pack's or put's error (the batches stay queued: P1, P4)."""
        items = [_Batch(*b) for b in batches]
        with self._cond:
            self._queue.extend(items)
            self._to_pack.extend(items)
            if not self._threads:
                self._closing = False
                self._threads = [threading.Thread(target=fn, name=f"{self._name}-{what}", daemon=True)
                                 for fn, what in ((self._packer, "pack"), (self._committer, "put"))]
                for t in self._threads:
                    t.start()
            self._cond.notify_all()
            while self._error is None and len(self._queue) > self._depth:
                self._cond.wait()
            self._raise()

    def finish(self) -> None:
        """Wait until every queued batch is committed; raise a pack's or put's error (P4)."""
        with self._cond:
            while self._error is None and (self._queue or self._putting):
                self._cond.wait()
            self._raise()

    def put_now(self, *batches: tuple) -> None:
        """Queue ``batches`` and :meth:`drain`: put them in this thread, after any queued before."""
        with self._cond:
            self._queue.extend(_Batch(*b) for b in batches)
        self.drain()

    def drain(self) -> None:
        """End the threads (after their current pack and put), then pack and put what is still
        queued in this thread, in order. Raises what such a put raises; the rest stays queued."""
        self.close()
        with self._cond:
            self._error = None
            self._to_pack.clear()
        while True:
            with self._cond:
                if not self._queue:
                    return
                b = self._queue[0]
            if b.packed is None:
                b.packed = self._pack(b.events, b.families)
                b.events, b.error, b.ready = None, None, True
            self._put(b.packed, b.offsets)
            with self._cond:
                self._queue.popleft()

    def pending_events(self) -> int:
        """Events in batches submitted and not yet committed."""
        with self._cond:
            return sum(b.count for b in self._queue)

    def discard(self) -> None:
        """Forget the queued batches (the source reads them again from the committed offsets)."""
        self.close()
        with self._cond:
            self._queue.clear()
            self._to_pack.clear()
            self._error = None

    def close(self) -> None:
        """End the threads after their current pack and put; queued batches stay queued."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        for t in threads:
            if t is not threading.current_thread():
                t.join()

    def _raise(self) -> None:
        # The error stays set (the commit thread stays paused) until drain() or discard().
        if self._error is not None:
            raise self._error

    def _packer(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._to_pack:
                    self._cond.wait()
                if self._closing:
                    return
                b = self._to_pack.popleft()
            try:
                packed, error = self._pack(b.events, b.families), None
            except BaseException as exc:  # noqa: BLE001 - raised in the reader's thread (P4)
                packed, error = None, exc
            with self._cond:
                if error is None:
                    b.packed, b.events = packed, None  # the events are in the chunks now
                b.error, b.ready = error, True
                self._cond.notify_all()

    def _committer(self) -> None:
        while True:
            with self._cond:
                while not self._closing and (self._error is not None or not self._queue
                                             or not self._queue[0].ready):
                    self._cond.wait()
                if self._closing:
                    return
                b = self._queue[0]
                if b.error is not None:
                    self._error = b.error
                    self._cond.notify_all()
                    continue
                self._putting = True
            try:
                self._put(b.packed, b.offsets)
            except BaseException as exc:  # noqa: BLE001 - raised in the reader's thread (P4)
                with self._cond:
                    self._error = exc
                    self._putting = False
                    self._cond.notify_all()
                continue
            with self._cond:
                self._queue.popleft()
                self._putting = False
                self._cond.notify_all()
