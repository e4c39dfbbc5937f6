"""The HTTP endpoint of a running agent: Prometheus ``/metrics`` and a ``/health`` check.

``/metrics`` is rendered by prometheus-client from one :meth:`Agent.snapshot` taken at scrape time
(a custom collector), so nothing is counted twice and a scrape costs one channel ``stats()`` plus a
walk over the tracked files. Names (all prefixed ``flume_ship_``):

=============================================  =========  ==========================================
events_read_total{source}                      counter    lines cut into events by the tail source
events_put_total{source}                       counter    events committed into the channel
events_sent_total{collector}                   counter    events a collector answered OK to
events_acked_total                             counter    events acknowledged and removed from the channel
send_failures_total{collector}                 counter    failed attempts (refused, timeout, FAILED...)
retries_total                                  counter    batch retries (failover or backoff)
bytes_behind{source}                           gauge      bytes in the files not yet read
events_dropped_total{source}                   counter    events dropped by include_lines / exclude_lines
lines_joined_total{source}                     counter    lines joined into a multiline event
event_time_unparsed_total{source}              counter    events whose own time did not parse (read time kept)
open_files{source}, files_waiting{source}      gauge      tailed files holding / waiting for a descriptor
open_files_budget                              gauge      most tailed files open at once (all sources)
channel_events, channel_bytes                  gauge      queued in the channel (in flight included)
channel_oldest_event_age_seconds               gauge      age of the oldest queued event (0 when empty)
channel_put_blocked                            gauge      1 while reading is paused (full or low disk)
collector_up{collector}                        gauge      1 unless the collector's last attempt failed
collector_consecutive_failures{collector}      gauge
collector_penalty_seconds{collector}           gauge      time left in the penalty box
collector_latency_seconds{collector}           histogram  reply time of successful appendBatch calls
last_ack_timestamp_seconds                     gauge      wall clock of the last acknowledgement
healthy                                        gauge      1 unless stalled (see /health)
=============================================  =========  ==========================================

``/health`` answers ``200`` with a JSON body while the agent delivers (or has nothing to deliver)
and ``503`` when it is stalled: events queued and nothing acknowledged for ``stall_timeout``
(``shipper.ops.telemetry.stall_verdict``). It turns back to 200 with the next acknowledgement.

The server is the standard library's threading HTTP server on a daemon thread; it answers only
GET on those two paths (404 otherwise) and never logs per request.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry

from shipper.errors import ConfigError
from shipper.ops.document import StatusDocument, Totals
from shipper.ops.telemetry import LATENCY_BUCKETS

log = logging.getLogger("flume-ship.metrics")

P = "flume_ship_"


class SnapshotExporter:
    """Exports the agent's status document at each scrape (prometheus-client calls ``collect``)."""

    def __init__(self, agent):
        self.agent = agent

    def collect(self):
        yield from families(self.agent.snapshot())


def families(doc: StatusDocument):
    def counter(name, doc, labels=()):
        return CounterMetricFamily(P + name, doc, labels=list(labels))

    def gauge(name, doc, labels=()):
        return GaugeMetricFamily(P + name, doc, labels=list(labels))

    read = counter("events_read", "Lines cut into events by the tail source.", ["source"])
    put = counter("events_put", "Events committed into the channel.", ["source"])
    behind = gauge("bytes_behind", "Bytes in the tailed files not yet read.", ["source"])
    dropped = counter("events_dropped", "Events dropped by the source's include/exclude rules.", ["source"])
    joined = counter("lines_joined", "Lines joined into a multiline event.", ["source"])
    unparsed = counter("event_time_unparsed", "Events whose own time did not parse (read time kept).", ["source"])
    open_files = gauge("open_files", "Tailed files holding a descriptor.", ["source"])
    waiting = gauge("files_waiting", "Tailed files waiting for a descriptor (read in turns).", ["source"])
    for s in doc.sources:
        read.add_metric([s.name], s.events_read or 0)
        put.add_metric([s.name], s.events_put or 0)
        behind.add_metric([s.name], s.bytes_behind)
        dropped.add_metric([s.name], s.rules_dropped or 0)
        joined.add_metric([s.name], s.rules_joined or 0)
        unparsed.add_metric([s.name], s.rules_time_unparsed or 0)
        open_files.add_metric([s.name], s.open_files or 0)
        waiting.add_metric([s.name], s.waiting_files or 0)
    yield from (read, put, behind, dropped, joined, unparsed, open_files, waiting)
    budget = gauge("open_files_budget", "Most tailed files open at once, all sources together.")
    budget.add_metric([], doc.descriptors.budget if doc.descriptors else 0)
    yield budget

    t = doc.totals or Totals()
    acked = counter("events_acked", "Events acknowledged by a collector and removed from the channel.")
    acked.add_metric([], t.events_acked)
    acked_bytes = counter("bytes_acked", "Event bytes acknowledged and removed from the channel.")
    acked_bytes.add_metric([], t.bytes_acked)
    retries = counter("retries", "Batch retries (failover to another collector, or after a backoff).")
    retries.add_metric([], t.retries)
    yield from (acked, acked_bytes, retries)

    ch = doc.channel
    for name, text, value in (
        ("channel_events", "Events queued in the channel (in flight included).", ch.events),
        ("channel_bytes", "Event bytes queued in the channel.", ch.bytes),
        ("channel_oldest_event_age_seconds", "Age of the oldest queued event (0 when empty).",
         ch.oldest_event_age or 0.0),
        ("channel_put_blocked", "1 while reading is paused: channel full or disk low.", 1 if ch.put_blocked else 0),
        ("channel_capacity_bytes", "Channel capacity.", ch.capacity_bytes or 0),
    ):
        g = gauge(name, text)
        g.add_metric([], value)
        yield g

    sent = counter("events_sent", "Events a collector answered OK to.", ["collector"])
    failed = counter("send_failures", "Failed delivery attempts.", ["collector"])
    up = gauge("collector_up", "1 unless the collector's last attempt failed.", ["collector"])
    fails = gauge("collector_consecutive_failures", "Failed attempts in a row.", ["collector"])
    penalty = gauge("collector_penalty_seconds", "Time left in the penalty box.", ["collector"])
    latency = HistogramMetricFamily(P + "collector_latency_seconds", "Reply time of successful appendBatch calls.",
                                    labels=["collector"])
    for c in doc.collectors:
        a = [c.address]
        sent.add_metric(a, c.events_ok)
        failed.add_metric(a, c.failures)
        up.add_metric(a, 0 if c.consecutive_failures else 1)
        fails.add_metric(a, c.consecutive_failures)
        penalty.add_metric(a, c.penalty_seconds)
        counts = c.latency_buckets or [0] * len(LATENCY_BUCKETS)
        buckets = [(repr(b), n) for b, n in zip(LATENCY_BUCKETS, counts)] + [("+Inf", c.latency_count)]
        latency.add_metric(a, buckets, c.latency_sum)
    yield from (sent, failed, up, fails, penalty, latency)

    def by_group(make, specs, rows, label):
        """One family per (name, help, value of a row), one sample per row, labelled ``group``."""
        for name, text, value in specs:
            family = make(name, text, ["group"])
            for row in rows:
                family.add_metric([label(row)], value(row))
            yield family

    if doc.groups:  # routes: each collector group's own queue in the channel
        yield from by_group(gauge, (
            ("group_queued_events", "Events this group still owes (in flight included).", lambda g: g.queued_events),
            ("group_queued_bytes", "Event bytes this group still owes.", lambda g: g.queued_bytes),
            ("group_oldest_event_age_seconds", "Age of the oldest event this group owes (0 when none).",
             lambda g: g.oldest_event_age or 0.0),
            ("group_collectors_up", "Collectors of this group answering now.", lambda g: g.up),
            ("group_rate_limit_events_per_second", "The group's max_events_per_second (0: none).",
             lambda g: g.max_events_per_second),
        ), doc.groups, lambda g: g.name)
        yield from by_group(counter, (
            ("group_events_acked", "Events this group's collectors acknowledged.", lambda g: g.events_acked),
            ("group_rate_limited_seconds", "Time this group's sinks waited for its rate limit.",
             lambda g: g.rate_limited_seconds),
        ), doc.groups, lambda g: g.name)

    if doc.dead_letters is not None:  # per group ("" without routes); none: the families stay empty
        yield from by_group(gauge, (
            ("dead_letter_batches", "Batches set aside in the dead letters (flume-ship channel dead-letters).",
             lambda d: d.batches),
            ("dead_letter_events", "Events in the dead letters.", lambda d: d.events),
            ("dead_letter_bytes", "Event bytes in the dead letters.", lambda d: d.bytes),
            ("dead_letter_oldest_age_seconds", "Seconds since the oldest dead letter was set aside.",
             lambda d: max(0.0, doc.written_at - d.oldest_dead_at) if d.oldest_dead_at else 0.0),
        ), doc.dead_letters, lambda d: d.group or "")

    last = gauge("last_ack_timestamp_seconds", "Wall clock of the last acknowledged batch (0: none yet).")
    last.add_metric([], t.last_ack or 0)
    healthy = gauge("healthy", "1 unless events are queued and nothing was acknowledged for stall_timeout.")
    healthy.add_metric([], 1 if doc.health and doc.health.healthy else 0)
    yield from (last, healthy)


class _Handler(BaseHTTPRequestHandler):
    server_version = "flume-ship"

    def do_GET(self):  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                body, ctype, code = generate_latest(self.server.registry), CONTENT_TYPE_LATEST, 200
            elif path == "/health":
                doc, healthy = self.server.health()
                body, ctype, code = (json.dumps(doc) + "\n").encode(), "application/json", 200 if healthy else 503
            else:
                body, ctype, code = b"not found: try /metrics or /health\n", "text/plain", 404
        except Exception as exc:  # a scrape must never kill the agent
            log.debug("metrics request failed: %s", exc)
            body, ctype, code = f"error: {exc}\n".encode(), "text/plain", 500
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # no line per request
        pass


def _agent_health(agent):
    snap = agent.snapshot()
    h = snap.health
    doc = {"healthy": h.healthy, "reason": h.reason, "queued": snap.channel.events,
           "oldest_event_age": snap.channel.oldest_event_age, "last_ack": snap.totals.last_ack,
           "state": snap.state}
    return doc, h.healthy


class CollectStatsCollector:
    """``collect``'s counters (``shipper.collector.limits.CollectorStats``) at each scrape:

    =============================================  =========  ==========================================
    collect_connections_total                      counter    connections admitted
    collect_connections_open                       gauge      connections open now
    collect_calls_total                            counter    calls written and answered OK
    collect_events_total, collect_bytes_total      counter    events and body bytes written
    collect_rejects_total{reason}                  counter    refusals: connections, not-allowed, threads,
                                                              descriptors, memory, inflate, idle-timeout,
                                                              frame-timeout, tls-handshake-timeout, tls,
                                                              protocol, send-timeout, write-failed, and
                                                              the refused calls' reasons (body, headers...)
    collect_memory_used_bytes, _budget_bytes       gauge      the shared memory budget (charged bytes)
    collect_workers                                gauge      with --workers N: workers running (the
                                                              counters above are then their sums)
    =============================================  =========  ==========================================
    """

    def __init__(self, stats):
        self.stats = stats

    def collect(self):
        snap = self.stats.snapshot()
        for name, doc in (("connections_total", "Connections admitted."), ("calls_total", "Calls written and "
                          "answered OK."), ("events_total", "Events written."), ("bytes_total", "Event body "
                          "bytes written.")):
            c = CounterMetricFamily(P + "collect_" + name.removesuffix("_total"), doc)
            c.add_metric([], snap[name])
            yield c
        g = GaugeMetricFamily(P + "collect_connections_open", "Connections open now.")
        g.add_metric([], snap["connections_open"])
        yield g
        r = CounterMetricFamily(P + "collect_rejects", "Connections and calls refused, by reason.", labels=["reason"])
        for reason, n in sorted(snap["rejects"].items()):
            r.add_metric([reason], n)
        yield r
        for name, key in (("collect_memory_used_bytes", "memory_used"), ("collect_memory_budget_bytes", "memory_budget")):
            g = GaugeMetricFamily(P + name, "The shared memory budget for bytes in flight (charged bytes).")
            g.add_metric([], snap[key])
            yield g
        if "workers" in snap:  # collect --workers N: the sums of the workers' counters, and how many run
            g = GaugeMetricFamily(P + "collect_workers", "Worker processes running (collect --workers).")
            g.add_metric([], snap["workers"])
            yield g


class MetricsServer:
    def __init__(self, agent, listen: str, *, collector=None, health=None):
        from shipper.transport import Address

        address = Address.parse(listen)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector if collector is not None else SnapshotExporter(agent))
        try:
            self.httpd = ThreadingHTTPServer((address.host, address.port), _Handler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on --metrics-listen {listen}: {exc.strerror or exc}") from exc
        self.httpd.daemon_threads = True
        self.httpd.agent = agent
        self.httpd.health = health if health is not None else (lambda: _agent_health(agent))
        self.httpd.registry = registry
        host, port = self.httpd.server_address[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def collect_metrics_server(stats, listen: str) -> MetricsServer:
    """``collect --metrics-listen``: its counters on /metrics; /health is 200 while it serves."""

    def health():
        snap = stats.snapshot()
        return {"healthy": True, "connections_open": snap["connections_open"],
                "memory_used": snap["memory_used"], "memory_budget": snap["memory_budget"]}, True

    return MetricsServer(None, listen, collector=CollectStatsCollector(stats), health=health)
