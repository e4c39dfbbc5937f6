"""ENOSPC and the free-disk guard, on a real tiny filesystem (a 4 MiB tmpfs mounted for the test).

Mounting needs root (CAP_SYS_ADMIN); without it the tests skip and say so. A ballast file fills the
filesystem the way another process would, and removing it is "space returns".
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time

import pytest

from shipper.channel import Channel
from shipper.errors import ChannelIOError


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a 4 MiB tmpfs for a real ENOSPC")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); the ENOSPC test needs one")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


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


def test_put_on_a_full_disk_fails_cleanly_and_works_again_when_space_returns(tiny_fs, caplog):
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

        with pytest.raises(ChannelIOError):  # still full: still failing, still harmless
            ch.put(events(n, 200), {"f": b"never"})

        os.unlink(tiny_fs / "ballast")  # space returns
        assert ch.put(events(n, 200), {"f": b"%d" % (n + 200)})
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
