"""Routes: several named collector groups, and which of them each source's events go to.

Theory of operation
-------------------
Without ``[groups.NAME]`` tables the agent has one implicit group, ``[delivery]``, and nothing here
is used (the channel keeps one queue, as before). With them, each table is a group: its own
collectors, balance, batching, timeouts, compression and TLS, any key it does not set taken from
``[delivery]``. Each source chooses, like Flume's channel selectors:

* ``groups = ["a", "b"]``: every event goes to each listed group (replicating); unset, to every group;
* ``route = { header = "kind", mapping = { error = ["alerts"] }, default = ["main"] }``: event by
  event, the value of a header picks the group(s) (multiplexing); an unmapped or missing value
  goes to ``default``. The header may be a static one or one the source's ``extract`` rule made.

The choice is made when the source puts events into the channel: :class:`Router` gives one tuple
of group names per event, and the channel (:mod:`shipper.channel.groups`) stores the events once
and keeps one queue position per group. Each group runs its own sink workers on its own queue
(:class:`GroupedDelivery`), so a dead group never holds up a live one, and an event leaves the
channel only when every group it was routed to has acked it.

Chunks the channel holds from before routes were configured are owed to the group named
``default`` if there is one, else to the first group declared (``adopt_groups``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable, Sequence

from shipper.agent.config import Config, DeliverySection, SourceSection, named_table
from shipper.agent.runners import join_workers
from shipper.avroipc.flume_event import read_event

log = logging.getLogger("flume-ship.agent")

GROUPS_KEY = "groups"


# --------------------------------------------------------------------------- configuration


def build_groups(raw: dict, delivery: DeliverySection, sources: Sequence[SourceSection],
                 build_section: Callable[[dict, str], DeliverySection], bad) -> tuple:
    """The ``[groups.NAME]`` tables as ``((name, DeliverySection), ...)``, and the routes checked
    against them: every route names a group, every group is reachable from a source."""
    tables = raw.get(GROUPS_KEY, {})
    if not isinstance(tables, dict):
        bad(GROUPS_KEY, "must be tables: [groups.NAME] with collectors = [...]")
        return ()
    out = []
    for name, table in tables.items():
        prefix = f"{GROUPS_KEY}.{name}"
        if not named_table(GROUPS_KEY, name, table, "collectors", bad):
            continue
        own = build_section(dict(table), prefix)
        known = {f.name for f in dataclasses.fields(DeliverySection)}
        group = dataclasses.replace(delivery, **{k: getattr(own, k) for k in table if k in known})
        if "collectors" not in table:
            bad(f"{prefix}.collectors", "required: each group lists its own collectors")
        _check_group(group, prefix, bad)
        out.append((name, group))
    names = [n for n, _ in out]
    secondary_of = {n: g.secondary for n, g in out}
    for name, group in out:
        if group.secondary is not None and (group.secondary not in names or group.secondary == name):
            bad(f"{GROUPS_KEY}.{name}.secondary", f"must name another group (groups: {', '.join(names)})")
        elif group.secondary is not None and not group.max_rejects:
            bad(f"{GROUPS_KEY}.{name}.secondary", "has no effect without max_rejects: set max_rejects (the "
                "rejections that hand a batch over), or remove secondary")
        elif group.secondary is not None:
            chain = [name]
            while secondary_of.get(chain[-1]) in names and secondary_of[chain[-1]] not in chain:
                chain.append(secondary_of[chain[-1]])
            if secondary_of.get(chain[-1]) == name and min(chain) == name:  # a loop, reported once
                bad(f"{GROUPS_KEY}.{name}.secondary", f"{' -> '.join(chain + [name])} loops: a batch they all "
                    "reject would go round for ever and never reach the dead letters; end the chain at a "
                    "group without secondary")
    if delivery.secondary is not None and not tables:
        bad("delivery.secondary", "names a group, but there is no [groups.NAME] table (unset: the dead letters)")
    used: set[str] = set()
    for src in sources:
        where = f"sources.{src.name}"
        if not tables:
            if src.groups or src.route:
                bad(f"{where}.{'groups' if src.groups else 'route'}",
                    "names collector groups, but there is no [groups.NAME] table")
            continue
        if src.groups and src.route:
            bad(where, "set groups or route, not both")
            continue
        if src.route:
            try:
                rule = RouteRule.parse(src.route)
            except ValueError as exc:
                bad(f"{where}.route", str(exc))
                continue
            targets = rule.groups()
        else:
            targets = set(src.groups or names)
        for g in sorted(targets - set(names)):
            bad(f"{where}.{'route' if src.route else 'groups'}", f"no group named {g!r} (groups: "
                f"{', '.join(names) or 'none'})")
        used |= targets
    used |= {g.secondary for _, g in out if g.secondary}  # a secondary is reached through its primary
    for name in names:
        if tables and sources and name not in used:
            bad(f"{GROUPS_KEY}.{name}", "no source sends to this group: name it in a source's groups or route")
    return tuple(out)


def _check_group(d: DeliverySection, prefix: str, bad) -> None:
    from shipper.errors import ConfigError
    from shipper.transport import Address

    for text in d.collectors:
        try:
            Address.parse_collector(text)
        except ConfigError as exc:
            bad(f"{prefix}.collectors", str(exc))
    if len(set(d.collectors)) != len(d.collectors):
        bad(f"{prefix}.collectors", "a collector is listed twice")
    if d.compression_level > 9:
        bad(f"{prefix}.compression_level", "must be 0 to 9")


def adopt_groups(config: Config) -> tuple[str, ...]:
    names = [n for n, _ in config.groups]
    return ("default",) if "default" in names else tuple(names[:1])


# --------------------------------------------------------------------------- choosing groups


@dataclasses.dataclass(frozen=True)
class RouteRule:
    """A multiplexing rule: header -> value -> groups, with a default."""

    header: str
    mapping: dict[str, tuple[str, ...]]
    default: tuple[str, ...]

    @classmethod
    def parse(cls, table) -> "RouteRule":
        t = dict(table) if isinstance(table, tuple) else table
        if not isinstance(t, dict):
            raise ValueError("must be a table { header = \"...\", mapping = { value = [\"group\"] }, default = [...] }")
        unknown = set(t) - {"header", "mapping", "default"}
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r} (known: header, mapping, default)")
        header = t.get("header")
        if not isinstance(header, str) or not header:
            raise ValueError("header: required, the name of the header whose value chooses")
        mapping = t.get("mapping", {})
        mapping = dict(mapping) if isinstance(mapping, tuple) else mapping
        if not isinstance(mapping, dict):
            raise ValueError("mapping: must be a table { value = [\"group\", ...] }")
        if "default" not in t:
            raise ValueError("default: required, the group(s) for an event whose header is missing or unmapped")
        return cls(header, {str(k): _names(v, f"mapping.{k}") for k, v in mapping.items()},
                   _names(t["default"], "default"))

    def groups(self) -> set[str]:
        return {g for targets in (*self.mapping.values(), self.default) for g in targets}


def _names(value, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key}: must be a group name or a non-empty list of them")
    return tuple(dict.fromkeys(value))


class Router:
    """One source's choice: events -> one tuple of group names per event."""

    def __init__(self, source: SourceSection, group_names: Sequence[str]):
        self.rule = RouteRule.parse(source.route) if source.route else None
        self.static = tuple(source.groups or group_names)

    def runs(self, events: Sequence[bytes]) -> list[tuple[tuple[str, ...], int]]:
        """The same choice as runs of ``(groups, count)`` in event order (no per-event work
        without a rule)."""
        if self.rule is None:
            return [(self.static, len(events))]
        out: list[list] = []
        for targets in self(events):
            if out and out[-1][0] == targets:
                out[-1][1] += 1
            else:
                out.append([targets, 1])
        return [(t, n) for t, n in out]

    def __call__(self, events: Sequence[bytes]) -> list[tuple[str, ...]]:
        if self.rule is None:
            out = [self.static] * len(events)
        else:
            rule, out = self.rule, []
            for data in events:
                (headers, _body), _ = read_event(data)
                out.append(rule.mapping.get(headers.get(rule.header), rule.default))
        return out


def router_for(config: Config, source: SourceSection) -> "Router | None":
    return Router(source, [n for n, _ in config.groups]) if config.groups else None


def reload_routes(agent, new: Config, drain: float) -> None:
    """SIGHUP changed the groups (added, removed, changed, or routes turned on or off).

    The caller has stopped every source (each committed what it read). Here the old sink workers
    finish their in-flight batches, and those still running after ``drain`` are aborted (their
    leases go back to the channel), so no lease of the old queues outlives them; then the
    channel's group queues are reopened for the new names (a removed group's events stay in the
    channel, owed to it, and a warning says how many) and the new workers start."""
    from shipper.agent.runners import Delivery

    old_delivery = agent.delivery
    agent.notifier.watchdog()
    if not old_delivery.stop(drain):
        old_delivery.join(time.monotonic())  # abort: in-flight leases are nacked
    if new.groups:
        agent.delivery, _ = open_routes(new, agent.channel, agent.telemetry)
    else:
        agent.telemetry.keep_collectors(new.addresses())
        agent.delivery = Delivery.open(new, agent.channel, agent.telemetry)  # every stored chunk once
    agent.delivery.start()
    agent.progress_base = time.monotonic()
    log.info("reload: groups now %s", "; ".join(f"{n}: {','.join(g.collectors)}" for n, g in new.groups)
             or "none (one group: [delivery])")


def serve_requeues(agent) -> None:
    """Carry out ``flume-ship channel dead-letters requeue`` asked while this agent runs (a
    request row in the channel; see :mod:`shipper.channel.deadrequests`). Called at each status tick."""
    from shipper.channel.deadrequests import serve_requests
    from shipper.errors import ShipperError

    config = agent.config
    names = [n for n, _ in config.groups] if config.groups else None
    try:
        batches, events = serve_requests(agent.channel, names, adopt_groups(config) if names else ())
    except (ShipperError, ValueError) as exc:
        log.warning("cannot re-queue dead letters now: %s; asking again at the next status tick", exc)
        return
    if batches:
        log.info("re-queued %d dead-lettered batches (%d events), as flume-ship channel dead-letters requeue asked",
                 batches, events)


# --------------------------------------------------------------------------- delivery per group


def open_routes(config: Config, channel, telemetry):
    """Per-group queues on ``channel``, a GroupedDelivery on them and a Router per source name."""
    from shipper.agent.runners import Delivery
    from shipper.channel.groups import GroupQueues

    names = [n for n, _ in config.groups]
    queues = GroupQueues(channel, names, adopt_groups(config), lanes={n: config.group(n).delivery.sinks for n in names})
    for group, n in queues.orphans().items():
        log.warning("the channel holds %d events for group %r, which is not configured: they stay until the "
                    "group is configured again", n, group)
    telemetry.keep_collectors([a for n in names for a in config.group(n).addresses()])
    routers = {s.name: Router(s, names) for s in config.sources}
    return GroupedDelivery(config, queues, telemetry, Delivery), routers


class GroupedDelivery:
    """One :class:`~shipper.agent.runners.Delivery` per group, each on its own queue, sharing the
    stop flags, so the agent drives them as one."""

    def __init__(self, config: Config, queues, telemetry, delivery_cls):
        self.stopping = threading.Event()
        self.abort = threading.Event()
        self.exit_when_empty = threading.Event()
        self.config = config.delivery
        self.queues = queues
        flags = (self.stopping, self.abort, self.exit_when_empty)
        self.groups = {}
        for name, group in config.groups:
            lanes = queues.lane_views(name, group.secondary)  # one per sink worker
            self.groups[name] = delivery_cls(config.group(name), lanes[0], telemetry, flags=flags,
                                             name=f"sink-{name}", lanes=lanes if len(lanes) > 1 else None)

    @property
    def threads(self) -> list[threading.Thread]:
        return [t for d in self.groups.values() for t in d.threads]

    @property
    def workers(self) -> list:
        return [w for d in self.groups.values() for w in d.workers]

    def start(self) -> None:
        for d in self.groups.values():
            d.start()

    @property
    def alive(self) -> bool:
        return any(d.alive for d in self.groups.values())

    def stop(self, drain_timeout: float) -> bool:
        self.stopping.set()
        self.join(time.monotonic() + drain_timeout)
        return not self.alive

    def join(self, deadline: float, grace: float = 5.0, quiet: bool = False) -> None:
        """As :meth:`Delivery.join`, over every group's workers (the abort flag is shared)."""
        join_workers(self.threads, self.abort, deadline, grace, quiet)

    def error(self) -> BaseException | None:
        return next((d.error() for d in self.groups.values() if d.error() is not None), None)

    def collectors(self, telemetry_snapshot: dict) -> list:
        return [c for d in self.groups.values() for c in d.collectors(telemetry_snapshot)]

    def group_status(self, telemetry_snapshot: dict, dead=()) -> list[dict]:
        """Per group: its queue, its collectors' states, what it delivered, its rate limit and its
        dead letters (``dead``: shipper.channel.deadletter.summary) (status, /metrics, top)."""
        stats = self.queues.stats()
        dead_of = {d.group: d for d in dead}
        out = []
        for name, d in self.groups.items():
            s = stats[name]
            cols = d.collectors(telemetry_snapshot)
            up = sum(1 for c in cols if c.state == "up")
            limit = next((w.limit for w in d.workers if w.limit is not None), None)
            gone = dead_of.get(name)
            out.append({"name": name, "queued_events": s.events, "queued_bytes": s.bytes,
                        "leased_events": s.leased_events, "oldest_event_age": s.oldest_event_age,
                        "collectors": [c.address for c in cols], "up": up,
                        "state": "up" if up == len(cols) else "down" if up == 0 else "degraded",
                        "events_acked": sum(w.delivered_events for w in d.workers),
                        "max_events_per_second": d.config.max_events_per_second,
                        "max_bytes_per_second": d.config.max_bytes_per_second,
                        "rate_limited_seconds": round(limit.waited, 3) if limit is not None else 0.0,
                        "dead_batches": gone.batches if gone else 0, "dead_events": gone.events if gone else 0,
                        "dead_bytes": gone.bytes if gone else 0, "secondary": d.config.secondary})
        return out
