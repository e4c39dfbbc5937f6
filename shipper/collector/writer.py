"""The collector's output: rolling files of event bodies, JSON lines or Avro container files.

Theory of operation
-------------------
Every connection of the collector hands whole batches to one :class:`RollingWriter`; a lock
makes each batch one contiguous run of bytes in the current file. ``write`` returns only when
the batch is written and, with ``fsync`` on (the default), on stable storage: the collector answers
OK after that and never before. If the write fails (disk full, file too large, I/O error, the
directory gone), the file is cut back to where the batch began, so a FAILED batch leaves no
partial line behind, the file is closed, and the error is raised for the collector to answer
FAILED; the client sends the batch again later, to us or to another collector. The next batch
opens a NEW file: after a disk fills up, an operator who moves the output files away (to free
space) really frees it, since we no longer hold the moved file open. (When several calls are written as
one unit, those before the failing one stay in the file and are answered FAILED too: their
resend duplicates them, which at-least-once allows.)

Group commit: each write takes a sequence number; the fsync happens outside the write lock, and
one fsync covers every batch written before it started, so concurrent connections share fsyncs
instead of queueing one each (a Flume AvroSink sends one batch at a time per connection, so
this is what lets a few sinks get past the disk's fsync rate). If an fsync fails, every batch it
was covering is answered FAILED (their bytes may stay in the file: the client resends them, which
is at-least-once, never a loss), and the file is closed so no later fsync can falsely succeed
on the same pages (Linux reports a writeback error once).

The sync is ``fdatasync``, not ``fsync``: it writes the data and the metadata needed to read it
back, including the file's size, which is what an appended batch changes (POSIX's definition,
which Linux's fdatasync(2) states too), and leaves out only the times; a new file's name is made
durable by an fsync of the directory when it is created, and a file is fdatasynced when it is
closed.

Record layout:

* ``text`` (``.log``): each event's body as received, then ``\\n``. Headers are dropped.
* ``jsonl`` (``.jsonl``): one JSON object per event, ``{"headers": {...}, "body": "..."}``; a
  body that is not UTF-8 is written as ``"body_base64"`` instead of ``"body"``.
* ``avro`` (``.avro``): an Avro Object Container File written by fastavro, with the schema of
  Flume's ``avro_event`` serializer (record ``Event``: ``headers`` map<string>, ``body`` bytes,
  the fields of ``AvroFlumeEvent``), so Spark, Hive and avro-tools read it as they read the files
  of Flume's HDFS or file-roll sinks. The header (magic, schema, codec, sync marker) is written
  when the file is opened; each batch becomes one or more blocks, each ending with the file's
  sync marker, written and fsynced like the text formats. A reader therefore finds every block
  up to the last fsynced one intact after a crash; a torn last block is cut away by the writer
  on error, or left for the reader to stop at after a kill. Codecs: null, deflate, and snappy or
  zstandard when fastavro finds their libraries (cramjam / zstandard).

Files are created with mode ``file_mode`` (0640 by default: the events are the operator's logs,
not the world's), set with fchmod so the umask cannot widen or narrow it.

File names are ``events-<UTC start time>-<n>.<ext>`` (``events-wK-...`` for worker K of
``collect --workers N``: the prefix), created exclusively (never appended to an older file), and opened lazily at the first batch, so an idle collector leaves no empty
files. A file is closed and a new one begun when it reaches ``roll_bytes`` or when it has been
open for ``roll_seconds`` (checked at each batch and by :meth:`roll_if_due`, which the
collector calls about once a second). Closing a file fdatasyncs it first.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import logging
import os
import threading
import time
from typing import Iterable, Sequence

import fastavro

log = logging.getLogger("flume-ship.collect")

FORMATS = {"text": "log", "jsonl": "jsonl", "avro": "avro"}
AVRO_CODECS = ("null", "deflate", "snappy", "zstandard")
# Flume's avro_event serializer (FlumeEventAvroEventSerializer) writes this schema.
FLUME_EVENT_SCHEMA = {
    "type": "record",
    "name": "Event",
    "fields": [
        {"name": "headers", "type": {"type": "map", "values": "string"}},
        {"name": "body", "type": "bytes"},
    ],
}

Batch = Sequence[tuple[dict[str, str], bytes]]


def format_text(events: Batch) -> bytes:
    if not events:
        return b""
    bodies = [body for _headers, body in events]
    bodies.append(b"")  # (the last newline, without copying the whole batch once more)
    return b"\n".join(bodies)


def format_jsonl(events: Batch) -> bytes:
    lines = []
    for headers, body in events:
        try:
            record = {"headers": headers, "body": body.decode("utf-8")}
        except UnicodeDecodeError:
            record = {"headers": headers, "body_base64": base64.b64encode(body).decode("ascii")}
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


class StatelessFormat:
    """text and jsonl: a batch's bytes do not depend on the file they go to."""

    def __init__(self, fn) -> None:
        self._fn = fn

    def begin(self) -> bytes:
        return b""

    def encode(self, events: Batch) -> bytes:
        return self._fn(events)

    def body_bytes(self, events: Batch, data: bytes) -> int:
        """The event body bytes in ``data``, the encoding of ``events``."""
        if self._fn is format_text:  # bodies and one newline each: no need to look at them again
            return len(data) - len(events)
        return sum(len(body) for _headers, body in events)


class AvroContainerFormat:
    """An Avro container file per output file, written by fastavro into memory, one file at a time:
    :meth:`begin` starts a file (its header bytes), :meth:`encode` gives a batch's block(s)."""

    def __init__(self, codec: str = "deflate") -> None:
        self.codec = codec
        self._schema = fastavro.parse_schema(FLUME_EVENT_SCHEMA)
        self._buf = io.BytesIO()
        self._writer = None
        check_avro_codec(codec)

    def begin(self) -> bytes:
        self._buf = io.BytesIO()
        self._writer = fastavro.write.Writer(self._buf, self._schema, codec=self.codec)
        return self._take()

    def encode(self, events: Batch) -> bytes:
        write = self._writer.write
        for headers, body in events:
            write({"headers": headers, "body": body})
        self._writer.flush()
        return self._take()

    def body_bytes(self, events: Batch, data: bytes) -> int:
        return sum(len(body) for _headers, body in events)

    def _take(self) -> bytes:
        data = self._buf.getvalue()
        self._buf.seek(0)
        self._buf.truncate()
        return data


def check_avro_codec(codec: str) -> None:
    """ValueError with what to do when fastavro cannot write ``codec`` here."""
    if codec not in AVRO_CODECS:
        raise ValueError(f"unknown Avro codec {codec!r}: use {', '.join(AVRO_CODECS)}")
    try:
        fastavro.write.Writer(io.BytesIO(), fastavro.parse_schema(FLUME_EVENT_SCHEMA), codec=codec).flush()
        fastavro.writer(io.BytesIO(), FLUME_EVENT_SCHEMA, [{"headers": {}, "body": b"x"}], codec=codec)
    except (ValueError, ImportError, ModuleNotFoundError) as err:
        lib = {"snappy": "cramjam", "zstandard": "zstandard"}.get(codec, codec)
        raise ValueError(f"the Avro codec {codec} needs the {lib} package, which is not installed ({err})") from None


def make_format(fmt: str, codec: str = "deflate"):
    if fmt == "avro":
        return AvroContainerFormat(codec)
    return StatelessFormat({"text": format_text, "jsonl": format_jsonl}[fmt])


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
        file_mode: int = 0o640,
        codec: str = "deflate",
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        self.directory = directory
        self.fmt = fmt
        self.format = make_format(fmt, codec)
        self.file_mode = file_mode
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
        self._base = 0  # bytes of the file's own header (avro); a file with no more holds no event
        self._opened_at = 0.0
        self._file_seq = 0
        self.events_written = 0
        self._failing: tuple[str, int] | None = None  # (why, free blocks then) after a failed write

    # ---- public

    def write(self, batches: Iterable[Batch]) -> int:
        """Write and (optionally) fsync one or more batches as one unit; returns the event count.

        Raises OSError when the data is not safely in the file (see the module's docstring).
        """
        return self.write_counted(batches)[0]

    def write_counted(self, batches: Iterable[Batch]) -> tuple[int, int]:
        """:meth:`write`, returning (events, event body bytes) written."""
        batches = [events for events in batches if events]
        if not batches:
            return 0, 0
        count = sum(map(len, batches))
        body_bytes = 0
        with self._lock:
            for events in batches:  # a roll may fall between two batches, never inside one
                if self._fd is None:
                    self._open_new()
                data = self.format.encode(events)
                if self._due(len(data)):
                    self._close_current()
                    self._open_new()
                    data = self.format.encode(events)  # (a stateful format encodes per file)
                start = self._size
                try:
                    _write_all(self._fd, data)
                except OSError as err:
                    self._abandon(start)
                    self._note_failure(err)
                    raise
                self._size = start + len(data)
                body_bytes += self.format.body_bytes(events, data)
            self._failing = None
            self._written_seq += 1
            seq = self._written_seq
        if self.fsync:
            self._sync(seq)
        with self._lock:
            self.events_written += count
        return count, body_bytes

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
                    _datasync(fd)
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

    def problem(self) -> str | None:
        """Why a batch written now would fail, as far as can be seen without writing; None when
        it looks writable. The directory must be writable; after a failed write, the failure
        stands until a write succeeds or the filesystem has more free space than it had then (an
        operator freed some). A health probe's empty batch is answered by this, not by a write."""
        try:
            if not os.access(self.directory, os.W_OK | os.X_OK):
                return f"{self.directory} is not writable"
            free = os.statvfs(self.directory).f_bavail
        except OSError as err:
            return f"{self.directory}: {err.strerror or err}"
        with self._lock:
            if self._failing is not None:
                text, free_then = self._failing
                if free <= free_then:
                    return text
                self._failing = None
        return None

    def _note_failure(self, err: OSError) -> None:
        try:
            free = os.statvfs(self.directory).f_bavail
        except OSError:
            free = -1
        self._failing = (f"the last write failed: {err.strerror or err}", free)

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
        if self._size <= self._base:  # nothing in it yet: never leave a file without events
            return False
        if self._size + incoming > self.roll_bytes:
            return True
        return self.roll_seconds > 0 and time.monotonic() - self._opened_at >= self.roll_seconds

    def _open_new(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        ext = FORMATS[self.fmt]
        while True:
            self._file_seq += 1
            path = os.path.join(self.directory, f"{self.prefix}-{stamp}-{self._file_seq:04d}.{ext}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW,
                             self.file_mode)
            except FileExistsError:
                continue
            break
        try:
            os.fchmod(fd, self.file_mode)  # exactly this mode, whatever the umask
            header = self.format.begin()
            _write_all(fd, header)
        except OSError:
            os.close(fd)
            _unlink(path)
            raise
        self._fd, self._path, self._size, self._base = fd, path, len(header), len(header)
        self._opened_at = time.monotonic()
        if self.fsync:
            _fsync_dir(self.directory)  # the new name itself must survive a crash
        log.info("writing %s", path)

    def _close_current(self) -> None:
        fd, path = self._fd, self._path
        self._fd, self._path, self._size = None, None, 0
        try:
            if self.fsync:
                _datasync(fd)
                self._synced_seq = self._written_seq  # this fsync covered every batch so far
        except OSError as err:
            log.error("fsync of %s on close failed: %s", path, err.strerror)
            self._lose(self._synced_seq, self._written_seq)
        finally:
            os.close(fd)
        log.info("closed %s", path)

    def _abandon(self, start: int) -> None:
        """After a failed write: cut the batch's partial bytes away and close the file, so the
        next batch starts a new one (and a file moved away to free space is really let go)."""
        try:
            os.ftruncate(self._fd, start)
        except OSError as err:
            log.error("cannot cut %s back to %d bytes after a failed write (%s)", self._path, start, err.strerror)
        if start <= self._base:
            # Nothing of ours is in it: drop the file so a failing disk leaves no litter.
            fd, path = self._fd, self._path
            self._fd, self._path, self._size = None, None, 0
            os.close(fd)
            _unlink(path)
            log.info("dropped %s after a failed write; the next batch starts a new file", path)
        else:
            log.info("closing %s after a failed write; the next batch starts a new file", self._path)
            self._close_current()


def _datasync(fd: int) -> None:
    """fdatasync: the data and what is needed to read it back, the file's size included (the
    module's docstring); only the times are left to the next fsync."""
    os.fdatasync(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
