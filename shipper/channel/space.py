"""Disk space for the channel: admission of puts, the pause, the space reserve, and reclaiming pages.

Back-pressure: ``put`` blocks while the events would exceed ``capacity_events``/``capacity_bytes``
(a batch is always accepted into an empty channel), or while the state directory's filesystem has
less than ``min_free_bytes`` free; the tailed files stay the buffer. Each wait is logged once when
it starts and once when it ends, and counted in ``stats().put_wait_seconds``.

A full disk pauses reading, never delivery (docs/channel.md, "A full disk"). A put is admitted
only with free space for its WAL frames AND the database growth its checkpoint will need, so the
WAL can always be checkpointed and restarted, and an ack then needs only a few pages. Those come
from a space reserve (``channel.reserve``, allocated blocks, 1/16 of the filesystem within
256 KiB .. 8 MiB): an ack that meets ENOSPC deletes it and is retried at once. Any write that
meets ENOSPC pauses puts; acks then also hand freed pages back to the filesystem, and puts resume
(by themselves) once two reserves are free and the reserve is taken again. The reserve is also
deleted before every open, so SQLite has room for its -shm file on a completely full disk.

Space: deleted pages go to SQLite's freelist and are reused by later puts, so steady traffic keeps
the file at its high-water size. With ``auto_vacuum=INCREMENTAL``, acks also hand surplus free
pages back to the filesystem in bounded steps once the channel has drained well below its peak;
``journal_size_limit`` bounds the WAL file after each checkpoint.

:class:`SpaceManagement` is the part of :class:`~shipper.channel.core.Channel` that does this: it
works on the channel's connection, counters and condition (all under the channel's lock), and the
channel calls it at open (``_init_space``), on every put (``_wait_for_room``), on a write that
found the disk full (``_make_room``), on acks (``_reclaim``/``_shrink``) and at close.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from shipper.channel.statedir import SpaceReserve

log = logging.getLogger("flume-ship.channel")

DISK_POLL_SECONDS = 1.0  # nothing signals "space came back": re-check this often while waiting
RECLAIM_STEP_PAGES = 2048  # at most this many pages handed back to the filesystem per ack
RECLAIM_INTERVAL = 0.5  # ... and, while events remain, at most one such step this often (s)
RESERVE_NAME = "channel.reserve"
RESERVE_MIN = 256 * 1024  # the space reserve is 1/16 of the filesystem, within these bounds,
RESERVE_MAX = 8 * 1024 * 1024  # and the WAL is checkpointed every half reserve (see _tune)


def _disk_free(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _fs_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_blocks * st.f_frsize


def reserve_size(fs_bytes: int) -> int:
    """The space reserve for a filesystem of ``fs_bytes``: 1/16 of it, 256 KiB .. 8 MiB, whole pages."""
    return max(RESERVE_MIN, min(RESERVE_MAX, fs_bytes // 16)) // 4096 * 4096


class SpaceManagement:
    """Admission, pause, reserve and reclaim for the Channel (see the module docstring)."""

    def _init_space(self, state_dir: Path, capacity_bytes: int) -> None:
        """Space state at open: nothing paused yet, and the reserve given back until _restore."""
        self.reclaim_floor = min(64 << 20, max(1 << 20, capacity_bytes // 4))
        self._last_reclaim = 0.0
        self._wait_total = 0.0
        self._wait_started: float | None = None
        self._blocked: str | None = None  # why puts are paused right now: "full", "disk" or None
        self._paused_since: float | None = None
        self._pending = (0, 0)  # size of the batch that found no room
        self._reserve = SpaceReserve(state_dir / RESERVE_NAME, reserve_size(_fs_bytes(state_dir)))
        # Give the reserve back before SQLite opens: on a full filesystem that is the room for its
        # -shm file and the first WAL frames. It is allocated again when there is room.
        self._low_space = True
        self._reserve_held = False
        self._reserve.release()

    def _tune(self) -> None:
        """Checkpoint every half reserve of WAL, at most SQLite's default 1000 pages: on a small
        filesystem, what the WAL holds beyond the database is room a checkpoint must find."""
        pages = max(16, min(1000, self._reserve.size // 2 // self._page_size))
        self._conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
        self._checkpoint_pages = pages  # the put's own checkpoint runs at half of it (core: "Checkpoints")

    def _make_room(self, what: str) -> bool:
        """A write found the disk full: pause puts until space returns and, for a write that
        shrinks the channel, free what we can. True if a retry may now find room.

        A put never spends the reserve: what it frees would only go to the next put, or to
        whatever else writes on that filesystem, and be gone when an ack needs it."""
        if not self._low_space:
            self._low_space = True
            log.warning("the filesystem of %s is full (during %s): reading paused until space returns; "
                        "acknowledgements go on", self.state_dir, what)
        if what == "put":
            return False
        if self._reserve_held:
            self._reserve_held = False
            self._reserve.release()
            log.warning("released the %d-byte space reserve in %s so that the %s can complete",
                        self._reserve.size, self.state_dir, what)
            return True
        # No reserve left: a complete checkpoint lets the next transaction overwrite the WAL from
        # its start, in blocks the file already has.
        return self._checkpoint("PASSIVE")

    def _checkpoint(self, mode: str) -> bool:
        """True if every WAL frame is now in the database (the WAL restarts from its start)."""
        try:
            with self._ckpt_lock:  # not beside a put's checkpoint, which would make this one busy
                busy, log_frames, done = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as exc:
            log.debug("channel: checkpoint (%s) failed: %s", mode, exc)
            return False
        return not busy and log_frames == done

    def _restore(self) -> bool:
        """Once free space is comfortably back (the reserve held, and as much again free beside
        it for the WAL), end the pause; puts go on once the free-disk guard (min_free_bytes,
        counted beyond the reserve) agrees too. True when not (or no longer) short of space."""
        if not self._low_space:
            return True
        free = _disk_free(self.state_dir)
        need = self._reserve.size * (1 if self._reserve_held else 2)
        if free is not None and free < need:
            return False
        if not self._reserve_held:
            if not self._reserve.create():
                return False
            self._reserve_held = True
        if self._failing or self._blocked:
            log.info("free space for %s is back (%s bytes): space reserve taken again, reading resumes",
                     self.state_dir, free)
        self._low_space = False
        self._cond.notify_all()
        return True

    def _shrink(self) -> None:
        """Short of space: hand every page an ack freed back to the filesystem (a bounded step
        per ack, no floor), so the reserve can be taken again and puts can resume."""
        self._checkpoint("PASSIVE")
        try:
            free_pages = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
            # Moving pages needs WAL room of its own: never ask for more than half of what is free.
            room = (_disk_free(self.state_dir) or 0) // self._page_size
            step = min(RECLAIM_STEP_PAGES, free_pages, max(16, room // 2))
            if step > 0:
                self._conn.executescript(f"PRAGMA incremental_vacuum({step});")
        except sqlite3.Error as exc:
            log.debug("channel: reclaiming free pages on a full disk failed: %s", exc)
        # The checkpoint after the vacuum cuts the database file down; TRUNCATE also empties the WAL.
        self._checkpoint("TRUNCATE")
        self._restore()

    def _room_problem(self, n: int, nbytes: int, restore: bool = True) -> str | None:
        if self._low_space and not (restore and self._restore()):
            return "disk"
        if self._events and (self._events + n > self.capacity_events or self._bytes + nbytes > self.capacity_bytes):
            return "full"
        free = _disk_free(self.state_dir)
        if free is not None and (free < self.min_free_bytes or (n and free < self._put_room(n, nbytes))):
            return "disk"
        return None

    def _put_room(self, n: int, nbytes: int) -> int:
        """Free bytes a put of ``n`` events (``nbytes``) needs, beyond the reserve: its WAL frames
        AND the database growth its checkpoint will need (the pages it cannot take from the
        freelist, plus what the WAL already holds beyond the end of the file). A put admitted on
        less could commit and leave a WAL that no checkpoint can ever copy back, and then no ack
        could be written either: the stall this check exists to prevent."""
        page = self._page_size
        chunks = n // self.chunk_events + nbytes // self.chunk_bytes + 1
        pages = nbytes // (page - 64) + 2 * chunks + 4  # overflow and leaf pages, parents, ptrmap, header
        try:
            count = self._conn.execute("PRAGMA page_count").fetchone()[0]
            reusable = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
            on_disk = self.db_path.stat().st_size // page
        except (sqlite3.Error, OSError, AttributeError):
            count = reusable = on_disk = 0
        growth = max(0, count - on_disk) + max(0, pages - reusable)
        return pages * (page + 24) + growth * page

    def _wait_for_room(self, n: int, nbytes: int, deadline: float | None) -> bool:
        """Wait until the batch fits. A pause is an episode that may span several put calls
        (a source that uses timeouts calls again): it is logged when it starts and when it ends."""
        problem = self._room_problem(n, nbytes)
        if problem is None:
            self._end_pause()
            return True
        started = time.monotonic()
        self._wait_started = started
        try:
            while problem is not None and not self._closed:
                if problem != self._blocked:
                    self._blocked, self._pending = problem, (n, nbytes)
                    self._paused_since = self._paused_since or started
                    self._log_blocked(problem)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                if problem == "disk":
                    left = DISK_POLL_SECONDS if left is None else min(left, DISK_POLL_SECONDS)
                self._cond.wait(left)
                problem = self._room_problem(n, nbytes)
            if problem is None:
                self._end_pause()
            return problem is None
        finally:
            self._wait_total += time.monotonic() - started
            self._wait_started = None

    def _end_pause(self) -> None:
        if self._paused_since is not None:
            log.info("channel accepts events again after a %.1fs pause", time.monotonic() - self._paused_since)
        self._paused_since = None
        self._blocked = None

    def _log_blocked(self, problem: str) -> None:
        if problem == "disk" and self._low_space:
            log.warning("free space for %s is %s bytes: reading paused until there is room for the %d-byte "
                        "space reserve and more", self.state_dir, _disk_free(self.state_dir), self._reserve.size)
        elif problem == "full":
            log.warning("channel full (%d events, %d bytes; capacity %d events, %d bytes): "
                        "reading paused until the sinks catch up",
                        self._events, self._bytes, self.capacity_events, self.capacity_bytes)
        elif (_disk_free(self.state_dir) or 0) < self.min_free_bytes:
            log.warning("free space for %s is %s bytes, under the %d-byte minimum: reading paused "
                        "until space returns", self.state_dir, _disk_free(self.state_dir), self.min_free_bytes)
        else:
            log.warning("free space for %s is %s bytes, too little for the next batch and its checkpoint "
                        "(about %d bytes): reading paused until space returns", self.state_dir,
                        _disk_free(self.state_dir), self._put_room(*self._pending))

    def _reclaim(self) -> None:
        """Hand surplus free pages back to the filesystem, a bounded step per ack. Starts when
        free pages exceed max(floor, 2 x live bytes) and stops at max(floor, live bytes), so a
        steady flow reuses its pages instead of shrinking and growing the file over and over.

        While events remain, a step runs at most every RECLAIM_INTERVAL seconds: moving pages is
        the dearest part of an ack, and a draining backlog would otherwise pay it on every batch.
        Once the channel is empty, every ack may take a step."""
        now = time.monotonic()
        if self._events and now - self._last_reclaim < RECLAIM_INTERVAL:
            return
        self._last_reclaim = now
        try:
            free_pages = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
            if free_pages * self._page_size <= max(self.reclaim_floor, 2 * self._bytes):
                return
            keep = max(self.reclaim_floor, self._bytes) // self._page_size
            step = min(RECLAIM_STEP_PAGES, free_pages - keep)
            # executescript, because incremental_vacuum yields one (empty) row per page freed and
            # Cursor.execute() stops a statement without result columns after its first step.
            self._conn.executescript(f"PRAGMA incremental_vacuum({step});")
        except sqlite3.Error as exc:  # only space is at stake; the next ack tries again
            log.debug("channel: reclaiming free pages failed: %s", exc)

    def _shrink_idle(self) -> None:
        """On closing an empty channel, hand back every free page above the floor: nothing is left
        to move, and the file should not keep a drained backlog's size until the next run."""
        free_pages = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        if free_pages * self._page_size > self.reclaim_floor:
            # VACUUM rebuilds the file from what is live, which is nearly nothing here; much
            # cheaper than incremental_vacuum walking every free page of a drained backlog.
            self._conn.execute("VACUUM")
