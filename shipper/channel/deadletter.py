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

Nothing leaves this table except by a command: ``flume-ship channel dead-letters`` lists (read
only, safe while an agent runs), ``show`` prints events, ``export`` writes them to a file (lines or
jsonl), ``requeue`` puts them back at the end of their group's queue (or another group's) and
``purge`` deletes them; requeue and purge write, so they take the state directory's lock (the
agent must be stopped) and say how many events they moved or deleted.
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
from shipper.errors import StateError

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


def insert_dead(conn: sqlite3.Connection, lease, group: str | None, reason: str) -> None:
    """Inside the caller's transaction: the lease's events as one dead-letter row."""
    conn.execute(DEAD_TABLE)
    lens = encode_lens(n for c in lease.chunks for n in decode_lens(c.lens))
    body = lease.payload
    put_at = conn.execute("SELECT min(put_at) FROM chunks WHERE last_seq BETWEEN ? AND ?",
                          (lease.first_seq, lease.last_seq)).fetchone()[0]
    conn.execute("INSERT INTO dead_letters (grp, count, nbytes, put_at, dead_at, reason, crc, lens, body) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (group, lease.count, len(body), put_at or time.time(), time.time(), reason,
                  chunk_crc(body, lens), lens, body))


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
        raise StateError(f"no dead letter with id {', '.join(map(str, missing))} (see flume-ship channel "
                         "dead-letters)")


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


def requeue(channel, ids: Sequence[int] | None, group: str | None = None) -> tuple[int, int]:
    """Put dead batches back at the end of the queue (their own group, or ``group``) and delete
    them here, in one transaction. Returns (batches, events). ``channel`` is an open Channel
    (holding the state directory's lock)."""
    ch = channel
    with ch._cond:
        rows = _chosen(ch, "id, grp, count, nbytes, crc, lens, body", ids)
        now, last = time.time(), ch._next_seq - 1
        chunks, owed = [], []
        for id_, grp, count, nbytes, crc, lens, body in rows:
            last += count
            chunks.append((last, count, nbytes, now, crc, lens, body))
            target = group or grp
            if target is not None:
                owed.append((target, last))

        def txn(conn):
            from shipper.channel.groups import ensure_table
            from shipper.channel.store import _INSERT_CHUNK

            conn.executemany(_INSERT_CHUNK, chunks)
            if owed:
                ensure_table(conn)
                conn.executemany("INSERT INTO group_pending (grp, last_seq) VALUES (?, ?)", owed)
            conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(r[0],) for r in rows])

        ch._write("requeue", txn)
        ch._next_seq = last + 1
        ch._recount()
        return len(rows), sum(r[2] for r in rows)


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
