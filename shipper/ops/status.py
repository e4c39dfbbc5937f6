"""`flume-ship status`: what the agent is doing, whether it runs or not.

Two ways to know, and the command picks the better one:

* **Running agent**: it rewrites ``<state dir>/status.json`` every ``status_interval`` seconds in
  which something changed (an unchanged one is only touched: its mtime says it is current, and it
  is rewritten at least every minute), and once more when it stops, atomically: written to ``status.json.tmp-<pid>`` then renamed over the
  old one, so a reader sees a whole file or the previous one, never half. The document is a
  :class:`~shipper.ops.document.StatusDocument` built by :func:`shipper.agent.snapshot.snapshot`
  (files, channel, collectors, totals, health).
* **Stopped agent** (or a status file older than a few intervals): the truth is in the channel.
  :meth:`Channel.peek <shipper.channel.Channel.peek>` reads it read-only (SQLite WAL readers never
  block the writer) for the queued events, the age of the oldest and the tail offset records; each
  record's file is stat'ed now for its size, so "bytes behind" is what the next start will read.
  Collector figures come from the last status file, labelled as such.

Whether the agent runs is read from the kernel, not guessed: ``/proc/locks`` lists the holder of the
flock on ``<state dir>/lock`` (an unrelated process that got the same pid after a crash is not
mistaken for it, and no lock is taken, so an agent starting at that moment is never disturbed).
Without ``/proc/locks``, the pid written in the lock file is probed with signal 0.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from shipper.errors import StateError
from shipper.ops.document import AgentProcess, ChannelStatus, DeadLetters, SourceStatus, StatusDocument, TrackedFile
from shipper.ops.progress import counted

STATUS_NAME = "status.json"
STALE_INTERVALS = 5  # a status file older than this many intervals (and 10 s) is not trusted


# --------------------------------------------------------------------------- writing (the agent)


def write_status(state_dir: Path, doc: StatusDocument) -> None:
    """Replace ``status.json`` atomically; errors are ignored (status is advice, shipping goes on)."""
    final = Path(state_dir) / STATUS_NAME
    tmp = final.with_name(f"{STATUS_NAME}.tmp-{os.getpid()}")
    try:
        # private (0600), and never through a symlink planted at the temporary name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fd, 0o600)
            json.dump(doc.to_json(), fh, separators=(",", ":"))
        os.replace(tmp, final)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def touch_status(state_dir: Path) -> bool:
    """Mark an unchanged ``status.json`` fresh (its mtime is now); False if there is none to touch."""
    try:
        os.utime(Path(state_dir) / STATUS_NAME)
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- reading


def lock_holder(state_dir: Path) -> int | None:
    """The pid holding the state directory's lock, or None when no agent runs."""
    from shipper.channel.statedir import LOCK_NAME

    lock = Path(state_dir) / LOCK_NAME
    try:
        ino = os.stat(lock).st_ino
    except OSError:
        return None
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        lines = None
    if lines is not None:
        for line in lines:
            parts = line.split()
            if len(parts) < 6 or parts[1] == "->" or parts[1] != "FLOCK":
                continue
            try:
                if int(parts[5].rsplit(":", 1)[1]) == ino:
                    return int(parts[4])
            except (ValueError, IndexError):
                continue
        return None
    try:
        pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def read_status_file(state_dir: Path) -> StatusDocument | None:
    try:
        with open(Path(state_dir) / STATUS_NAME, encoding="utf-8") as fh:
            return StatusDocument.from_json(json.load(fh))
    except (OSError, ValueError, TypeError):
        return None


def status_file_age(state_dir: Path, doc: StatusDocument, now: float) -> float:
    """Seconds since the agent last vouched for ``doc``: it rewrites a changed document, and only
    touches an unchanged one (shipper.agent.snapshot.StatusWriter), so the newer of its
    ``written_at`` and the file's mtime counts."""
    try:
        mtime = os.stat(Path(state_dir) / STATUS_NAME).st_mtime
    except OSError:
        mtime = 0.0
    return now - max(float(doc.written_at or 0), mtime)


def gather(state_dir: str | os.PathLike) -> StatusDocument:
    """The status document for ``state_dir``: the live one, or one rebuilt from the channel."""
    state_dir = Path(state_dir).expanduser()
    if not state_dir.is_dir():
        raise StateError(f"no state directory at {state_dir}; check --state-dir")
    holder = lock_holder(state_dir)
    last = read_status_file(state_dir)
    now = time.time()
    if holder is not None and last is not None and last.pid == holder:
        interval = float(last.status_interval or 2.0)
        age = status_file_age(state_dir, last, now)
        if age <= max(10.0, STALE_INTERVALS * interval):
            last.agent = AgentProcess(running=True, pid=holder, source="status file", status_age=round(age, 1))
            return last
    doc = offline(state_dir)
    note = None
    if holder is not None:
        note = (f"agent pid {holder} holds the state directory but its status file is missing or stale; "
                "figures read from the channel")
    doc.agent = AgentProcess(running=holder is not None, pid=holder, source="channel", note=note)
    if last is not None:
        doc.collectors = last.collectors
        doc.collectors_as_of = last.written_at
        doc.totals = last.totals
        doc.last_state = last.state
    doc.groups = _owed_by_group(state_dir, last.groups if last is not None else None)
    return doc


def _owed_by_group(state_dir: Path, last_groups) -> list | None:
    """With routes, what each collector group still owes, read from the channel (read-only) when no
    live status file says it: a stopped agent's dead group keeps its events, and `status` shows
    them. Collectors, limits and dead counts come from the last status file. None without routes."""
    import sqlite3

    from shipper.channel.groups import group_of
    from shipper.channel.store import DB_NAME, connect_ro
    from shipper.ops.document import GroupStatus

    try:
        conn = connect_ro(state_dir / DB_NAME)
    except StateError:
        return None
    try:
        rows = conn.execute("SELECT p.grp, coalesce(sum(c.count), 0), coalesce(sum(c.nbytes), 0), min(c.put_at) "
                            "FROM group_pending p JOIN chunks c ON c.last_seq = p.last_seq GROUP BY p.grp").fetchall()
    except sqlite3.Error:  # no group table: the channel never had routes
        rows = []
    finally:
        conn.close()
    owed: dict[str, list] = {}
    for grp, events, nbytes, put_at in rows:  # lanes of one group add up
        o = owed.setdefault(group_of(grp), [0, 0, None])
        o[0] += events
        o[1] += nbytes
        o[2] = put_at if o[2] is None else min(o[2], put_at)
    if not owed and not last_groups:
        return None
    now = time.time()
    out = []
    for g in last_groups or ():
        e, b, put_at = owed.pop(g.name, (0, 0, None))
        out.append(GroupStatus(**{**g.__dict__, "queued_events": e, "queued_bytes": b, "leased_events": 0, "up": 0,
                                  "state": "stopped", "oldest_event_age": now - put_at if put_at else None}))
    for name, (e, b, put_at) in sorted(owed.items()):  # owed to a group the last run did not have
        out.append(GroupStatus(name=name, queued_events=e, queued_bytes=b, state="stopped",
                               oldest_event_age=now - put_at if put_at else None))
    return out


def offline(state_dir: Path) -> StatusDocument:
    """Channel depth and per-file offsets from the channel (read-only) and the files themselves."""
    from shipper.channel import Channel
    from shipper.tail.identity import KEY_PREFIX, Record

    peek = Channel.peek(state_dir)
    sources: dict[str, list[TrackedFile]] = {}
    for key, value in peek.offsets.items():
        name, sep, ident = key.partition("/") if key.startswith("src:") else ("src:default", "/", key)
        if not sep or not ident.startswith(KEY_PREFIX):
            continue
        try:
            rec = Record.decode(value)
        except ValueError:
            continue
        size, state = rec.size, "stopped"
        try:
            st = os.stat(rec.path)
            if (st.st_dev, st.st_ino) == (rec.dev, rec.ino):
                size = st.st_size
            else:
                state = "moved"  # the next start looks for it by identity next to its old name
        except OSError:
            state = "missing"
        sources.setdefault(name[4:], []).append(TrackedFile(
            path=rec.path, origin=rec.origin, identity=ident, generation=rec.gen,
            offset=rec.offset, size=size, behind=max(0, size - rec.offset), state=state))
    oldest = peek.oldest_put_at
    return StatusDocument(
        dead_letters=_dead_letters(state_dir),
        state="stopped", written_at=time.time(), state_dir=str(state_dir),
        channel=ChannelStatus(events=peek.events, bytes=peek.bytes,
                              oldest_event_age=max(0.0, time.time() - oldest) if oldest is not None else None),
        sources=[SourceStatus(name=n, files=sorted(fs, key=lambda f: f.path), bytes_behind=sum(f.behind for f in fs))
                 for n, fs in sorted(sources.items())],
    )


def _dead_letters(state_dir: Path) -> list[DeadLetters] | None:
    """Per group, the dead letters in the channel (read-only), or None when they cannot be read."""
    from shipper.channel.deadletter import list_dead

    try:
        batches = list_dead(state_dir)
    except StateError:
        return None
    out: dict[str | None, DeadLetters] = {}
    for b in batches:
        d = out.setdefault(b.group, DeadLetters(group=b.group))
        d.batches += 1
        d.events += b.count
        d.bytes += b.nbytes
        d.oldest_dead_at = b.dead_at if d.oldest_dead_at is None else min(d.oldest_dead_at, b.dead_at)
    return list(out.values())


# --------------------------------------------------------------------------- rendering


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(header), *(fmt(r) for r in rows)]


def render(doc: StatusDocument) -> str:
    now = time.time()
    agent = doc.agent or AgentProcess(running=False, pid=None, source="channel")
    out = []
    if agent.running:
        up = _age(now - doc.started_at) if doc.started_at else "?"
        age = agent.status_age if agent.status_age is not None else "?"
        out.append(f"agent: running (pid {agent.pid}, up {up}, status {age}s old)  state dir: {doc.state_dir}")
    else:
        out.append(f"agent: not running  state dir: {doc.state_dir}")
    if agent.note:
        out.append(f"note: {agent.note}")
    if doc.health and agent.running:
        out.append(f"health: {'ok' if doc.health.healthy else 'UNHEALTHY'} ({doc.health.reason})")
    out.append("")
    rows = [[src.name, f.path, f.identity, f.offset, f.size, f.behind, f.state] for src in doc.sources for f in src.files]
    if rows:
        out += _table(["SOURCE", "FILE", "IDENTITY", "OFFSET", "SIZE", "BEHIND", "STATE"], rows)
    else:
        out.append("no files tracked yet")
    for src in doc.sources:
        more = (src.files_total or 0) - len(src.files)
        if more > 0:
            states = ", ".join(f"{n} {s}" for s, n in sorted((src.files_by_state or {}).items()))
            out.append(f"{src.name}: {more} more files not listed ({src.files_total} in all: {states}); "
                       "the list shows the files behind first")
    behind = doc.bytes_behind
    out.append(f"bytes behind in total: {behind} ({_bytes(behind)})")
    for src in doc.sources:
        if src.rules_dropped or src.rules_time_unparsed:
            out.append(f"source {src.name}: {src.rules_dropped or 0} events dropped by its rules, "
                       f"{src.rules_time_unparsed or 0} with a time that did not parse")
    fds = doc.descriptors
    if fds and agent.running:
        line = f"open files: {fds.open} of {fds.budget}"
        if fds.waiting:
            line += f"; {fds.waiting} files waiting for a descriptor (read in turns)"
        out.append(line)
    out.append("")
    ch = doc.channel
    line = f"channel: {counted(ch.events, 'event')} ({_bytes(ch.bytes)}) queued"
    line += f", oldest {_age(ch.oldest_event_age)} old" if ch.events else ""
    if ch.leased_events:
        line += f", {ch.leased_events} in flight"
    if ch.put_blocked:
        line += f"; reading PAUSED ({ch.put_blocked})"
    out.append(line)
    out.append("")
    if doc.collectors:
        if doc.collectors_as_of:
            out.append(f"collectors as of {_age(now - doc.collectors_as_of)} ago (when the agent last wrote "
                       "its status):")
        rows = []
        for c in doc.collectors:
            last = _age(now - c.last_success) + " ago" if c.last_success else "never"
            rows.append([c.address, c.state, last, c.consecutive_failures,
                         f"{c.penalty_seconds:.1f}s" if c.penalty_seconds else "-",
                         (c.last_error or "-")[:60] if c.consecutive_failures else "-"])
        out += _table(["COLLECTOR", "STATE", "LAST SUCCESS", "FAILURES", "PENALTY", "LAST ERROR"], rows)
    if doc.groups:
        out.append("")
        rows = [[g.name, g.state, f"{g.up}/{len(g.collectors)}", g.queued_events, _bytes(g.queued_bytes),
                 _age(g.oldest_event_age) if g.queued_events else "-", g.leased_events, g.events_acked,
                 f"{g.max_events_per_second:g}/s" if g.max_events_per_second else "-", g.dead_events]
                for g in doc.groups]
        out += _table(["GROUP", "STATE", "UP", "QUEUED", "BYTES", "OLDEST", "IN FLIGHT", "DELIVERED", "LIMIT",
                       "DEAD"], rows)
    for d in doc.dead_letters or ():
        out.append(f"dead letters{f' of group {d.group}' if d.group else ''}: {counted(d.batches, 'batch', 'batches')}, "
                   f"{counted(d.events, 'event')} ({_bytes(d.bytes)}), oldest set aside "
                   f"{_age(now - d.oldest_dead_at) if d.oldest_dead_at else '-'} ago; see flume-ship channel "
                   "dead-letters")
    t = doc.totals
    if t:
        out.append("")
        out.append(f"totals: read {t.events_read}, put {t.events_put}, acknowledged "
                   f"{t.events_acked}, retries {t.retries}, failed attempts "
                   f"{t.send_failures}")
    return "\n".join(out) + "\n"
