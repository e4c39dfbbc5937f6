"""Scenarios for the channel's contract: leases across threads, back-pressure, the state directory."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from shipper.channel import DB_NAME, Channel
from shipper.errors import EXIT_LOCKED, EXIT_STATE, StateError, StateLocked
from shipper.channel.statedir import default_state_dir
from tests.support import cli_argv


def open_ch(path, **kw):
    kw.setdefault("min_free_bytes", 0)
    return Channel.open(path, **kw)


def test_parallel_leases_never_overlap_and_nack_comes_back_first(tmp_path):
    with open_ch(tmp_path, chunk_events=3) as ch:
        ch.put([b"%d" % i for i in range(10)])  # chunks 0-2, 3-5, 6-8, 9
        a = ch.take(3, 1 << 20)
        b = ch.take(3, 1 << 20)
        c = ch.take(3, 1 << 20)
        assert [a.events, b.events, c.events] == [[b"0", b"1", b"2"], [b"3", b"4", b"5"], [b"6", b"7", b"8"]]
        ch.nack(b)
        ch.ack(a)
        # b's events come back before the newer 9, and the lease stops at c's events
        assert ch.take(10, 1 << 20).events == [b"3", b"4", b"5"]
        assert ch.take(10, 1 << 20).events == [b"9"]
        assert ch.take(10, 1 << 20) is None


def test_a_lease_holds_at_least_one_event_even_over_max_bytes(tmp_path):
    with open_ch(tmp_path, chunk_bytes=50) as ch:
        ch.put([b"x" * 100, b"y"])  # the big event is a chunk of its own
        assert ch.take(10, 10).events == [b"x" * 100]
        assert ch.take(10, 10).events == [b"y"]


def test_a_put_is_stored_as_chunks_and_take_returns_whole_chunks(tmp_path):
    events = [b"%04d" % i + b"." * (i % 7) for i in range(25)]
    with open_ch(tmp_path, chunk_events=10, chunk_bytes=1 << 20) as ch:
        ch.put(events, {"f": b"25"})
        first = ch.take(3, 1 << 20)  # a chunk is never split: the whole first chunk, over max_events
        assert first.count == 10 and first.events == events[:10]
        assert first.payload == b"".join(events[:10]) and first.nbytes == len(first.payload)
        rest = ch.take(14, 1 << 20)  # chunk 10-19 fits, 20-24 would make 10 + 5 > 14
        assert rest.events == events[10:20] and rest.count == 10
        assert first.full and rest.full  # stopped at a chunk that did not fit: waiting cannot help
        last = ch.take(100, 1 << 20)
        assert last.events == events[20:] and not last.full  # stopped at the end of the data
        s = ch.stats()
        assert s.events == 25 and s.leased_events == 25 and s.bytes == sum(map(len, events))
        ch.nack(rest)
        both = ch.take(100, 1 << 20)  # gives back 10-19 only: the open lease 20-24 ends the run
        assert both.events == events[10:20] and both.full
        for lease in (first, both):
            ch.ack(lease)
        assert ch.stats().events == 5


def test_chunks_are_bounded_by_bytes_too(tmp_path):
    events = [bytes([65 + i]) * 30 for i in range(10)]
    with open_ch(tmp_path, chunk_events=1000, chunk_bytes=100) as ch:
        ch.put(events)
        sizes = []
        while lease := ch.take(1, 1):
            sizes.append(lease.count)
            assert lease.events == events[sum(sizes) - lease.count:sum(sizes)]
        assert sizes == [3, 3, 3, 1]


def test_lease_batches_cut_a_chunk_at_event_boundaries_and_join_small_ones(tmp_path):
    with open_ch(tmp_path, chunk_events=7) as ch:
        ch.put([b"a%d" % i for i in range(7)])
        ch.put([b"b%d" % i for i in range(2)])
        ch.put([b"c%d" % i for i in range(3)])
        lease = ch.take(1000, 1 << 20)
        assert [c.count for c in lease.chunks] == [7, 2, 3]
        batches = lease.batches(3, 1 << 20)
        assert [n for n, _ in batches] == [3, 3, 3, 3]  # 7 cut as 3+3+1, the 1 joined with b0 b1
        assert b"".join(p for _, p in batches) == lease.payload
        assert batches[2] == (3, b"a6b0b1")
        assert lease.batches(100, 5) == [(2, b"a0a1"), (2, b"a2a3"), (2, b"a4a5"), (1, b"a6"), (2, b"b0b1"),
                                         (2, b"c0c1"), (1, b"c2")]
        assert lease.batches(1000, 1 << 20) == [(12, lease.payload)]


def test_acking_a_lease_twice_is_an_error(tmp_path):
    with open_ch(tmp_path) as ch:
        ch.put([b"a"])
        lease = ch.take(1, 100)
        ch.ack(lease)
        with pytest.raises(ValueError):
            ch.ack(lease)


def test_many_sink_threads_deliver_every_event_exactly_once_without_crash(tmp_path):
    total, got, lock, failed_once = 3000, [], threading.Lock(), set()
    with open_ch(tmp_path, capacity_events=500, chunk_events=20) as ch:
        done = threading.Event()

        def sink():
            while not (done.is_set() and ch.stats().events == 0):
                lease = ch.take(37, 1 << 20)
                if lease is None:
                    ch.wait_for_events(0.1)
                    continue
                with lock:
                    fail = lease.first_seq % 5 == 0 and lease.first_seq not in failed_once
                    failed_once.add(lease.first_seq)
                if fail:
                    ch.nack(lease)  # some batches fail once and go back
                    continue
                with lock:
                    got.extend(lease.events)
                ch.ack(lease)

        threads = [threading.Thread(target=sink) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(0, total, 50):
            assert ch.put([b"%d" % n for n in range(i, i + 50)], {"f": b"%d" % (i + 50)})
        done.set()
        for t in threads:
            t.join(60)
        assert sorted(got, key=int) == [b"%d" % n for n in range(total)]
        assert ch.stats().events == 0 and ch.offsets() == {"f": b"%d" % total}


def test_full_channel_blocks_put_until_an_ack_makes_room_and_reports_the_wait(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="flume-ship.channel")
    with open_ch(tmp_path, capacity_events=4, chunk_events=1) as ch:
        assert ch.put([b"1", b"2", b"3"])
        assert ch.put([b"4", b"5"], timeout=0.05) is False  # would exceed 4 events
        result = []
        t = threading.Thread(target=lambda: result.append(ch.put([b"4", b"5"], {"f": b"5"})))
        t.start()
        deadline = time.monotonic() + 30
        while ch.stats().put_blocked != "full" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ch.stats().put_blocked == "full"
        assert ch.offsets() == {}  # nothing of the waiting put is visible
        ch.ack(ch.take(2, 1 << 20))
        t.join(30)
        assert result == [True]
        s = ch.stats()
        assert s.events == 3 and s.put_blocked is None and s.put_wait_seconds > 0
        assert "channel full" in caplog.text and "accepts events again" in caplog.text


def test_a_batch_larger_than_the_capacity_is_accepted_into_an_empty_channel(tmp_path):
    with open_ch(tmp_path, capacity_events=2, capacity_bytes=10) as ch:
        assert ch.put([b"x" * 50] * 5, timeout=0)
        assert ch.put([b"y"], timeout=0) is False


def test_free_disk_guard_pauses_puts_but_not_offset_updates(tmp_path, caplog):
    with Channel.open(tmp_path, min_free_bytes=1 << 62) as ch:  # more than any disk has
        assert ch.put([b"a"], timeout=0.05) is False
        assert ch.stats().events == 0
        assert ch.put([], {"f": b"1"}, timeout=0)
        assert ch.offsets() == {"f": b"1"}
    assert "under the" in caplog.text


def test_close_wakes_a_blocked_put_and_waiting_sinks(tmp_path):
    ch = open_ch(tmp_path, capacity_events=1)
    ch.put([b"a"])
    ch.take(1, 10)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ch.put([b"b"]))),
               threading.Thread(target=lambda: results.append(ch.wait_for_events(60)))]
    for t in threads:
        t.start()
    time.sleep(0.2)
    ch.close()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False, False]


def test_wake_waiters_ends_the_channels_waits_for_events_and_leaves_the_group_queues_waiting(tmp_path):
    # `tail --once`: when the read is over, the agent wakes the sink, so an empty channel ends the
    # run at once instead of after the sink's wait for events has run out. A group's queue is not
    # woken: a batch its primary gives up on may still move into a secondary's queue.
    from shipper.channel.groups import GroupQueues

    ch = open_ch(tmp_path)
    results = []
    waiter = threading.Thread(target=lambda: results.append(ch.wait_for_events(600)))
    waiter.start()
    time.sleep(0.2)
    ch.wake_waiters()
    waiter.join(60)
    assert not waiter.is_alive() and results == [False]  # woken, nothing to take
    ch.put([b"x"])
    assert ch.wait_for_events(600) is True  # a wake ends only the waits under way
    ch.close()

    ch = open_ch(tmp_path / "grouped")
    q = GroupQueues(ch, ["a"])
    grouped = threading.Thread(target=lambda: results.append(q.wait_for_events("a", 600)))
    grouped.start()
    time.sleep(0.2)
    ch.wake_waiters()
    grouped.join(0.5)
    assert grouped.is_alive()  # still waiting for its queue
    ch.put([b"y"], groups=[("a",)])
    grouped.join(60)
    assert results[-1] is True
    ch.close()


def test_second_opener_is_refused_with_state_locked(tmp_path):
    with open_ch(tmp_path):
        with pytest.raises(StateLocked, match=str(os.getpid())) as err:
            open_ch(tmp_path)
        assert err.value.exit_code == EXIT_LOCKED
    open_ch(tmp_path).close()  # released on close


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from shipper.channel import Channel; "
         f"Channel.open({str(tmp_path)!r}, min_free_bytes=0); print('ok', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"ok"
        with pytest.raises(StateLocked, match=f"pid {child.pid}"):
            open_ch(tmp_path)
    finally:
        child.kill()
        child.wait()
    open_ch(tmp_path).close()


def test_database_from_a_newer_format_is_refused_clearly(tmp_path):
    open_ch(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StateError, match="newer flume-ship") as err:
        open_ch(tmp_path)
    assert err.value.exit_code == EXIT_STATE
    assert (tmp_path / DB_NAME).exists()  # refused, not salvaged
    r = subprocess.run(cli_argv("channel", "verify", "--state-dir", str(tmp_path)), capture_output=True, text=True)
    assert r.returncode == EXIT_STATE and "newer" in r.stdout


def test_foreign_sqlite_file_is_refused(tmp_path):
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StateError, match="not a flume-ship channel"):
        open_ch(tmp_path)


def test_state_dir_that_cannot_be_created_is_a_state_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError, match="cannot create state directory"):
        open_ch(tmp_path / "file" / "sub")


def test_default_state_dir_for_root_and_for_a_user(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert str(default_state_dir()) == "/var/lib/flume-ship"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "flume-ship"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / ".local" / "state" / "flume-ship"


def test_verify_runs_beside_an_open_channel(tmp_path):
    with open_ch(tmp_path) as ch:
        ch.put([b"a", b"b"], {"f": b"2"})
        r = subprocess.run(cli_argv("channel", "verify", "--state-dir", str(tmp_path)),
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "events: 2" in r.stdout and "offset records: 1" in r.stdout and "healthy" in r.stdout
        ch.put([b"c"])  # the agent keeps working
        assert ch.stats().events == 3


def test_a_damaged_event_is_quarantined_not_sent(tmp_path):
    with open_ch(tmp_path) as ch:
        for batch in ([b"good1"], [b"bad", b"bad"], [b"good2"]):
            ch.put(batch)
    with sqlite3.connect(tmp_path / DB_NAME) as db:  # a payload flipped inside a well-formed page
        db.execute("UPDATE chunks SET body = X'626164626165' WHERE body = X'626164626164'")
    r = subprocess.run(cli_argv("channel", "verify", "--state-dir", str(tmp_path)), capture_output=True, text=True)
    assert r.returncode == EXIT_STATE and "1 chunk fails its checksum" in r.stdout
    with open_ch(tmp_path) as ch:
        assert ch.take(10, 1 << 20).events == [b"good1"]
        assert ch.take(10, 1 << 20).events == [b"good2"]
        assert ch.stats().quarantined == 2 and ch.stats().events == 2  # the whole chunk went


def test_a_bad_offset_value_fails_the_put_and_leaves_the_channel_usable(tmp_path):
    with open_ch(tmp_path) as ch:
        with pytest.raises(TypeError):
            ch.put([b"a"], {"f": 12})  # offsets are bytes
        assert ch.stats().events == 0 and ch.offsets() == {}
        assert ch.put([b"b"], {"f": b"1"})
        assert ch.take(10, 100).events == [b"b"]


def _greedy_cuts(lengths, max_events, max_bytes):
    """The rule, one event at a time: a chunk takes events while it stays within both bounds."""
    out, lo = [], 0
    while lo < len(lengths):
        hi, size = lo + 1, lengths[lo]
        while hi < len(lengths) and hi - lo < max_events and size + lengths[hi] <= max_bytes:
            size += lengths[hi]
            hi += 1
        out.append((lo, hi))
        lo = hi
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=400), st.integers(1, 50), st.integers(1, 3000))
def test_chunk_cuts_follow_both_bounds_whichever_path_cuts_them(lengths, max_events, max_bytes):
    from shipper.channel.store import split_points

    assert split_points(lengths, max_events, max_bytes) == _greedy_cuts(lengths, max_events, max_bytes)


def test_an_ack_writes_only_bookkeeping_pages_not_the_pages_it_frees(tmp_path):
    # A 400 KB incompressible chunk spans ~100 overflow pages. Acking it must not zero them and
    # write them through the WAL (secure_delete ON, some builds' default): a handful of pages.
    wal = tmp_path / (DB_NAME + "-wal")
    with open_ch(tmp_path) as ch:
        ch.put([os.urandom(400_000)])
        page = ch._page_size
        before = wal.stat().st_size
        lease = ch.take(10, 1 << 30)
        ch.ack(lease)
        frames = (wal.stat().st_size - before) // (page + 24)
        assert 0 < frames < 10, frames


def test_several_leases_acked_in_one_transaction_leave_only_the_others(tmp_path):
    with open_ch(tmp_path, chunk_events=2) as ch:
        ch.put([b"%d" % i for i in range(8)])  # chunks 0-1, 2-3, 4-5, 6-7
        a, b, c = (ch.take(2, 1 << 20) for _ in range(3))
        ch.ack_all([a, c])  # one commit; b is still leased, then given back
        ch.nack(b)
        assert ch.stats().events == 4
        d = ch.take(10, 1 << 20)
        assert d.events == [b"2", b"3", b"6", b"7"]
        with pytest.raises(ValueError):  # all or none: a was acked already, so d is not acked either
            ch.ack_all([d, a])
        assert ch.stats().events == 4
        ch.nack(d)
    with open_ch(tmp_path) as ch:  # what ack_all deleted stays deleted
        assert ch.take(10, 1 << 20).events == [b"2", b"3", b"6", b"7"]


def test_a_take_and_ready_go_on_while_a_commit_holds_the_channel_lock(tmp_path):
    # The channel's lock is held through every put's and ack's commit (an fsync); a sink that
    # takes must not queue behind it. The lock is held here by the test itself, for as long as
    # the taking thread needs; a take that waited for it would never finish (the join fails).
    with open_ch(tmp_path, chunk_events=10) as ch:
        assert ch.put([b"e%d" % i for i in range(30)])
        got = []
        with ch._cond:
            t = threading.Thread(target=lambda: got.append((ch.ready(20, 1 << 20), ch.take(20, 1 << 20))))
            t.start()
            t.join(30)
            assert not t.is_alive(), "take waited for the channel's lock"
        ready, lease = got[0]
        assert ready and lease.events == [b"e%d" % i for i in range(20)]
        ch.ack(lease)
        assert ch.take(100, 1 << 20).events == [b"e%d" % i for i in range(20, 30)]


def test_a_damaged_chunk_found_by_a_take_is_quarantined_and_the_next_one_taken(tmp_path):
    with open_ch(tmp_path, chunk_events=10) as ch:
        assert ch.put([b"e%d" % i for i in range(30)])
        with sqlite3.connect(tmp_path / DB_NAME) as db:
            db.execute("UPDATE chunks SET crc = crc + 1 WHERE last_seq = 10")
        lease = ch.take(100, 1 << 20)
        assert lease.events == [b"e%d" % i for i in range(10, 30)]
        assert ch.quarantined == 10 and ch.stats().events == 20


def hold_put_syncs(monkeypatch, thread_name: str) -> tuple[threading.Event, threading.Event]:
    """Hold every channel fdatasync made by the thread ``thread_name`` (a put's sync of the WAL)
    until the returned ``release`` is set; ``entered`` is set when one is held."""
    import shipper.channel.core as core

    entered, release = threading.Event(), threading.Event()
    real = os.fdatasync

    def held_fdatasync(fd):
        if threading.current_thread().name == thread_name:
            entered.set()
            release.wait(30)
        real(fd)

    monkeypatch.setattr(core.os, "fdatasync", held_fdatasync)
    return entered, release


def test_a_revoke_returns_only_after_a_put_syncing_outside_the_lock_has_counted_its_batch(tmp_path, monkeypatch):
    # A reload revokes a source that outlived its stop, then changes the queues: a put of that
    # source still in its fdatasync (run without the channel's lock) must be counted before the
    # revoke returns, or it would count its batch into the new queues afterwards.
    from shipper.channel.core import Fence

    entered, release = hold_put_syncs(monkeypatch, "putter")
    fence = Fence()
    with open_ch(tmp_path, chunk_events=10) as ch:
        putter = threading.Thread(target=lambda: ch.put_packed(ch.pack([b"p%d" % i for i in range(10)]), fence=fence),
                                  name="putter")
        putter.start()
        try:
            assert entered.wait(30), "the put never synced the WAL after its commit"
            seen = []
            revoker = threading.Thread(target=lambda: (ch.revoke(fence), seen.append(ch.stats().events)))
            revoker.start()
            time.sleep(0.2)  # a revoke that does not wait for the put has returned by now
        finally:
            release.set()
        revoker.join(30)
        putter.join(30)
        assert seen == [10]  # the put was counted before the revoke returned
        assert fence.revoked


def test_an_ack_commits_while_a_put_waits_for_its_fdatasync_and_the_put_is_taken_only_after_it(tmp_path, monkeypatch):
    # A put commits its frames under the channel's lock, then syncs the WAL without it: an ack
    # (and a take of what was stored before) must not queue behind the put's fdatasync, and the
    # put's own events become takeable only once they are durable. The sync is held here by the
    # test, for as long as the acking thread needs.
    entered, release = hold_put_syncs(monkeypatch, "putter")
    with open_ch(tmp_path, chunk_events=10) as ch:
        assert ch.put([b"a%d" % i for i in range(10)])  # (from this thread: not held)
        lease = ch.take(10, 1 << 20)
        done = []
        putter = threading.Thread(target=lambda: done.append(ch.put([b"b%d" % i for i in range(10)])),
                                  name="putter")
        putter.start()
        try:
            assert entered.wait(30), "the put never synced the WAL after its commit"
            acker = threading.Thread(target=lambda: ch.ack(lease))
            acker.start()
            acker.join(30)
            assert not acker.is_alive(), "the ack waited for the put's fdatasync"
            assert ch.take(10, 1 << 20) is None  # committed, not yet durable: not takeable
            assert not done
        finally:
            release.set()
            putter.join(30)
        assert done == [True]
        assert ch.take(10, 1 << 20).events == [b"b%d" % i for i in range(10)]


def test_a_thousand_one_kib_events_are_one_chunk_so_a_lease_is_one_full_call(tmp_path):
    # ~1 KiB log lines encode to ~1.1 KB events: with the default chunk bytes, a batch of 1,000
    # is one stored chunk, hence one lease of batch_size events (one call), not a chunk of ~950
    # and a remainder sent as a second, small call.
    with open_ch(tmp_path) as ch:
        events = [b"%04d" % i + b"x" * 1096 for i in range(2000)]
        assert ch.put(events)
        first, second = ch.take(1000, 4 << 20), ch.take(1000, 4 << 20)
        assert (first.count, second.count) == (1000, 1000)
        assert first.events + second.events == events


def test_a_put_whose_fdatasync_fails_raises_and_its_retry_stores_it_again_never_loses_it(tmp_path, monkeypatch):
    # The commit went through, the sync did not: the put must not report success, and the
    # channel must count what it holds (the batch may be stored: its retry is a duplicate).
    import errno

    import shipper.channel.core as core
    from shipper.errors import ChannelIOError

    real, failures = os.fdatasync, [OSError(errno.EIO, "Input/output error")]

    def flaky_fdatasync(fd):
        if failures:
            raise failures.pop()
        real(fd)

    with open_ch(tmp_path, chunk_events=10) as ch:
        assert ch.put([b"a%d" % i for i in range(10)])
        monkeypatch.setattr(core.os, "fdatasync", flaky_fdatasync)
        batch = [b"b%d" % i for i in range(10)]
        with pytest.raises(ChannelIOError, match="cannot sync"):
            ch.put(batch)
        assert ch.put(batch)  # the source's retry
        got = []
        while (lease := ch.take(100, 1 << 20)) is not None:
            got += lease.events
            ch.ack(lease)
        assert got[:10] == [b"a%d" % i for i in range(10)]
        assert got[10:] in (batch, batch + batch)  # stored once or twice, never lost
        assert ch.stats().events == 0


def test_puts_checkpoint_the_wal_themselves_on_their_own_connection_without_the_channel_lock(tmp_path):
    # The write connection's automatic checkpoint is turned off here, so only the puts' own
    # checkpoints can bound the WAL; each must run with the channel's lock free (acks go on).
    import sqlite3

    with open_ch(tmp_path, chunk_events=100) as ch:
        ch._conn.execute("PRAGMA wal_autocheckpoint = 0")
        seen = []

        class Watched:
            def __init__(self, conn):
                self.conn = conn

            def execute(self, sql):
                seen.append((sql, ch._mutex.locked()))
                return self.conn.execute(sql)

            def close(self):
                self.conn.close()

        ch._ckpt_conn = Watched(sqlite3.connect(ch.db_path, isolation_level=None, check_same_thread=False))
        payload = os.urandom(64 * 1024)  # incompressible: ~4 pages per event
        for i in range(4 * ch._checkpoint_pages // 4 // 10 + 10):
            assert ch.put([payload[:-8] + b"%08d" % (10 * i + k) for k in range(10)])
        assert seen and all(sql == "PRAGMA wal_checkpoint(PASSIVE)" and not locked for sql, locked in seen)
        busy, log_frames, done = sqlite3.connect(ch.db_path).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert log_frames <= ch._checkpoint_pages, "the WAL grew past the checkpoint interval"
