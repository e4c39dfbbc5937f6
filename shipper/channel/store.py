"""The channel's on-disk format: schema, chunk encoding, opening, the format check and conversion.

Events are stored in CHUNKS, not one row per event: a put of N events writes
ceil(N / chunk_events) rows (fewer than ``chunk_bytes`` each, unless one event alone is bigger),
each holding its events back to back in one BLOB plus their lengths. A row costs SQLite the same
whether it holds one event or a thousand, so this is what makes the channel cheap per event; and
since an encoded AvroFlumeEvent is self-delimiting, a chunk's body is already the middle of an
``appendBatch`` parameter: the sink sends stored bytes with no per-event work.

Schema (format version 3, stored in ``PRAGMA user_version``; ``PRAGMA application_id`` is
0x666C7368, "flsh", so a foreign SQLite file is refused rather than used)::

    chunks(last_seq INTEGER PRIMARY KEY AUTOINCREMENT, count, nbytes, put_at, crc, lens, body)
    offsets(key TEXT PRIMARY KEY, value BLOB, crc INTEGER)
    quarantine(last_seq INTEGER PRIMARY KEY, count, nbytes, put_at, crc, lens, body, found_at)

Chunk byte layout: the chunk's PAYLOAD is the encoded events back to back (``nbytes`` long);
``lens`` is ``count`` unsigned 32-bit little-endian integers, the events' lengths in order. ``body``
stores the payload either as it is (``length(body) == nbytes``) or, when that is shorter, as one
raw LZ4 block (``length(body) < nbytes``; no frame, no stored size: ``nbytes`` is the size). The
length alone says which, so no row needs a codec column and every format-2 row is already a valid
format-3 row. ``crc`` is ``zlib.crc32(lens, zlib.crc32(body))`` over the STORED bytes, so a check
never needs to decompress; a body that then fails to decompress to exactly ``nbytes`` bytes is
treated as damaged like a CRC failure. Compression is LZ4 because it is the cheapest codec that
still halves log lines (~2x on log-like 1 KiB lines, at over 1 GB/s to decompress): the channel's
cost is the bytes it makes the disk write three times (WAL, checkpoint, the collector's copy),
and the CPU it costs must stay below what those writes cost. The small columns come first and the body last, so reading
a row's metadata never touches its overflow pages. For offsets, ``crc`` is crc32 of the UTF-8 key,
then the value. SQLite's own checks catch broken pages; the CRC (plus ``count``/``nbytes`` agreeing
with ``lens``) catches a damaged payload inside a well-formed page, so a garbage chunk is set aside
whole in ``quarantine`` instead of being sent (and rejected) forever.

Format 2 (the same tables, every body stored as it is) is converted on open by setting
``user_version = 3`` in one transaction: its rows are valid as they are, and new puts compress.
An older flume-ship refuses a format-3 file (it would send compressed bytes), rather than misread it.

Format 1 (one row per event, ``events(seq, put_at, crc, body)``) is converted in place when a
database is opened: one transaction regroups runs of consecutive events into chunks (seqs kept),
moves rows whose CRC fails into the quarantine, and sets ``user_version = 2``. A crash during it
leaves format 1 as it was, and the next start converts again.

Page size: a new channel database is created with 16 KiB pages (``PAGE_SIZE``). A compressed
~1 KiB-line chunk is ~400 KB of overflow pages, and each page is one WAL frame (its own header,
checksum and ``write``) and then one checkpoint write: at 4 KiB that was ~100 frames per chunk,
at 16 KiB ~25 (measured: ~12 % less agent CPU per event on ~1 KiB lines; 64 KiB wrote more bytes,
since a partly filled last page is written whole). The page size is not part of the format
version: a file keeps the page size it was created with (SQLite changes it only by a VACUUM, which
would rewrite a whole backlog), so a channel from an older release opens and ships with 4 KiB pages.
On a filesystem under 1 GiB (``SMALL_FS_BYTES``) a new channel keeps SQLite's 4 KiB: there the
space checks' fixed margins (pages per chunk, the WAL's checkpoint interval of at least 16 pages)
would be four times bigger against a small total.

Opening checks the format and runs ``PRAGMA quick_check`` through a read-only connection first
(``_precheck``); what happens to a file that fails is :mod:`shipper.channel.repair`'s.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import sys
import time
import urllib.parse
import zlib
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import lz4.block

from shipper.errors import StateError

log = logging.getLogger("flume-ship.channel")

FORMAT_VERSION = 3
APPLICATION_ID = 0x666C7368  # "flsh"
DB_NAME = "channel.db"
SIDE_FILES = ("-wal", "-shm")

CHUNK_EVENTS = 1000  # default: at most this many events per stored row ...
CHUNK_BYTES = 2 << 20  # ... and at most this many bytes (unless one event alone is bigger): 1,000 events
# of ~1 KiB lines (~1.09 MB encoded) then make one chunk, so a lease is one full call of batch_size
# events; at 1 MiB they made a chunk of ~960 and a remainder, each its own (smaller) call.
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024  # the WAL file is cut back to this after a checkpoint
PAGE_SIZE = 16384  # of a NEW channel database (an existing one keeps its own; see the docstring) ...
SMALL_FS_BYTES = 1 << 30  # ... unless its filesystem is smaller than this: then SQLite's 4 KiB
MAX_SEQ = (1 << 63) - 1

SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 10, 11, 13, 26

_U32 = "I"
assert array(_U32).itemsize == 4, "the lens column needs 32-bit unsigned array items"
_SWAP = sys.byteorder != "little"  # lens are stored little-endian whatever the machine

CHUNK_COLUMNS = "last_seq, count, nbytes, put_at, crc, lens, body"
_CHUNKS_TABLE = """
CREATE TABLE chunks (
    last_seq INTEGER PRIMARY KEY AUTOINCREMENT,
    count    INTEGER NOT NULL,
    nbytes   INTEGER NOT NULL,
    put_at   REAL    NOT NULL,
    crc      INTEGER NOT NULL,
    lens     BLOB    NOT NULL,
    body     BLOB    NOT NULL
);
"""
# No NOT NULL here: a damaged row must be storable whatever it decodes as.
_QUARANTINE_TABLE = """
CREATE TABLE {name} (
    last_seq INTEGER PRIMARY KEY,
    count, nbytes, put_at, crc, lens, body,
    found_at REAL
);
"""
SCHEMA = _CHUNKS_TABLE + """
CREATE TABLE offsets (
    key   TEXT    PRIMARY KEY,
    value BLOB    NOT NULL,
    crc   INTEGER NOT NULL
);
""" + _QUARANTINE_TABLE.format(name="quarantine") + f"""
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {FORMAT_VERSION};
"""
_INSERT_CHUNK = f"INSERT INTO chunks ({CHUNK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"


def encode_lens(lengths: Iterable[int]) -> bytes:
    """The ``lens`` column: each length as a little-endian uint32."""
    a = array(_U32, lengths)
    if _SWAP:
        a.byteswap()
    return a.tobytes()


def decode_lens(lens: bytes) -> array:
    a = array(_U32)
    a.frombytes(lens)
    if _SWAP:
        a.byteswap()
    return a


def chunk_crc(body: bytes, lens: bytes) -> int:
    return zlib.crc32(lens, zlib.crc32(body))


MIN_COMPRESS = 128  # payloads shorter than this are stored as they are: LZ4 cannot win much there


def pack_payload(payload: bytes) -> bytes:
    """The ``body`` to store for a payload: an LZ4 block if that is shorter, else the payload."""
    if len(payload) < MIN_COMPRESS:
        return payload
    packed = lz4.block.compress(payload, store_size=False)
    return packed if len(packed) < len(payload) else payload


def unpack_payload(body: bytes, nbytes: int) -> bytes:
    """The payload of a stored ``body``; ValueError if a compressed one does not decode to nbytes."""
    if len(body) == nbytes:
        return body
    try:
        payload = lz4.block.decompress(body, uncompressed_size=nbytes)
    except lz4.block.LZ4BlockError as exc:
        raise ValueError(f"stored chunk does not decompress: {exc}") from exc
    if len(payload) != nbytes:
        raise ValueError(f"stored chunk decompresses to {len(payload)} bytes, not {nbytes}")
    return payload


def chunk_ok(count, nbytes, crc, lens, body) -> bool:
    """A stored chunk is intact: types, CRC, and count/nbytes agree with the lengths (a stored body
    is the payload or a shorter compressed form of it)."""
    if not (isinstance(body, bytes) and isinstance(lens, bytes) and isinstance(count, int)
            and isinstance(nbytes, int) and isinstance(crc, int)):
        return False
    if count < 1 or len(lens) != 4 * count or len(body) > nbytes or chunk_crc(body, lens) != crc:
        return False
    return sum(decode_lens(lens)) == nbytes


def split_points(lengths: Sequence[int], max_events: int, max_bytes: int) -> list[tuple[int, int]]:
    """Cut a run of events into (lo, hi) index ranges of at most max_events events and max_bytes
    bytes each (a range holds at least one event, however big). Costs O(ranges x log n)."""
    n = len(lengths)
    if n == 0:
        return []
    if max(lengths) * max_events <= max_bytes:
        # No run of max_events events can pass max_bytes: the count alone cuts (no running sums).
        return [(lo, min(n, lo + max_events)) for lo in range(0, n, max_events)]
    ends = list(itertools.accumulate(lengths))  # ends[i] = bytes up to and including event i
    if n <= max_events and ends[-1] <= max_bytes:
        return [(0, n)]
    out, lo, base = [], 0, 0
    while lo < n:
        hi = min(n, lo + max_events, bisect_right(ends, base + max_bytes, lo))
        hi = max(hi, lo + 1)
        out.append((lo, hi))
        base, lo = ends[hi - 1], hi
    return out


@dataclass(frozen=True, slots=True)
class Chunk:
    """One stored row: ``count`` events, their lengths, and their bytes back to back."""

    count: int
    lens: bytes
    body: bytes

    def events(self) -> list[bytes]:
        body, pos, out = self.body, 0, []
        for n in decode_lens(self.lens):
            out.append(body[pos:pos + n])
            pos += n
        return out

    def split(self, max_events: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """(count, bytes) pieces of at most max_events events and max_bytes bytes (or one event)."""
        lengths = decode_lens(self.lens)
        if self.count <= max_events and len(self.body) <= max_bytes:
            return [(self.count, self.body)]
        out, pos = [], 0
        for lo, hi in split_points(lengths, max_events, max_bytes):
            size = sum(lengths[lo:hi])
            out.append((hi - lo, self.body[pos:pos + size]))
            pos += size
        return out


def offset_crc(key: str, value: bytes) -> int:
    return zlib.crc32(value, zlib.crc32(key.encode("utf-8")))


def _code(exc: BaseException) -> int:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF


def _is_corrupt(exc: BaseException) -> bool:
    return _code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB)


def _file_bytes(db: Path) -> int:
    total = 0
    for name in (db, Path(f"{db}-wal")):
        try:
            total += name.stat().st_size
        except OSError:
            pass
    return total


class _Corrupt(Exception):
    """Internal: the database must be salvaged; the message says what SQLite reported."""


def _open_db(db: Path) -> sqlite3.Connection:
    """Open (creating if new) a channel database read-write; raise _Corrupt or StateError."""
    try:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=10.0)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open channel database {db}: {exc}") from exc
    try:
        _check_format(conn, db)
        # Both only take effect on a new, empty file; they must precede WAL mode and the first table.
        conn.execute(f"PRAGMA page_size = {new_page_size(db.parent)}")
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StateError(f"channel database {db}: the filesystem does not support SQLite's WAL mode")
        conn.execute("PRAGMA synchronous = FULL")
        # Some builds (Debian's among them) make secure_delete ON the default: an ack would then
        # zero every freed overflow page and write it through the WAL and the checkpoint, only
        # for the next put to write it again (~1.5x the WAL bytes of the payload, per M small
        # events). FAST still clears deleted cells, wherever that costs no extra page write.
        conn.execute("PRAGMA secure_delete = FAST")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        conn.execute("PRAGMA temp_store = MEMORY")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "chunks" not in tables:
            if "events" in tables:
                _migrate_v1(conn, db)
            else:
                conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        elif conn.execute("PRAGMA user_version").fetchone()[0] == 2:
            _migrate_v2(conn, db)
        return conn
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            if _is_corrupt(exc):
                raise _Corrupt(str(exc)) from exc
            raise StateError(f"cannot open channel database {db}: {exc}") from exc
        raise


def new_page_size(directory: Path) -> int:
    """The page size for a channel database created in ``directory`` (see the module docstring)."""
    import os

    try:
        st = os.statvfs(directory)
    except OSError:
        return PAGE_SIZE
    return PAGE_SIZE if st.f_blocks * st.f_frsize >= SMALL_FS_BYTES else 4096


def _regroup(events: Iterable[tuple[int, float, bytes]]) -> Iterator[tuple]:
    """Chunk rows from single events (seq, put_at, body) in seq order: runs of consecutive seqs,
    within the default chunk limits, so each chunk still covers last_seq - count + 1 .. last_seq."""
    run: list[bytes] = []
    first_put = 0.0
    last = nbytes = -1

    def row():
        body, lens = b"".join(run), encode_lens(map(len, run))
        return (last, len(run), len(body), first_put, chunk_crc(body, lens), lens, body)

    for seq, put_at, body in events:
        if run and (seq != last + 1 or len(run) >= CHUNK_EVENTS or nbytes + len(body) > CHUNK_BYTES):
            yield row()
            run = []
        if not run:
            first_put, nbytes = put_at, 0
        run.append(body)
        nbytes += len(body)
        last = seq
    if run:
        yield row()


def _converting(conn: sqlite3.Connection, convert):
    """Run ``convert()`` and set the current format version in ONE transaction; roll back on any
    failure, so a crash or an error part way leaves the old format as it was. Returns its result."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = convert()
        conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        conn.execute("COMMIT")
        return result
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _migrate_v1(conn: sqlite3.Connection, db: Path) -> None:
    """Convert a format-1 database (one row per event) to chunks, in place, in one transaction.
    Seqs, offsets and the seq high-water mark are kept; events that fail their CRC go to the
    quarantine. Until the COMMIT nothing changes, so a crash here just means converting again."""
    started = time.monotonic()
    bad: list[int] = []
    stats = {"events": 0, "chunks": 0}

    def convert() -> None:
        conn.execute(_CHUNKS_TABLE)
        conn.execute(_QUARANTINE_TABLE.format(name="quarantine_v2"))
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        high = row[0] if row else 0
        now = time.time()

        def good_events():
            for seq, put_at, crc, body in conn.execute("SELECT seq, put_at, crc, body FROM events ORDER BY seq"):
                if isinstance(body, bytes) and zlib.crc32(body) == crc:
                    stats["events"] += 1
                    yield seq, put_at, body
                else:
                    bad.append(seq)

        batch = []
        for chunk in _regroup(good_events()):
            batch.append(chunk)
            high = max(high, chunk[0])
            stats["chunks"] += 1
            if len(batch) >= 100:
                conn.executemany(_INSERT_CHUNK, batch)
                batch = []
        if batch:
            conn.executemany(_INSERT_CHUNK, batch)
        for seq in bad:
            conn.execute("INSERT INTO quarantine_v2 SELECT seq, 1, length(body), put_at, crc, NULL, body, ? "
                         "FROM events WHERE seq = ?", (now, seq))
        old_q = [(seq, put_at, crc, body, found) for seq, put_at, crc, body, found
                 in conn.execute("SELECT seq, put_at, crc, body, found_at FROM quarantine")]
        conn.executemany("INSERT OR REPLACE INTO quarantine_v2 VALUES (?1, 1, length(?4), ?2, ?3, NULL, ?4, ?5)", old_q)
        conn.execute("DROP TABLE events")
        conn.execute("DROP TABLE quarantine")
        conn.execute("ALTER TABLE quarantine_v2 RENAME TO quarantine")
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'chunks'", (high,))
        conn.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'chunks', ? WHERE changes() = 0", (high,))

    _converting(conn, convert)
    log.info("channel database %s converted from format 1 to %d: %d events in %d chunks, %d damaged events "
             "quarantined (%.1fs)", db, FORMAT_VERSION, stats["events"], stats["chunks"], len(bad),
             time.monotonic() - started)


def _migrate_v2(conn: sqlite3.Connection, db: Path) -> None:
    """Format 2 to 3: the rows stay as they are (an uncompressed body is valid format 3)."""
    events = _converting(conn, lambda: conn.execute("SELECT coalesce(sum(count), 0) FROM chunks").fetchone()[0])
    log.info("channel database %s converted from format 2 to %d (%d queued events kept as stored; "
             "new chunks are stored compressed)", db, FORMAT_VERSION, events)


def _check_format(conn: sqlite3.Connection, db: Path) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id not in (0, APPLICATION_ID):
        raise StateError(f"{db} is an SQLite database but not a flume-ship channel; use another --state-dir")
    if version > FORMAT_VERSION:
        raise StateError(
            f"channel database {db} has format version {version}, written by a newer flume-ship "
            f"(this one reads up to {FORMAT_VERSION}); upgrade flume-ship or use another --state-dir"
        )
    if app_id == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise StateError(f"{db} is an SQLite database but not a flume-ship channel; use another --state-dir")


def _ro_uri(db: Path) -> str:
    return "file:" + urllib.parse.quote(str(db)) + "?mode=ro"


SQLITE_MAGIC = b"SQLite format 3\x00"


def connect_ro(db: Path) -> sqlite3.Connection:
    """A read-only connection to the channel database ``db`` (no lock: safe beside an agent), or a
    StateError that says in one line what is wrong with the path and what to do: missing, not a
    regular file, unreadable, not SQLite at all. Checked before SQLite sees the file, whose own
    words ("disk I/O error", "file is not a database") do not say which."""
    import os
    import stat

    try:
        st = os.stat(db)
    except FileNotFoundError:
        raise StateError(f"no channel database at {db}; check --state-dir (has an agent ever run here?)") from None
    except NotADirectoryError:
        raise StateError(f"{db.parent} is not a directory; check --state-dir") from None
    except OSError as exc:
        raise StateError(f"cannot reach {db}: {exc.strerror or exc}; check --state-dir and its permissions") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "special file"
        raise StateError(f"{db} is a {kind}, not a channel database; check --state-dir")
    try:
        with open(db, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StateError(f"cannot read {db}: {exc.strerror or exc}; run as the agent's user, or check "
                          "--state-dir") from None
    if head and head != SQLITE_MAGIC:
        raise StateError(f"{db} is not an SQLite database (garbage or another kind of file); check --state-dir, "
                          "or start the agent once: it moves the file aside and salvages what it can")
    try:
        return _open_ro(db)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open {db} read-only: {exc}") from exc


def _open_ro(db: Path) -> sqlite3.Connection:
    """Open ``db`` read-only; on a file SQLite refuses, the connection's close() removes the
    ``-wal``/``-shm`` files the open created (the caller meets the same error and words it)."""
    absent = [Path(str(db) + side) for side in SIDE_FILES if not Path(str(db) + side).exists()]
    conn = sqlite3.connect(_ro_uri(db), uri=True, isolation_level=None, timeout=10.0, factory=_ReadOnly)
    try:
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        if _is_corrupt(exc):
            conn.leftovers = absent
    return conn


class _ReadOnly(sqlite3.Connection):
    """A read-only connection that leaves nothing behind on a file SQLite refuses.

    SQLite creates the ``-wal`` and ``-shm`` files when it opens a file whose (garbage) header
    claims WAL mode, even read-only. On a healthy channel they belong to the agent and stay; on a
    file that is not a database no agent can use them, so ``close`` removes the ones this
    connection created and the state directory is left as it was found."""

    leftovers: list[Path] = []

    def close(self) -> None:
        super().close()
        for path in self.leftovers:
            path.unlink(missing_ok=True)


def _precheck(db: Path) -> str | None:
    """Format check plus ``PRAGMA quick_check``, read-only; the problem found, or None."""
    try:
        conn = _open_ro(db)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open channel database {db}: {exc}") from exc
    try:
        _check_format(conn, db)
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(20)")]
        return None if rows == ["ok"] else "; ".join(rows)
    except sqlite3.DatabaseError as exc:
        if _is_corrupt(exc):
            return str(exc)
        raise StateError(f"cannot open channel database {db}: {exc}") from exc
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Peek:
    """What a stopped agent left in its channel: the queue's size and age, and the offset records."""

    events: int
    bytes: int
    oldest_put_at: float | None  # wall-clock time of the oldest queued put, None when empty
    offsets: dict[str, bytes]


def peek(db: Path) -> Peek:
    """Read counts, the oldest put time and the offset records in one read-only transaction.

    SQLite WAL readers never block the writer, so this is safe while an agent runs. Both formats
    are read: format 2 keeps chunks of events, format 1 one row per event.
    """
    conn = connect_ro(db)
    try:
        conn.execute("BEGIN")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "chunks" in tables:
            sql = "SELECT coalesce(sum(count), 0), coalesce(sum(nbytes), 0), min(put_at) FROM chunks"
        else:
            sql = "SELECT count(*), coalesce(sum(length(body)), 0), min(put_at) FROM events"
        events, nbytes, oldest = conn.execute(sql).fetchone()
        offsets = {key: bytes(value) for key, value in conn.execute("SELECT key, value FROM offsets")}
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise StateError(f"cannot read {db}: {exc} (try flume-ship channel verify)") from exc
    finally:
        conn.close()
    return Peek(events=events, bytes=nbytes, oldest_put_at=oldest, offsets=offsets)
