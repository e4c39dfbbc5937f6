"""The writer reserves a file's blocks ahead of its end (fsync on), and gives them back when the
file closes: the files on disk end where their events end, and take no more room than them.

Real files on the real file system of the test's directory; "a file system without fallocate" is
the one stand-in (the C library's fallocate answering EOPNOTSUPP), since every file system here
has it.
"""

from __future__ import annotations

import errno
import os

import pytest

from shipper.collector import writer as writer_module
from shipper.collector.writer import RollingWriter

pytestmark = pytest.mark.skipif(writer_module._fallocate is None, reason="fallocate is Linux's")

LINE = b"2026-11-30T17:00:00Z host app[42]: request handled in 12 ms"


def batch(n: int, tag: int) -> list[tuple[dict, bytes]]:
    return [({}, LINE + b" #%d.%d" % (tag, i)) for i in range(n)]


def allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def test_an_open_file_has_its_blocks_reserved_ahead_and_its_size_is_its_events(tmp_path):
    w = RollingWriter(str(tmp_path), preallocate=4 * 1024 * 1024)
    w.write([batch(100, 1)])
    path = w.current_path
    size = os.path.getsize(path)
    assert size == sum(len(body) + 1 for _h, body in batch(100, 1))  # the size is the events, not the reservation
    assert allocated(path) >= size + 4 * 1024 * 1024
    w.close()


def test_closing_a_file_gives_the_reserved_blocks_back(tmp_path):
    w = RollingWriter(str(tmp_path), preallocate=4 * 1024 * 1024)
    for k in range(5):
        w.write([batch(200, k)])
    path = w.current_path
    w.close()
    size = os.path.getsize(path)
    assert allocated(path) < size + 64 * 1024
    expected = b"".join(body + b"\n" for k in range(5) for _h, body in batch(200, k))
    assert open(path, "rb").read() == expected


def test_a_rolled_file_gives_its_reservation_back_and_the_next_one_reserves_its_own(tmp_path):
    w = RollingWriter(str(tmp_path), roll_bytes=20_000, preallocate=1024 * 1024)
    for k in range(6):
        w.write([batch(200, k)])  # ~14 KB each: every batch starts a new file
    current = w.current_path
    closed = sorted(p for p in tmp_path.iterdir() if str(p) != current)
    assert len(closed) == 5
    for p in closed:
        assert allocated(p) < p.stat().st_size + 64 * 1024
    assert allocated(current) >= os.path.getsize(current) + 1024 * 1024
    w.close()
    bodies = b"".join(p.read_bytes() for p in sorted(tmp_path.iterdir()))
    assert bodies.count(b"\n") == 6 * 200


def test_a_batch_past_the_reservation_extends_it(tmp_path):
    w = RollingWriter(str(tmp_path), preallocate=64 * 1024)
    for k in range(10):  # ~70 KB each: every batch goes past what was reserved before it
        w.write([batch(1000, k)])
        assert allocated(w.current_path) >= os.path.getsize(w.current_path) + 64 * 1024
    w.close()


def test_without_fsync_nothing_is_reserved(tmp_path):
    w = RollingWriter(str(tmp_path), fsync=False, preallocate=4 * 1024 * 1024)
    w.write([batch(100, 1)])
    assert allocated(w.current_path) < os.path.getsize(w.current_path) + 64 * 1024
    w.close()


def test_a_file_system_without_fallocate_is_written_as_before(tmp_path, monkeypatch, caplog):
    calls = []

    def no_fallocate(fd, offset, length):
        calls.append((offset, length))
        return errno.EOPNOTSUPP

    monkeypatch.setattr(writer_module, "_fallocate", no_fallocate)
    w = RollingWriter(str(tmp_path), preallocate=4 * 1024 * 1024)
    with caplog.at_level("INFO", logger="flume-ship.collect"):
        for k in range(3):
            assert w.write([batch(100, k)]) == 100
    path = w.current_path
    w.close()
    assert len(calls) == 1  # tried once, then not again
    assert any("cannot reserve space ahead" in r.getMessage() for r in caplog.records)
    assert open(path, "rb").read() == b"".join(body + b"\n" for k in range(3) for _h, body in batch(100, k))
