"""The channel itself: put and take, leases and acks, write errors and recovery.

The tail source calls ``put(events, offsets)``: ONE SQLite transaction (WAL journal,
committed, then the WAL fdatasynced) appends the batch, already encoded as AvroFlumeEvent bytes, and upserts the
source's offset records (its fdatasync runs after the channel's lock is released, see "Puts
synced outside the lock"). ``put`` is ``pack`` (the CPU part, no lock: chunks joined, compressed and
checksummed) then ``put_packed`` (the commit), so a caller can pack the next batch in one thread
while another commits this one (the tail source's put stage). When ``put`` returns, a power cut loses neither; before it returns,
its events are not takeable (its offset records can be read once committed). So after any crash the offsets name exactly the lines the channel holds.

Sink threads call ``take`` for a *lease*: the oldest whole chunks that no other lease holds, in
order (at least one chunk, then more while the lease stays within max_events and max_bytes).
``ack`` deletes the leased rows in one transaction; ``nack`` only forgets the lease, so the
chunks are the first ones taken again. Leases live in memory: when the process dies they vanish
and every unacknowledged event is taken again after restart (at-least-once, never lost).

Invariants
  I1. Every event gets a sequence number (``seq``) in put order, strictly increasing, never
      reused. A chunk row is keyed by the seq of its LAST event (``last_seq``) and holds
      ``last_seq - count + 1 .. last_seq``; AUTOINCREMENT then keeps the high-water mark of
      event seqs across restarts and empty channels.
  I2. A lease is a contiguous run of stored chunks ``first_seq..last_seq`` holding no chunk of any
      other lease; ``ack`` deletes exactly ``last_seq BETWEEN first_seq AND last_seq``.
  I3. ``take`` always starts at the lowest unleased chunk, so a nacked lease is taken again
      before anything newer, in its original order.
  I4. The in-memory counters (events, bytes, leased) count EVENTS, not rows, and equal the
      database's; they change only after a COMMIT succeeded (and are recounted after an I/O error
      reopened the database).

Locks
  The channel's lock (``_cond``) guards the write connection and the put side's counters, and is
  held through every commit (a put's frames, an ack's; a put's fdatasync follows without it, see
  below). Takes do not take it: they read
  through a second, read-only connection (SQLite's WAL lets a reader run beside the writer and see
  the last commit) under the lease lock (``_lease_lock``), which guards the open leases and their
  counters and is held from reading the spans of the open leases to registering the new lease, so
  no two takes lease the same chunk and a nack is never half seen (I2, I3). A take leases no chunk
  above ``_visible``, the last seq a put has committed AND counted, so the leased counters never run
  ahead of the stored ones (I4). Acks and nacks take the lease lock inside the channel's lock, only
  to forget the lease after the commit; the rows an ack deletes are leased, so no take reads them.
  A damaged chunk found by a take is quarantined under the channel's lock (a write). ``ready`` reads
  the counters without any lock. Measured on ~100 B lines: the sending thread waited ~18 % of its
  time for the channel's lock while a put or an ack committed.

Acks synced once a second
  An ack only ever removes delivered events: a lost ack commit sends them again (a duplicate),
  never loses one. So an ack commits under ``synchronous=NORMAL`` (in WAL mode: no fdatasync at
  commit) while everything else (a put above all) stays ``FULL``, and the channel makes acks
  durable at most ``ack_sync_interval`` seconds later: any later synced commit (a put) syncs the
  whole WAL, earlier ack frames included; else the first ack committed once the interval has
  passed commits ``FULL``, and a timer fdatasyncs the WAL file when a drain stops there (under the
  channel's lock, so no checkpoint moves the WAL meanwhile). ``close`` fdatasyncs the WAL before
  its final checkpoint, so a clean stop leaves every ack durable. The bound: after a power cut or
  a kernel crash, at most the last ``ack_sync_interval`` seconds of acks (plus one fdatasync) may
  be forgotten and their events sent again, never lost; a SIGKILL forgets no committed
  transaction (the WAL is in the page cache) and repeats exactly what it repeated before. 0 syncs
  every ack commit.

Puts synced outside the lock
  A put commits under ``synchronous=NORMAL`` (its frames are written, not synced) while it holds
  the channel's lock, then releases the lock, fdatasyncs the WAL file and takes the lock again to
  count the batch and make it takeable. Before that fdatasync returns nothing of the batch is
  counted or visible to a take, and ``put`` has not returned: so "when put returns, a power cut
  loses neither" holds as before. A checkpoint that runs meanwhile (another commit's) syncs the WAL
  before it copies it and the database after, so frames it moved are durable too. Meanwhile acks
  commit, takes read, the sync timer runs: measured on ~1 KiB lines, the put's fdatasync was
  ~60 % of its time under the lock, and acks waited for it. ``_put_lock`` keeps puts one at a time
  from commit to count, so the counters still grow in seq order. If the fdatasync fails, the batch
  may be stored: the channel is reopened and recounted (as after a failed commit) and the put
  raises ChannelIOError; its retry may then store it twice, a duplicate, never a loss.

Checkpoints
  SQLite's automatic checkpoint runs inside whichever commit crosses its interval (a put's or an
  ack's), under the channel's lock: WAL sync, copy, database sync, ~10-40 ms on ~1 KiB lines,
  which every ack and take that needed the lock waited for. So a put that has brought the WAL to
  half that interval (an estimate from its stored bytes) runs a PASSIVE checkpoint itself, after
  it has counted its batch and released the lock, on a connection of its own (``_ckpt_conn``,
  guarded by ``_ckpt_lock``): SQLite lets one checkpointer run beside the writer, so acks and the
  next commit go on. The automatic checkpoint stays at the full interval as the bound the space
  checks rely on (:mod:`shipper.channel.space`); it rarely has anything left to do.

Revoked writers
  A writer (a tail source) may hold a :class:`Fence` and pass it to every ``put_packed``;
  :meth:`Channel.revoke` ends it under the channel's lock, so it waits for a commit in progress,
  and every later ``put_packed`` with that fence raises PutRevoked before writing anything. A
  reload revokes a source that outlived its stop (stuck in a read or a slow commit) before the
  queues change and its successor reads the offsets: nothing the old source still holds is stored
  late (twice, against the old groups, or with an offset behind its successor's); its successor
  reads it again. A batch is also refused (ValueError) if the channel's group queues were replaced
  since it was packed: its chunks are owed to queues that may no longer exist.

Disk space (back-pressure, the full-disk pause and the space reserve, reclaiming pages) is
:mod:`shipper.channel.space`; its theory of operation is there.

Write errors: a failed COMMIT (ENOSPC = SQLITE_FULL, or an I/O error) is rolled back and raised as
ChannelIOError; the WAL's commit frame is what makes a transaction exist, so a failed one leaves
everything committed before untouched. After an I/O error (not after a plain "disk full") the
connection is reopened and the counters recounted, since SQLite may have written a valid commit
frame before the failing fsync: such a batch reappears after restart, and its retry then gives a
duplicate, never a loss.

"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from shipper.channel.repair import SalvageReport, salvage
from shipper.channel.space import SpaceManagement, _disk_free
from shipper.channel.statedir import StateLock, fsync_dir, prepare_state_dir, protect_state_files
from shipper.channel.store import (
    _INSERT_CHUNK, CHUNK_BYTES, CHUNK_COLUMNS, CHUNK_EVENTS, DB_NAME, MAX_SEQ, SQLITE_FULL, Chunk, Peek, _code,
    _Corrupt, _file_bytes, _is_corrupt, _open_db, _precheck, chunk_crc, chunk_ok, encode_lens, offset_crc,
    pack_payload, peek, split_points, unpack_payload,
)
from shipper.errors import ChannelIOError, PutRevoked, StateError

log = logging.getLogger("flume-ship.channel")

class Lease:
    """Whole chunks handed to one sink; ``ack`` or ``nack`` it exactly once (compared by identity).

    ``payload`` is every event back to back, ready to go between an appendBatch parameter's
    count and its terminator; ``events`` splits it into single events (computed on each access:
    the sink never needs it). ``full`` says that waiting could not have made the lease bigger:
    take stopped at a stored chunk that did not fit, or at another lease, not at the end of the
    data (a sink lingers for more events only when it is False)."""

    __slots__ = ("id", "chunks", "count", "nbytes", "first_seq", "last_seq", "full", "_payload")

    def __init__(self, id: int, chunks: list[Chunk], first_seq: int, last_seq: int, full: bool = False):
        self.id = id
        self.full = full
        self.chunks = chunks
        self.count = sum(c.count for c in chunks)
        self.nbytes = sum(len(c.body) for c in chunks)
        self.first_seq = first_seq
        self.last_seq = last_seq
        self._payload: bytes | None = None

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            bodies = [c.body for c in self.chunks]
            self._payload = bodies[0] if len(bodies) == 1 else b"".join(bodies)
        return self._payload

    @property
    def events(self) -> list[bytes]:
        return [e for c in self.chunks for e in c.events()]

    def release(self) -> None:
        """Drop the event bytes of a delivered lease (its ack needs only the seqs and counts), so
        a sink holding it while the ack commits holds no payload."""
        self.chunks = []
        self._payload = None

    def batches(self, max_events: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """The lease as (count, payload) pieces of at most max_events events and max_bytes bytes
        (a single bigger event goes alone): whole chunks joined while they fit, and a chunk that
        alone is too big cut at event boundaries. In order; together exactly ``payload``."""
        out: list[tuple[int, bytes]] = []
        parts: list[bytes] = []
        n = nb = 0
        for chunk in self.chunks:
            for count, body in chunk.split(max_events, max_bytes):
                if parts and (n + count > max_events or nb + len(body) > max_bytes):
                    out.append((n, parts[0] if len(parts) == 1 else b"".join(parts)))
                    parts, n, nb = [], 0, 0
                parts.append(body)
                n += count
                nb += len(body)
        if parts:
            out.append((n, parts[0] if len(parts) == 1 else b"".join(parts)))
        return out

    def __repr__(self) -> str:
        return (f"Lease(id={self.id}, count={self.count}, nbytes={self.nbytes}, "
                f"seq={self.first_seq}..{self.last_seq}, chunks={len(self.chunks)})")


@dataclass(frozen=True, slots=True)
class Packed:
    """A batch as :meth:`Channel.pack` made it: its chunks ``(count, nbytes, crc, lens, body)`` in
    order, the groups each chunk is owed to (with routes), and its totals."""

    count: int  # events
    nbytes: int  # payload bytes (uncompressed)
    chunks: list
    chunk_groups: list
    queues: object = None  # the channel's group queues it was packed for (None: no groups)

    def __len__(self) -> int:
        return self.count


class Fence:
    """A writer's right to commit, ended by :meth:`Channel.revoke` (see "Revoked writers")."""

    __slots__ = ("revoked",)

    def __init__(self) -> None:
        self.revoked = False


@dataclass(frozen=True, slots=True)
class ChannelStats:
    events: int  # stored and not yet acknowledged (leased ones included)
    bytes: int
    leased_events: int
    leased_bytes: int
    oldest_event_age: float | None  # seconds since the oldest stored event was put; None if empty
    put_wait_seconds: float  # total time put() spent blocked (full channel or low disk), ever
    put_blocked: str | None  # "full" or "disk" while puts are paused for lack of room, else None
    capacity_events: int
    capacity_bytes: int
    min_free_bytes: int
    disk_free_bytes: int | None
    file_bytes: int  # database plus WAL on disk
    quarantined: int  # events (as their chunks' counts say) set aside for a bad checksum since open
    reserve_bytes: int = 0  # the space reserve held now (0 while it is released: the disk ran full)


class Channel(SpaceManagement):
    """See the module docstring. Thread-safe: the channel's lock guards the write connection and the
    put side's counters, the lease lock the open leases (see "Locks")."""

    def __init__(self, state_dir: Path, lock: StateLock, capacity_bytes: int, capacity_events: int,
                 min_free_bytes: int, chunk_events: int = CHUNK_EVENTS, chunk_bytes: int = CHUNK_BYTES,
                 compress: bool = True, ack_sync_interval: float = 1.0):
        if chunk_events < 1 or chunk_bytes < 1:
            raise ValueError("chunk_events and chunk_bytes must be at least 1")
        self.state_dir = state_dir
        self.compress = compress
        self.ack_sync_interval = ack_sync_interval
        self._relaxed = False  # the write connection is at synchronous=NORMAL now
        self._unsynced_at: float | None = None  # monotonic time of the first ack commit not yet synced
        self._recounts = 0  # times the counters were read from the database (a put syncing outside the lock asks)
        self._wakes = 0  # times wake_waiters ended every wait_for_events early
        self._relaxed_acks = 0  # ack commits made without their fdatasync, ever (see put_packed)
        self._put_lock = threading.Lock()  # one put at a time, from its commit to its fdatasync
        # A put's checkpoint runs on its own connection without the channel's lock (see "Checkpoints").
        self._ckpt_lock = threading.Lock()  # guards _ckpt_conn; taken inside _cond or alone, never around it
        self._ckpt_conn: sqlite3.Connection | None = None
        self._ckpt_due = 0  # WAL pages the puts wrote since the last checkpoint they ran (an estimate)
        self._checkpoint_pages = 1000
        self._sync_timer: threading.Timer | None = None
        self.chunk_events = chunk_events
        self.chunk_bytes = chunk_bytes
        self.db_path = state_dir / DB_NAME
        self.capacity_bytes = capacity_bytes
        self.capacity_events = capacity_events
        self.min_free_bytes = min_free_bytes
        self._lock = lock
        self._mutex = threading.Lock()  # the channel's lock; groups.py waits on conditions of its own over it
        self._cond = threading.Condition(self._mutex)
        # The open leases and their counters (see "Locks" in the module docstring): taken inside
        # _cond or alone, never around it.
        self._lease_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None  # takes read through it, outside _cond
        self._visible = 0  # the highest seq a take may lease: committed AND counted
        self._closed = False
        self._leases: dict[int, Lease] = {}
        self._lease_ids = itertools.count(1)
        self._leased_events = self._leased_bytes = 0
        self._failing = False  # a write failed and has not succeeded since: log once per streak
        self.quarantined = 0
        self.groups = None  # shipper.channel.groups.GroupQueues, when the agent has collector groups
        self.salvage: SalvageReport | None = None
        self._init_space(state_dir, capacity_bytes)
        try:
            self._conn = self._open_checked()
        except StateError as exc:
            free = _disk_free(state_dir)
            if free is not None and free < self._reserve.size:
                raise StateError(f"cannot open the channel in {state_dir}: its filesystem is full ({free} bytes "
                                 f"free; {exc}); free some space there and start again") from exc
            raise
        self._recount()
        self._tune()
        with self._cond:
            restored = self._restore()
        if not restored:
            log.warning("free space for %s is %s bytes: too little to keep the %d-byte space reserve; "
                        "reading paused until space returns (delivery goes on)",
                        state_dir, _disk_free(state_dir), self._reserve.size)

    @staticmethod
    def peek(state_dir: str | os.PathLike) -> Peek:
        """The queue and the offset records of the channel in ``state_dir``, read-only, without the
        lock: how ``flume-ship status`` sees a stopped agent (see :func:`shipper.channel.store.peek`)."""
        return peek(Path(state_dir) / DB_NAME)

    @classmethod
    def open(cls, state_dir: str | os.PathLike, *, capacity_bytes: int = 1 << 30,
             capacity_events: int = 10_000_000, min_free_bytes: int = 500 * 1024 * 1024,
             chunk_events: int = CHUNK_EVENTS, chunk_bytes: int = CHUNK_BYTES, compress: bool = True,
             ack_sync_interval: float = 1.0) -> "Channel":
        """Create the directory if needed, take its lock (StateLocked), open, convert or salvage
        the database. ``chunk_events``/``chunk_bytes`` bound the rows new puts write; ``compress``
        says whether they store their payload LZ4-compressed when that is shorter; ack commits are
        made durable at most ``ack_sync_interval`` seconds later (0: each at its commit)."""
        path = prepare_state_dir(state_dir)
        lock = StateLock(path)
        try:
            protect_state_files(path, (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", "status.json"))
            old_umask = os.umask(0o077)  # a new database (and its -wal, -shm) is created 0600
            try:
                return cls(path, lock, capacity_bytes, capacity_events, min_free_bytes, chunk_events, chunk_bytes,
                           compress, ack_sync_interval)
            finally:
                os.umask(old_umask)
        except BaseException:
            lock.release()
            raise

    # --- opening and recovery -----------------------------------------------------------------

    def _open_checked(self) -> sqlite3.Connection:
        new = not self.db_path.exists()
        # Check through a read-only connection first: closing a read-write connection may write
        # to the file, and a corrupt file must be set aside exactly as it was found.
        problem = None if new else _precheck(self.db_path)
        if problem is None:
            try:
                conn = _open_db(self.db_path)
                if new:
                    fsync_dir(self.state_dir)
                return conn
            except _Corrupt as exc:
                problem = str(exc)
        self.salvage = salvage(self.db_path, problem)
        log.warning("%s", self.salvage.summary())
        return _open_db(self.db_path)

    def _recount(self) -> None:
        conn = self._conn
        n, nbytes, top = conn.execute(
            "SELECT coalesce(sum(count), 0), coalesce(sum(nbytes), 0), coalesce(max(last_seq), 0) FROM chunks").fetchone()
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
        self._events, self._bytes = n, nbytes
        self._recounts += 1
        self._next_seq = max(top, row[0] if row else 0) + 1
        self._visible = self._next_seq - 1
        self._page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        if self.groups is not None:
            self.groups.recount()

    # --- writing ------------------------------------------------------------------------------

    def _write(self, what: str, fn, *args, synced: bool = True) -> None:
        """Run fn(conn, *args) in one IMMEDIATE transaction; translate failures (lock held).
        ``synced=False``: commit without the fdatasync (the caller syncs the WAL after, see put).

        On a full disk a put fails, and the next ones wait until space returns; a write that
        frees space (an ack, a quarantine move) releases the space reserve and is tried once
        more at once (see _make_room)."""
        if self._conn is None:
            self._reopen(what)
        for attempt in (1, 2):
            conn = self._conn
            relaxed = not synced or (what == "ack" and self._ack_may_wait())
            changes = conn.total_changes
            try:
                if relaxed != self._relaxed:
                    conn.execute("PRAGMA synchronous = NORMAL" if relaxed else "PRAGMA synchronous = FULL")
                    self._relaxed = relaxed
                conn.execute("BEGIN IMMEDIATE")
                fn(conn, *args)
                conn.execute("COMMIT")
                if not relaxed:
                    if conn.total_changes != changes:  # it wrote frames, so its fdatasync covered every earlier one
                        self._unsynced_at = None
                elif synced:  # an ack left unsynced: made durable at most ack_sync_interval later
                    self._relaxed_acks += 1
                    if self._unsynced_at is None:
                        self._unsynced_at = time.monotonic()
                        self._arm_sync_timer(self.ack_sync_interval)
                break
            except BaseException as exc:
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite may have rolled back already; the reopen below settles it
                if not isinstance(exc, sqlite3.Error):
                    raise  # a caller's mistake (say, a str where bytes belong): nothing was written
                if _code(exc) == SQLITE_FULL and self._make_room(what) and what != "put" and attempt == 1:
                    continue
                raise self._write_failed(what, exc) from exc
        if self._failing:
            self._failing = False
            log.info("channel writes work again (%s)", what)

    def _write_failed(self, what: str, exc: sqlite3.Error) -> Exception:
        if _is_corrupt(exc):
            return StateError(f"channel database {self.db_path} is corrupt ({exc}); "
                              "restart flume-ship to salvage it")
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        reason = "the disk is full" if _code(exc) == SQLITE_FULL else f"{exc}"
        log.log(level, "channel %s failed: %s; nothing committed was lost, will retry", what, reason)
        if _code(exc) != SQLITE_FULL:
            # An I/O error (a failed fsync, say) may leave a commit frame SQLite cannot vouch for:
            # read the WAL afresh and recount, instead of trusting this connection's view.
            self._reopen_after_io_error(what)
        return ChannelIOError(f"channel {what} failed in {self.state_dir}: {reason}; "
                              "nothing committed was lost, retry later")

    def _reopen_after_io_error(self, what: str) -> None:
        """Close the write connection and open it again, recounting (a failed reopen leaves it
        closed: the next write tries again)."""
        _close_quietly(self._conn)
        self._conn = None
        try:
            self._reopen(what)
        except ChannelIOError:
            pass

    def _reopen(self, what: str) -> None:
        try:
            self._relaxed = False  # a new connection starts at synchronous=FULL
            self._conn = _open_db(self.db_path)
            self._recount()
            self._tune()
        except (sqlite3.Error, StateError, _Corrupt) as exc:
            self._conn = None
            raise ChannelIOError(f"channel {what}: cannot reopen {self.db_path}: {exc}") from exc

    # --- acks synced once a second (see the module docstring) --------------------------------

    def _ack_may_wait(self) -> bool:
        """May this ack commit without its fdatasync? Not with interval 0, and not once the oldest
        unsynced ack is ``ack_sync_interval`` old: this one then commits synced and covers it."""
        if self.ack_sync_interval <= 0:
            return False
        return self._unsynced_at is None or time.monotonic() - self._unsynced_at < self.ack_sync_interval

    def _arm_sync_timer(self, delay: float) -> None:
        if self._sync_timer is not None:
            return
        timer = threading.Timer(max(0.0, delay), self._sync_due)
        timer.daemon = True
        self._sync_timer = timer
        timer.start()

    def _sync_due(self) -> None:
        """The timer: fdatasync the WAL if an ack is still unsynced after the interval (else wait
        for the newer one's turn)."""
        with self._cond:
            self._sync_timer = None
            if self._closed or self._unsynced_at is None:
                return
            left = self._unsynced_at + self.ack_sync_interval - time.monotonic()
            if left > 0:
                self._arm_sync_timer(left)
                return
            try:
                self._sync_wal()
            except OSError as exc:
                log.warning("channel: cannot sync acknowledged deletions in %s (%s); will retry", self.db_path, exc)
                self._arm_sync_timer(self.ack_sync_interval)

    def _sync_wal(self) -> None:
        """fdatasync the WAL file (lock held, so no ack commits meanwhile), making every ack
        committed so far durable. Without a WAL file there is nothing to sync: a checkpoint that
        emptied it synced the database first."""
        if self._unsynced_at is None:
            return
        _fdatasync_wal(self.db_path)
        self._unsynced_at = None

    def _sync_put(self) -> OSError | None:
        """fdatasync the WAL after a put's commit (channel lock NOT held). A checkpoint that ran
        meanwhile synced the WAL before copying it and the database after, so whatever it moved is
        durable too; a WAL file gone (closed channel) was checkpointed and synced the same way."""
        try:
            _fdatasync_wal(self.db_path)
        except OSError as exc:
            return exc
        return None

    def _checkpoint_aside(self) -> None:
        """A PASSIVE checkpoint on the checkpoint connection, channel lock NOT held: commits (acks,
        the next put) go on beside it; SQLite lets one checkpointer run beside the writer. It
        syncs the WAL before copying and the database after, as the automatic one does."""
        with self._ckpt_lock:
            if self._closed:
                return
            self._ckpt_due = 0
            try:
                if self._ckpt_conn is None:
                    self._ckpt_conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False,
                                                      timeout=0.0)
                    self._ckpt_conn.execute("PRAGMA cache_size = 8")  # it copies frames; it caches nothing
                self._ckpt_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # the automatic checkpoint (at the full interval) still bounds the WAL
                log.debug("channel: checkpoint beside the writer failed: %s", exc)
                self._drop_ckpt_conn()

    def _drop_ckpt_conn(self) -> None:
        """Close the checkpoint connection (``_ckpt_lock`` held)."""
        _close_quietly(self._ckpt_conn)
        self._ckpt_conn = None

    def _put_sync_failed(self, exc: OSError) -> Exception:
        """A put committed but its fdatasync failed (lock held): as after a failed commit, read the
        database afresh and recount (the batch may be stored; its retry then gives a duplicate,
        never a loss) and raise ChannelIOError."""
        log.warning("channel put failed: cannot sync %s-wal (%s); nothing committed was lost, will retry",
                    self.db_path, exc)
        self._failing = True
        if self._conn is not None and not self._closed:
            self._reopen_after_io_error("put")
        return ChannelIOError(f"channel put failed in {self.state_dir}: cannot sync its WAL ({exc}); "
                              "nothing committed was lost, retry later")

    def put(self, events: Sequence[bytes], offsets: Mapping[str, bytes | None] | None = None,
            timeout: float | None = None, groups: Sequence[tuple[str, ...]] | None = None,
            runs: Sequence[tuple[tuple[str, ...], int]] | None = None) -> bool:
        """Store events and offset records in one transaction; False if no room before timeout.

        With collector groups (``self.groups``), ``groups`` says, event by event, which groups each
        is owed to (see :mod:`shipper.channel.groups`), or ``runs`` says the same as runs of
        ``(groups, count)`` in event order (no per-event work); chunks never mix events of
        different routes. The same as ``put_packed(pack(events, groups, runs), offsets, timeout)``."""
        return self.put_packed(self.pack(events, groups, runs), offsets, timeout)

    def pack(self, events: Sequence[bytes], groups: Sequence[tuple[str, ...]] | None = None,
             runs: Sequence[tuple[tuple[str, ...], int]] | None = None) -> "Packed":
        """The chunks ``put`` would store for ``events`` (joined, compressed, checksummed): the CPU
        part of a put, without the channel's lock, so a caller can pack the next batch while
        :meth:`put_packed` commits this one (the tail source's put stage does)."""
        if not isinstance(events, list):
            events = list(events)
        if groups is not None:
            if runs is not None or len(groups) != len(events):
                raise ValueError("put: give groups (one tuple per event) or runs, not both")
            runs = [(groups[lo], hi - lo) for lo, hi in _runs(groups)]
        if (runs is None) != (self.groups is None) or (runs is not None and sum(n for _, n in runs) != len(events)):
            raise ValueError("put: give groups (one tuple per event) or runs exactly when the channel has groups")
        if runs is not None:
            self.groups.check([targets for targets, _ in runs])
        chunk_groups: list[tuple[str, ...]] = []
        if runs is None:
            chunks = self._chunks(events)
        else:
            chunks = []
            lo = 0
            for targets, n in runs:
                if n:
                    part = self._chunks(events if n == len(events) else events[lo:lo + n])
                    chunks += part
                    chunk_groups += [targets] * len(part)
                lo += n
        return Packed(len(events), sum(c[1] for c in chunks), chunks, chunk_groups, self.groups)

    def put_packed(self, packed: "Packed", offsets: Mapping[str, bytes | None] | None = None,
                   timeout: float | None = None, fence: Fence | None = None) -> bool:
        """Commit what :meth:`pack` made, with the offset records, in one transaction; False if no
        room before timeout. The channel's groups must be as they were at ``pack``; a revoked
        ``fence`` raises PutRevoked (see "Revoked writers")."""
        offsets = dict(offsets or {})
        for key, value in offsets.items():
            if not isinstance(key, str) or not (value is None or isinstance(value, (bytes, bytearray, memoryview))):
                raise TypeError(f"offset records map str to bytes or None, not {key!r}: {type(value).__name__}")
        count, nbytes, chunks, chunk_groups = packed.count, packed.nbytes, packed.chunks, packed.chunk_groups
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._put_lock, self._cond:
            if self._closed:
                return False
            if count and (fence is None or not fence.revoked) and not self._wait_for_room(count, nbytes, deadline):
                return False
            if fence is not None and fence.revoked:  # looked at again after the wait, which let go of the lock
                raise PutRevoked("put refused: this writer was replaced; what it read is read again")
            if packed.queues is not self.groups:
                raise ValueError("put: the channel's groups changed since the batch was packed")
            now = time.time()
            last = self._next_seq - 1
            rows = []
            for n, size, crc, lens, body in chunks:
                last += n
                rows.append((last, n, size, now, crc, lens, body))
            self._write("put", _put_txn, rows, offsets, self.groups, chunk_groups, synced=False)
            self._ckpt_due += sum(len(c[3]) + len(c[4]) for c in chunks) // (self._page_size - 64) + 2 * len(chunks) + 4
            # The commit wrote its frames without syncing them; the fdatasync runs without the
            # channel's lock (see "Puts synced outside the lock"), so acks and the timer go on.
            acks_before, recounts = self._relaxed_acks, self._recounts
            self._cond.release()
            try:
                failure = self._sync_put()
            finally:
                self._cond.acquire()
            if failure is not None:
                raise self._put_sync_failed(failure)
            if self._relaxed_acks == acks_before:
                self._unsynced_at = None  # every ack committed before this fdatasync is durable with it
            if self._closed or self._recounts != recounts:
                return True  # committed and synced, and closed (its checkpoint has it) or counted by a recount
            if self.groups is not None:
                self.groups.added(rows, chunk_groups)
            self._next_seq += count
            self._events += count
            self._bytes += nbytes
            self._visible = self._next_seq - 1  # after the counters: a take never leases uncounted rows
            if rows:
                self._cond.notify_all()
            checkpoint = self._ckpt_due >= self._checkpoint_pages // 2
        if checkpoint:  # the batch is counted and takeable; the channel's lock is free
            self._checkpoint_aside()
        return True

    def revoke(self, fence: Fence) -> None:
        """End ``fence``: after this returns, no put with it commits. A put in progress ends first,
        its fdatasync and its counting included (it holds ``_put_lock`` throughout; a wait for room
        ends within its timeout), so nothing of it is counted after the caller changes the queues."""
        with self._put_lock, self._cond:
            fence.revoked = True

    def _chunks(self, events: list[bytes]) -> list[tuple[int, int, int, bytes, bytes]]:
        """(count, nbytes, crc, lens, stored body) per chunk of ``events`` (see store: compression)."""
        out = []
        lengths = list(map(len, events))
        for lo, hi in split_points(lengths, self.chunk_events, self.chunk_bytes):
            part = events if hi - lo == len(events) else events[lo:hi]
            payload = b"".join(part)
            body = pack_payload(payload) if self.compress else payload
            lens = encode_lens(lengths[lo:hi])
            out.append((hi - lo, len(payload), chunk_crc(body, lens), lens, body))
        return out

    # --- taking -------------------------------------------------------------------------------

    def take(self, max_events: int, max_bytes: int) -> Lease | None:
        """Lease the oldest whole chunks no other lease holds: at least one chunk (even if it alone
        is over max_events or max_bytes), then more while the lease stays within both.

        Reads through the reader connection under the lease lock only, so a take never waits
        for a put's or an ack's commit (see "Locks")."""
        if max_events <= 0:
            return None
        while True:
            with self._lease_lock:
                # Unlocked reads of the put side's counters: a hint; the rows read decide.
                if self._closed or self._events <= self._leased_events:
                    return None
                try:
                    found = self._pick(sorted((l.first_seq, l.last_seq) for l in self._leases.values()),
                                       max_events, max_bytes, top=self._visible, conn=self._read_conn())
                except _Damaged as bad:
                    damaged = bad.key
                except BaseException:
                    self._drop_reader()
                    raise
                else:
                    if found is None:
                        return None
                    lease = self._lease(*found)
                    self._leases[lease.id] = lease
                    self._leased_events += lease.count
                    self._leased_bytes += lease.nbytes
                    return lease
            with self._cond:  # a damaged chunk first in line: set it aside (a write), then take again
                if self._closed:
                    return None
                if self._conn is None:
                    self._reopen("take")
                if self._conn.execute("SELECT 1 FROM chunks WHERE last_seq = ?", (damaged,)).fetchone():
                    self._quarantine(damaged)

    def _read_conn(self) -> sqlite3.Connection:
        """The reader connection (opened on first use, and again after a failed read)."""
        if self._reader is None:
            try:
                conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=10.0)
                conn.execute("PRAGMA query_only = ON")
            except sqlite3.Error as exc:
                raise ChannelIOError(f"channel take failed in {self.state_dir}: cannot open a reader: {exc}") from exc
            self._reader = conn
        return self._reader

    def _drop_reader(self) -> None:
        _close_quietly(self._reader)
        self._reader = None

    def _pick(self, spans: list[tuple[int, int]], max_events: int, max_bytes: int,
              grp: str | None = None, top: int = MAX_SEQ,
              conn: sqlite3.Connection | None = None) -> tuple[list[tuple[int, Chunk]], bool] | None:
        """The lowest run of chunks outside ``spans`` (the open leases, sorted) and at most ``top``,
        of the whole channel or of group ``grp``'s queue; with whether the run is full (see Lease).
        None: nothing free. With ``conn`` (the reader), a damaged first chunk raises _Damaged
        instead of being quarantined (that is a write)."""
        start, i = 0, 0
        while True:
            while i < len(spans) and spans[i][0] <= start:
                start = max(start, spans[i][1] + 1)
                i += 1
            bound = spans[i][0] - 1 if i < len(spans) else MAX_SEQ
            limit = min(bound, top)
            picked, full = self._read_run(start, limit, max_events, max_bytes, grp, conn)
            if picked:
                return picked, full or (limit == bound and bound != MAX_SEQ)
            if i >= len(spans) or spans[i][1] >= top:
                return None
            start = spans[i][1] + 1
            i += 1

    def _lease(self, picked: list[tuple[int, Chunk]], full: bool) -> Lease:
        (first, first_chunk), last = picked[0], picked[-1][0]
        return Lease(next(self._lease_ids), [c for _, c in picked], first - first_chunk.count + 1, last, full)

    # A group's run: the chunks it still owes (shipper.channel.groups), else every stored chunk.
    _RUN_META = ("SELECT last_seq, count, nbytes FROM chunks WHERE last_seq BETWEEN ? AND ? ORDER BY last_seq LIMIT ?",
                 "SELECT c.last_seq, c.count, c.nbytes FROM group_pending p JOIN chunks c ON c.last_seq = p.last_seq "
                 "WHERE p.grp = ? AND p.last_seq BETWEEN ? AND ? ORDER BY p.last_seq LIMIT ?")
    _RUN_BODIES = (f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE last_seq BETWEEN ? AND ? ORDER BY last_seq",
                   f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE last_seq IN (SELECT last_seq FROM group_pending "
                   "WHERE grp = ? AND last_seq BETWEEN ? AND ?) ORDER BY last_seq")

    def _read_run(self, start: int, limit: int, max_events: int, max_bytes: int,
                  grp: str | None = None, reader: sqlite3.Connection | None = None) -> tuple[list[tuple[int, Chunk]], bool]:
        """Chunks keyed start..limit in order, within the limits; a damaged chunk ends the run.
        Also says whether the run stopped at a stored chunk (that did not fit, or was damaged)."""
        which, lead = (0, ()) if grp is None else (1, (grp,))
        conn = reader or self._conn
        while True:
            picked: list[tuple[int, Chunk]] = []
            bad, stopped = None, False
            try:
                # First the small columns only (no overflow pages read), to choose the run ...
                keys, n, nbytes = [], 0, 0
                cur = conn.execute(self._RUN_META[which], (*lead, start, limit, max_events))
                try:  # closed at once: an open statement would hold a read transaction (and the WAL)
                    for key, count, size in cur:
                        if keys and (not isinstance(count, int) or not isinstance(size, int)
                                     or n + count > max_events or nbytes + size > max_bytes):
                            stopped = True
                            break
                        keys.append(key)
                        if isinstance(count, int) and isinstance(size, int):
                            n, nbytes = n + count, nbytes + size
                finally:
                    cur.close()
                # ... then the bodies of exactly those chunks.
                if keys:
                    cur = conn.execute(self._RUN_BODIES[which], (*lead, keys[0], keys[-1]))
                    try:
                        for key, count, size, _, crc, lens, body in cur:
                            try:
                                if not chunk_ok(count, size, crc, lens, body):
                                    raise ValueError("checksum")
                                payload = unpack_payload(body, size)
                            except ValueError:
                                bad = key
                                break
                            picked.append((key, Chunk(count, lens, payload)))
                    finally:
                        cur.close()
            except sqlite3.DatabaseError as exc:
                if _is_corrupt(exc):
                    raise StateError(f"channel database {self.db_path} is corrupt ({exc}); "
                                     "restart flume-ship to salvage it") from exc
                raise ChannelIOError(f"channel take failed in {self.state_dir}: {exc}") from exc
            if bad is None or picked:
                return picked, stopped or bad is not None  # a bad chunk after the run: the next take
            if reader is not None:
                raise _Damaged(bad)
            if grp is None:
                self._quarantine(bad)
            else:
                self.groups.quarantine(bad)
            start = bad + 1

    def _quarantine(self, key: int) -> None:
        def txn(conn):
            conn.execute(f"INSERT OR REPLACE INTO quarantine SELECT {CHUNK_COLUMNS}, ? FROM chunks "
                         "WHERE last_seq = ?", (time.time(), key))
            conn.execute("DELETE FROM chunks WHERE last_seq = ?", (key,))

        count, size = self._conn.execute("SELECT count, nbytes FROM chunks WHERE last_seq = ?", (key,)).fetchone()
        count, size = (count, size) if isinstance(count, int) and isinstance(size, int) else (0, 0)
        self._write("quarantine", txn)
        self._events -= count
        self._bytes -= size
        self.quarantined += count
        log.error("chunk %d (%d events) in %s failed its checksum: moved to the quarantine table, not sent",
                  key, count, self.db_path)

    def ack(self, lease: Lease) -> None:
        """Delete the leased chunks durably. On ChannelIOError the lease stays open: ack again later."""
        self.ack_all([lease])

    def ack_all(self, leases: Sequence[Lease]) -> None:
        """:meth:`ack` of several leases in one transaction (one commit); all or none of them."""
        with self._cond:
            if self._closed:
                return  # the rows stay; they are sent again after restart (at-least-once)
            for lease in leases:
                if self._leases.get(lease.id) is not lease:
                    raise ValueError(f"lease {lease.id} is not open (acked or nacked already?)")
            self._write("ack", _ack_txn, [(lease.first_seq, lease.last_seq) for lease in leases])
            for lease in leases:
                self._forget(lease)
                self._events -= lease.count
                self._bytes -= lease.nbytes
            self._cond.notify_all()
            if self._low_space:
                self._shrink()
            else:
                self._reclaim()

    def dead_letter(self, lease: Lease, reason: str, ranges: Sequence[tuple[int, int]] | None = None) -> str:
        """Move the leased chunks to the dead letters (:mod:`shipper.channel.deadletter`) in one
        transaction: like ``ack``, but the events are kept there; with ``ranges`` (event index
        ranges of the lease: the rejected calls) only those are kept, the rest were delivered.
        Returns where they went."""
        from shipper.channel.deadletter import insert_dead

        def txn(conn):
            insert_dead(conn, lease, None, reason, ranges)
            _ack_txn(conn, [(lease.first_seq, lease.last_seq)])

        with self._cond:
            if self._closed:
                return "nowhere yet (the channel is closed: the batch is taken again after restart)"
            if self._leases.get(lease.id) is not lease:
                raise ValueError(f"lease {lease.id} is not open (acked or nacked already?)")
            self._write("dead-letter", txn)
            self._forget(lease)
            self._events -= lease.count
            self._bytes -= lease.nbytes
            self._cond.notify_all()
        return "the dead letters"

    def nack(self, lease: Lease) -> None:
        """Give the chunks back; they are the next ones taken, in their original order."""
        with self._cond:
            if self._closed or self._leases.get(lease.id) is not lease:
                return
            self._forget(lease)
            self._cond.notify_all()

    def _forget(self, lease: Lease) -> None:
        with self._lease_lock:
            del self._leases[lease.id]
            self._leased_events -= lease.count
            self._leased_bytes -= lease.nbytes

    # --- reading state ------------------------------------------------------------------------

    def ready(self, max_events: int, max_bytes: int) -> bool:
        """Would a take now fill a whole batch? From the counters alone, without reading a chunk
        (a sink asks before taking ahead, so a lease it would give back is never read).

        Without any lock: it must not wait for a put's commit, and an answer made stale by a
        concurrent put or take costs one early take (given back) or one linger, never an event."""
        return (self._events - self._leased_events >= max_events
                or self._bytes - self._leased_bytes >= max_bytes)

    def wait_for_events(self, timeout: float) -> bool:
        """Block until an event is takeable (True) or the timeout passes / the channel closes /
        :meth:`wake_waiters` is called."""
        with self._cond:
            wakes = self._wakes
            self._cond.wait_for(lambda: self._closed or self._events > self._leased_events or self._wakes != wakes,
                                timeout)
            return not self._closed and self._events > self._leased_events

    def wake_waiters(self) -> None:
        """End every wait_for_events on the whole channel now, as if its timeout had passed: what
        a waiter waits for changed outside the channel (``--once`` read everything, so an empty
        channel now means done, and a sink waiting for events would only wait out its timeout).

        Not the group queues' waits: under routes a batch a group gives up on moves to its
        secondary group's queue, so an empty queue does not mean done while another group
        still delivers; their sinks wait out their timeout as before."""
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def offsets(self) -> dict[str, bytes]:
        with self._cond:
            if self._closed:
                raise StateError("the channel is closed")
            if self._conn is None:
                self._reopen("read offsets")
            return {k: bytes(v) for k, v in self._conn.execute("SELECT key, value FROM offsets")}

    def stats(self) -> ChannelStats:
        with self._cond:
            age = None
            if self._events and not self._closed and self._conn is not None:
                try:
                    row = self._conn.execute("SELECT put_at FROM chunks ORDER BY last_seq LIMIT 1").fetchone()
                    age = max(0.0, time.time() - row[0]) if row else None
                except sqlite3.Error:
                    pass
            waiting = time.monotonic() - self._wait_started if self._wait_started is not None else 0.0
            return ChannelStats(
                events=self._events, bytes=self._bytes, leased_events=self._leased_events,
                leased_bytes=self._leased_bytes, oldest_event_age=age,
                put_wait_seconds=self._wait_total + waiting,
                put_blocked=self._blocked if self._blocked and self._room_problem(*self._pending, restore=False) else None,
                capacity_events=self.capacity_events, capacity_bytes=self.capacity_bytes,
                min_free_bytes=self.min_free_bytes, disk_free_bytes=_disk_free(self.state_dir),
                file_bytes=_file_bytes(self.db_path), quarantined=self.quarantined,
                reserve_bytes=self._reserve.size if self._reserve_held else 0)

    @property
    def closed(self) -> bool:
        """Closed for good: every put now returns False at once (a channel is never reopened)."""
        return self._closed

    def close(self) -> None:
        """Checkpoint, close and release the lock; open leases are dropped (sent again next run)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            if self.groups is not None:
                self.groups.wake()
            with self._lease_lock:  # a take reading now finishes first
                self._drop_reader()
            with self._ckpt_lock:  # a put's checkpoint running now finishes first
                self._drop_ckpt_conn()
            if self._sync_timer is not None:
                self._sync_timer.cancel()
                self._sync_timer = None
            try:
                self._sync_wal()  # a clean stop leaves every ack durable, whatever the checkpoint does
            except OSError as exc:
                log.warning("channel: cannot sync acknowledged deletions in %s (%s): up to %g s of "
                            "acks may be sent again after a power cut", self.db_path, exc, self.ack_sync_interval)
            if self._conn is not None:
                try:
                    if not self._events:
                        self._shrink_idle()
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                except sqlite3.Error as exc:
                    log.debug("channel: final checkpoint failed: %s", exc)
                self._conn.close()
                self._conn = None
            self._lock.release()

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fdatasync_wal(db_path) -> None:
    """fdatasync the database's WAL file; none there (a checkpoint that emptied it synced the
    database first) is nothing to sync. Raises OSError."""
    try:
        fd = os.open(f"{db_path}-wal", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _close_quietly(conn: sqlite3.Connection | None) -> None:
    """Close a connection, if any, whatever state it is in (it is dropped either way)."""
    if conn is not None:
        try:
            conn.close()
        except sqlite3.Error:
            pass


class _Damaged(Exception):
    """Internal: the reader met a damaged chunk first in line (``key``); quarantine it and retry."""

    def __init__(self, key: int):
        super().__init__(key)
        self.key = key


def _runs(groups: Sequence[tuple[str, ...]]) -> list[tuple[int, int]]:
    """(lo, hi) index ranges of consecutive events routed to the same groups."""
    out, lo = [], 0
    for i in range(1, len(groups) + 1):
        if i == len(groups) or groups[i] != groups[lo]:
            out.append((lo, i))
            lo = i
    return out


def _put_txn(conn: sqlite3.Connection, rows: list, offsets: Mapping[str, bytes | None], groups=None,
             chunk_groups=()) -> None:
    if rows:
        conn.executemany(_INSERT_CHUNK, rows)
        if groups is not None:
            groups.put_rows(conn, rows, chunk_groups)
    for key, value in offsets.items():
        if value is None:
            conn.execute("DELETE FROM offsets WHERE key = ?", (key,))
        else:
            value = bytes(value)
            conn.execute("INSERT INTO offsets (key, value, crc) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
                         "SET value = excluded.value, crc = excluded.crc", (key, value, offset_crc(key, value)))


def _ack_txn(conn: sqlite3.Connection, spans: list[tuple[int, int]]) -> None:
    conn.executemany("DELETE FROM chunks WHERE last_seq BETWEEN ? AND ?", spans)
