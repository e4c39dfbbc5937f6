"""``flume-ship top``: a live view of a running agent, like ``vector top``.

Each frame is rendered from two status documents (``shipper.ops.status.gather``, the same one
``status`` shows): the latest and the one before it, so every rate is a difference over the time
between the two documents' ``written_at``. Per collector: state, events/s, latency, failures,
last error; per collector group (routes): state, collectors up, events/s and its limit, queue
depth, lag, dead letters; per file: bytes/s read, bytes behind, state. The agent rewrites its status file every
``status_interval`` (2 s by default); a frame drawn between two rewrites keeps the previous rates.
Pure functions of the documents: the CLI module redraws, tests compare text.
"""

from __future__ import annotations

import time

from shipper.ops.document import StatusDocument
from shipper.ops.progress import counted, human_bytes

MAX_FILES = 20  # the files most behind; the rest are counted


def _rate(now: float | None, before: float | None, dt: float) -> str:
    if now is None or before is None or dt <= 0:
        return "-"
    return f"{max(0.0, (now - before) / dt):.0f}"


def frame(cur: StatusDocument, prev: StatusDocument | None, width: int = 120) -> str:
    """One screen of text."""
    dt = cur.written_at - prev.written_at if prev is not None else 0.0
    agent = cur.agent
    head = (f"flume-ship top  {time.strftime('%H:%M:%S')}  "
            + (f"agent pid {agent.pid} {cur.state}" if agent and agent.running else "agent not running")
            + f"  state dir {cur.state_dir}")
    t, pt = cur.totals, prev.totals if prev is not None else None
    lines = [head[:width]]
    if t is not None:
        ev = _rate(t.events_acked, pt.events_acked if pt else None, dt)
        by = _rate(t.bytes_acked, pt.bytes_acked if pt else None, dt)
        by = human_bytes(float(by)) + "/s" if by != "-" else "-"
        lines.append(f"shipped {counted(t.events_acked, 'event')} ({ev} events/s, {by}); retries {t.retries}; queued "
                     f"{counted(cur.channel.events, 'event')} ({human_bytes(cur.channel.bytes)}); files behind by "
                     f"{human_bytes(cur.bytes_behind)}")
    if cur.health is not None:
        lines.append(f"health: {'ok' if cur.health.healthy else 'STALLED'} ({cur.health.reason})")
    lines.append("")
    lines.append(f"{'COLLECTOR':32} {'STATE':9} {'EVENTS/S':>9} {'LATENCY':>8} {'FAILURES':>8}  LAST ERROR")
    before = {c.address: c for c in (prev.collectors if prev is not None else [])}
    for c in cur.collectors:
        p = before.get(c.address)
        lat = f"{c.last_latency * 1000:.0f}ms" if c.last_latency is not None else "-"
        err = (c.last_error or "")[:max(0, width - 72)] if c.consecutive_failures else ""
        lines.append(f"{c.address[:32]:32} {c.state:9} {_rate(c.events_ok, p.events_ok if p else None, dt):>9} "
                     f"{lat:>8} {c.consecutive_failures:>8}  {err}")  # in a row, as in status
    if cur.groups:
        lines.append("")
        lines.extend(_groups(cur, prev, dt))
    dead = [d for d in cur.dead_letters or () if d.batches and not (cur.groups and d.group)]
    for d in dead:  # dead letters of no running group (without routes: all of them)
        lines.append(f"dead letters{f' of group {d.group}' if d.group else ''}: {counted(d.events, 'event')} "
                     f"({counted(d.batches, 'batch', 'batches')}); see flume-ship channel dead-letters")
    lines.append("")
    lines.append(f"{'SOURCE':10} {'FILE':56} {'READ B/S':>9} {'BEHIND':>10}  STATE")
    old = {(s.name, f.identity): f for s in (prev.sources if prev is not None else []) for f in s.files}
    rows = [(s.name, f) for s in cur.sources for f in s.files]
    rows.sort(key=lambda r: r[1].behind, reverse=True)
    for name, f in rows[:MAX_FILES]:
        p = old.get((name, f.identity))
        path = f.path if len(f.path) <= 56 else "..." + f.path[-53:]
        lines.append(f"{name[:10]:10} {path:56} {_rate(f.offset, p.offset if p else None, dt):>9} "
                     f"{human_bytes(f.behind):>10}  {f.state}")
    total = sum(s.files_total or len(s.files) for s in cur.sources)
    if total > min(len(rows), MAX_FILES):
        lines.append(f"... {total - min(len(rows), MAX_FILES)} more files (flume-ship status --json lists them)")
    return "\n".join(line[:width] for line in lines) + "\n"


def _groups(cur: StatusDocument, prev: StatusDocument | None, dt: float) -> list[str]:
    """Per collector group (routes): state, collectors up, events/s against its limit, queue depth
    and lag (age of its oldest owed event), dead letters."""
    out = [f"{'GROUP':16} {'STATE':9} {'UP':>5} {'EVENTS/S':>9} {'LIMIT':>8} {'QUEUED':>9} {'LAG':>7} "
           f"{'DEAD':>7}  COLLECTORS"]
    before = {g.name: g for g in (prev.groups or [] if prev is not None else [])}
    for g in cur.groups or ():
        p = before.get(g.name)
        limit = f"{g.max_events_per_second:g}" if g.max_events_per_second else "-"
        lag = f"{g.oldest_event_age:.0f}s" if g.queued_events and g.oldest_event_age is not None else "-"
        out.append(f"{g.name[:16]:16} {g.state:9} {f'{g.up}/{len(g.collectors)}':>5} "
                   f"{_rate(g.events_acked, p.events_acked if p else None, dt):>9} {limit:>8} "
                   f"{g.queued_events:>9} {lag:>7} {g.dead_events:>7}  {', '.join(g.collectors)}")
    return out
