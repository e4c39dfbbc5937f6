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

Lanes: ordered parallel queues within a group
  A group may run several sink workers (``sinks``); each gets a *lane*, a queue of its own in the
  same table, named ``GROUP#i/N`` (lane i of N; a group of one lane keeps its plain name). The
  source says which file family (a file and its rotated predecessors, by the name they are tailed
  as) each event comes from, and every event of a family goes to lane ``crc32(family) mod N``: one
  family is one lane, and one lane is one worker with one call in flight, so every file's lines
  reach the collector in order, while different families go out in parallel.

  L1. A chunk is owed to exactly one lane of each group it is routed to (chunks never mix lanes).
  L2. When the lane layout changes (another N, lanes turned on or off, chunks adopted from an
      agent that did not write lanes), a family's older chunks may sit in a lane other than the
      one its new chunks go to. Opening then moves ALL of the group's rows to its lane 0 and sets
      a *barrier* at the highest seq moved: the other lanes take nothing while lane 0 still owes a
      chunk at or below the barrier. The backlog so drains through one lane, in order, before the
      lanes run in parallel. The barrier is stored (``lane_barrier``), so a crash during the drain
      keeps it.
  L3. The agent without routes runs its lanes as the implicit group ``""`` (``#i/N``); such an
      agent delivers every stored chunk once, as before, so rows owed to named groups are dropped
      when it opens (and rows of ``""`` are dropped, their chunks adopted, when a later agent has
      routes and no implicit group).

This table is a versioned addition: opening creates it when absent, and an agent without routes
ignores it (it delivers every chunk once, as before, and a later agent with routes drops the rows
whose chunks are gone).
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Mapping, Sequence

from shipper.channel.core import Lease
from shipper.errors import ChannelIOError

GROUP_TABLE = """
CREATE TABLE IF NOT EXISTS group_pending (
    grp      TEXT    NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (grp, last_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS group_pending_seq ON group_pending (last_seq);
CREATE TABLE IF NOT EXISTS lane_barrier (
    grp TEXT    PRIMARY KEY,
    seq INTEGER NOT NULL
)
"""

IMPLICIT = ""  # the group of an agent without routes, when it runs lanes


def lane_names(group: str, lanes: int) -> tuple[str, ...]:
    """The queue names of ``group`` with ``lanes`` lanes (L1): its own name when there is one."""
    return (group,) if lanes <= 1 else tuple(f"{group}#{i}/{lanes}" for i in range(lanes))


def group_of(queue: str) -> str:
    """The group a queue name belongs to (``a#1/4`` -> ``a``; ``a`` -> ``a``)."""
    head, sep, tail = queue.rpartition("#")
    if sep and re.fullmatch(r"\d+/\d+", tail):
        return head
    return queue


def lane_of(family: str, lanes: int) -> int:
    """The lane of a file family: stable across restarts and processes (not Python's hash)."""
    return zlib.crc32(family.encode("utf-8", "surrogateescape")) % lanes if lanes > 1 else 0


@dataclass(frozen=True, slots=True)
class GroupStats:
    events: int  # owed to this group, leased ones included
    bytes: int
    leased_events: int
    oldest_event_age: float | None


class GroupQueues:
    """The per-group bookkeeping of one :class:`~shipper.channel.core.Channel` (see the module
    docstring). Every method runs under the channel's lock."""

    def __init__(self, channel, names: Sequence[str], adopt: Sequence[str] = (),
                 lanes: Mapping[str, int] | None = None):
        if not names:
            raise ValueError("at least one group")
        self.channel = channel
        self.names = tuple(names)  # the groups
        lanes = dict(lanes or {})
        self.lanes_of = {g: lane_names(g, lanes.get(g, 1)) for g in self.names}  # group -> its queues
        self.laned = any(len(q) > 1 for q in self.lanes_of.values())
        self.queues = tuple(q for g in self.names for q in self.lanes_of[g])
        self._leases: dict[str, dict[int, Lease]] = {n: {} for n in self.queues}
        self._owed = {n: [0, 0] for n in self.queues}  # events, bytes
        self._leased = {n: 0 for n in self.queues}
        self._route_cache: dict[tuple, tuple[str, ...]] = {}
        # One condition per queue over the channel's lock: a put or nack wakes only the lanes it
        # concerns, so an idle lane does not contend for the lock at every commit of the others.
        self._conds = {q: threading.Condition(channel._mutex) for q in self.queues}
        with channel._cond:
            if channel._conn is None:
                channel._reopen("open groups")
            found: dict[str, int] = {}
            channel._write("open groups", _open_txn, tuple(adopt) or self.names[:1], self.lanes_of, found)
            self._barrier = found  # group -> seq (L2)
            channel.groups = self
            self.recount()

    # --- called by the core ---------------------------------------------------------------

    def recount(self) -> None:
        conn = self.channel._conn
        for n in self.queues:
            self._owed[n] = [0, 0]
        for grp, events, nbytes in conn.execute(
                "SELECT p.grp, coalesce(sum(c.count), 0), coalesce(sum(c.nbytes), 0) FROM group_pending p "
                "JOIN chunks c ON c.last_seq = p.last_seq GROUP BY p.grp"):
            if grp in self._owed:
                self._owed[grp] = [events, nbytes]
        if hasattr(self, "_conds"):
            self.wake()

    def check(self, groups: Sequence[tuple[str, ...]]) -> None:
        for targets in set(groups):
            unknown = [g for g in targets if g not in self._owed]
            if not targets or unknown:
                raise ValueError(f"events routed to unknown groups {unknown or '(none)'}; known: {self.names}")

    def route(self, groups: Sequence[tuple[tuple[str, ...], int]],
              families: Sequence[tuple[str, int]] | None) -> list[tuple[tuple[str, ...], int]]:
        """Runs of ``(groups, count)`` as runs of ``(queue names, count)``: each event goes to the
        lane of its family in each of its groups (L1).

        ``families`` is runs of ``(family, count)`` covering the same events in order; without it
        every event goes to lane 0 (order kept, no parallelism). Adjacent equal runs are merged."""
        if not self.laned:
            return list(groups)
        fams = list(families) if families else [("", sum(n for _, n in groups))]
        if sum(n for _, n in fams) != sum(n for _, n in groups):
            raise ValueError("families and groups cover different numbers of events")
        cache = self._route_cache
        if len(cache) > 100_000:
            cache.clear()
        out: list[list] = []
        gi = fi = 0
        g_left = groups[0][1] if groups else 0
        f_left = fams[0][1] if fams else 0
        while gi < len(groups) and fi < len(fams):
            if not g_left:
                gi += 1
                g_left = groups[gi][1] if gi < len(groups) else 0
                continue
            if not f_left:
                fi += 1
                f_left = fams[fi][1] if fi < len(fams) else 0
                continue
            targets, family = groups[gi][0], fams[fi][0]
            key = (targets, family)
            queues = cache.get(key)
            if queues is None:
                queues = cache[key] = tuple(
                    self.lanes_of[g][lane_of(family, len(self.lanes_of[g]))] for g in targets)
            n = min(g_left, f_left)
            if out and out[-1][0] == queues:
                out[-1][1] += n
            else:
                out.append([queues, n])
            g_left -= n
            f_left -= n
        return [(q, n) for q, n in out]

    def put_rows(self, conn: sqlite3.Connection, rows: list, groups: list[tuple[str, ...]]) -> None:
        conn.executemany("INSERT INTO group_pending (grp, last_seq) VALUES (?, ?)",
                         [(g, row[0]) for row, targets in zip(rows, groups) for g in targets])

    def added(self, rows: list, groups: list[tuple[str, ...]]) -> None:
        for row, targets in zip(rows, groups):
            for g in targets:
                owed = self._owed[g]
                owed[0] += row[1]
                owed[1] += row[2]
        for g in set(groups):
            for q in g:
                self._conds[q].notify_all()

    def wake(self, queues=None) -> None:
        """Wake the waiters of ``queues`` (all by default): closed, recounted, a barrier lifted."""
        for q in self.queues if queues is None else queues:
            self._conds[q].notify_all()

    # --- one group's queue ----------------------------------------------------------------

    def view(self, name: str, secondary: str | None = None) -> "GroupView":
        """The queue ``name`` (a group of one lane, or one lane ``g#i/N``) as a channel."""
        if name not in self._owed:
            raise KeyError(name)
        return GroupView(self, name, secondary)

    def lane_views(self, group: str, secondary: str | None = None) -> list["GroupView"]:
        """One view per lane of ``group``: what its sink workers take from, one each."""
        return [self.view(q, secondary) for q in self.lanes_of[group]]

    def take(self, grp: str, max_events: int, max_bytes: int) -> Lease | None:
        ch = self.channel
        if max_events <= 0:
            return None
        with ch._cond:
            if ch._closed or self._owed[grp][0] <= self._leased[grp]:
                return None
            if ch._conn is None:
                ch._reopen("take")
            if self._barrier and self._held_back(grp):
                return None
            found = ch._pick(sorted((l.first_seq, l.last_seq) for l in self._leases[grp].values()),
                             max_events, max_bytes, grp, top=ch._visible)  # nothing a put has not synced
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
        self.ack_all(grp, [lease])

    def ack_all(self, grp: str, leases: Sequence[Lease]) -> None:
        """:meth:`ack` of several leases in one transaction (one commit); all or none of them."""
        ch = self.channel
        with ch._cond:
            if ch._closed:
                return
            for lease in leases:
                if self._leases[grp].get(lease.id) is not lease:
                    raise ValueError(f"lease {lease.id} of group {grp} is not open (acked or nacked already?)")
            freed = [0, 0]
            ch._write("ack", _group_ack_txn, grp, [(lease.first_seq, lease.last_seq) for lease in leases], freed)
            for lease in leases:
                self._forget(grp, lease)
                self._owed[grp][0] -= lease.count
                self._owed[grp][1] -= lease.nbytes
            ch._events -= freed[0]
            ch._bytes -= freed[1]
            ch._cond.notify_all()
            if self._barrier:  # lane 0 drained some of the backlog: the held-back lanes look again
                self.wake(self.lanes_of[group_of(grp)])
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
        if secondary is not None and secondary not in self.lanes_of:
            secondary = None  # not configured now: never drop, keep it as a dead letter
        shown = secondary
        if secondary is not None:
            secondary = self.lanes_of[secondary][0]  # the family is not known here: its first lane
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
                _group_ack_txn(conn, grp, [(lease.first_seq, lease.last_seq)], freed)

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
            self.wake([secondary] if secondary is not None else [])
        return f"group {shown}" if shown else "the dead letters"

    def nack(self, grp: str, lease: Lease) -> None:
        ch = self.channel
        with ch._cond:
            if ch._closed or self._leases[grp].get(lease.id) is not lease:
                return
            self._forget(grp, lease)
            ch._cond.notify_all()
            self._conds[grp].notify_all()

    def _held_back(self, queue: str) -> bool:
        """Is ``queue`` a lane waiting for its group's lane 0 to drain the old backlog (L2)?"""
        group = group_of(queue)
        seq = self._barrier.get(group)
        if seq is None or queue == self.lanes_of[group][0]:
            return False
        conn = self.channel._conn
        if conn is None:
            return True
        if conn.execute("SELECT 1 FROM group_pending WHERE grp = ? AND last_seq <= ? LIMIT 1",
                        (self.lanes_of[group][0], seq)).fetchone():
            return True
        del self._barrier[group]
        try:  # a row left behind is harmless: the next open finds lane 0 drained and clears it
            self.channel._write("lanes", lambda c: c.execute("DELETE FROM lane_barrier WHERE grp = ?", (group,)))
        except ChannelIOError:
            pass
        return False

    def _forget(self, grp: str, lease: Lease) -> None:
        del self._leases[grp][lease.id]
        self._leased[grp] -= lease.count

    def ready(self, grp: str, max_events: int, max_bytes: int) -> bool:
        """As :meth:`Channel.ready`, for queue ``grp`` (its unleased bytes are not counted
        apart: the events decide, or all it owes when that is under ``max_bytes``)."""
        with self.channel._cond:
            owed, nbytes = self._owed[grp]
            free = owed - self._leased[grp]
            return free >= max_events or (free > 0 and free == owed and nbytes >= max_bytes)

    def wait_for_events(self, grp: str, timeout: float) -> bool:
        ch = self.channel
        with ch._cond:
            ready = lambda: ch._closed or (self._owed[grp][0] > self._leased[grp]  # noqa: E731
                                           and not (self._barrier and self._held_back(grp)))
            return self._conds[grp].wait_for(ready, timeout) and not ch._closed

    def stats(self) -> dict[str, GroupStats]:
        ch = self.channel
        out = {}
        with ch._cond:
            for g in self.queues:
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
        for g, queues in self.lanes_of.items():  # a group of several lanes: their sum, too
            if len(queues) > 1:
                parts = [out[q] for q in queues]
                ages = [p.oldest_event_age for p in parts if p.oldest_event_age is not None]
                out[g] = GroupStats(events=sum(p.events for p in parts), bytes=sum(p.bytes for p in parts),
                                    leased_events=sum(p.leased_events for p in parts),
                                    oldest_event_age=max(ages) if ages else None)
        return out

    def orphans(self) -> dict[str, int]:
        """Events owed to groups this agent does not run (kept, never dropped): group -> events."""
        ch = self.channel
        with ch._cond:
            rows = ch._conn.execute(
                "SELECT p.grp, coalesce(sum(c.count), 0) FROM group_pending p JOIN chunks c "
                "ON c.last_seq = p.last_seq GROUP BY p.grp").fetchall()
        out: dict[str, int] = {}
        for g, n in rows:  # by group: a removed group's lanes are one group to the operator
            if g not in self._owed:
                out[group_of(g)] = out.get(group_of(g), 0) + n
        return out


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

    def ack_all(self, leases: Sequence[Lease]) -> None:
        self.queues.ack_all(self.name, leases)

    def nack(self, lease: Lease) -> None:
        self.queues.nack(self.name, lease)

    def dead_letter(self, lease: Lease, reason: str, ranges: Sequence[tuple[int, int]] | None = None) -> str:
        return self.queues.dead_letter(self.name, lease, reason, self.secondary, ranges)

    def ready(self, max_events: int, max_bytes: int) -> bool:
        return self.queues.ready(self.name, max_events, max_bytes)

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


def _open_txn(conn: sqlite3.Connection, adopt: tuple[str, ...], lanes_of: Mapping[str, tuple[str, ...]],
              barriers: dict[str, int]) -> None:
    ensure_table(conn)
    # Rows whose chunk is gone (an agent without routes delivered it): nothing is owed any more.
    conn.execute("DELETE FROM group_pending WHERE last_seq NOT IN (SELECT last_seq FROM chunks)")
    stored = [g for (g,) in conn.execute("SELECT DISTINCT grp FROM group_pending")]
    if IMPLICIT in lanes_of:  # L3: no routes, every chunk once: only the implicit group's rows count
        drop = [g for g in stored if group_of(g) != IMPLICIT]
    else:  # routes: the implicit group's chunks are adopted like chunks written without routes
        drop = [g for g in stored if group_of(g) == IMPLICIT]
    conn.executemany("DELETE FROM group_pending WHERE grp = ?", [(g,) for g in drop])
    # Chunks owed to nobody (written without routes): owed to the default groups.
    unowned = [k for (k,) in conn.execute(
        "SELECT last_seq FROM chunks WHERE last_seq NOT IN (SELECT last_seq FROM group_pending)")]
    conn.executemany("INSERT INTO group_pending (grp, last_seq) VALUES (?, ?)",
                     [(lanes_of[g][0] if g in lanes_of else g, k) for k in unowned for g in adopt])
    # L2: a group whose rows are not all in its current lanes, or that adopted chunks, drains
    # through its lane 0 first.
    stored = [g for (g,) in conn.execute("SELECT DISTINCT grp FROM group_pending")]
    for group, queues in lanes_of.items():
        mine = [g for g in stored if group_of(g) == group]
        if not any(g not in queues for g in mine) and not (unowned and group in adopt):
            continue
        for g in mine:
            if g != queues[0]:
                conn.execute("UPDATE OR IGNORE group_pending SET grp = ? WHERE grp = ?", (queues[0], g))
                conn.execute("DELETE FROM group_pending WHERE grp = ?", (g,))
        top = conn.execute("SELECT max(last_seq) FROM group_pending WHERE grp = ?", (queues[0],)).fetchone()[0]
        if len(queues) > 1 and top is not None:
            conn.execute("INSERT OR REPLACE INTO lane_barrier (grp, seq) VALUES (?, ?)", (group, top))
    for group, seq in conn.execute("SELECT grp, seq FROM lane_barrier").fetchall():
        if len(lanes_of.get(group, ())) > 1:
            barriers[group] = seq
        else:  # one queue now (or not configured): no lane can overtake another
            conn.execute("DELETE FROM lane_barrier WHERE grp = ?", (group,))


def _group_ack_txn(conn: sqlite3.Connection, grp: str, spans: list[tuple[int, int]], freed: list) -> None:
    gone = "last_seq BETWEEN ? AND ? AND NOT EXISTS (SELECT 1 FROM group_pending p WHERE p.last_seq = chunks.last_seq)"
    freed[0] = freed[1] = 0
    for first, last in spans:
        conn.execute("DELETE FROM group_pending WHERE grp = ? AND last_seq BETWEEN ? AND ?", (grp, first, last))
        n, nbytes = conn.execute(f"SELECT coalesce(sum(count), 0), coalesce(sum(nbytes), 0) FROM chunks WHERE {gone}",
                                 (first, last)).fetchone()
        conn.execute(f"DELETE FROM chunks WHERE {gone}", (first, last))
        freed[0] += n
        freed[1] += nbytes
