"""The tail source: globs to tracked files to line events, put into the channel with their offsets.

Theory of operation
-------------------
*Discovery* (at start, on watchdog's create/move events, and every ``rescan_interval`` as the
safety net) has two halves. ``shipper.tail.discovery.Scanner`` looks: it expands the globs
(``shipper.tail.globs``, which reports listings it could not make) and lists the directory of every
tracked file, reusing listings of unchanged directories. A directory entry is a candidate if its
inode is one we know, or its name looks like a rotation of a tracked name (``app.log.1``,
``app.log-2024``). :meth:`TailSource._discover` judges: each candidate is matched by identity
(``shipper.tail.identity``): a tracked file under a new name was rotated by rename (its path is
updated, its offset kept); a stored record is adopted if the fingerprint still matches; a glob
match never seen before is new (read from 0, or from its end with ``from_end`` at the first scan).
A known inode number is not an identity: a file whose stored record fails the check (a new file on
a reused inode) is judged by its name like any file we never saw. An unknown rotation-named file
that was written after the last state we stored for its family is a file rotated away while we
were not looking (stopped across rotations, or several rotations between two looks): it is read
from 0, before the current file. A rotation-named file whose head matches a tracked file's
fingerprint is a copy (copytruncate) and is skipped, except to recover the lines a truncation would
otherwise lose (see below). An error is never a verdict: a scan that could not look everywhere
forgets nothing, and a file that cannot be opened or read keeps its offset and identity.

*Descriptors* (``shipper.tail.descriptors``): open files stay within a budget shared by the
agent's sources; beyond it, files are read in turns (at their end first, least recently grown
next; a rotated or deleted file with lines left keeps its descriptor), and a file that finds no
descriptor waits for the next pass.

*Families*: the files tailed as one name (``origin``): the current file and its rotated
predecessors. Within a family, rotated files are served first, oldest first, and the current file
is not read while a rotated one still has bytes left in this pass: lines enter the channel in the
order they were written.

*Service* (:meth:`TailSource._service`): fstat through the open descriptor (so renamed and deleted
files are read to their end), check identity when size or mtime changed (truncated or rewritten:
new generation, restart at 0, counted and logged), then pread blocks of ``read_chunk`` up to
``max_bytes_per_file_turn`` (fairness) and cut them into events (``shipper.tail.reader``). At the
end of the data, an incomplete last line is shipped if the file was rotated or deleted, or has been
idle for ``partial_line_timeout``. A deleted file is released at its end; a rotated one after
``rotate_wait`` without growth; any other after ``close_inactive`` (reopened when it changes), so
quiet files hold no descriptor.

*Events*: with rules (multiline, filters, extraction, event time: ``shipper.tail.rules``), Flume
per-event headers or an encoding, the cutter is ``shipper.tail.events.EventCutter`` (wrapped by
``shipper.tail.decode.Transcoder`` for an encoding) instead of the line cutter. Its last event may
still grow, so it is *held* uncommitted in ``cur.pending`` and shipped like an incomplete line: on
the next event's first line, after ``min(partial_line_timeout, multiline timeout)`` idle, at the
end of a rotated or deleted file, at the end of ``run_once``, or before a truncation without a
copy restarts the file. The committed offset therefore stays at an event boundary.

*Commit*: events are gathered into a batch of at most ``batch_max_events`` (about
``batch_max_bytes``); one channel transaction stores them together with the offset record of
every file that advanced (encoded when the batch is closed), so a crash can neither lose a line
nor store one twice. A channel that runs lanes (``by_family``) is also given the runs of
``(family, count)`` (a family is a file's origin), so every file's events take one lane
(``shipper.channel.groups``). In ``run`` and ``run_once`` a closed batch goes to the put stage
(``shipper.tail.putstage``): one thread packs it (``channel.pack``: join, compress, checksum), one
commits it (``channel.put_packed``), in order, while the reader cuts the next; once a batch is
handed over, at most two are in the stage, so a full channel still stops reading. ``run_once`` returns, and ``run`` stops,
only after the last batch is committed; an error of the stage's threads is raised in the reader's
thread, as a serial put raised it. A SIGKILL loses the batches in the stage as it lost the one
being put: they were never committed, nor were their offsets, so they are read again (no
duplicate, no loss). ``poll`` puts in the caller's thread. In ``run`` and ``run_once`` a pass that
ends with a file still hot (bytes left after its turn) keeps its batch open for the next pass, for
at most ``_HOT_HOLD`` seconds after the last close: a busy file's batches are then whole (full
chunks, full calls downstream) instead of cut at every pass's end into a small one.

*Wake-ups*: watchdog (inotify) watches the static prefix directory of each glob (recursively
when the wildcard is not in the last component), one watch per directory rather than per file.
``run`` sleeps until a notification, the next rescan, or the next partial-line deadline; quiet
files cost nothing between rescans. If notifications are unavailable (inotify limits), rescans
alone carry on, at most a second apart.

*copytruncate*: when a truncation (or rewrite) is detected, a rotation-named file next to it whose
head matches the old fingerprint and that is longer than the old offset is the copy; its bytes
from the old offset on are read first (same generation, so event ids continue). What is still
lost: lines written between the copy and the truncation, which exist in neither file
(docs/tail.md).
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import stat
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from operator import attrgetter

from shipper.errors import ChannelIOError, PutRevoked
from shipper.tail.identity import (
    FP_MAX,
    KEY_PREFIX,
    ROTATED_SUFFIX_SEPARATORS,
    Record,
    Verdict,
    file_key,
    fingerprint,
    judge,
    new_generation,
    read_head,
)
from shipper.tail.decode import Transcoder
from shipper.tail.descriptors import (
    DescriptorBudget,
    DescriptorStatus,
    current_open_file_limit,
    open_file_budget,
)
from shipper.tail.discovery import Scanner, Seen, rotation_base
from shipper.tail.events import EventCutter
from shipper.tail.options import FileStatus, FilesSummary, TailOptions
from shipper.tail.putstage import PutStage
from shipper.tail.reader import Cursor, Encoder, LineCutter
from shipper.tail.selection import Selection
from shipper.tail.watch import NO_WATCH_RESCAN as _NO_WATCH_RESCAN
from shipper.tail.watch import start_watching

log = logging.getLogger("flume-ship.tail")

_MIN_DISCOVER_GAP = 0.25  # discovery triggered by notifications runs at most this often
_COALESCE = 0.05  # after a notification, wait this long so a burst of writes becomes one pass
_MAX_SLEEP = 0.5  # the stop flag is looked at least this often
_HOT_HOLD = 0.1  # a batch is kept open over passes while a file is hot, at most this long (see *Commit*)
_START_LINES = 20  # files listed one a line at start (the most behind); the rest at debug level
_RECORDS_PER_PUT = 2000  # offset records of files without events in the batch: at most this many a put


class _Stopped(Exception):
    """The stop flag was set while a put was blocked; the batch is still uncommitted."""


@dataclass(eq=False, slots=True)
class _File:
    key: str
    dev: int
    ino: int
    gen: str
    path: str
    origin: str
    order: int
    parent: str = ""  # the directory of path
    # The read cursor (the ``cur`` property). A closed file at rest keeps only its offset: a
    # Cursor for each of 50,000 quiet files was a tenth of the source's memory.
    _cur: Cursor | None = None
    _offset: int = 0
    fp: str = fingerprint(b"")
    fp_len: int = 0
    size: int = 0  # at the last look
    mtime: float = 0.0
    fd: int | None = None
    last_growth: float = 0.0  # monotonic
    gone: bool = False  # no longer found by discovery (moved away or deleted)
    deleted: bool = False  # link count 0: read to the end, then released
    unreadable: str | None = None
    waiting: bool = False  # no descriptor to be had: served when one is
    verify: str | None = None  # a stored record adopted unchecked ("glob" or "rotation"): judge at open
    start_at_end: bool = False  # from_end, but its first open had to wait
    # Family order: a copy's recovered tail first (-1), then files known before this run's scan (0),
    # then the others (1); within a class by mtime, then by rotation suffix (_rotation_rank).
    age_class: int = 1
    age_mtime: float = 0.0

    @property
    def rotated(self) -> bool:
        return self.path != self.origin or self.gone or self.deleted

    @property
    def cur(self) -> Cursor:
        """The read cursor, made again from the offset for a file :meth:`park` left without one."""
        if self._cur is None:
            self._cur = Cursor(self._offset)
        return self._cur

    @cur.setter
    def cur(self, cursor: Cursor) -> None:
        self._cur = cursor

    @property
    def offset(self) -> int:
        """Bytes consumed into events (without making a cursor for a parked file)."""
        return self._offset if self._cur is None else self._cur.offset

    def park(self) -> None:
        """Drop the cursor if it holds nothing but the offset (no pending bytes, no held event, no
        piece count, no decoder state): what a closed file at rest needs is its offset."""
        c = self._cur
        if (c is not None and not c.pending and not c.split_piece and not c.skipping and not c.leftover
                and not c.held and not c.held_lines and not c.piece and c.decode is None):
            self._offset = c.offset
            self._cur = None

    def record(self) -> Record:
        return Record(self.dev, self.ino, self.gen, self.path, self.origin, self.offset,
                      self.fp, self.fp_len, self.size, self.mtime)

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None


def _rotation_rank(path: str) -> int:
    """A tie-break for rotated files with equal mtimes: app.log.3 is older than app.log.2.

    File systems stamp times coarsely (a few ms), so two rotations in quick succession can leave
    equal mtimes; a small numeric suffix then says which is older (a higher number, so a lower
    rank). Date suffixes and anything else rank 0 and keep discovery order.
    """
    name = os.path.basename(path)
    for i in range(len(name) - 1, 0, -1):
        if name[i] in ROTATED_SUFFIX_SEPARATORS:
            suffix = name[i + 1 :]
            return -int(suffix) if suffix.isdigit() and len(suffix) <= 4 else 0
    return 0


class TailSource:
    """Tails files matched by ``options.paths`` into ``channel`` (see the module docstring)."""

    def __init__(self, options: TailOptions, channel, budget: DescriptorBudget | None = None) -> None:
        self.o = options
        self.channel = channel
        self._budget = budget or DescriptorBudget(
            open_file_budget(current_open_file_limit(), options.max_open_files))
        self._owner = id(self)
        self._budget.register(self._owner)
        self._lru: OrderedDict[str, None] = OrderedDict()  # open files, least recently grown first
        self._waiting: dict[str, None] = {}  # files waiting for a descriptor, in arrival order
        self._shortage_logged = -1e9
        self._incomplete_logged = -1e9
        self._parents: dict[str, str] = {}
        self._devs: dict[int, int] = {}
        # Bumped by everything that changes what summary() shows (a file served, tracked, dropped,
        # moved, opened, closed, waiting): an idle agent's status tick reuses the last summary.
        self._changes = 0
        self._summary: tuple[tuple[int, int], FilesSummary] | None = None
        self._patterns = [os.path.abspath(os.path.expanduser(p)) for p in options.paths]
        if options.rules.active or options.byte_offset_header or options.uuid_header or options.encoding:
            self._cutter: LineCutter = EventCutter(
                options.rules, options.max_line_bytes, options.long_lines, timestamp_key=options.timestamp_key,
                byte_offset_key="byteoffset" if options.byte_offset_header else None,
                uuid_key=options.uuid_header)
            # Held data (an event that may still grow, or an incomplete line) waits at most this long.
            self._hold = min(options.partial_line_timeout, self._cutter.timeout)
            if options.encoding:
                self._cutter = Transcoder(self._cutter, options.encoding)
        else:
            self._cutter = LineCutter(options.max_line_bytes, options.long_lines)
            self._hold = options.partial_line_timeout
        self._enc = Encoder(options.add_event_id)
        self._select = Selection(tuple(options.exclude), options.ignore_older)
        self._scanner = Scanner(self._patterns, self._select)
        static = dict(options.headers)
        if options.add_host:
            static[options.host_key] = options.host or os.uname().nodename
        self._static = static
        self.counters: Counter[str] = Counter()

        self._files: dict[str, _File] = {}
        self._by_path: dict[str, str] = {}  # path -> key, read by the watchdog thread too
        self._records: dict[str, Record] | None = None  # stored, not (yet) tracked
        self._order = 0
        self._first_scan = True
        self._next_rescan = 0.0
        self._last_discover = -1e9
        self._hot: set[str] = set()  # files with bytes left after their turn
        self._flushed_at = 0.0  # monotonic time the last batch was closed (see _HOT_HOLD)
        self._partial: set[str] = set()  # files holding an incomplete last line
        self._eof_flush = False  # run_once: ship incomplete lines at the end of the data
        self._old_heads: dict[str, list[tuple[int, str]]] = {}  # origin -> heads of past generations

        self._events: list[bytes] = []
        self._families: list[list] = []  # runs of [origin, count] over _events: the channel's lanes
        self._batch_bytes = 0
        self._dirty: dict[str, bool] = {}  # key -> write the record (True) or delete it (False)
        self._batch_keys: set[str] = set()  # files with events (or skipped bytes) in self._events
        self._stop: threading.Event | None = None
        self._deadline: float | None = None  # final flush at shutdown gives up at this time
        self._io_error_logged = False
        # run and run_once hand closed batches to the put stage and read on (``_pipelined``);
        # poll and the final flush of a run put them in this thread.
        self._stage = PutStage(self._pack, self._put)
        self._pipelined = False
        self._missing: dict[str, str] = {}  # pattern -> why it matched no regular file at the last look

        self._lock = threading.Lock()  # guards the two fields below, shared with watchdog's thread
        self._due_paths: set[str] = set()
        self._discover_due = True
        self._wake = threading.Event()
        self._observer = None
        self._watching = False

    # ----- public API -----

    def run(self, stop: threading.Event) -> None:
        """Tail until ``stop`` is set; commit what was read before returning."""
        self._stop = stop
        self._start_watch()
        self._pipelined = True
        try:
            while not stop.is_set():
                try:
                    put = self._pass()
                except _Stopped:
                    break
                if put or self._hot:
                    continue
                timeout = min(self._next_deadline() - time.monotonic(), _MAX_SLEEP)
                if timeout > 0 and self._wake.wait(timeout):
                    self._wake.clear()
                    stop.wait(_COALESCE)
        finally:
            self._deadline = time.monotonic() + max(2.0, self.o.put_timeout)
            self._pipelined = False
            try:
                self._stage.drain()  # the batches handed over, in order, then the one being cut
                self._flush()
            except (_Stopped, ChannelIOError):
                log.warning("tail: %d events not committed at shutdown; they will be read again",
                            self._stage.pending_events())
                self._reset()
            finally:
                self._deadline = None
                self._stage.close()
                self._stop_watch()
                self._close_all()

    def run_once(self, stop: threading.Event | None = None) -> bool:
        """Read every matched file to its current end (incomplete last lines included) and commit.

        Files beyond the descriptor budget are read in turns: this returns when every one of them
        has had its turn to the end, not after the first pass. ``stop`` ends it early (what was
        read but not committed is read again next time); returns False then, True when done."""
        self._eof_flush = True
        self._stop = stop
        self._pipelined = True
        try:
            self._pass(force_full=True)
            while self._hot or self._waiting:
                if stop is not None and stop.is_set():
                    self._stage.finish()
                    return False
                self._pass()
                if self._waiting and not self._hot:
                    time.sleep(0.02)  # every slot is held by another source's files: its next pass frees some
            self._stage.finish()  # done only when the last batch is committed
            return not (stop is not None and stop.is_set())
        except _Stopped:
            self._reset()
            return False
        finally:
            self._pipelined = False
            self._stage.discard()  # nothing is left after finish(); after an error, it is read again
            self._stage.close()
            self._eof_flush = False
            self._stop = None
            self._close_all()

    def problems(self) -> list[str]:
        """What could not be read at the last look: patterns that matched no regular file, and files
        that could not be opened or read (with the bytes they hold). Empty when everything was read."""
        out = [f"{pat}: {why}" for pat, why in self._missing.items()]
        for f in list(self._files.values()):
            if f.unreadable:
                try:
                    size = os.stat(f.path).st_size
                except OSError:
                    size = f.size
                out.append(f"{f.path}: cannot read ({f.unreadable}); {max(0, size - f.offset)} bytes "
                           "not shipped")
        return out

    def _note_pattern(self, pat: str, why: str | None) -> None:
        """Remember whether a pattern matched; log the change (a service keeps looking for it)."""
        before = self._missing.get(pat)
        if why is None:
            if self._missing.pop(pat, None) is not None and not self._eof_flush:
                log.info("tail: %s now matches a file", pat)
            return
        self._missing[pat] = why
        if before is None and not self._eof_flush:
            log.warning("tail: %s: %s; still looking for it", pat, why)

    def poll(self) -> int:
        """One pass over every file (discovery included), then commit. Returns the events put."""
        return self._pass(force_full=True)

    def _pass(self, force_full: bool = False) -> int:
        """Discover if due, serve the files that need it, commit. Returns the events put."""
        self._load()
        for _ in range(self._budget.excess(self._owner)):  # another source is starving: give slots back
            victim = self._victim(None)
            if victim is None:
                break
            self._close(victim)
        now = time.monotonic()
        with self._lock:
            paths, self._due_paths = self._due_paths, set()
            discover, self._discover_due = self._discover_due, False
        full = force_full or now >= self._next_rescan
        if full or (discover and now - self._last_discover >= _MIN_DISCOVER_GAP):
            self._discover()
            self._last_discover = now
            if full:
                interval = self.o.rescan_interval if self._watching or not self.o.watch else min(
                    self.o.rescan_interval, _NO_WATCH_RESCAN)
                self._next_rescan = now + interval
        elif discover:
            with self._lock:
                self._discover_due = True
        if full:
            # Open files are fstat'ed; closed ones only if discovery saw them change (then hot),
            # or to retry an open that failed.
            due = {k for k, f in self._files.items() if f.fd is not None or f.unreadable}
            due |= self._hot
        else:
            due = set(self._hot)
        due.update(self._waiting)  # a waiting file is served as soon as a descriptor is free
        if not full:
            for p in paths:
                key = self._by_path.get(p)
                if key is not None:
                    due.add(key)
            for key in self._partial:
                f = self._files.get(key)
                if f is not None and now - f.last_growth >= self._hold:
                    due.add(key)
        put_before = self.counters["events"]
        if due:
            self._serve(due, idle_close=full)
            if not self._hot:
                self._hot.clear()  # an empty set keeps the table of its largest size until cleared
        if not (self._pipelined and self._hot and time.monotonic() - self._flushed_at < _HOT_HOLD):
            self._flush()  # else the next pass, at once, goes on filling this batch
        return self.counters["events"] - put_before

    def status(self) -> list[FileStatus]:
        """Per file: where, which identity and generation, offset against size (safe from any thread)."""
        files = list(self._files.values())  # one atomic copy: run() may be changing the dict
        return [self._file_status(f) for f in sorted(files, key=lambda f: (f.origin, not f.rotated, f.order))]

    def summary(self, limit: int) -> FilesSummary:
        """Counts over every file, and rows for at most ``limit`` of them: those behind (most behind
        first), then the most recently grown. Cheap enough for every status tick with 50,000 files."""
        version = self._changes
        cached = self._summary
        if cached is not None and cached[0] == (version, limit):
            return cached[1]  # nothing a summary shows has changed since the last one
        files = list(self._files.values())
        by_state: Counter[str] = Counter()
        lagging = []
        for f in files:
            if f.fd is None and not (f.unreadable or f.waiting or f.deleted or f.path != f.origin or f.gone):
                by_state["idle"] += 1  # most files, most of the time: counted without a call
            else:
                by_state[self._state(f)] += 1
            if f.size > f.offset:
                lagging.append(f)
        behind = sum(f.size - f.offset for f in lagging)
        if len(files) > limit:
            lagging.sort(key=lambda f: f.size - f.offset, reverse=True)
            files = lagging[:limit]
            if len(files) < limit:
                ahead = set(files)
                files += heapq.nlargest(limit - len(files), (f for f in self._files.values() if f not in ahead),
                                        key=attrgetter("last_growth"))
        rows = [self._file_status(f) for f in sorted(files, key=lambda f: (f.origin, not f.rotated, f.order))]
        summary = FilesSummary(len(self._files), dict(by_state), behind, rows)
        self._summary = ((version, limit), summary)
        return summary

    def identities(self) -> set[str]:
        """The offset keys of every tracked file."""
        return set(self._files)

    @staticmethod
    def _state(f: _File) -> str:
        return ("unreadable" if f.unreadable else "waiting" if f.waiting else "deleted" if f.deleted else
                "rotated" if f.rotated else "reading" if f.fd is not None else "idle")

    def _file_status(self, f: _File) -> FileStatus:
        return FileStatus(f.path, f.origin, f.key, f.gen, f.offset, f.size, self._state(f))

    def descriptor_status(self) -> DescriptorStatus:
        """Descriptors: the budget shared by all sources, this source's open files and waiting files."""
        return DescriptorStatus(self._budget.limit, len(self._lru), len(self._waiting))

    def close(self) -> None:
        """Release every descriptor and the source's share of the budget (``run`` and ``run_once``
        release the descriptors themselves)."""
        self._stop_watch()
        self._stage.close()
        self._close_all()
        self._budget.unregister(self._owner)

    def wakeup(self) -> None:
        """Make ``run`` look at the files now (e.g. after setting the stop flag)."""
        self._wake.set()

    # ----- state -----

    def _load(self) -> None:
        if self._records is not None:
            return
        records: dict[str, Record] = {}
        for key, value in self.channel.offsets().items():
            if not key.startswith(KEY_PREFIX):
                continue
            try:
                rec = Record.decode(value)
            except ValueError as exc:
                log.warning("tail: ignoring unreadable offset record %s (%s)", key, exc)
                continue
            if rec.key == key:
                records[key] = rec
        self._records = records

    def _reset(self) -> None:
        """Forget everything in memory; the next poll starts again from the committed records."""
        self._changes += 1
        self._stage.discard()
        self._close_all()
        self._files.clear()
        self._by_path.clear()
        self._records = None
        self._events = []
        self._families = []
        self._batch_bytes = 0
        self._dirty.clear()
        self._batch_keys.clear()
        self._hot.clear()
        self._partial.clear()
        self._next_rescan = 0.0
        self._scanner.reset()

    def _close_all(self) -> None:
        for f in self._files.values():
            self._close(f)
        self._waiting.clear()
        self._budget.starve(self._owner, False)

    # ----- discovery -----

    def _discover(self) -> None:
        first, self._first_scan = self._first_scan, False
        records = self._records
        assert records is not None
        scan = self._scanner.scan(self._files, self._by_path, records, watched=self._watching)
        cands, rotation_origin, family_mtime, errors = scan.cands, scan.rotation_origin, scan.family_mtime, scan.errors
        for pat, why in scan.unmatched.items():
            self._note_pattern(pat, why)

        # Every candidate was seen (``key in cands``), and so was every file in ``scan.unchanged``
        # (tracked, where it was, in a directory that did not change): no second set of keys is built.
        unchanged = scan.unchanged
        for key, (path, st, from_glob) in cands.items():
            f = self._files.get(key)
            if f is not None:
                f.gone = False
                if f.path != path:
                    self._move(f, path)
                elif st is not None and f.fd is None and (st.st_size != f.size or st.st_mtime != f.mtime):
                    self._hot.add(key)  # a closed file changed: open and serve it
                    self._changes += 1
                continue
            rec = records.pop(key, None)
            if rec is not None and self._adopt(rec, path, st, from_glob, key):
                continue
            # No record, or one that is not this file's (a new file on a reused inode): from here
            # on the file is one we never saw, and the same rules apply whatever its inode.
            if from_glob:
                at_end = self.o.from_end and first and path not in family_mtime
                if not at_end and self._select.too_old(st.st_mtime, time.time()):
                    at_end = True
                    self.counters["ignored_older"] += 1
                    log.info("tail: %s: not modified for over %gs (ignore_older): taking it from its end",
                             path, self.o.ignore_older)
                f = self._track(path, st, origin=path, at_end=at_end, key=key)
                if not first:
                    log.info("tail: %s: new file (%d bytes), reading it from %s", path, st.st_size,
                             "its end" if at_end else "the start")
                continue
            origin = rotation_origin.get(path)
            if origin is None or origin not in family_mtime or st.st_mtime < family_mtime[origin]:
                continue  # older than anything we know of the family: not ours to read
            copy = self._is_copy(path, origin)
            if copy is None:
                errors.append(OSError(f"cannot read {path} to compare it with {origin}"))
                continue  # judged at the next scan, when it can be read
            if copy:
                continue  # a copytruncate copy of a file we read
            log.info("tail: %s: rotated from %s while not watched; reading it first", path, origin)
            self.counters["rotated_found"] += 1
            self._track(path, st, origin=origin, at_end=False, key=key)

        if first:
            self._log_start(cands)
        if errors:
            self._incomplete(errors)
            return  # forget nothing on the evidence of a scan that could not look everywhere
        for f in list(self._files.values()):
            if f.key not in cands and f.key not in unchanged:
                if f.fd is not None:
                    f.gone = True  # moved out of sight or deleted: finish through the descriptor
                else:
                    log.info("tail: %s: gone (deleted or moved out of sight) after %d bytes; no longer tailed",
                             f.path, f.offset)
                    self._drop(f)
        for key in [k for k in records if k not in cands]:
            del records[key]
            self._dirty[key] = False

    def _log_start(self, cands: dict[str, tuple[str, Seen | None, bool]]) -> None:
        """Say what the first scan found: every file and where reading starts (a summary and the
        files most behind, past ``_START_LINES`` files; every file at debug level). ``cands``: the
        first scan's candidates, whose stats give the sizes (files not read yet say 0)."""

        def size(f: _File) -> int:
            c = cands.get(f.key)
            return max(f.size, c[1].st_size if c is not None and c[1] is not None else 0)

        files = self._files.values()
        behind = sum(max(0, size(f) - f.offset) for f in files)
        log.info("tail: %s: %d file%s matched, %d bytes to read", " ".join(self.o.paths), len(files),
                 "" if len(files) == 1 else "s", behind)
        # The most behind at info level; the others only when debug is on (no list of them all else).
        top = heapq.nlargest(_START_LINES, files, key=lambda f: size(f) - f.offset)
        shown = {id(f) for f in top}
        listed = files if len(files) <= _START_LINES or log.isEnabledFor(logging.DEBUG) else top
        for f in sorted(listed, key=lambda f: (f.origin, not f.rotated, f.order)):
            n = size(f)
            where = ("from its end" if f.start_at_end else f"at byte {f.offset} of {n}" if f.offset
                     else f"from the start ({n} bytes)")
            log.log(logging.INFO if id(f) in shown else logging.DEBUG, "tail: %s: reading %s%s", f.path, where,
                    f" (rotated from {f.origin})" if f.path != f.origin else "")
        if len(files) > _START_LINES:
            log.info("tail: ... and %d more files (listed at --log-level debug; flume-ship status shows them all)",
                     len(files) - _START_LINES)

    def _incomplete(self, errors: list[OSError]) -> None:
        self.counters["incomplete_scans"] += 1
        now = time.monotonic()
        if now - self._incomplete_logged >= 60:
            self._incomplete_logged = now
            first = errors[0]
            what = f"{first.filename}: {first.strerror}" if first.filename else str(first)
            log.warning("tail: could not look everywhere (%s%s); files not seen keep their offsets until "
                        "a scan sees them", what, f", and {len(errors) - 1} more" if len(errors) > 1 else "")

    def _adopt(self, rec: Record, path: str, st: Seen, from_glob: bool, key: str) -> bool:
        """Resume a stored file if it is still the same; True if ``path`` is dealt with.

        False: the record is not this file's (deleted; the caller judges the file as unknown)."""
        try:
            with open(path, "rb", buffering=0) as fh:
                if os.fstat(fh.fileno()).st_ino != rec.ino:
                    # Replaced since the stat: keep the record and look again at the next scan.
                    self._records[rec.key] = rec
                    return True
                head = read_head(fh.fileno(), rec.fp_len)
        except OSError:
            # Cannot be read now (no descriptor, a permission, an I/O error): an error is not a
            # verdict. Resume from the stored offset; the check runs when the file is opened.
            verdict, check_later = Verdict.SAME, ("glob" if from_glob else "rotation")
        else:
            verdict, check_later = judge(offset=rec.offset, last_size=rec.size, fp=rec.fp, fp_len=rec.fp_len,
                                         size=st.st_size, head=head), None
        if verdict is Verdict.SAME:
            f = self._track(path, st, origin=rec.origin, at_end=False, gen=rec.gen, key=key)
            f.cur.offset = rec.offset
            f.fp, f.fp_len, f.size, f.mtime = rec.fp, rec.fp_len, rec.size, rec.mtime
            f.age_class, f.age_mtime = 0, rec.mtime  # known before anything found unknown next to it
            f.verify = check_later
            if path != rec.origin:
                log.info("tail: %s: found as %s (rotated while stopped); finishing it", rec.origin, path)
                self.counters["rotations"] += 1
            return True
        if not from_glob:
            self._dirty[rec.key] = False
            return False
        self._new_generation_log(path, verdict, rec.offset, st.st_size, while_stopped=True)
        self._track(path, st, origin=path, at_end=False)
        return True

    def _track(self, path: str, st: Seen | os.stat_result, *, origin: str, at_end: bool,
               gen: str | None = None, key: str | None = None) -> _File:
        """Track a file; ``key``: its offset key when the caller has it (discovery's string, not a
        second copy of it per file)."""
        key = key or file_key(st.st_dev, st.st_ino)
        self._changes += 1
        self._order += 1
        dev = self._devs.setdefault(st.st_dev, st.st_dev)  # one int object per device, not per file
        f = _File(key, dev, st.st_ino, gen or new_generation(), path, origin, self._order,
                  self._parent_of(path))
        f.last_growth = time.monotonic()
        f.age_class, f.age_mtime = 1, st.st_mtime
        self._files[key] = f
        if at_end:
            if self._open(f):
                try:
                    self._start_at_end(f, st)
                except OSError as exc:
                    f.start_at_end = True
                    self._trouble(f, exc)
            else:
                f.start_at_end = True  # placed at its end when it gets a descriptor
        self._by_path[path] = key
        self._dirty[key] = True
        self._hot.add(key)  # served in the next pass, whatever woke it
        return f

    def _parent_of(self, path: str) -> str:
        """``path``'s directory, one string object per directory (50,000 files share a few)."""
        d = os.path.dirname(path)
        return self._parents.setdefault(d, d)

    def _start_at_end(self, f: _File, st: Seen | os.stat_result) -> None:
        """``from_end``: skip what ``f`` holds now, up to its last complete line."""
        f.cur.offset = self._line_end_before(f.fd, st.st_size)
        head = read_head(f.fd, min(FP_MAX, f.cur.offset))
        f.fp, f.fp_len, f.size, f.mtime = fingerprint(head), len(head), st.st_size, st.st_mtime

    @staticmethod
    def _line_end_before(fd: int, size: int) -> int:
        """The offset just after the last newline before ``size`` (``--from-end`` starts there)."""
        n = min(size, 64 * 1024)
        tail = os.pread(fd, n, size - n)
        i = tail.rfind(b"\n")
        return size if i < 0 else size - n + i + 1

    def _move(self, f: _File, path: str) -> None:
        if self._by_path.get(f.path) == f.key:
            del self._by_path[f.path]
        self._changes += 1
        was_rotated = f.path != f.origin
        f.path = path
        f.parent = self._parent_of(path)
        self._by_path[path] = f.key
        self._dirty[f.key] = True
        self._hot.add(f.key)
        if path != f.origin and not was_rotated:
            self.counters["rotations"] += 1
            log.info("tail: %s: rotated to %s; reading it to its end", f.origin, path)

    def _drop(self, f: _File) -> None:
        self._changes += 1
        self._close(f)
        self._unwait(f)
        self._files.pop(f.key, None)
        if self._by_path.get(f.path) == f.key:
            del self._by_path[f.path]
        self._hot.discard(f.key)
        self._partial.discard(f.key)
        self._dirty[f.key] = False

    def _family_heads(self, origin: str) -> set[tuple[int, str]]:
        """(fp_len, fp) of every generation of ``origin``'s family we know (current and recent)."""
        heads = {(f.fp_len, f.fp) for f in self._files.values() if f.origin == origin and f.fp_len}
        heads.update(self._old_heads.get(origin, ()))
        return heads

    def _is_copy(self, path: str, origin: str) -> bool | None:
        """Does the file at ``path`` start like a file of ``origin``'s family that we read?

        None: it could not be read, so nobody can say."""
        heads = self._family_heads(origin)
        if not heads:
            return False
        try:
            with open(path, "rb", buffering=0) as fh:
                head = read_head(fh.fileno(), max(n for n, _ in heads))
        except OSError:
            return None
        return any(len(head) >= n and fingerprint(head[:n]) == fp for n, fp in heads)

    # ----- service -----

    def _serve(self, due: set[str], idle_close: bool) -> None:
        # Families of several files (a rotated file and its successor) are served together, rotated
        # first; a family of one file, which is most of them, is just that file. No set of due
        # origins nor a dict of families over 50,000 files: the families with a rotated member, then
        # one list in tracking order of the due files and those families.
        multi: dict[str, list[_File]] = {}
        for f in self._files.values():
            if f.path != f.origin or f.gone or f.deleted:  # f.rotated
                multi.setdefault(f.origin, [])
        families: list[_File | list[_File]] = []
        for f in self._files.values():
            m = multi.get(f.origin)
            if m is None:
                if f.key in due:
                    families.append(f)
            else:
                if not m:
                    families.append(m)  # the family takes the place of its first member
                m.append(f)
        now = time.monotonic()
        for members in families:
            if type(members) is not list:
                members = (members,)
            elif not any(g.key in due for g in members):
                continue  # nothing in this family is due
            elif len(members) > 1:
                members.sort(key=lambda f: (not f.rotated, f.age_class, f.age_mtime, _rotation_rank(f.path),
                                            f.order))
            for f in members:
                if f.key not in self._files:
                    continue
                if f.key not in due and f.fd is None:
                    continue  # closed and unchanged (a closed file is at its end)
                more = self._service(f)
                if more:
                    self._hot.add(f.key)
                else:
                    self._hot.discard(f.key)
                if f.key in self._files and f.rotated and more:
                    break  # the current file waits until its predecessors are read
            if idle_close:
                for f in members:
                    if (f.fd is not None and not f.cur.pending and f.key not in self._hot
                            and now - f.last_growth >= self.o.close_inactive):
                        self._close(f)
                        log.info("tail: %s: closed after %gs without growth (read to byte %d); reopened when "
                                 "it changes", f.path, self.o.close_inactive, f.offset)

    # ----- descriptors -----

    def _open(self, f: _File) -> bool:
        """Open ``f`` within the descriptor budget. False: it waits its turn, or cannot be read now.

        Running out of descriptors is nobody's fault but ours: the file waits, its offset and
        identity stand, and nothing is logged against it."""
        if not self._take_slot(f):
            self._wait(f)
            return False
        try:
            fd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._budget.release(self._owner)
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                # Over the process's (or the system's) limit despite the budget: something else
                # holds descriptors. Give one back so the next try can succeed, and wait.
                victim = self._victim(f)
                if victim is not None:
                    self._close(victim)
                self._shortage(exc)
                self._wait(f)
                return False
            if f.unreadable is None:
                log.warning("tail: %s: cannot read (%s); retrying every %gs, other files carry on",
                            f.path, exc.strerror, self.o.rescan_interval)
                self.counters["unreadable"] += 1
            f.unreadable = exc.strerror or str(exc)
            if exc.errno in (errno.ENOENT,):
                f.gone = True
            self._unwait(f)
            return False
        try:
            st = os.fstat(fd)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != (f.dev, f.ino):
            os.close(fd)  # the name now holds another file: discovery sorts it out
            self._budget.release(self._owner)
            self._unwait(f)
            with self._lock:
                self._discover_due = True
            return False
        if f.unreadable is not None:
            log.info("tail: %s: readable again", f.path)
            f.unreadable = None
        f.fd = fd
        self._lru[f.key] = None
        self._unwait(f)
        return True

    def _close(self, f: _File) -> None:
        if f.fd is None:
            return
        self._changes += 1
        try:
            f.close()
        finally:
            self._budget.release(self._owner)
            self._lru.pop(f.key, None)
        f.park()  # at rest: the offset is all it keeps until it is opened again

    def _take_slot(self, f: _File) -> bool:
        """A descriptor slot for ``f``: a free one, or one of ours given up by another file."""
        if self._budget.acquire(self._owner):
            return True
        victim = self._victim(f)
        if victim is not None:
            self._close(victim)
            if self._budget.acquire(self._owner):
                return True
        self._budget.starve(self._owner, True)  # nothing of ours to close: others give slots back
        return False

    def _victim(self, keep: _File | None) -> _File | None:
        """The open file to close for another: at its end and least recently grown first, then the
        least recently grown with bytes left. Never one that could not be reopened (deleted, moved
        out of sight) nor a rotated file with lines left: it keeps its place until it is done."""
        fallback = None
        for key in self._lru:
            g = self._files.get(key)
            if g is None or g is keep or g.deleted or g.gone:
                continue
            busy = key in self._hot or bool(g.cur.pending)
            if not busy:
                return g
            if fallback is None and g.path == g.origin:
                fallback = g
        return fallback

    def _wait(self, f: _File) -> None:
        if not f.waiting:
            self._changes += 1
            f.waiting = True
            self._waiting[f.key] = None
            self.counters["descriptor_waits"] += 1

    def _unwait(self, f: _File) -> None:
        if f.waiting:
            self._changes += 1
            f.waiting = False
            self._waiting.pop(f.key, None)
            if not self._waiting:
                self._waiting.clear()  # give back the table 50,000 waiting files grew
                self._budget.starve(self._owner, False)

    def _shortage(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._shortage_logged >= 60:
            self._shortage_logged = now
            log.warning("tail: out of file descriptors (%s) with %d tailed files open; the others are "
                        "read in turns (raise the limit, or lower max_open_files)", exc.strerror, len(self._lru))

    def _trouble(self, f: _File, exc: OSError) -> None:
        """A read, stat or hash of an open file failed: close it and retry later; its offset stands."""
        self._changes += 1
        self._close(f)
        if f.unreadable is None:
            log.warning("tail: %s: read failed (%s); retrying every %gs, its offset is kept", f.path,
                        exc.strerror or exc, self.o.rescan_interval)
            self.counters["unreadable"] += 1
        f.unreadable = exc.strerror or str(exc)

    def _service(self, f: _File) -> bool:
        """Read one turn of ``f``. True if it has bytes left (its turn ran out).

        An error of the open descriptor (stat, read, hash) closes it and leaves the offset as it
        is: only bytes actually read can judge a file truncated or rewritten."""
        self._changes += 1
        if f.fd is None and not self._open(f):
            return False
        try:
            return self._read_turn(f)
        except OSError as exc:
            self._trouble(f, exc)
            return False

    def _read_turn(self, f: _File) -> bool:
        st = os.fstat(f.fd)
        if st.st_nlink == 0 and not f.deleted:
            f.deleted = True
            log.info("tail: %s: deleted; reading it to its end", f.path)
        if f.start_at_end:
            f.start_at_end = False
            self._start_at_end(f, st)
        cur = f.cur
        if f.verify or st.st_size != f.size or st.st_mtime != f.mtime:
            head = read_head(f.fd, f.fp_len) if f.fp_len else b""
            verdict = judge(offset=cur.read_pos, last_size=f.size, fp=f.fp, fp_len=f.fp_len,
                            size=st.st_size, head=head)
            adopted_by, f.verify = f.verify, None
            if verdict is not Verdict.SAME:
                if adopted_by == "rotation":
                    # A stored record adopted unchecked that is not this file's: forget it, and let
                    # discovery judge the file by its name, as if the check had run at adoption.
                    self._drop(f)
                    return False
                try:
                    copy_first = self._restart(f, verdict, st.st_size)
                except OSError:
                    f.verify = adopted_by or "glob"  # judged again once the copy check can read
                    raise
                f.size, f.mtime = st.st_size, st.st_mtime
                if copy_first:
                    return True  # its copy is read first, on the next pass
                if f.key not in self._files:
                    return False
            f.size, f.mtime = st.st_size, st.st_mtime
            cur = f.cur  # a restart replaced it

        enc = self._begin(f)
        cutter = self._cutter
        budget = self.o.max_bytes_per_file_turn
        got = False
        more = False
        while True:
            if (len(self._events) >= self.o.batch_max_events
                    or self._batch_bytes >= self.o.batch_max_bytes):
                self._flush()
            if cur.leftover:
                buf = cur.pending
            else:
                if budget <= 0:
                    more = st.st_size > cur.read_pos or os.fstat(f.fd).st_size > cur.read_pos
                    break
                data = os.pread(f.fd, min(self.o.read_chunk, budget), cur.read_pos)
                if not data:
                    break
                budget -= len(data)
                got = True
                buf = cur.pending + data if cur.pending else data
            before = cur.offset
            events = cutter.consume(cur, buf, self.o.batch_max_events - len(self._events), enc)
            if events or cur.offset != before:
                self._gather(f, events)
                self.counters["events"] += len(events)
                self._batch_bytes += cur.offset - before
                self._dirty[f.key] = True
                self._batch_keys.add(f.key)

        now = time.monotonic()
        if got:
            f.last_growth = now
            self._lru.move_to_end(f.key)
            if f.fp_len < FP_MAX and cur.read_pos > f.fp_len:
                head = read_head(f.fd, min(FP_MAX, cur.read_pos))
                f.fp, f.fp_len = fingerprint(head), len(head)
                self._dirty[f.key] = True
        if cur.pending and not more:
            if (f.rotated or self._eof_flush
                    or now - f.last_growth >= self._hold):
                if len(self._events) >= self.o.batch_max_events:
                    self._flush()
                events = cutter.flush_partial(cur, enc)
                self._gather(f, events)
                self.counters["events"] += len(events)
                self.counters["partial_lines"] += len(events)
                self._dirty[f.key] = True
                self._batch_keys.add(f.key)
                self._partial.discard(f.key)
            else:
                self._partial.add(f.key)
        else:
            self._partial.discard(f.key)
        if not more and not cur.pending:
            if f.deleted:
                self._drop(f)
            elif f.rotated and now - f.last_growth >= self.o.rotate_wait:
                self._close(f)
        return more

    def _begin(self, f: _File) -> Encoder:
        """The encoder, set up with ``f``'s headers for the block about to be cut."""
        headers = dict(self._static)
        if self.o.add_file:
            headers[self.o.file_key] = f.origin
        if self.o.add_timestamp:
            headers[self.o.timestamp_key] = str(time.time_ns() // 1_000_000)
        self._enc.begin(headers, f.gen)
        return self._enc

    def _gather(self, f: _File, events: list[bytes]) -> None:
        """Add ``f``'s events to the batch, noting their file family (its origin) for the lanes."""
        if not events:
            return
        self._events += events
        runs = self._families
        if runs and runs[-1][0] == f.origin:
            runs[-1][1] += len(events)
        else:
            runs.append([f.origin, len(events)])

    def _ship_held(self, f: _File) -> None:
        """A truncated file without a copy: the event held in memory is shipped, not dropped."""
        if f.cur.held and not f.cur.leftover:
            events = self._cutter.flush_partial(f.cur, self._begin(f))
            self._gather(f, events)
            self.counters["events"] += len(events)
            self._batch_keys.add(f.key)

    def rule_counts(self) -> dict[str, int]:
        """What the source's rules did: events dropped by filters, lines joined, times unparsed..."""
        c = self._cutter
        return {k: getattr(c, k, 0) for k in ("dropped", "joined", "cut_events", "time_unparsed",
                                               "extract_misses", "replaced")}

    def _restart(self, f: _File, verdict: Verdict, size: int) -> bool:
        """A truncated or rewritten file: recover what a copy holds, then read it again from 0.

        True if a copy was found (it must be read before this file goes on). ``OSError`` if whether
        it is a copy could not be read: nothing has changed then."""
        overwritten = f.rotated and self._is_copy(f.path, f.origin)
        if overwritten is None:
            raise OSError(errno.EIO, f"cannot read {f.path} to compare it with {f.origin}")
        if f.fp_len:
            old = self._old_heads.setdefault(f.origin, [])
            old.append((f.fp_len, f.fp))
            del old[:-4]
        if overwritten:
            # A rotated name rewritten with a copy of what we read (copytruncate onto an existing
            # app.log.1): its bytes are already shipped, or are being read from the live file.
            # Forget it: discovery then sees an unknown file that repeats a known head, and skips it.
            log.info("tail: %s: overwritten with a copy of %s; not read again", f.path, f.origin)
            self._drop(f)
            return False
        self._new_generation_log(f.path, verdict, f.cur.offset, size, while_stopped=False)
        copy = self._find_copy(f)
        if copy is None:
            self._ship_held(f)
        if copy is not None:
            path, st = copy
            c = self._track(path, st, origin=f.origin, at_end=False, gen=f.gen)
            c.cur.offset = f.cur.offset
            c.fp, c.fp_len = f.fp, f.fp_len
            c.age_class, c.age_mtime = -1, 0.0  # served before the truncated file in this family
            self.counters["copytruncate_recovered"] += 1
            log.info("tail: %s: reading the copy %s from byte %d first", f.path, path, f.cur.offset)
        f.gen = new_generation()
        f.cur = Cursor()
        f.fp, f.fp_len = fingerprint(b""), 0
        self._partial.discard(f.key)
        self._dirty[f.key] = True
        return copy is not None

    def _new_generation_log(self, path: str, verdict: Verdict, offset: int, size: int,
                            while_stopped: bool) -> None:
        when = " while stopped" if while_stopped else ""
        if verdict is Verdict.TRUNCATED:
            self.counters["truncations"] += 1
            log.warning("tail: %s: truncated%s (%d bytes, was read to %d); reading it again from "
                        "the start (lines written just before a copytruncate can be lost)",
                        path, when, size, offset)
        else:
            self.counters["rewrites"] += 1
            log.warning("tail: %s: its first bytes changed%s (rewritten in place, or a new file "
                        "under a reused inode); reading it from the start", path, when)

    def _find_copy(self, f: _File) -> tuple[str, os.stat_result] | None:
        """A not-yet-tracked rotation-named file next to ``f`` that starts like it and is longer."""
        if f.fp_len == 0 or f.cur.offset == 0:
            return None
        d, base = os.path.split(f.origin)
        try:
            entries = list(os.scandir(d))
        except OSError:
            return None
        for e in entries:
            if rotation_base(e.name, {base}) is None:
                continue
            try:
                st = os.stat(e.path)
                if (not stat.S_ISREG(st.st_mode) or st.st_size <= f.cur.offset
                        or file_key(st.st_dev, st.st_ino) in self._files):
                    continue
                with open(e.path, "rb", buffering=0) as fh:
                    head = read_head(fh.fileno(), f.fp_len)
            except OSError:
                continue
            if len(head) == f.fp_len and fingerprint(head) == f.fp:
                return e.path, st
        return None

    # ----- commit -----

    def _flush(self) -> None:
        """Close the batch: hand it to the put stage (``run``, ``run_once``), or put it now."""
        self._flushed_at = time.monotonic()
        if not self._events and not self._dirty:
            return
        batches = []
        if len(self._dirty) > _RECORDS_PER_PUT:
            # Thousands of records at once (the first scan of 50,000 files marks every one): those
            # of files with nothing in this batch are true on their own, so they go first, a slice
            # per transaction, rather than as one dict of every encoded record. Those of files with
            # events in the batch stay with the events: one transaction, as always.
            alone = [k for k in self._dirty if k not in self._batch_keys]
            for i in range(0, len(alone), _RECORDS_PER_PUT):
                batches.append(([], self._encode_records(alone[i : i + _RECORDS_PER_PUT]), []))
        keys = self._batch_keys if batches else self._dirty
        batches.append((self._events, self._encode_records(k for k in self._dirty if k in keys), self._families))
        self.counters["batches"] += 1
        self._events = []
        self._families = []
        self._batch_bytes = 0
        self._dirty = {}
        self._batch_keys = set()
        # The stage's queue holds them until committed (nothing is lost if a put raises).
        if self._pipelined:
            self._stage.submit(*batches)
        else:
            self._stage.put_now(*batches)

    def _encode_records(self, keys) -> dict[str, bytes | None]:
        """The offset records of ``keys`` (all in ``_dirty``) as the channel stores them; None deletes."""
        offsets: dict[str, bytes | None] = {}
        for key in keys:
            f = self._files.get(key)
            offsets[key] = f.record().encode() if self._dirty[key] and f is not None else None
        return offsets

    def _pack(self, events: list[bytes], families: list):
        """The events as the channel stores them (joined, compressed, checksummed)."""
        # A channel with lanes (the agent's) is told each event's family; a bare one is not.
        extra = {"families": families} if getattr(self.channel, "by_family", False) else {}
        try:
            return self.channel.pack(events, **extra)
        except PutRevoked:
            raise _Stopped() from None  # replaced (a reload): what is uncommitted is read again

    def _put(self, packed, offsets: dict[str, bytes | None]) -> None:
        """Commit one batch (``packed`` by ``_pack``) with its offset records; retry write errors
        until it is stored, the stop flag is set, the shutdown deadline passes, or the channel is
        closed."""
        delay = 0.05
        while True:
            try:
                if self.channel.put_packed(packed, offsets, timeout=self.o.put_timeout):
                    if self._io_error_logged:
                        log.info("tail: the channel accepts writes again")
                        self._io_error_logged = False
                    return
            except PutRevoked:
                raise _Stopped() from None  # replaced (a reload): what is uncommitted is read again
            except ChannelIOError as exc:
                if not self._io_error_logged:
                    log.warning("tail: channel write failed (%s); retrying, nothing is lost", exc)
                    self._io_error_logged = True
                self.counters["put_errors"] += 1
                if self._stop is not None:
                    self._stop.wait(delay)
                else:
                    time.sleep(delay)
                delay = min(delay * 2, 2.0)
            if getattr(self.channel, "closed", False):
                # Closed for good (the agent ended it): a put returns False at once, so retrying
                # would spin. What is uncommitted is read again from the committed offsets.
                raise _Stopped()
            if self._deadline is not None:
                if time.monotonic() >= self._deadline:
                    raise _Stopped()
            elif self._stop is not None:
                if self._stop.is_set():
                    raise _Stopped()
            else:
                time.sleep(0.01)  # no stop flag (poll, run_once): block until the channel takes it

    # ----- notifications -----

    def _next_deadline(self) -> float:
        t = self._next_rescan
        for key in self._partial:
            f = self._files.get(key)
            if f is not None:
                t = min(t, f.last_growth + self._hold)
        return t

    def _notify(self, kind: str, src: str, dest: str) -> None:
        if kind == "modified":
            if src not in self._by_path:
                return
            with self._lock:
                self._due_paths.add(src)
        else:
            with self._lock:
                self._discover_due = True
                self._due_paths.add(src)
                if dest:
                    self._due_paths.add(dest)
        self._wake.set()

    def _start_watch(self) -> None:
        self._observer, self._watching = None, False
        if self.o.watch:
            self._observer, self._watching = start_watching(self._patterns, self._notify)
            if not self._watching:
                self._next_rescan = 0.0

    def _stop_watch(self) -> None:
        observer, self._observer = self._observer, None
        self._watching = False
        if observer is not None:
            try:
                observer.stop()
                observer.join(timeout=5)
            except Exception:  # noqa: BLE001 - shutting down; nothing to do about it
                log.debug("tail: stopping the file watcher failed", exc_info=True)
