"""Format 1 (one row per event) databases, as flume-ship wrote them before chunks, still work.

The v1 file is built here with v1's exact schema, pragmas and row layout (what shipper/channel.py
wrote up to format version 1), including the traces real use leaves: a seq gap from an
out-of-order ack, a high-water mark above the last stored event, a damaged row and a quarantined
one. Opening it converts it in place in one transaction; a conversion that fails part way leaves
the v1 file as it was; a corrupt v1 file is salvaged into the new format.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
import zlib

import pytest

import shipper.channel as channel_mod
from shipper.channel import DB_NAME, FORMAT_VERSION, Channel, offset_crc
from shipper.errors import StateError
from tests.support import cli_argv

V1_SCHEMA = """
PRAGMA auto_vacuum = INCREMENTAL;
PRAGMA journal_mode = WAL;
BEGIN IMMEDIATE;
CREATE TABLE events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    put_at REAL    NOT NULL,
    crc    INTEGER NOT NULL,
    body   BLOB    NOT NULL
);
CREATE TABLE offsets (
    key   TEXT    PRIMARY KEY,
    value BLOB    NOT NULL,
    crc   INTEGER NOT NULL
);
CREATE TABLE quarantine (
    seq      INTEGER PRIMARY KEY,
    put_at   REAL    NOT NULL,
    crc      INTEGER NOT NULL,
    body     BLOB    NOT NULL,
    found_at REAL    NOT NULL
);
PRAGMA application_id = 1718383464;
PRAGMA user_version = 1;
COMMIT;
"""


def body(i: int) -> bytes:
    return b"\x00" + bytes([2 * 20]) + (b"event %06d " % i).ljust(20, b"v")  # headers {} + 20-byte body


def make_v1(state, n=2500) -> list[int]:
    """A v1 database: events 1..n minus 1001..1200 (acked by a second sink), 700 damaged,
    a quarantined old event 0, the high-water mark at n + 50; returns the seqs that must survive."""
    state.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(state / DB_NAME, isolation_level=None)
    db.executescript(V1_SCHEMA)
    db.execute("BEGIN IMMEDIATE")
    now = time.time()
    alive = [i for i in range(1, n + 1) if not 1001 <= i <= 1200]
    db.executemany("INSERT INTO events (seq, put_at, crc, body) VALUES (?, ?, ?, ?)",
                   [(i, now - n + i, zlib.crc32(body(i)), body(i)) for i in alive])
    db.execute("UPDATE events SET body = ? WHERE seq = 700", (body(700).replace(b"event", b"evEnt"),))
    db.execute("INSERT INTO quarantine VALUES (0, ?, 1, X'00', ?)", (now - 9e3, now - 9e3))
    db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (n + 50,))
    for key, value in (("file-a", b"pos-a"), ("file-b", b"pos-b")):
        db.execute("INSERT INTO offsets VALUES (?, ?, ?)", (key, value, offset_crc(key, value)))
    db.execute("COMMIT")
    db.close()
    return [i for i in alive if i != 700]


def verify(state):
    return subprocess.run(cli_argv("channel", "verify", "--state-dir", str(state)), capture_output=True, text=True)


def user_version(state) -> int:
    with sqlite3.connect(state / DB_NAME) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def test_a_v1_database_with_queued_events_is_converted_in_place_on_open(tmp_path, caplog):
    state = tmp_path / "state"
    survive = make_v1(state)
    r = verify(state)  # verify reads v1 as it is and says what will happen
    assert f"format version: 1 (converted to {FORMAT_VERSION} at the next start)" in r.stdout
    assert f"events: {len(survive)} (" in r.stdout and "1 event fails its checksum" in r.stdout

    caplog.set_level("INFO", logger="flume-ship.channel")
    with Channel.open(state, min_free_bytes=0) as ch:
        assert ch.salvage is None  # converted, not salvaged
        s = ch.stats()
        assert s.events == len(survive) and s.bytes == sum(len(body(i)) for i in survive)
        assert ch.offsets() == {"file-a": b"pos-a", "file-b": b"pos-b"}
        seen, leases = [], []
        while lease := ch.take(300, 1 << 20):
            assert lease.count <= 1000
            seen += lease.events
            leases.append(lease)
        assert seen == [body(i) for i in survive]  # every event, in seq order
        assert leases[0].first_seq == 1
        ch.ack(leases[0])
        assert ch.put([b"new"])
        newest = ch.take(10, 1 << 20)
        assert newest.events == [b"new"] and newest.first_seq == 2551  # above the v1 high-water mark
    assert user_version(state) == FORMAT_VERSION
    assert f"converted from format 1 to {FORMAT_VERSION}" in caplog.text and "1 damaged events quarantined" in caplog.text
    with sqlite3.connect(state / DB_NAME) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'events'").fetchone()[0] == 0
        q = sorted(db.execute("SELECT last_seq, count FROM quarantine"))
        assert q == [(0, 1), (700, 1)]  # the old quarantined row kept, the damaged event added
        # runs of consecutive seqs only: a chunk never spans the acked gap or the damaged event
        for last, count in db.execute("SELECT last_seq, count FROM chunks"):
            assert not (last - count + 1 <= 700 <= last) and not (last - count + 1 <= 1100 <= last)
    r = verify(state)
    assert r.returncode == 0 and f"format version: {FORMAT_VERSION}\n" in r.stdout and "quarantined events: 2" in r.stdout


def test_a_conversion_that_fails_part_way_leaves_the_v1_file_as_it_was(tmp_path, monkeypatch):
    state = tmp_path / "state"
    survive = make_v1(state)

    original = channel_mod.store._regroup

    def broken(events):  # the disk fails after two chunks were written (inside the transaction)
        for i, row in enumerate(original(events)):
            if i == 2:
                raise sqlite3.OperationalError("disk I/O error")
            yield row

    monkeypatch.setattr(channel_mod.store, "_regroup", broken)
    with pytest.raises(StateError, match="disk I/O error"):
        Channel.open(state, min_free_bytes=0)
    assert user_version(state) == 1
    with sqlite3.connect(state / DB_NAME) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == len(survive) + 1
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name IN ('chunks', 'quarantine_v2')"
                          ).fetchone()[0] == 0
    monkeypatch.undo()
    with Channel.open(state, min_free_bytes=0) as ch:  # the next start converts it
        assert ch.stats().events == len(survive)


def test_a_corrupt_v1_file_is_salvaged_into_the_new_format(tmp_path):
    state = tmp_path / "state"
    survive = make_v1(state, n=6000)
    db = state / DB_NAME
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    pages = len(data) // 4096
    for p in range(pages // 2, pages // 2 + 3):
        data[p * 4096:(p + 1) * 4096] = b"\xa5" * 4096
    db.write_bytes(bytes(data))
    with Channel.open(state, min_free_bytes=0) as ch:
        report = ch.salvage
        assert report is not None and report.events > 0.7 * len(survive)
        lease = ch.take(1 << 30, 1 << 40)
        got = lease.events
        assert len(got) == report.events and set(got) <= {body(i) for i in survive}
        assert got == sorted(got, key=lambda e: int(e[8:14]))
        assert ch.offsets() == {"file-a": b"pos-a", "file-b": b"pos-b"}
    assert user_version(state) == FORMAT_VERSION
    assert verify(state).returncode == 0
