"""The status document of a running agent: built from its parts, written, and its health.

:func:`snapshot` gathers files (from each tail source), the channel's stats, each collector's state
and the totals into the document that ``flume-ship status``, ``/metrics`` and ``/health`` show;
:class:`StatusWriter` writes it to the state directory every ``status_interval`` seconds (see
:mod:`shipper.ops.status` for the reading side). :func:`health` is the stall verdict: progress
counts from the start or the last reload.

An idle agent does not rewrite an unchanged document: :class:`StatusWriter` compares each new
snapshot with the last one written, leaving out what drifts on its own (``written_at``, the age of
the oldest event, the disk's free bytes, the channel file's size, the time puts waited). While
they are equal it only sets the file's mtime (one ``utime``), which readers take as its age
(:func:`shipper.ops.status.gather`), and it rewrites the whole file at least every
:data:`REFRESH` seconds. After a change it writes one more document once things stand still, so
that two documents in a row show the same counters and ``flume-ship top`` shows rates of zero
rather than the last busy ones. The snapshot itself is still taken every tick (cheap while idle:
each source reuses its file summary until something in it changes); the JSON, the write and the
rename, most of an idle agent's CPU with 1,000 files, are what an unchanged tick skips.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

from shipper.ops.document import (
    ChannelStatus, DeadLetters, Descriptors, GroupStatus, Health, SourceStatus, StatusDocument, Totals, TrackedFile,
)
from shipper.channel.deadletter import summary as dead_letter_summary
from shipper.ops.telemetry import stall_verdict

log = logging.getLogger("flume-ship.agent")

STATUS_FILES = 200  # files listed per source in status.json (behind first); the others are counted
REFRESH = 60.0  # an unchanged status document is still rewritten this often


def status_line(agent) -> str:
    """The one-line status systemd shows."""
    snap = agent.telemetry.snapshot()
    queued = agent.channel.stats().events if agent.channel is not None else 0
    return f"{snap['events_acked']} events acknowledged, {queued} queued"


def _steady(doc: StatusDocument) -> StatusDocument:
    """``doc`` without the fields that change with time alone: equal values mean nothing happened."""
    ch = doc.channel
    return dataclasses.replace(doc, written_at=0.0, channel=dataclasses.replace(
        ch, oldest_event_age=None, put_wait_seconds=None, disk_free_bytes=None, file_bytes=None))


class StatusWriter:
    """Writes the status file every tick it changed; an unchanged one is only marked fresh (the
    module docstring)."""

    def __init__(self) -> None:
        self._last: StatusDocument | None = None  # _steady() of the last document written
        self._settled = False  # the last document written repeats the one before it
        self._written = -1e18  # monotonic time of the last whole write
        self.rewrites = 0
        self.touches = 0

    def tick(self, agent) -> None:
        from shipper.ops.status import touch_status, write_status

        try:
            snap = snapshot(agent)
        except Exception as exc:  # status is advice; never let it stop shipping
            log.debug("status snapshot failed: %s", exc)
            return
        check_overlaps(agent)
        steady = _steady(snap)
        now = time.monotonic()
        same = steady == self._last
        state_dir = agent.config.state_path()
        if same and self._settled and now - self._written < REFRESH and touch_status(state_dir):
            self.touches += 1
            return
        write_status(state_dir, snap)
        self.rewrites += 1
        self._settled, self._last, self._written = same, steady, now
        agent.notifier.status(status_line(agent))


def check_overlaps(agent) -> None:
    """Warn once per file tailed by two sources (its lines are shipped twice)."""
    running = dict(agent.sources)
    if len(running) < 2:
        return
    owners: dict[str, str] = {}
    for name, runner in sorted(running.items()):
        for identity in runner.source.identities():
            other = owners.setdefault(identity, name)
            if other != name and identity not in agent.warned_overlap:
                agent.warned_overlap.add(identity)
                path = next((f.path for f in runner.source.status() if f.identity == identity), identity)
                log.warning("%s is tailed by sources %s and %s: its lines are shipped twice; narrow one "
                            "of the globs", path, other, name)


def health(agent, stats=None) -> tuple[bool, str]:
    """The stall verdict (shipper.ops.telemetry.stall_verdict); progress counts from start or last reload."""
    stats = stats or agent.channel.stats()
    since = time.monotonic() - agent.progress_base
    last_ack = agent.telemetry.last_ack
    if last_ack:
        since = min(since, time.time() - last_ack)
    return stall_verdict(queued=stats.events, oldest_age=stats.oldest_event_age, since_progress=since,
                         stall_timeout=agent.config.agent.stall_timeout)


def snapshot(agent) -> StatusDocument:
    """Everything `flume-ship status`, /metrics and /health show, as one StatusDocument."""
    from shipper import __version__

    stats = agent.channel.stats()
    tele = agent.telemetry.snapshot()
    healthy, why = health(agent, stats)
    sources = []
    running = dict(agent.sources)  # one atomic copy: a reload may be changing the dict
    for name in sorted(set(running) | set(agent.retired_counts)):
        runner = running.get(name)
        counts = dict(agent.retired_counts.get(name, {}))
        if runner is not None:
            for k, v in runner.counts().items():
                counts[k] = counts.get(k, 0) + v
        files = []
        summary = runner.source.summary(STATUS_FILES) if runner is not None else None
        if summary is not None:
            files = [TrackedFile(path=f.path, origin=f.origin, identity=f.identity, generation=f.generation,
                                 offset=f.offset, size=f.size, behind=f.behind, state=f.state)
                     for f in summary.rows]
        fds = runner.source.descriptor_status() if runner is not None else None
        sources.append(SourceStatus(name=name, active=runner is not None,
                                    paths=list(runner.config.paths) if runner else [],
                                    bytes_behind=summary.bytes_behind if summary else 0, files=files,
                                    files_total=summary.total if summary else 0,
                                    files_by_state=summary.by_state if summary else {},
                                    open_files=fds.open if fds else 0, waiting_files=fds.waiting if fds else 0,
                                    **counts))
    collectors = agent.delivery.collectors(tele) if agent.delivery else []
    dead = dead_letter_summary(agent.channel)
    groups = [GroupStatus(**g) for g in agent.delivery.group_status(tele, dead)] \
        if hasattr(agent.delivery, "group_status") else None
    return StatusDocument(
        version=__version__, pid=os.getpid(), state=agent.state, written_at=time.time(),
        started_at=agent.started, config_file=agent.config.file, reloads=agent.reloads,
        status_interval=agent.config.agent.status_interval,
        state_dir=str(agent.config.state_path()),
        health=Health(healthy=healthy, reason=why, stall_timeout=agent.config.agent.stall_timeout),
        channel=ChannelStatus(events=stats.events, bytes=stats.bytes, leased_events=stats.leased_events,
                              oldest_event_age=stats.oldest_event_age, capacity_bytes=stats.capacity_bytes,
                              put_blocked=stats.put_blocked, put_wait_seconds=stats.put_wait_seconds,
                              disk_free_bytes=stats.disk_free_bytes, file_bytes=stats.file_bytes,
                              quarantined=stats.quarantined),
        sources=sources,
        descriptors=Descriptors(budget=agent.descriptors.limit if agent.descriptors else 0,
                                open=sum(s.open_files for s in sources),
                                waiting=sum(s.waiting_files for s in sources)),
        collectors=collectors,
        groups=groups,
        dead_letters=[DeadLetters(group=d.group, batches=d.batches, events=d.events, bytes=d.bytes,
                                  oldest_dead_at=d.oldest) for d in dead],
        totals=Totals(events_read=sum(s.events_read or 0 for s in sources),
                      events_put=sum(s.events_put or 0 for s in sources),
                      events_acked=tele["events_acked"], bytes_acked=tele["bytes_acked"],
                      batches_acked=tele["batches_acked"], retries=tele["retries"],
                      events_sent=tele["events_sent"], send_failures=tele["send_failures"],
                      last_ack=tele["last_ack"]),
    )
