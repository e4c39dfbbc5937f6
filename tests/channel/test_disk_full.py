"""ENOSPC and the free-disk guard, on a real tiny filesystem (a 4 MiB tmpfs mounted for the test).

Mounting needs root (CAP_SYS_ADMIN); without it the tests skip and say so. A ballast file fills the
filesystem the way another process would, and removing it is "space returns"; or the channel
fills it itself (a collector down for long), and acks are what make room again.
"""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from shipper.channel import RESERVE_NAME, Channel
from shipper.errors import ChannelIOError, StateError
from tests.support import mount_tmpfs, umount


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "fs"
    mnt.mkdir()
    mount_tmpfs(mnt, "4m", "a real ENOSPC")
    try:
        yield mnt
    finally:
        umount(mnt)


def fill(path) -> None:
    """Write a ballast file until the filesystem is full."""
    chunk = b"\0" * 4096
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return


def events(start: int, n: int) -> list[bytes]:
    return [b"%08d" % i + b"-" * 92 for i in range(start, start + n)]


def drain_view(ch) -> list[bytes]:
    """Everything stored, in order, without removing it."""
    lease = ch.take(1 << 30, 1 << 40)
    if lease is None:
        return []
    ch.nack(lease)
    return lease.events


def test_put_on_a_full_disk_fails_cleanly_and_works_again_when_space_returns(tiny_fs, caplog, monkeypatch):
    # The free-space check before a put normally keeps it from ever meeting ENOSPC; here it is
    # switched off, as if another writer took the space between the check and the write.
    monkeypatch.setattr(Channel, "_put_room", lambda self, n, nbytes: 0)
    state = tiny_fs / "state"
    committed: list[bytes] = []
    ch = Channel.open(state, min_free_bytes=0)
    try:
        n = 0
        for _ in range(5):
            assert ch.put(events(n, 100), {"f": b"%d" % (n + 100)})
            committed += events(n, 100)
            n += 100
        lease = ch.take(250, 1 << 20)  # whole chunks (one per put here): 200 events
        assert lease.count == 200
        ch.ack(lease)  # some history: deletes as well as inserts
        committed = committed[200:]

        fill(tiny_fs / "ballast")
        failure = None
        for _ in range(1000):  # the WAL may still have room for a few batches
            try:
                ch.put(events(n, 200), {"f": b"%d" % (n + 200)})
            except ChannelIOError as exc:
                failure = exc
                break
            committed += events(n, 200)
            n += 200
        assert failure is not None, "the filesystem never filled up"
        assert "disk is full" in str(failure) and "disk is full" in caplog.text

        last_offset = b"%d" % n
        assert drain_view(ch) == committed  # nothing committed was lost or changed
        assert ch.offsets() == {"f": last_offset}  # the failed put's offset is not visible
        assert ch.stats().events == len(committed)

        # Still full: the next put waits for space (the reserve is spent) instead of failing again.
        assert ch.put(events(n, 200), {"f": b"never"}, timeout=0.3) is False
        assert ch.stats().put_blocked == "disk"

        os.unlink(tiny_fs / "ballast")  # space returns: the reserve is taken again, puts go on
        assert ch.put(events(n, 200), {"f": b"%d" % (n + 200)}, timeout=30)
        assert ch.stats().reserve_bytes > 0
        committed += events(n, 200)
        assert drain_view(ch) == committed
    finally:
        ch.close()
    with Channel.open(state, min_free_bytes=0) as ch:  # and all of it survives a restart
        assert drain_view(ch) == committed
        assert ch.offsets() == {"f": b"%d" % (n + 200)}


def test_free_disk_guard_pauses_put_until_space_returns_by_itself(tiny_fs):
    state = tiny_fs / "state"
    with Channel.open(state, min_free_bytes=1 << 20) as ch:
        assert ch.put(events(0, 10))
        fill(tiny_fs / "ballast")
        assert ch.put(events(10, 10), timeout=0.2) is False  # under the minimum: not accepted
        result = []
        t = threading.Thread(target=lambda: result.append(ch.put(events(10, 10), {"f": b"20"})))
        t.start()
        deadline = time.monotonic() + 30
        while ch.stats().put_blocked != "disk" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ch.stats().put_blocked == "disk"
        os.unlink(tiny_fs / "ballast")
        t.join(30)
        assert result == [True]
        assert drain_view(ch) == events(0, 20)
        assert ch.stats().put_wait_seconds > 0


def fill_channel(ch, start: int = 0) -> tuple[int, list[bytes]]:
    """Put 200-event batches until the channel takes no more for lack of disk space (the put
    waits: the free-space check refuses it, or it met ENOSPC and the next one waits); (next
    event number, what was committed)."""
    n, committed = start, []
    for _ in range(10_000):
        try:
            if not ch.put(events(n, 200), {"f": b"%d" % (n + 200)}, timeout=0):
                assert ch.stats().put_blocked == "disk"
                return n, committed
        except ChannelIOError:
            return n, committed
        committed += events(n, 200)
        n += 200
    raise AssertionError("the filesystem never filled up")


def disk_free(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.mark.parametrize("full", ["by the channel", "to the last byte"])
def test_acks_free_space_on_a_full_disk_while_puts_wait_then_resume(tiny_fs, full):
    state = tiny_fs / "state"
    ch = Channel.open(state, min_free_bytes=0)
    try:
        assert ch.stats().reserve_bytes > 0
        n, committed = fill_channel(ch)
        assert ch.stats().reserve_bytes > 0  # a failed put does not spend it: acks will
        if full == "to the last byte":
            fill(tiny_fs / "ballast")  # and something else takes what little was left
        assert ch.stats().events == len(committed) > 0

        result = []
        putter = threading.Thread(target=lambda: result.append(ch.put(events(n, 200), {"f": b"%d" % (n + 200)})))
        putter.start()
        deadline = time.monotonic() + 30
        while ch.stats().put_blocked != "disk" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ch.stats().put_blocked == "disk" and result == []  # the put waits, it does not fail

        acked = 0
        if full == "to the last byte":
            # Delivery goes on even with zero bytes free: one ack, then the space returns.
            lease = ch.take(200, 1 << 20)
            ch.ack(lease)  # no ChannelIOError
            acked += lease.count
            os.unlink(tiny_fs / "ballast")
        low = peak = disk_free(tiny_fs)
        while ch.stats().put_blocked == "disk":  # deliver until the channel says there is room again
            lease = ch.take(200, 1 << 20)
            assert lease is not None, "drained, and still no room for puts"
            ch.ack(lease)  # every ack succeeds on the full disk, first time
            acked += lease.count
            peak = max(peak, disk_free(tiny_fs) + ch.stats().reserve_bytes)
        putter.join(30)  # no more acks: the waiting put resumes by itself
        assert result == [True], "the waiting put never resumed"
        assert ch.stats().reserve_bytes > 0  # the reserve was taken again before puts went on
        if full == "by the channel":  # (with the ballast, its removal made the room)
            assert peak > low  # the acks gave space back to the filesystem (free, or as the reserve)
        assert 0 < acked < len(committed)  # puts resumed before the channel was empty
        committed = committed[acked:] + events(n, 200)
        assert drain_view(ch) == committed  # nothing committed was lost or reordered
        assert ch.offsets() == {"f": b"%d" % (n + 200)}
    finally:
        ch.close()
    with Channel.open(state, min_free_bytes=0) as ch:
        assert drain_view(ch) == committed


def test_restart_on_a_completely_full_disk(tiny_fs):
    state = tiny_fs / "state"
    with Channel.open(state, min_free_bytes=0) as ch:
        for n in range(0, 300, 100):
            assert ch.put(events(n, 100), {"f": b"%d" % (n + 100)})
    fill(tiny_fs / "ballast")  # not one byte free while the agent is down
    assert disk_free(tiny_fs) == 0
    # The kept reserve is released before SQLite opens: room for its -shm file and the WAL.
    with Channel.open(state, min_free_bytes=0) as ch:
        assert drain_view(ch) == events(0, 300)
        assert ch.offsets() == {"f": b"300"}
        assert ch.put(events(300, 10), timeout=0.3) is False  # no room for a reserve: puts wait
        lease = ch.take(100, 1 << 20)
        assert lease.count == 100
        ch.ack(lease)  # delivery goes on
        os.unlink(tiny_fs / "ballast")
        assert ch.put(events(300, 10), {"f": b"310"}, timeout=30)
        assert drain_view(ch) == events(100, 210)


def test_restart_with_no_reserve_left_and_no_space_says_what_to_do(tiny_fs):
    state = tiny_fs / "state"
    with Channel.open(state, min_free_bytes=0) as ch:
        assert ch.put(events(0, 100), {"f": b"100"})
    os.unlink(state / RESERVE_NAME)  # spent earlier, and something else took that room too
    fill(tiny_fs / "ballast")
    with pytest.raises(StateError, match="its filesystem is full .*free some space there"):
        Channel.open(state, min_free_bytes=0)
    os.unlink(tiny_fs / "ballast")
    with Channel.open(state, min_free_bytes=0) as ch:  # and nothing was harmed
        assert drain_view(ch) == events(0, 100)
        assert ch.offsets() == {"f": b"100"}


def test_a_new_channel_on_a_small_filesystem_keeps_4_kib_pages(tiny_fs):
    # On a few MiB the space checks' margins, counted in pages, would be 4x bigger at 16 KiB.
    import sqlite3

    from shipper.channel import DB_NAME
    from shipper.channel.store import PAGE_SIZE, new_page_size

    assert new_page_size(tiny_fs) == 4096 and new_page_size(tiny_fs.parent) == PAGE_SIZE
    with Channel.open(tiny_fs / "state", min_free_bytes=0) as ch:
        assert ch.put(events(0, 100))
    with sqlite3.connect(tiny_fs / "state" / DB_NAME) as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == 4096
