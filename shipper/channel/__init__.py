"""The durable channel: events and tail offsets in one SQLite database, shipped at least once.

The tail source ``put``s a batch of encoded events together with its offset records in one
durable transaction; sinks ``take`` leases of the oldest stored events and ``ack`` (delete) or
``nack`` (give back) them, so every event is delivered at least once and never lost. The full
design note, with the reasoning, is docs/channel.md; each part's docstring carries its own theory
of operation:

- :mod:`shipper.channel.store`: the on-disk format: schema, chunk encoding and checksums, opening
  a database, the format check, the conversion of format 1, the read-only precheck, and
  ``peek`` (what a stopped agent left: queue size and age, offsets) behind ``Channel.peek``.
- :mod:`shipper.channel.core`: ``Channel`` (put, take, ack, nack, stats, peek), ``Lease``,
  ``ChannelStats``; invariants, write errors and recovery.
- :mod:`shipper.channel.space`: disk space: back-pressure, the free-disk guard, the full-disk
  pause, the space reserve, reclaiming pages.
- :mod:`shipper.channel.statedir`: the state directory, its lock and the reserve file.
- :mod:`shipper.channel.repair`: salvaging a corrupt database (``salvage``) and the read-only
  ``verify`` behind ``flume-ship channel verify``.

Every public name of the package is importable from ``shipper.channel`` itself.
"""

from shipper.channel.core import Channel, ChannelStats, Lease
from shipper.channel.repair import SalvageReport, VerifyReport, salvage, verify
from shipper.channel.space import (
    DISK_POLL_SECONDS, RECLAIM_STEP_PAGES, RESERVE_MAX, RESERVE_MIN, RESERVE_NAME, reserve_size,
)
from shipper.channel.store import (
    APPLICATION_ID, CHUNK_BYTES, CHUNK_COLUMNS, CHUNK_EVENTS, DB_NAME, FORMAT_VERSION, JOURNAL_SIZE_LIMIT, MAX_SEQ,
    SCHEMA, SIDE_FILES, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_IOERR, SQLITE_NOTADB, Chunk, Peek, chunk_crc, chunk_ok,
    decode_lens, encode_lens, offset_crc, split_points,
)

__all__ = [
    "APPLICATION_ID", "CHUNK_BYTES", "CHUNK_COLUMNS", "CHUNK_EVENTS", "DB_NAME", "DISK_POLL_SECONDS",
    "FORMAT_VERSION", "JOURNAL_SIZE_LIMIT", "MAX_SEQ", "RECLAIM_STEP_PAGES", "RESERVE_MAX", "RESERVE_MIN",
    "RESERVE_NAME", "SCHEMA", "SIDE_FILES", "SQLITE_CORRUPT", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_NOTADB",
    "Channel", "ChannelStats", "Chunk", "Lease", "Peek", "SalvageReport", "VerifyReport", "chunk_crc", "chunk_ok",
    "decode_lens", "encode_lens", "offset_crc", "reserve_size", "salvage", "split_points", "verify",
]
