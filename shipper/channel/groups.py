"""Per-group queues in the one channel: each collector group takes and acks on its own.

When the agent has several collector groups (routes), an event may be owed to one group or to
several (a replicating route). The events are stored once, in ``chunks``; what each group still
owes is a row per (group, chunk) in a table of its own::

    group_pending(grp TEXT, last_seq INTEGER, PRIMARY KEY (grp, last_seq)) WITHOUT ROWID
    index group_pending_seq ON group_pending(last_seq)

A put writes its chunks and one ``group_pending`` row per chunk and target group in the same
transaction as the offsets, so after a crash every stored chunk is still owed to exactly the
groups it was put for. Chunks are cut so that all events of one chunk go to the same groups.

Invariants (on top of :mod:`shipper.channel.core`'s)
  G1. A chunk exists while some group still owes it: an ack of group G deletes G's rows of the
      lease, then, in the same transaction, the lease's chunks no group owes any more.
  G2. A group's lease is a run of the chunks G owes, in seq order, holding no chunk of another
      lease of G (leases of different groups overlap freely: they are separate queues).
  G3. A group takes from its own lowest unleased chunk, so a dead group holds up nobody else,
      and a nacked lease is that group's next one.
  G4. The per-group counters (events and bytes owed, leased) change only after a COMMIT, and are
      recounted whenever the core recounts.

Chunks owed to no group (written by an agent without routes, or before this table existed) are
"adopted" when the queues are opened: owed to the groups the agent names as the default. Rows of a
group no longer configured are kept (nothing is dropped by a config change) and reported by
:meth:`GroupQueues.orphans`; ``adopt`` hands them to a group only when the operator says so.

This table is a versioned addition: opening creates it when absent, and an agent without routes
ignores it (it delivers every chunk once, as before, and a later agent with routes drops the rows
whose chunks are gone).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from dataclasses import dataclass
from typing import Sequence

from shipper.channel.core import Lease

GROUP_TABLE = """
CREATE TABLE IF NOT EXISTS group_pending (
    grp      TEXT    NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (grp, last_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS group_pending_seq ON group_pending (last_seq);
"""


@dataclass(frozen=True, slots=True)
class GroupStats:
    events: int  # owed to this group, leased ones included
    bytes: int
    leased_events: int
    oldest_event_age: float | None


class GroupQueues:
    """The per-group bookkeeping of one :class:`~shipper.channel.core.Channel` (see the module
    docstring). Every method runs under the channel's lock."""

    def __init__(self, channel, names: Sequence[str], adopt: Sequence[str] = ()):
        if not names:
            raise ValueError("at least one group")
        self.channel = channel
        self.names = tuple(names)
        self._leases: dict[str, dict[int, Lease]] = {n: {} for n in self.names}
        self._owed = {n: [0, 0] for n in self.names}  # events, bytes
        self._leased = {n: 0 for n in self.names}
        with channel._cond:
            if channel._conn is None:
                channel._reopen("open groups")
            channel._write("open groups", _open_txn, tuple(adopt) or self.names[:1])
            channel.groups = self
            self.recount()

    # --- called by the core ---------------------------------------------------------------

    def recount(self) -> None:
        conn = self.channel._conn
        for n in self.names:
            self._owed[n] = [0, 0]
        for grp, events, nbytes in conn.execute(
                "SELECT p.grp, coalesce(sum(c.count), 0), coalesce(sum(c.nbytes), 0) FROM group_pending p "
                "JOIN chunks c ON c.last_seq = p.last_seq GROUP BY p.grp"):
            if grp in self._owed:
                self._owed[grp] = [events, nbytes]

    def check(self, groups: Sequence[tuple[str, ...]]) -> None:
        for targets in set(groups):
            unknown = [g for g in targets if g not in self._owed]
            if not targets or unknown:
                raise ValueError(f"events routed to unknown groups {unknown or '(none)'}; known: {self.names}")

    def put_rows(self, conn: sqlite3.Connection, rows: list, groups: list[tuple[str, ...]]) -> None:
        conn.executemany("INSERT INTO group_pending (grp, last_seq) VALUES (?, ?)",
                         [(g, row[0]) for row, targets in zip(rows, groups) for g in targets])

    def added(self, rows: list, groups: list[tuple[str, ...]]) -> None:
        for row, targets in zip(rows, groups):
            for g in targets:
                owed = self._owed[g]
                owed[0] += row[1]
                owed[1] += row[2]

    # --- one group's queue ----------------------------------------------------------------

    def view(self, name: str, secondary: str | None = None) -> "GroupView":
        if name not in self._owed:
            raise KeyError(name)
        return GroupView(self, name, secondary)

    def take(self, grp: str, max_events: int, max_bytes: int) -> Lease | None:
        ch = self.channel
        if max_events <= 0:
            return None
        with ch._cond:
            if ch._closed or self._owed[grp][0] <= self._leased[grp]:
                return None
            if ch._conn is None:
                ch._reopen("take")
            found = ch._pick(sorted((l.first_seq, l.last_seq) for l in self._leases[grp].values()),
                             max_events, max_bytes, grp)
            if found is None:
                return None
            lease = ch._lease(*found)
            self._leases[grp][lease.id] = lease
            self._leased[grp] += lease.count
            return lease

    def quarantine(self, key: int) -> None:
        """The core found chunk ``key`` damaged while group take read it: set it aside for all."""
        owners = [g for (g,) in self.channel._conn.execute(
            "SELECT grp FROM group_pending WHERE last_seq = ?", (key,))]
        row = self.channel._conn.execute("SELECT count, nbytes FROM chunks WHERE last_seq = ?", (key,)).fetchone()
        self.channel._quarantine(key)
        self.channel._write("quarantine", lambda conn: conn.execute(
            "DELETE FROM group_pending WHERE last_seq = ?", (key,)))
        count, size = row if row and isinstance(row[0], int) and isinstance(row[1], int) else (0, 0)
        for g in owners:
            if g in self._owed:
                self._owed[g][0] -= count
                self._owed[g][1] -= size

    def ack(self, grp: str, lease: Lease) -> None:
        """Group ``grp`` has delivered the lease: forget its rows; delete chunks nobody owes (G1)."""
        ch = self.channel
        with ch._cond:
            if ch._closed:
                return
            if self._leases[grp].get(lease.id) is not lease:
                raise ValueError(f"lease {lease.id} of group {grp} is not open (acked or nacked already?)")
            freed = [0, 0]
            ch._write("ack", _group_ack_txn, grp, lease.first_seq, lease.last_seq, freed)
            self._forget(grp, lease)
            self._owed[grp][0] -= lease.count
            self._owed[grp][1] -= lease.nbytes
            ch._events -= freed[0]
            ch._bytes -= freed[1]
            ch._cond.notify_all()
            if freed[0]:
                if ch._low_space:
                    ch._shrink()
                else:
                    ch._reclaim()

    def dead_letter(self, grp: str, lease: Lease, reason: str, secondary: str | None = None,
                    ranges: Sequence[tuple[int, int]] | None = None) -> str:
        """Group ``grp`` gave up on the lease (or only on its event ``ranges``: the calls the
        collectors rejected; the rest were delivered): hand it to ``secondary``'s queue, or move
        it to the dead letters (:mod:`shipper.channel.deadletter`); the same transaction as an ack's."""
        from shipper.channel.deadletter import insert_dead, secondary_chunks

        ch = self.channel
        if secondary is not None and secondary not in self._owed:
            secondary = None  # not configured now: never drop, keep it as a dead letter
        with ch._cond:
            if ch._closed:
                return "nowhere yet (the channel is closed: the batch is taken again after restart)"
            if self._leases[grp].get(lease.id) is not lease:
                raise ValueError(f"lease {lease.id} of group {grp} is not open (acked or nacked already?)")
            freed = [0, 0]

            next_seq = [ch._next_seq]

            def txn(conn):
                if secondary is None:
                    insert_dead(conn, lease, grp, reason, ranges)
                elif ranges is not None:  # parts of chunks: new chunks, owed to the secondary only
                    next_seq[0] = secondary_chunks(conn, lease, ranges, ch._next_seq, secondary)
                else:
                    conn.execute("INSERT OR IGNORE INTO group_pending (grp, last_seq) SELECT ?, last_seq FROM "
                                 "group_pending WHERE grp = ? AND last_seq BETWEEN ? AND ?",
                                 (secondary, grp, lease.first_seq, lease.last_seq))
                _group_ack_txn(conn, grp, lease.first_seq, lease.last_seq, freed)

            ch._write("dead-letter", txn)
            self._forget(grp, lease)
            if secondary is not None and ranges is not None:
                ch._next_seq = next_seq[0]
                ch._recount()  # new chunks: the channel's counters and every group's
                freed = [0, 0]
            elif secondary is not None:
                self.recount()
            else:
                self._owed[grp][0] -= lease.count
                self._owed[grp][1] -= lease.nbytes
            ch._events -= freed[0]
            ch._bytes -= freed[1]
            ch._cond.notify_all()
        return f"group {secondary}" if secondary else "the dead letters"

    def nack(self, grp: str, lease: Lease) -> None:
        ch = self.channel
        with ch._cond:
            if ch._closed or self._leases[grp].get(lease.id) is not lease:
                return
            self._forget(grp, lease)
            ch._cond.notify_all()

    def _forget(self, grp: str, lease: Lease) -> None:
        del self._leases[grp][lease.id]
        self._leased[grp] -= lease.count

    def wait_for_events(self, grp: str, timeout: float) -> bool:
        ch = self.channel
        with ch._cond:
            ready = lambda: ch._closed or self._owed[grp][0] > self._leased[grp]  # noqa: E731
            ch._cond.wait_for(ready, timeout)
            return not ch._closed and self._owed[grp][0] > self._leased[grp]

    def stats(self) -> dict[str, GroupStats]:
        ch = self.channel
        out = {}
        with ch._cond:
            for g in self.names:
                age = None
                if self._owed[g][0] and not ch._closed and ch._conn is not None:
                    try:
                        row = ch._conn.execute(
                            "SELECT c.put_at FROM group_pending p JOIN chunks c ON c.last_seq = p.last_seq "
                            "WHERE p.grp = ? ORDER BY p.last_seq LIMIT 1", (g,)).fetchone()
                        age = max(0.0, time.time() - row[0]) if row else None
                    except sqlite3.Error:
                        pass
                out[g] = GroupStats(events=self._owed[g][0], bytes=self._owed[g][1],
                                    leased_events=self._leased[g], oldest_event_age=age)
        return out

    def orphans(self) -> dict[str, int]:
        """Events owed to groups this agent does not run (kept, never dropped): group -> events."""
        ch = self.channel
        with ch._cond:
            rows = ch._conn.execute(
                "SELECT p.grp, coalesce(sum(c.count), 0) FROM group_pending p JOIN chunks c "
                "ON c.last_seq = p.last_seq GROUP BY p.grp").fetchall()
        return {g: n for g, n in rows if g not in self._owed}


class GroupView:
    """One group's queue with the channel's take/ack/nack/wait_for_events: what its sinks see."""

    def __init__(self, queues: GroupQueues, name: str, secondary: str | None = None):
        self.queues = queues
        self.name = name
        self.secondary = secondary  # where batches it gives up on go (None: the dead letters)

    def take(self, max_events: int, max_bytes: int) -> Lease | None:
        return self.queues.take(self.name, max_events, max_bytes)

    def ack(self, lease: Lease) -> None:
        self.queues.ack(self.name, lease)

    def nack(self, lease: Lease) -> None:
        self.queues.nack(self.name, lease)

    def dead_letter(self, lease: Lease, reason: str, ranges: Sequence[tuple[int, int]] | None = None) -> str:
        return self.queues.dead_letter(self.name, lease, reason, self.secondary, ranges)

    def wait_for_events(self, timeout: float) -> bool:
        return self.queues.wait_for_events(self.name, timeout)

    def stats(self):
        """The channel's stats, with the queue counts of this group (what ``--once`` waits on)."""
        mine = self.queues.stats()[self.name]
        return dataclasses.replace(self.queues.channel.stats(), events=mine.events, bytes=mine.bytes,
                                   leased_events=mine.leased_events, oldest_event_age=mine.oldest_event_age)

    def __getattr__(self, name):  # close(), offsets(), ...: the shared channel's
        return getattr(self.queues.channel, name)


def ensure_table(conn: sqlite3.Connection) -> None:
    for stmt in GROUP_TABLE.split(";"):  # not executescript: it would commit the transaction
        if stmt.strip():
            conn.execute(stmt)


def _open_txn(conn: sqlite3.Connection, adopt: tuple[str, ...]) -> None:
    ensure_table(conn)
    # Rows whose chunk is gone (an agent without routes delivered it): nothing is owed any more.
    conn.execute("DELETE FROM group_pending WHERE last_seq NOT IN (SELECT last_seq FROM chunks)")
    # Chunks owed to nobody (written without routes): owed to the default groups.
    unowned = [k for (k,) in conn.execute(
        "SELECT last_seq FROM chunks WHERE last_seq NOT IN (SELECT last_seq FROM group_pending)")]
    conn.executemany("INSERT INTO group_pending (grp, last_seq) VALUES (?, ?)",
                     [(g, k) for k in unowned for g in adopt])


def _group_ack_txn(conn: sqlite3.Connection, grp: str, first: int, last: int, freed: list) -> None:
    conn.execute("DELETE FROM group_pending WHERE grp = ? AND last_seq BETWEEN ? AND ?", (grp, first, last))
    gone = "last_seq BETWEEN ? AND ? AND NOT EXISTS (SELECT 1 FROM group_pending p WHERE p.last_seq = chunks.last_seq)"
    n, nbytes = conn.execute(f"SELECT coalesce(sum(count), 0), coalesce(sum(nbytes), 0) FROM chunks WHERE {gone}",
                             (first, last)).fetchone()
    conn.execute(f"DELETE FROM chunks WHERE {gone}", (first, last))
    freed[0], freed[1] = n, nbytes
