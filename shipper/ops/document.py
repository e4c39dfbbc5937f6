"""The status document: one typed value that the agent writes and ``status``, ``/metrics`` and
``/health`` read, whether the agent runs or not.

A running agent builds it (:func:`shipper.agent.snapshot.snapshot`) and writes it as JSON to
``<state dir>/status.json``; ``flume-ship status`` reads that file back (:meth:`StatusDocument.from_json`)
or, for a stopped agent, builds a smaller one from the channel (:func:`shipper.ops.status.offline`).
Fields only a running agent knows default to ``None`` and are left out of the JSON when unset, so a
stopped agent's document says nothing it does not know. Unknown keys in a status file (written by
another version) are ignored; missing ones take their defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

LIVE = {"live": True}  # metadata: a field only a running agent fills in; omitted from JSON when None


@dataclass
class TrackedFile:
    """One tailed file: where reading stands and how far behind it is."""

    path: str
    origin: str
    identity: str
    generation: Any
    offset: int
    size: int
    behind: int
    state: str


@dataclass
class SourceStatus:
    name: str
    files: list[TrackedFile] = field(default_factory=list)
    bytes_behind: int = 0
    active: bool | None = field(default=None, metadata=LIVE)
    paths: list[str] | None = field(default=None, metadata=LIVE)
    files_total: int | None = field(default=None, metadata=LIVE)  # files tracked; ``files`` lists at most 200
    files_by_state: dict[str, int] | None = field(default=None, metadata=LIVE)
    open_files: int | None = field(default=None, metadata=LIVE)
    waiting_files: int | None = field(default=None, metadata=LIVE)
    events_read: int | None = field(default=None, metadata=LIVE)
    events_put: int | None = field(default=None, metadata=LIVE)
    bytes_put: int | None = field(default=None, metadata=LIVE)
    rotations: int | None = field(default=None, metadata=LIVE)
    truncations: int | None = field(default=None, metadata=LIVE)
    descriptor_waits: int | None = field(default=None, metadata=LIVE)
    incomplete_scans: int | None = field(default=None, metadata=LIVE)
    rules_dropped: int | None = field(default=None, metadata=LIVE)  # events dropped by include/exclude
    rules_joined: int | None = field(default=None, metadata=LIVE)  # lines joined into multiline events
    rules_cut_events: int | None = field(default=None, metadata=LIVE)
    rules_time_unparsed: int | None = field(default=None, metadata=LIVE)  # own time unparsed: read time kept
    rules_extract_misses: int | None = field(default=None, metadata=LIVE)
    rules_replaced: int | None = field(default=None, metadata=LIVE)  # undecodable bytes replaced (encodings)


@dataclass
class ChannelStatus:
    events: int = 0
    bytes: int = 0
    oldest_event_age: float | None = None
    leased_events: int | None = field(default=None, metadata=LIVE)
    capacity_bytes: int | None = field(default=None, metadata=LIVE)
    put_blocked: str | None = field(default=None, metadata=LIVE)
    put_wait_seconds: float | None = field(default=None, metadata=LIVE)
    disk_free_bytes: int | None = field(default=None, metadata=LIVE)
    file_bytes: int | None = field(default=None, metadata=LIVE)
    quarantined: Any = field(default=None, metadata=LIVE)


@dataclass
class CollectorStatus:
    address: str
    state: str
    last_success: float | None = None
    consecutive_failures: int = 0
    penalty_seconds: float = 0.0
    failures: int = 0
    events_ok: int = 0
    batches_ok: int = 0
    last_error: str | None = None
    last_latency: float | None = None
    latency_buckets: list[int] | None = None
    latency_count: int = 0
    latency_sum: float = 0.0


@dataclass
class GroupStatus:
    """One collector group (routes): its own queue in the channel and its collectors."""

    name: str
    queued_events: int = 0
    queued_bytes: int = 0
    leased_events: int = 0
    oldest_event_age: float | None = None
    collectors: list[str] = field(default_factory=list)
    up: int = 0  # collectors answering now
    state: str = "up"  # up (every collector answers), degraded (some), down (none)
    events_acked: int = 0  # delivered by this group's sinks since the agent started (rates: top)
    max_events_per_second: float = 0.0  # the group's rate limit (0: none)
    max_bytes_per_second: int = 0
    rate_limited_seconds: float = 0.0  # total time its sinks waited for the rate limit
    dead_batches: int = 0  # dead letters this group set aside (the whole table: DeadLetters)
    dead_events: int = 0
    dead_bytes: int = 0
    secondary: str | None = None


@dataclass
class DeadLetters:
    """The dead letters of one group (``group`` None: set aside by an agent without routes)."""

    group: str | None
    batches: int = 0
    events: int = 0
    bytes: int = 0
    oldest_dead_at: float | None = None  # wall clock when the oldest was set aside


@dataclass
class Health:
    healthy: bool
    reason: str
    stall_timeout: float


@dataclass
class Descriptors:
    budget: int = 0
    open: int = 0
    waiting: int = 0


@dataclass
class Totals:
    events_read: int = 0
    events_put: int = 0
    events_acked: int = 0
    bytes_acked: int = 0
    batches_acked: int = 0
    retries: int = 0
    events_sent: int = 0
    send_failures: int = 0
    last_ack: float | None = None


@dataclass
class AgentProcess:
    """Added by the reader: whether an agent runs, and where the figures came from."""

    running: bool
    pid: int | None
    source: str  # "status file" or "channel"
    status_age: float | None = field(default=None, metadata=LIVE)
    note: str | None = None


@dataclass
class StatusDocument:
    state: str  # starting, running, stopping, stopped
    written_at: float
    state_dir: str
    channel: ChannelStatus
    sources: list[SourceStatus] = field(default_factory=list)
    collectors: list[CollectorStatus] = field(default_factory=list)
    groups: list[GroupStatus] | None = field(default=None, metadata=LIVE)  # with routes only
    dead_letters: list[DeadLetters] | None = field(default=None, metadata=LIVE)  # per group; None: not read
    totals: Totals | None = None  # None: not known (a stopped agent without a status file)
    version: str | None = field(default=None, metadata=LIVE)
    pid: int | None = field(default=None, metadata=LIVE)
    started_at: float | None = field(default=None, metadata=LIVE)
    config_file: str | None = field(default=None, metadata=LIVE)
    reloads: int | None = field(default=None, metadata=LIVE)
    status_interval: float | None = field(default=None, metadata=LIVE)
    health: Health | None = field(default=None, metadata=LIVE)
    descriptors: Descriptors | None = field(default=None, metadata=LIVE)
    agent: AgentProcess | None = field(default=None, metadata=LIVE)
    collectors_as_of: float | None = field(default=None, metadata=LIVE)  # collectors from an older status file
    last_state: str | None = field(default=None, metadata=LIVE)

    @property
    def bytes_behind(self) -> int:
        return sum(s.bytes_behind for s in self.sources)

    def to_json(self) -> dict:
        return _to_json(self)

    @classmethod
    def from_json(cls, doc: dict) -> "StatusDocument":
        return _from_json(cls, doc)


_NESTED = {
    (StatusDocument, "channel"): ChannelStatus, (StatusDocument, "sources"): [SourceStatus],
    (StatusDocument, "collectors"): [CollectorStatus],
    (StatusDocument, "groups"): [GroupStatus], (StatusDocument, "totals"): Totals,
    (StatusDocument, "dead_letters"): [DeadLetters],
    (StatusDocument, "health"): Health, (StatusDocument, "descriptors"): Descriptors,
    (StatusDocument, "agent"): AgentProcess, (SourceStatus, "files"): [TrackedFile],
}


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if v is None and f.metadata.get("live"):
                continue
            out[f.name] = {} if v is None and f.name == "totals" else _to_json(v)
        return out
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    return value


def _from_json(cls, doc: Any):
    if not isinstance(doc, dict):
        raise ValueError(f"{cls.__name__}: expected an object")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in doc:
            continue
        v = doc[f.name]
        kind = _NESTED.get((cls, f.name))
        if isinstance(kind, list) and isinstance(v, list):
            v = [_from_json(kind[0], item) for item in v]
        elif kind is not None and v is not None:
            v = _from_json(kind, v) if v != {} or kind is not Totals else None
        kwargs[f.name] = v
    return cls(**kwargs)
