"""The put stage: a thread that commits the tail source's batches while the reader cuts the next.

Theory of operation
-------------------
Without it the reader does everything in turn: read and cut a batch, then ``channel.put`` it,
which joins, compresses (LZ4), checksums and commits (an fsync) while the reader waits. The
compression, the checksum and the commit release the GIL, so they can run beside the reader on
the other core. The reader *submits* a finished batch (its events, the offset records encoded
when the batch was closed, its families) and goes on reading; the stage's thread puts the batches
one by one, in the order they were submitted.

Invariants
  P1. A batch is in the queue from ``submit`` until its put returned True; the thread removes it
      only then. So a batch is never lost: it is either committed or still in the queue, where
      ``finish`` puts what is left (synchronously, in the caller's thread) or ``pending_events``
      counts it for the shutdown warning.
  P2. One thread, first in first out: batches commit in the order they were cut, so every file's
      events, and the offset record that follows them, land in read order, and an offset record
      (encoded with its events, committed in their transaction) is never ahead of them.
  P3. Bounded: ``submit`` returns only when at most ``depth`` batches are queued (the one being put
      included), so the reader holds at most one batch being cut besides them. A full channel
      therefore still stops reading (back-pressure), one batch later than a serial put would.
  P4. An exception raised by a put (the source's ``_Stopped``, a corrupt channel's StateError, ...)
      stops the thread's work at that batch, which stays first in the queue; the next ``submit``
      or ``finish`` raises it in the reader's thread, as a serial put would have raised it there.
      ``finish`` then puts the queue again in the caller's thread (what the serial code did with a
      batch whose put had failed: try it again at shutdown, until the deadline).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable

Batch = tuple  # (events, offsets, families), as the source's _put takes them


class PutStage:
    """Puts submitted batches in a thread of its own, in order (see the module docstring)."""

    def __init__(self, put: Callable[..., None], depth: int = 1, name: str = "tail-put") -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._put = put
        self._depth = depth
        self._name = name
        self._queue: deque[Batch] = deque()
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._busy = False  # the thread is inside a put
        self._closing = False
        self._thread: threading.Thread | None = None

    def submit(self, *batches: Batch) -> None:
        """Queue ``batches``; return once at most ``depth`` batches are queued. Raises a put's error
        (the batches stay queued: P1)."""
        with self._cond:
            self._queue.extend(batches)
            if self._thread is None or not self._thread.is_alive():
                self._closing = False
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
            while self._error is None and len(self._queue) > self._depth:
                self._cond.wait()
            self._raise()

    def finish(self) -> None:
        """Wait until every queued batch is committed; raise a put's error (see :meth:`drain`)."""
        with self._cond:
            while self._error is None and (self._queue or self._busy):
                self._cond.wait()
            self._raise()

    def put_now(self, *batches: Batch) -> None:
        """Queue ``batches`` and :meth:`drain`: put them in this thread, after any queued before."""
        with self._cond:
            self._queue.extend(batches)
        self.drain()

    def drain(self) -> None:
        """Wait for the thread to stop putting, then put what is still queued in this thread, in
        order (a failed batch first). Raises what such a put raises; the rest stays queued."""
        with self._cond:
            self._closing = True  # the thread ends after its current put, leaving the queue to us
            self._cond.notify_all()
            while self._busy:
                self._cond.wait()
            self._error = None
        while True:
            with self._cond:
                if not self._queue:
                    return
                batch = self._queue[0]
            self._put(*batch)
            with self._cond:
                self._queue.popleft()

    def pending_events(self) -> int:
        """Events in batches submitted and not yet committed."""
        with self._cond:
            return sum(len(b[0]) for b in self._queue)

    def discard(self) -> None:
        """Forget the queued batches (the source read them again from the committed offsets)."""
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._queue.clear()
            self._error = None

    def close(self) -> None:
        """End the thread (after its current put). Queued batches stay queued."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._cond:
            self._thread = None

    def _raise(self) -> None:
        # The error stays set (the thread stays paused) until drain() or discard() settles it.
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and (not self._queue or self._error is not None):
                    self._cond.wait()
                if self._closing:
                    return
                batch = self._queue[0]
                self._busy = True
            try:
                self._put(*batch)
            except BaseException as exc:  # noqa: BLE001 - raised again in the reader's thread (P4)
                with self._cond:
                    self._error = exc
                    self._busy = False
                    self._cond.notify_all()
                continue
            with self._cond:
                self._queue.popleft()
                self._busy = False
                self._cond.notify_all()
