"""Salvaging a corrupt channel database, and verifying one read-only.

Recovery: opening runs ``PRAGMA quick_check``. A corrupt database (or one SQLite will not open) is
renamed aside (``channel.db.corrupt-<UTC time>``, with its -wal and -shm) and never deleted; every
chunk (or format-1 event) that still reads back with a good CRC is copied into a fresh database,
and the counts are logged as a warning. ``verify()`` (``flume-ship channel verify``) runs the full
integrity check read-only, without the lock, so it works beside a running agent.
"""

from __future__ import annotations

import os
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from shipper.channel.statedir import fsync_dir
from shipper.channel.store import (
    _INSERT_CHUNK, APPLICATION_ID, CHUNK_COLUMNS, DB_NAME, FORMAT_VERSION, MAX_SEQ, SIDE_FILES, _file_bytes,
    _open_db, _regroup, _ro_uri, chunk_ok, connect_ro, offset_crc,
)

# --- salvage ----------------------------------------------------------------------------------


@dataclass
class SalvageReport:
    reason: str
    aside: Path
    events: int = 0
    bytes: int = 0
    offsets: int = 0
    damaged: int = 0  # chunks (format-1 files: events) read back with a bad CRC (dropped)
    unreadable_regions: int = 0  # stretches of the table SQLite could not read
    seq_gaps: int = 0  # missing sequence numbers between salvaged events: an upper bound on loss

    def summary(self) -> str:
        return (f"channel database was corrupt ({self.reason}); moved aside to {self.aside} (kept, not deleted); "
                f"salvaged {self.events} events ({self.bytes} bytes) and {self.offsets} offset records; "
                f"dropped {self.damaged} damaged chunks; {self.unreadable_regions} unreadable regions; "
                f"up to {self.seq_gaps} events lost between the salvaged ones")


def _move_aside(db: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = db.with_name(f"{db.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = db.with_name(f"{db.name}.corrupt-{stamp}-{n}")
    for suffix in ("", *SIDE_FILES):
        src = Path(f"{db}{suffix}")
        if src.exists():
            os.rename(src, f"{aside}{suffix}")
    fsync_dir(db.parent)
    return aside


def _scan(conn: sqlite3.Connection, sql: str, probe: str, stats: SalvageReport | None = None) -> Iterator[tuple]:
    """Yield every readable row of ``sql`` (ordered by its first column, a rowid), skipping
    over regions SQLite cannot read. ``sql`` and ``probe`` take one parameter: the lowest key."""
    resume = -1
    while True:
        last = None
        try:
            for row in conn.execute(sql, (resume,)):
                last = row[0]
                yield row
            return
        except sqlite3.DatabaseError:
            pass
        if stats is not None:
            stats.unreadable_regions += 1
        lo = max(resume, last + 1 if last is not None else resume)
        nxt = _next_readable(conn, probe, lo)
        if nxt is None:
            return
        resume = nxt


def _next_readable(conn: sqlite3.Connection, probe: str, lo: int) -> int | None:
    """The smallest key k > lo from which reading works again (exponential, then binary search)."""

    def ok(k: int) -> bool:
        try:
            conn.execute(probe, (k,)).fetchone()
            return True
        except sqlite3.DatabaseError:
            return False

    step, bad = 1, lo
    while lo + step <= MAX_SEQ:
        if ok(lo + step):
            good = lo + step
            while good - bad > 1:
                mid = (bad + good) // 2
                if ok(mid):
                    good = mid
                else:
                    bad = mid
            return good
        bad = lo + step
        step *= 2
    return None


def salvage(db: Path, reason: str) -> SalvageReport:
    """Move a corrupt database aside and copy every readable, checksum-valid row into a new one."""
    aside = _move_aside(db)
    report = SalvageReport(reason=reason, aside=aside)
    try:
        src = sqlite3.connect(_ro_uri(aside), uri=True, isolation_level=None)
    except sqlite3.Error:
        src = None
    dst = _open_db(db)
    try:
        if src is not None:
            _copy_events(src, dst, report)
            _copy_offsets(src, dst, report)
    finally:
        if src is not None:
            src.close()
        dst.close()
    fsync_dir(db.parent)
    return report


def _copy_events(src, dst, report: SalvageReport) -> None:
    """Copy intact chunks (or, from a format-1 file, intact events regrouped into chunks)."""
    try:
        tables = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        tables = {"chunks"}  # the catalogue is unreadable: try the current layout
    v1 = "chunks" not in tables and "events" in tables
    if v1:
        rows = _chunks_from_v1(_scan(src, "SELECT seq, put_at, crc, body FROM events WHERE seq >= ? ORDER BY seq",
                                     "SELECT seq FROM events WHERE seq >= ? ORDER BY seq LIMIT 1", report), report)
    else:
        rows = _scan(src, f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE last_seq >= ? ORDER BY last_seq",
                     "SELECT last_seq FROM chunks WHERE last_seq >= ? ORDER BY last_seq LIMIT 1", report)
    batch, prev = [], None
    for row in _guard(rows):
        last, count, nbytes, put_at, crc, lens, body = row
        if not chunk_ok(count, nbytes, crc, lens, body) or not isinstance(put_at, (int, float)):
            report.damaged += 1
            continue
        if prev is not None:
            report.seq_gaps += max(0, last - count - prev)
        prev = last
        batch.append(row)
        report.events += count
        report.bytes += nbytes
        if len(batch) >= 100:
            _insert(dst, _INSERT_CHUNK, batch)
            batch = []
    _insert(dst, _INSERT_CHUNK, batch)
    try:  # keep sequence numbers unique even past events that were lost at the end
        row = src.execute("SELECT max(seq) FROM sqlite_sequence WHERE name IN ('chunks', 'events')").fetchone()
        if row and row[0] is not None and row[0] > (prev or 0):
            dst.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'chunks'", (row[0],))
            dst.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'chunks', ? WHERE changes() = 0", (row[0],))
    except sqlite3.Error:
        pass


def _chunks_from_v1(rows: Iterator[tuple], report: SalvageReport) -> Iterator[tuple]:
    def good():
        for row in _guard(rows):
            seq, put_at, crc, body = row
            if isinstance(body, bytes) and zlib.crc32(body) == crc and isinstance(put_at, (int, float)):
                yield seq, put_at, body
            else:
                report.damaged += 1

    return _regroup(good())


def _copy_offsets(src, dst, report: SalvageReport) -> None:
    rows = _scan(src, "SELECT rowid, key, value, crc FROM offsets WHERE rowid >= ? ORDER BY rowid",
                 "SELECT rowid FROM offsets WHERE rowid >= ? ORDER BY rowid LIMIT 1")
    good = []
    for _, key, value, crc in _guard(rows):
        if isinstance(key, str) and isinstance(value, bytes) and offset_crc(key, value) == crc:
            good.append((key, value, crc))
    _insert(dst, "INSERT OR REPLACE INTO offsets (key, value, crc) VALUES (?, ?, ?)", good)
    report.offsets = len(good)


def _guard(rows: Iterator[tuple]) -> Iterator[tuple]:
    """Rows of the wrong shape (a damaged record can decode as anything) are skipped by the caller;
    a schema SQLite cannot even compile ends the scan quietly."""
    try:
        yield from rows
    except sqlite3.Error:
        return


def _insert(dst: sqlite3.Connection, sql: str, rows: list) -> None:
    if rows:
        dst.execute("BEGIN IMMEDIATE")
        dst.executemany(sql, rows)
        dst.execute("COMMIT")


# --- verify (read-only, no lock) -------------------------------------------------------------


@dataclass
class VerifyReport:
    db_path: Path
    healthy: bool = True
    problems: list[str] = field(default_factory=list)
    format_version: int | None = None
    events: int = 0
    bytes: int = 0
    chunks: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    oldest_put_at: float | None = None
    offsets: int = 0
    quarantined: int = 0
    file_bytes: int = 0
    set_aside: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"database: {self.db_path} ({self.file_bytes} bytes with WAL)"]
        if self.format_version is not None:
            out.append(f"format version: {self.format_version}" + (
                f" (converted to {FORMAT_VERSION} at the next start)" if self.format_version < FORMAT_VERSION else ""))
        out.append(f"events: {self.events} ({self.bytes} bytes"
                   + (f" in {self.chunks} chunks)" if self.format_version != 1 else ")")
                   + (f", seq {self.first_seq}..{self.last_seq}" if self.first_seq is not None else ""))
        if self.oldest_put_at is not None:
            out.append(f"oldest event: {max(0.0, time.time() - self.oldest_put_at):.0f}s old")
        out.append(f"offset records: {self.offsets}")
        if self.quarantined:
            out.append(f"quarantined events: {self.quarantined}")
        for name in self.set_aside:
            out.append(f"set aside earlier: {name}")
        out.extend(f"PROBLEM: {p}" for p in self.problems)
        out.append("healthy" if self.healthy else "CORRUPT or unusable: the next start salvages what it can "
                   "(the damaged file is kept aside)")
        return out


def verify(state_dir: str | os.PathLike) -> VerifyReport:
    """Full integrity check plus CRC scan, read-only; safe beside a running agent."""
    state_dir = Path(state_dir).expanduser()
    db = state_dir / DB_NAME
    report = VerifyReport(db_path=db)
    conn = connect_ro(db)
    report.file_bytes = _file_bytes(db)
    report.set_aside = sorted(p.name for p in state_dir.glob(f"{DB_NAME}.corrupt-*")
                              if not p.name.endswith(SIDE_FILES))

    def problem(text: str) -> None:
        report.healthy = False
        report.problems.append(text)

    try:
        conn.execute("BEGIN")  # one snapshot for every check below
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        report.format_version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            problem("not a flume-ship channel database (application_id mismatch)")
            return report
        if report.format_version > FORMAT_VERSION:
            problem(f"format version {report.format_version} is newer than this flume-ship reads "
                    f"({FORMAT_VERSION}); upgrade flume-ship")
            return report
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check(100)")]
        if rows != ["ok"]:
            for r in rows:
                problem(f"integrity_check: {r}")
        _verify_rows(conn, report, problem)
        conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        problem(f"SQLite: {exc}")
    finally:
        conn.close()
    return report


def _verify_rows(conn: sqlite3.Connection, report: VerifyReport, problem) -> None:
    if report.format_version == 1:
        rows = ((seq, 1, len(body) if isinstance(body, bytes) else 0, put_at,
                 isinstance(body, bytes) and zlib.crc32(body) == crc)
                for seq, put_at, crc, body in conn.execute("SELECT seq, put_at, crc, body FROM events ORDER BY seq"))
    else:
        rows = ((last, count, nbytes, put_at, chunk_ok(count, nbytes, crc, lens, body))
                for last, count, nbytes, put_at, crc, lens, body
                in conn.execute(f"SELECT {CHUNK_COLUMNS} FROM chunks ORDER BY last_seq"))
    damaged = []
    for last, count, nbytes, put_at, ok in rows:
        if not ok:
            damaged.append(last)
            continue
        if report.first_seq is None:
            report.first_seq, report.oldest_put_at = last - count + 1, put_at
        report.last_seq = last
        report.events += count
        report.bytes += nbytes
        report.chunks += 1
    if damaged:
        what = "event" if report.format_version == 1 else "chunk"
        problem(f"{_counted(len(damaged), what)} {'fails its' if len(damaged) == 1 else 'fail their'} checksum"
                f" (first at seq {damaged[0]})")
    bad_offsets = 0
    for key, value, crc in conn.execute("SELECT key, value, crc FROM offsets"):
        if offset_crc(key, value) != crc:
            bad_offsets += 1
        report.offsets += 1
    if bad_offsets:
        problem(f"{_counted(bad_offsets, 'offset record')} {'fails its' if bad_offsets == 1 else 'fail their'} checksum")
    report.quarantined = conn.execute("SELECT count(*) FROM quarantine" if report.format_version == 1 else
                                      "SELECT coalesce(sum(count), 0) FROM quarantine").fetchone()[0]


def _counted(n: int, noun: str) -> str:
    """``1 chunk``, ``2 chunks`` (the channel sits below ``ops``, whose ``counted`` the CLI uses)."""
    return f"{n} {noun if n == 1 else noun + 's'}"
