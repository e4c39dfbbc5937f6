"""Format 3: chunk payloads stored LZ4-compressed when shorter; format-2 files convert on open.

``fixtures/channel-v2.db`` was written by the format-2 release (how: ``fixtures/make_v2.py``):
events 1..250 and 501..2000 queued in chunks of 250 (251..500 acked by a second sink), the
high-water mark at 2100, chunk 2100 (100 events) in the quarantine, two offset records.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from shipper.avroipc.flume_event import encode_event
from shipper.channel import DB_NAME, FORMAT_VERSION, Channel
from shipper.channel.store import PAGE_SIZE, pack_payload, unpack_payload
from tests.support import cli_argv

FIXTURE = Path(__file__).parent / "fixtures" / "channel-v2.db"


def fixture_line(i: int) -> bytes:  # exactly what make_v2.py wrote
    return (b"2026-11-30T06:%02d:%02d.%03dZ INFO [worker-%d] request id=%08x path=/api/v1/items/%d status=200 ms=%d"
            % (i // 60 % 60, i % 60, i % 1000, i % 7, i * 2654435761 % (1 << 32), i % 913, i % 97))


def fixture_event(i: int) -> bytes:
    return encode_event({"file": "app.log"}, fixture_line(i))


def log_lines(n: int, seed: int = 7) -> list[bytes]:
    """Log-like events: a shared shape, varying fields and a random token (no padding)."""
    rng = random.Random(seed)
    words = [b"GET", b"POST", b"user", b"session", b"cache", b"miss", b"ok", b"retry", b"db", b"timeout"]
    return [encode_event({}, b"2026-11-30 06:%02d:%02d level=%s msg=\"%s\" token=%016x" % (
        i % 60, rng.randrange(60), rng.choice([b"INFO", b"WARN"]),
        b" ".join(rng.choice(words) for _ in range(rng.randrange(3, 12))), rng.getrandbits(64))) for i in range(n)]


def stored(state: Path) -> list[tuple[int, int, int]]:
    with sqlite3.connect(state / DB_NAME) as db:
        return list(db.execute("SELECT count, nbytes, length(body) FROM chunks ORDER BY last_seq"))


def test_a_format_2_channel_from_the_previous_release_converts_and_ships_everything(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(FIXTURE, state / DB_NAME)
    r = subprocess.run(cli_argv("channel", "verify", "--state-dir", str(state)), capture_output=True, text=True)
    assert r.returncode == 0 and f"format version: 2 (converted to {FORMAT_VERSION} at the next start)" in r.stdout
    caplog.set_level("INFO", logger="flume-ship.channel")
    expected = [fixture_event(i) for i in [*range(1, 251), *range(501, 2001)]]
    with Channel.open(state, min_free_bytes=0) as ch:
        assert ch.salvage is None
        assert ch.offsets() == {"file-a": b"pos-a2", "file-b": b"pos-b"}
        assert ch.stats().events == len(expected) and ch.stats().bytes == sum(map(len, expected))
        assert ch.put(log_lines(500), {"file-c": b"pos-c"})  # new chunks go in compressed beside the old ones
        seen = []
        while lease := ch.take(1000, 1 << 20):
            seen += lease.events
            ch.ack(lease)
        assert seen == expected + log_lines(500)  # nothing lost, in order, the old before the new
        assert ch.put([b"next"])
        assert ch.take(1, 1 << 20).first_seq == 2101 + 500  # above the old high-water mark
    assert f"converted from format 2 to {FORMAT_VERSION}" in caplog.text
    with sqlite3.connect(state / DB_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION
        assert db.execute("SELECT last_seq, count FROM quarantine").fetchall() == [(2100, 100)]
    r = subprocess.run(cli_argv("channel", "verify", "--state-dir", str(state)), capture_output=True, text=True)
    assert r.returncode == 0 and f"format version: {FORMAT_VERSION}\n" in r.stdout


def test_a_format_2_channel_from_the_previous_release_ships_every_event_through_tail_once(tmp_path):
    """The whole path: a real agent opens the old file, converts it and sends what it holds to a
    real collector, then exits 0 with the channel empty."""
    from tests.ops.common import collected, start_collector

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    shutil.copy(FIXTURE, state / DB_NAME)
    (tmp_path / "empty.log").write_bytes(b"")
    collector, address = start_collector(tmp_path / "out")
    try:
        r = subprocess.run(cli_argv("tail", "--once", str(tmp_path / "empty.log"), "--to", address, "--state-dir",
                                    str(state), "--min-free", "1K"), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"converted from format 2 to {FORMAT_VERSION}" in r.stderr
    finally:
        collector.stop()
    assert collected(tmp_path / "out") == [fixture_line(i) for i in [*range(1, 251), *range(501, 2001)]]
    with Channel.open(state, min_free_bytes=0) as ch:
        assert ch.stats().events == 0


def page_size(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA page_size").fetchone()[0]


def test_a_new_channel_has_big_pages_and_an_old_one_keeps_its_own(tmp_path):
    # A ~400 KB compressed chunk spans ~25 overflow pages of 16 KiB instead of ~100 of 4 KiB:
    # fewer WAL frames, headers and checksums per byte stored.
    with Channel.open(tmp_path / "new", min_free_bytes=0) as ch:
        assert ch.put(log_lines(2000))
    assert page_size(tmp_path / "new" / DB_NAME) == PAGE_SIZE == 16384
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(FIXTURE, old / DB_NAME)
    assert page_size(old / DB_NAME) == 4096
    with Channel.open(old, min_free_bytes=0) as ch:
        assert ch.put(log_lines(2000))
        n = 0
        while lease := ch.take(1000, 1 << 20):
            n += lease.count
            ch.ack(lease)
        assert n == 1750 + 2000
    assert page_size(old / DB_NAME) == 4096  # opened, written and drained in its own page size


def test_log_lines_are_stored_compressed_and_come_back_byte_for_byte(tmp_path):
    events = log_lines(3000)
    with Channel.open(tmp_path / "s", min_free_bytes=0, chunk_events=1000) as ch:
        assert ch.put(events)
        rows = stored(tmp_path / "s")
        assert [c for c, _, _ in rows] == [1000, 1000, 1000]
        assert all(size < nbytes * 0.7 for _, nbytes, size in rows)  # log lines shrink well under LZ4
        assert ch.stats().bytes == sum(map(len, events))  # the queue counts event bytes, not stored ones
        lease = ch.take(3000, 1 << 30)
        assert lease.events == events and lease.payload == b"".join(events) and lease.nbytes == sum(map(len, events))


def test_incompressible_and_tiny_payloads_are_stored_as_they_are(tmp_path):
    rng = random.Random(1)
    noise = [encode_event({}, rng.randbytes(400)) for _ in range(50)]
    with Channel.open(tmp_path / "s", min_free_bytes=0) as ch:
        assert ch.put(noise) and ch.put([b"\x00\x02x"])
        assert [size == nbytes for _, nbytes, size in stored(tmp_path / "s")] == [True, True]
        lease = ch.take(100, 1 << 20)
        assert lease.events == noise + [b"\x00\x02x"]


def test_a_compressed_chunk_that_does_not_decompress_is_quarantined_not_sent(tmp_path):
    from shipper.channel.store import chunk_crc

    events = log_lines(200)
    with Channel.open(tmp_path / "s", min_free_bytes=0, chunk_events=100) as ch:
        assert ch.put(events)
    with sqlite3.connect(tmp_path / "s" / DB_NAME) as db:  # a well-formed row whose LZ4 block is garbage
        (key, lens, body), = db.execute("SELECT last_seq, lens, body FROM chunks ORDER BY last_seq LIMIT 1")
        bad = b"\xff" * len(body)
        db.execute("UPDATE chunks SET body = ?, crc = ? WHERE last_seq = ?", (bad, chunk_crc(bad, lens), key))
    with Channel.open(tmp_path / "s", min_free_bytes=0) as ch:
        lease = ch.take(1000, 1 << 20)
        assert lease.events == events[100:] and ch.stats().quarantined == 100


@pytest.mark.parametrize("payload", [b"", b"a" * 127, b"a" * 128, bytes(range(256)) * 40])
def test_pack_and_unpack_are_inverse_and_never_grow_a_payload(payload):
    body = pack_payload(payload)
    assert len(body) <= len(payload) and unpack_payload(body, len(payload)) == payload
    if len(body) < len(payload):
        with pytest.raises(ValueError):
            unpack_payload(body, len(payload) + 1)
