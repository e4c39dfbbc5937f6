"""A corrupt channel database: overwrite pages of a real file, then open (salvage) and verify.

The damaged file must be kept aside byte for byte, every readable event and offset record must come
back in order in a fresh database, the loss must be reported loudly, and `flume-ship channel
verify` must say CORRUPT (exit 5) before and healthy (exit 0) after.
"""

from __future__ import annotations

import hashlib
import logging
import random
import subprocess

from shipper.channel import DB_NAME, Channel, store
from shipper.errors import EXIT_STATE
from tests.support import cli_argv

N = 5000


def body(i: int) -> bytes:
    return b"event-%06d-" % i + bytes(random.Random(i).randrange(256) for _ in range(90))


def make_channel(state) -> None:
    # Chunks of 100 events: a smashed page costs whole chunks, so keep them small for the bounds below.
    with Channel.open(state, min_free_bytes=0, chunk_events=100) as ch:
        for i in range(0, N, 500):
            ch.put([body(j) for j in range(i, i + 500)], {"file-a": b"%d" % (i + 500)})
        ch.put([], {"file-b": b"tail-b"})
        lease = ch.take(100, 1 << 20)
        assert lease.count == 100
        ch.ack(lease)  # events 0..99 are gone before the damage


def smash_pages(db, first_fraction: float, count: int) -> None:
    data = bytearray(db.read_bytes())
    page = 4096
    pages = len(data) // page
    start = int(pages * first_fraction)
    rng = random.Random(7)
    for p in range(start, start + count):
        data[p * page:(p + 1) * page] = bytes(rng.randrange(256) for _ in range(page))
    db.write_bytes(bytes(data))


def verify(state):
    return subprocess.run(cli_argv("channel", "verify", "--state-dir", str(state)), capture_output=True, text=True)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pages_overwritten_in_the_middle_are_salvaged_around_and_the_original_kept(tmp_path, caplog, monkeypatch):
    # The bounds below are for 4 KiB pages: four of them are ~10 % of this small channel, where
    # four 16 KiB pages (a new channel's default) would be ~40 % of it. A channel written with
    # 4 KiB pages is also what an older release left behind.
    monkeypatch.setattr(store, "PAGE_SIZE", 4096)
    state = tmp_path / "state"
    make_channel(state)
    db = state / DB_NAME
    smash_pages(db, 0.5, 4)
    damaged = sha(db)

    r = verify(state)
    assert r.returncode == EXIT_STATE, r.stdout
    assert "PROBLEM" in r.stdout and "CORRUPT" in r.stdout

    caplog.set_level(logging.WARNING, logger="flume-ship.channel")
    with Channel.open(state, min_free_bytes=0) as ch:
        report = ch.salvage
        assert report is not None
        lease = ch.take(1 << 30, 1 << 40)
        offsets = ch.offsets()
        ch.nack(lease)
        assert ch.put([b"after"])  # the fresh database works

    aside = report.aside
    assert aside.exists() and sha(aside) == damaged  # kept as it was, not deleted, not modified
    assert "corrupt" in caplog.text and f"salvaged {report.events} events" in caplog.text

    ids = [int(e[6:12]) for e in lease.events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(e == body(i) for e, i in zip(lease.events, ids))  # every salvaged event is intact
    assert set(ids) <= set(range(100, N))  # no acked event came back
    assert (N - 100) * 0.8 < len(ids) < N - 100  # most survived; the smashed pages' did not
    assert report.events == len(ids) and report.seq_gaps >= (N - 100) - len(ids) - 1
    assert offsets == {"file-a": b"%d" % N, "file-b": b"tail-b"}

    r = verify(state)
    assert r.returncode == 0, r.stdout
    assert "set aside earlier: " + aside.name in r.stdout


def test_a_file_that_is_not_a_database_any_more_is_set_aside_and_replaced(tmp_path, caplog):
    state = tmp_path / "state"
    make_channel(state)
    db = state / DB_NAME
    smash_pages(db, 0.0, 1)  # the header page: SQLite no longer recognises the file
    damaged = sha(db)
    assert verify(state).returncode == EXIT_STATE

    with Channel.open(state, min_free_bytes=0) as ch:
        assert ch.salvage is not None
        assert sha(ch.salvage.aside) == damaged
        assert ch.put([b"new"], {"file-a": b"0"})
        assert ch.take(10, 1 << 20).events[-1] == b"new"
    assert "moved aside" in caplog.text
    assert verify(state).returncode == 0


def test_a_healthy_database_is_not_touched_on_open(tmp_path):
    state = tmp_path / "state"
    make_channel(state)
    with Channel.open(state, min_free_bytes=0) as ch:
        assert ch.salvage is None
        assert ch.stats().events == N - 100
    assert not list(state.glob("*.corrupt-*"))
