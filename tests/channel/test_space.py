"""Space is reclaimed: ten times the capacity through the channel keeps the files near their
high-water size (freelist reuse, WAL checkpoints with journal_size_limit), and a drained channel
hands its surplus pages back to the filesystem (incremental vacuum)."""

from __future__ import annotations

import os
import random

from shipper.channel import DB_NAME, JOURNAL_SIZE_LIMIT, Channel

CAP = 2 << 20


def test_ten_capacities_through_the_channel_stay_near_the_high_water_size(tmp_path):
    db = tmp_path / DB_NAME
    rng = random.Random(0)  # incompressible events: this is about pages, not about compression
    batch = [rng.randbytes(100) for _ in range(500)]
    db_sizes, wal_sizes = [], []
    with Channel.open(tmp_path, capacity_bytes=CAP, min_free_bytes=0) as ch:
        shipped = n = 0
        while shipped < 10 * CAP:
            if not ch.put(batch, {"f": b"%d" % n}, timeout=0):  # full: a sink catches up
                lease = ch.take(700, 1 << 30)
                ch.ack(lease)
                shipped += lease.nbytes
            n += 1
            if n % 10 == 0:
                db_sizes.append(os.path.getsize(db))
                wal_sizes.append(os.path.getsize(f"{db}-wal"))
        high_water = max(db_sizes[: len(db_sizes) // 5])  # while the first two capacities went by
        assert max(db_sizes) <= high_water * 1.1, "the database file kept growing"
        assert high_water < 2 * CAP
        assert max(wal_sizes) <= JOURNAL_SIZE_LIMIT + (1 << 20), "the WAL file kept growing"
        while lease := ch.take(1000, 1 << 30):
            ch.ack(lease)
    assert os.path.getsize(db) < high_water * 0.6, "a drained channel kept all its pages"
