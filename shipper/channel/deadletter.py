"""Dead letters: batches that collectors rejected ``max_rejects`` times, set aside in the channel.

A sink that hits a group's ``max_rejects`` for one batch (collectors *answered*, and not OK: FAILED,
UNKNOWN or an error, never a connection failure, which is retried for ever) moves the batch here
instead of acking it, in ONE transaction with the removal from the queue, so the batch is always
in exactly one of the two places. Delivery goes on with the next batch. With a ``secondary`` group
configured, the batch is instead handed to that group's queue (:mod:`shipper.channel.groups`).

Table (in the channel database, created when first needed; a versioned addition: an older
flume-ship ignores it)::

    dead_letters(id INTEGER PRIMARY KEY AUTOINCREMENT, grp TEXT, count, nbytes, put_at, dead_at,
                 reason TEXT, crc, lens, body)

``lens``/``body``/``crc`` are laid out as a chunk's (:mod:`shipper.channel.store`): the batch's
events back to back. ``grp`` is the group that gave up (NULL without routes).

Exactly the rejected batch: a lease bigger than ``batch_size`` is sent as several calls, and the
collectors may accept some and reject one. Only the rejected calls' events are set aside, each as
its own row: the sink passes their event ranges in the lease (``ranges``), and the accepted ones
leave with the ack in the same transaction, so a re-queue never sends an accepted event twice.
A secondary group gets them as new chunks at the end of its queue (``secondary_chunks``).

Nothing leaves this table except by a command: ``flume-ship channel dead-letters`` lists (read
only, safe while an agent runs), ``show`` prints events, ``export`` writes them to a file (lines or
jsonl), ``requeue`` puts them back at the end of their group's queue (or another group's) and
``purge`` deletes them, saying how many events they moved or deleted.

While an agent runs (another process holds the state directory's lock) both still work, through
:mod:`shipper.channel.deadrequests`.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from shipper.channel.store import DB_NAME, chunk_crc, connect_ro, decode_lens, encode_lens
from shipper.errors import ConfigError, StateError

DEAD_TABLE = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    grp     TEXT,
    count   INTEGER NOT NULL,
    nbytes  INTEGER NOT NULL,
    put_at  REAL    NOT NULL,
    dead_at REAL    NOT NULL,
    reason  TEXT    NOT NULL,
    crc     INTEGER NOT NULL,
    lens    BLOB    NOT NULL,
    body    BLOB    NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class DeadBatch:
    id: int
    group: str | None
    count: int
    nbytes: int
    put_at: float
    dead_at: float
    reason: str


def lease_slices(lease, ranges: Sequence[tuple[int, int]] | None) -> list[tuple[int, bytes, bytes]]:
    """``(count, lens, body)`` for each event range ``[lo, hi)`` of the lease (None: all of it)."""
    sizes = [n for c in lease.chunks for n in decode_lens(c.lens)]
    if ranges is None:
        return [(lease.count, encode_lens(sizes), lease.payload)]
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + n)
    payload = lease.payload
    out = []
    for lo, hi in ranges:
        if not 0 <= lo < hi <= len(sizes):
            raise ValueError(f"event range {lo}..{hi} is not inside the lease ({len(sizes)} events)")
        out.append((hi - lo, encode_lens(sizes[lo:hi]), payload[starts[lo]:starts[hi]]))
    return out


def _put_at(conn: sqlite3.Connection, lease) -> float:
    row = conn.execute("SELECT min(put_at) FROM chunks WHERE last_seq BETWEEN ? AND ?",
                       (lease.first_seq, lease.last_seq)).fetchone()
    return row[0] or time.time()


def insert_dead(conn: sqlite3.Connection, lease, group: str | None, reason: str,
                ranges: Sequence[tuple[int, int]] | None = None) -> int:
    """Inside the caller's transaction: the lease's events (or only its event ``ranges``), one
    dead-letter row per range. Returns the number of events set aside."""
    conn.execute(DEAD_TABLE)
    put_at, now, n = _put_at(conn, lease), time.time(), 0
    for count, lens, body in lease_slices(lease, ranges):
        conn.execute("INSERT INTO dead_letters (grp, count, nbytes, put_at, dead_at, reason, crc, lens, body) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (group, count, len(body), put_at, now, reason, chunk_crc(body, lens), lens, body))
        n += count
    return n


def secondary_chunks(conn: sqlite3.Connection, lease, ranges: Sequence[tuple[int, int]], next_seq: int,
                     secondary: str) -> int:
    """Inside the caller's transaction: the lease's event ``ranges`` as new chunks from seq
    ``next_seq`` on, owed to group ``secondary``. Returns the next free seq."""
    from shipper.channel.groups import ensure_table
    from shipper.channel.store import _INSERT_CHUNK

    put_at, last = _put_at(conn, lease), next_seq - 1
    ensure_table(conn)
    for count, lens, body in lease_slices(lease, ranges):
        last += count
        conn.execute(_INSERT_CHUNK, (last, count, len(body), put_at, chunk_crc(body, lens), lens, body))
        conn.execute("INSERT INTO group_pending (grp, last_seq) VALUES (?, ?)", (secondary, last))
    return last + 1


@dataclass(frozen=True, slots=True)
class DeadSummary:
    """The dead letters of one group (None: set aside without routes)."""

    group: str | None
    batches: int
    events: int
    bytes: int
    oldest: float | None  # dead_at of the oldest (wall clock)


def summary(channel) -> list[DeadSummary]:
    """Per group, what the dead letters hold, read through an open channel (status, /metrics)."""
    ch = channel
    with ch._cond:
        if ch._closed or ch._conn is None:
            return []
        try:
            if not _has_table(ch._conn):
                return []
            rows = ch._conn.execute("SELECT grp, count(*), sum(count), sum(nbytes), min(dead_at) FROM dead_letters "
                                    "GROUP BY grp ORDER BY grp").fetchall()
        except sqlite3.Error:
            return []
    return [DeadSummary(*row) for row in rows]


def set_aside_since(channel, since: float) -> tuple[int, int]:
    """(batches, events) dead-lettered at or after wall-clock ``since``, through an open channel
    (``tail --once`` says so in its exit code)."""
    ch = channel
    with ch._cond:
        if ch._closed or ch._conn is None or not _has_table(ch._conn):
            return 0, 0
        row = ch._conn.execute("SELECT count(*), coalesce(sum(count), 0) FROM dead_letters WHERE dead_at >= ?",
                               (since,)).fetchone()
    return int(row[0]), int(row[1])


# --------------------------------------------------------------------------- reading (no lock)


def _connect_ro(state_dir: Path) -> sqlite3.Connection:
    return connect_ro(Path(state_dir) / DB_NAME)


def _has_table(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'dead_letters'").fetchone() is not None


def list_dead(state_dir: Path) -> list[DeadBatch]:
    conn = _connect_ro(state_dir)
    try:
        if not _has_table(conn):
            return []
        return [DeadBatch(*row) for row in conn.execute(
            "SELECT id, grp, count, nbytes, put_at, dead_at, reason FROM dead_letters ORDER BY id")]
    except sqlite3.Error as exc:
        raise StateError(f"cannot read the dead letters in {state_dir}: {exc}; run flume-ship channel verify") from exc
    finally:
        conn.close()


def read_events(state_dir: Path, ids: Sequence[int] | None) -> Iterable[tuple[DeadBatch, list[bytes]]]:
    """(batch, its encoded events) for ``ids`` (None: all), in id order; an unknown id is an error."""
    conn = _connect_ro(state_dir)
    try:
        if not _has_table(conn):
            rows = []
        else:
            rows = conn.execute("SELECT id, grp, count, nbytes, put_at, dead_at, reason, crc, lens, body "
                                "FROM dead_letters ORDER BY id").fetchall()
    except sqlite3.Error as exc:
        raise StateError(f"cannot read the dead letters in {state_dir}: {exc}; run flume-ship channel verify") from exc
    finally:
        conn.close()
    _check_ids(ids, [r[0] for r in rows])
    for *meta, crc, lens, body in rows:
        if ids is not None and meta[0] not in ids:
            continue
        if chunk_crc(body, lens) != crc:
            raise StateError(f"dead letter {meta[0]} fails its checksum; run flume-ship channel verify")
        events, pos = [], 0
        for n in decode_lens(lens):
            events.append(body[pos:pos + n])
            pos += n
        yield DeadBatch(*meta), events


def _check_ids(ids, known) -> None:
    missing = sorted(set(ids or ()) - set(known))
    if missing:
        raise ConfigError(f"no dead letter with id {', '.join(map(str, missing))} (see flume-ship channel "
                          "dead-letters list)")


def export(batches, out, fmt: str, read_event) -> int:
    """Write events to ``out`` (binary): ``lines`` (bodies, one a line) or ``jsonl`` (headers and
    body; a body that is not UTF-8 as ``body_base64``). ``read_event`` is the Flume event codec's
    (the channel does not decode events). Returns the number of events written."""
    n = 0
    for batch, events in batches:
        for data in events:
            (headers, body), _ = read_event(data)
            if fmt == "lines":
                out.write(body + b"\n")
            else:
                rec = {"dead_letter": batch.id, "group": batch.group, "headers": headers}
                try:
                    rec["body"] = body.decode("utf-8")
                except UnicodeDecodeError:
                    rec["body_base64"] = base64.b64encode(body).decode("ascii")
                out.write(json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n")
            n += 1
    return n


# --------------------------------------------------------------------------- writing (locked)


def requeue(channel, ids: Sequence[int] | None, group: str | None = None,
            default: Sequence[str] = ()) -> tuple[int, int]:
    """Put dead batches back at the end of the queue (their own group, or ``group``; a batch set
    aside without routes goes to the ``default`` groups when the channel has groups) and delete
    them here, in one transaction. Returns (batches, events). ``channel`` is an open Channel."""
    ch = channel
    with ch._cond:
        rows = _chosen(ch, "id, grp, count, nbytes, crc, lens, body", ids)
        return _requeue_rows(ch, [(r, group) for r in rows], default)


def _requeue_rows(ch, chosen: list, default: Sequence[str], extra=None) -> tuple[int, int]:
    """(row, target group or None) pairs -> new chunks, owed rows, dead letters deleted; ``extra``
    runs in the same transaction (lock held)."""
    now, last = time.time(), ch._next_seq - 1
    chunks, owed = [], []
    for (id_, grp, count, nbytes, crc, lens, body), group in chosen:
        last += count
        chunks.append((last, count, nbytes, now, crc, lens, body))
        targets = [group or grp] if (group or grp) is not None else list(default)
        owed += [(t, last) for t in targets]

    def txn(conn):
        from shipper.channel.groups import ensure_table
        from shipper.channel.store import _INSERT_CHUNK

        conn.executemany(_INSERT_CHUNK, chunks)
        if owed:
            ensure_table(conn)
            conn.executemany("INSERT INTO group_pending (grp, last_seq) VALUES (?, ?)", owed)
        conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(r[0],) for r, _ in chosen])
        if extra is not None:
            extra(conn)

    ch._write("requeue", txn)
    ch._next_seq = last + 1
    ch._recount()
    ch._cond.notify_all()
    return len(chosen), sum(r[2] for r, _ in chosen)


def _chosen(ch, columns: str, ids: Sequence[int] | None) -> list[tuple]:
    """The dead-letter rows ``ids`` (None: all) of an open channel, in id order (lock held)."""
    ch._write("open dead letters", lambda conn: conn.execute(DEAD_TABLE))
    rows = ch._conn.execute(f"SELECT {columns} FROM dead_letters ORDER BY id").fetchall()
    _check_ids(ids, [r[0] for r in rows])
    return [r for r in rows if ids is None or r[0] in ids]


def purge(channel, ids: Sequence[int] | None) -> tuple[int, int]:
    """Delete dead batches for good. Returns (batches, events)."""
    ch = channel
    with ch._cond:
        rows = _chosen(ch, "id, count", ids)
        ch._write("purge", lambda c: c.executemany("DELETE FROM dead_letters WHERE id = ?", [(r[0],) for r in rows]))
        return len(rows), sum(r[1] for r in rows)
