"""The collector's output: rolling files of event bodies (or JSON lines) in one directory.

Theory of operation
-------------------
Every connection of the collector hands whole batches to one :class:`RollingWriter`; a lock
makes each batch one contiguous run of bytes in the current file. ``write`` returns only when
the batch is written and, with ``fsync`` on (the default), on stable storage: the collector answers
OK after that and never before. If the write fails (disk full, file too large, I/O error, the
directory gone), the file is cut back to where the batch began, so a FAILED batch leaves no
partial line behind, and the error is raised for the collector to answer FAILED; the client
sends the batch again later, to us or to another collector. (When several calls are written as
one unit, those before the failing one stay in the file and are answered FAILED too: their
resend duplicates them, which at-least-once allows.)

Group commit: each write takes a sequence number; the fsync happens outside the write lock, and
one fsync covers every batch written before it started, so concurrent connections share fsyncs
instead of queueing one each (a Flume AvroSink sends one batch at a time per connection, so
this is what lets a few sinks get past the disk's fsync rate). If an fsync fails, every batch it
was covering is answered FAILED (their bytes may stay in the file: the client resends them, which
is at-least-once, never a loss), and the file is closed so no later fsync can falsely succeed
on the same pages (Linux reports a writeback error once).

Record layout:

* ``text`` (``.log``): each event's body as received, then ``\\n``. Headers are dropped.
* ``jsonl`` (``.jsonl``): one JSON object per event, ``{"headers": {...}, "body": "..."}``; a
  body that is not UTF-8 is written as ``"body_base64"`` instead of ``"body"``.

File names are ``events-<UTC start time>-<n>.<ext>``, created exclusively (never appended to
an older file), and opened lazily at the first batch, so an idle collector leaves no empty
files. A file is closed and a new one begun when it reaches ``roll_bytes`` or when it has been
open for ``roll_seconds`` (checked at each batch and by :meth:`roll_if_due`, which the
collector calls about once a second). Closing a file fsyncs it first.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import threading
import time
from typing import Iterable, Sequence

log = logging.getLogger("flume-ship.collect")

FORMATS = {"text": "log", "jsonl": "jsonl"}

Batch = Sequence[tuple[dict[str, str], bytes]]


def format_text(events: Batch) -> bytes:
    if not events:
        return b""
    return b"\n".join(body for _headers, body in events) + b"\n"


def format_jsonl(events: Batch) -> bytes:
    lines = []
    for headers, body in events:
        try:
            record = {"headers": headers, "body": body.decode("utf-8")}
        except UnicodeDecodeError:
            record = {"headers": headers, "body_base64": base64.b64encode(body).decode("ascii")}
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


FORMATTERS = {"text": format_text, "jsonl": format_jsonl}


class RollingWriter:
    def __init__(
        self,
        directory: str,
        *,
        fmt: str = "text",
        roll_bytes: int = 128 * 1024 * 1024,
        roll_seconds: float = 3600.0,
        fsync: bool = True,
        prefix: str = "events",
    ) -> None:
        if fmt not in FORMATTERS:
            raise ValueError(f"unknown format {fmt!r}")
        self.directory = directory
        self.fmt = fmt
        self.format = FORMATTERS[fmt]
        self.roll_bytes = roll_bytes
        self.roll_seconds = roll_seconds
        self.fsync = fsync
        self.prefix = prefix
        self._lock = threading.Lock()  # the file, its size, the sequence numbers
        self._sync_lock = threading.Lock()  # one fsync at a time; the others wait and may be covered
        self._written_seq = 0  # batches written so far
        self._synced_seq = 0  # every batch up to this one is settled (on disk, or in _lost)
        self._lost: list[tuple[int, int]] = []  # (after, up to) ranges whose fsync failed
        self._fd: int | None = None
        self._path: str | None = None
        self._size = 0
        self._opened_at = 0.0
        self._file_seq = 0
        self.events_written = 0

    # ---- public

    def write(self, batches: Iterable[Batch]) -> int:
        """Write and (optionally) fsync one or more batches as one unit; returns the event count.

        Raises OSError when the data is not safely in the file (see the module's docstring).
        """
        chunks = []
        count = 0
        for events in batches:
            if events:
                chunks.append(self.format(events))
                count += len(events)
        if not chunks:
            return 0
        with self._lock:
            for data in chunks:  # a roll may fall between two batches, never inside one
                if self._fd is not None and self._due(len(data)):
                    self._close_current()
                if self._fd is None:
                    self._open_new()
                start = self._size
                try:
                    _write_all(self._fd, data)
                except OSError:
                    self._cut_back(start)
                    raise
                self._size = start + len(data)
            self._written_seq += 1
            seq = self._written_seq
        if self.fsync:
            self._sync(seq)
        with self._lock:
            self.events_written += count
        return count

    def _sync(self, seq: int) -> None:
        """Return once batch ``seq`` is on disk; OSError if the fsync that covered it failed."""
        with self._sync_lock:
            with self._lock:
                fd = None
                if self._synced_seq < seq and self._fd is not None:  # (closing a file settles it)
                    base, target = self._synced_seq, self._written_seq
                    fd = os.dup(self._fd)  # the file may be rolled (closed) while we fsync
            if fd is not None:
                try:
                    os.fsync(fd)
                    failed = None
                except OSError as err:
                    failed = err
                finally:
                    os.close(fd)
                with self._lock:
                    if failed is not None:
                        log.error("fsync of %s failed: %s", self._path, failed.strerror)
                        self._lose(base, target)
                        if self._fd is not None:
                            self._close_current()
                    self._synced_seq = max(self._synced_seq, target)
        with self._lock:
            for after, up_to in self._lost:
                if after < seq <= up_to:
                    raise OSError(errno.EIO, "fsync failed: the batch may not be on disk")

    def _lose(self, after: int, up_to: int) -> None:
        """Batches after..up_to were covered by a failed fsync: their waiters answer FAILED."""
        self._lost.append((after, up_to))
        del self._lost[:-100]  # waiters are in flight only briefly: keep the recent few
        self._synced_seq = max(self._synced_seq, up_to)

    def roll_if_due(self) -> None:
        with self._lock:
            if self._fd is not None and self._due(0):
                self._close_current()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                self._close_current()

    @property
    def current_path(self) -> str | None:
        return self._path

    # ---- internals (called with the lock held)

    def _due(self, incoming: int) -> bool:
        if self._size and self._size + incoming > self.roll_bytes:
            return True
        return self.roll_seconds > 0 and time.monotonic() - self._opened_at >= self.roll_seconds

    def _open_new(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        ext = FORMATS[self.fmt]
        while True:
            self._file_seq += 1
            path = os.path.join(self.directory, f"{self.prefix}-{stamp}-{self._file_seq:04d}.{ext}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                continue
            break
        self._fd, self._path, self._size, self._opened_at = fd, path, 0, time.monotonic()
        if self.fsync:
            _fsync_dir(self.directory)  # the new name itself must survive a crash
        log.info("writing %s", path)

    def _close_current(self) -> None:
        fd, path = self._fd, self._path
        self._fd, self._path, self._size = None, None, 0
        try:
            if self.fsync:
                os.fsync(fd)
                self._synced_seq = self._written_seq  # this fsync covered every batch so far
        except OSError as err:
            log.error("fsync of %s on close failed: %s", path, err.strerror)
            self._lose(self._synced_seq, self._written_seq)
        finally:
            os.close(fd)
        log.info("closed %s", path)

    def _cut_back(self, start: int) -> None:
        """Remove a failed batch's partial bytes; if even that fails, abandon the file."""
        try:
            os.ftruncate(self._fd, start)
        except OSError as err:
            log.error("cannot cut %s back to %d bytes after a failed write (%s): starting a new file", self._path, start, err.strerror)
            self._close_current()
        else:
            if start == 0:
                # Nothing of ours is in it: drop the empty file so a failing disk leaves no litter.
                fd, path = self._fd, self._path
                self._fd, self._path, self._size = None, None, 0
                os.close(fd)
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
