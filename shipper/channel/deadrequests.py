"""Dead letters beside a running agent: ``purge`` through SQLite's lock, ``requeue`` as a request.

While an agent runs, another process holds the state directory's lock, and the commands of
:mod:`shipper.channel.deadletter` that write cannot open the channel. Both still work:

* ``purge`` deletes the rows through SQLite directly: its own write lock (BEGIN IMMEDIATE, waiting
  up to 10 s for the agent's transaction) serializes it with the agent's transactions, and the
  agent keeps nothing about dead letters in memory (its figures are counted from the table at
  each status tick).
* ``requeue`` cannot write chunks itself: the agent keeps the next sequence number and the queue
  counters in memory (invariants I1, I4, G4). It writes a request instead, one row per dead letter::

      dead_requests(id INTEGER PRIMARY KEY, grp TEXT, asked_at REAL, error TEXT)

  and the agent carries it out in its own process at its next status tick (:func:`serve_requests`),
  in ONE transaction that adds the chunks, deletes the dead letters and deletes the requests; a
  request it cannot honour (no such group) gets ``error`` set instead. The command waits for the
  rows to go; when the wait runs out it withdraws what is left in one transaction, so afterwards
  every batch is either re-queued or still a dead letter, and the command says which.

The table is a versioned addition like ``dead_letters``: created when first needed, ignored by an
older flume-ship (whose agent then never serves a request: the command withdraws it and says so).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Sequence

from shipper.channel.deadletter import DEAD_TABLE, _check_ids, _connect_ro, _requeue_rows
from shipper.channel.store import DB_NAME
from shipper.errors import StateError

REQUEST_TABLE = """
CREATE TABLE IF NOT EXISTS dead_requests (
    id       INTEGER PRIMARY KEY,
    grp      TEXT,
    asked_at REAL NOT NULL,
    error    TEXT
)
"""


def _connect_rw(state_dir: Path) -> sqlite3.Connection:
    """A connection beside the running agent's: no state-directory lock, SQLite's own write lock
    (BEGIN IMMEDIATE, waiting up to 10 s for the agent's transaction) serializes the two."""
    db = Path(state_dir) / DB_NAME
    if not db.exists():
        raise StateError(f"no channel database at {db}; check --state-dir (has an agent ever run here?)")
    try:
        return sqlite3.connect(db, isolation_level=None, timeout=10.0)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open {db}: {exc}") from exc


def _in_txn(state_dir: Path, what: str, fn):
    conn = _connect_rw(state_dir)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(conn)
            conn.execute("COMMIT")
            return out
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StateError(f"cannot {what} the dead letters in {state_dir}: {exc}") from exc
    finally:
        conn.close()


def _rows_of(conn: sqlite3.Connection, ids: Sequence[int] | None) -> list[tuple[int, int]]:
    conn.execute(DEAD_TABLE)
    rows = conn.execute("SELECT id, count FROM dead_letters ORDER BY id").fetchall()
    _check_ids(ids, [r[0] for r in rows])
    return [r for r in rows if ids is None or r[0] in ids]


def purge_beside(state_dir: Path, ids: Sequence[int] | None) -> tuple[int, int]:
    """``purge`` while an agent runs (see the module docstring). Returns (batches, events)."""
    def txn(conn):
        rows = _rows_of(conn, ids)
        conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(r[0],) for r in rows])
        return len(rows), sum(r[1] for r in rows)

    return _in_txn(state_dir, "purge", txn)


def ask_requeue(state_dir: Path, ids: Sequence[int] | None, group: str | None) -> dict[int, int]:
    """Write the requeue request for a running agent; returns the chosen {id: events}."""
    def txn(conn):
        rows = _rows_of(conn, ids)
        conn.execute(REQUEST_TABLE)
        now = time.time()
        conn.executemany("INSERT OR REPLACE INTO dead_requests (id, grp, asked_at, error) VALUES (?, ?, ?, NULL)",
                         [(r[0], group, now) for r in rows])
        return dict(rows)

    return _in_txn(state_dir, "re-queue", txn)


def requests_left(state_dir: Path, ids: Sequence[int]) -> tuple[list[int], str | None]:
    """The requested ids the agent has not carried out yet, and an error it gave, if any."""
    conn = _connect_ro(state_dir)
    try:
        rows = conn.execute(f"SELECT id, error FROM dead_requests WHERE id IN ({','.join('?' * len(ids))})",
                            list(ids)).fetchall()
    except sqlite3.Error as exc:
        raise StateError(f"cannot read the re-queue request in {state_dir}: {exc}") from exc
    finally:
        conn.close()
    return [r[0] for r in rows], next((r[1] for r in rows if r[1]), None)


def withdraw(state_dir: Path, ids: Sequence[int]) -> list[int]:
    """Take back what is left of a request, in one transaction; returns the ids still dead
    letters afterwards (not re-queued)."""
    def txn(conn):
        marks = ",".join("?" * len(ids))
        conn.execute(f"DELETE FROM dead_requests WHERE id IN ({marks})", list(ids))
        return [r[0] for r in conn.execute(f"SELECT id FROM dead_letters WHERE id IN ({marks})", list(ids))]

    return _in_txn(state_dir, "withdraw the re-queue of", txn)


def serve_requests(channel, groups: Sequence[str] | None, default: Sequence[str] = ()) -> tuple[int, int]:
    """In the agent: carry out the requeue requests waiting in the channel (see the module
    docstring). ``groups``: the group names the agent runs (None: no routes). Returns (batches,
    events) re-queued; a request naming a group the agent does not run gets its error set."""
    ch = channel
    with ch._cond:
        if ch._closed or ch._conn is None:
            return 0, 0
        try:
            if ch._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'dead_requests'").fetchone() is None:
                return 0, 0
            asked = ch._conn.execute(
                "SELECT r.id, r.grp, d.id IS NULL FROM dead_requests r LEFT JOIN dead_letters d ON d.id = r.id "
                "WHERE r.error IS NULL ORDER BY r.id").fetchall()
        except sqlite3.Error:
            return 0, 0
        if not asked:
            return 0, 0
        gone = [id_ for id_, _g, missing in asked if missing]  # purged meanwhile: nothing to do
        bad = {id_: g for id_, g, missing in asked if not missing and g is not None
               and (groups is None or g not in groups)}
        good = {id_: g for id_, g, missing in asked if not missing and id_ not in bad}
        if bad:
            known = ", ".join(groups) if groups else "none: the agent has no [groups.NAME]"
            ch._write("refuse re-queue", lambda conn: conn.executemany(
                "UPDATE dead_requests SET error = ? WHERE id = ?",
                [(f"the running agent has no group named {g!r} (groups: {known})", i) for i, g in bad.items()]))
        if gone:
            ch._write("re-queue", lambda conn: conn.executemany("DELETE FROM dead_requests WHERE id = ?",
                                                                  [(i,) for i in gone]))
        if not good:
            return 0, 0
        rows = ch._conn.execute(f"SELECT id, grp, count, nbytes, crc, lens, body FROM dead_letters WHERE id IN "
                                f"({','.join('?' * len(good))}) ORDER BY id", list(good)).fetchall()
        # A batch of a group this agent does not run (any more) goes to the default groups.
        rows = [r if groups is None or r[1] in groups else (r[0], None, *r[2:]) for r in rows]
        return _requeue_rows(ch, [(r, good[r[0]]) for r in rows], default if groups else (), extra=lambda conn:
                             conn.executemany("DELETE FROM dead_requests WHERE id = ?", [(i,) for i in good]))
