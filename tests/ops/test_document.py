"""The status document: one typed value, written by a running agent and read back unchanged."""

from __future__ import annotations

import json

from shipper.ops.document import (
    AgentProcess, ChannelStatus, CollectorStatus, Descriptors, Health, SourceStatus, StatusDocument, Totals,
    TrackedFile,
)


def live_document() -> StatusDocument:
    f = TrackedFile(path="/var/log/a.log", origin="/var/log/a.log", identity="file:1:2", generation="g1",
                    offset=10, size=30, behind=20, state="open")
    return StatusDocument(
        state="running", written_at=1000.5, state_dir="/tmp/s", version="0.1.0", pid=42, started_at=900.0,
        config_file=None, reloads=1, status_interval=2.0,
        health=Health(healthy=True, reason="ok", stall_timeout=300.0),
        channel=ChannelStatus(events=5, bytes=50, oldest_event_age=1.5, leased_events=2, capacity_bytes=1 << 30,
                              put_blocked=None, put_wait_seconds=0.0, disk_free_bytes=1, file_bytes=2,
                              quarantined=0),
        sources=[SourceStatus(name="default", files=[f], bytes_behind=20, active=True, paths=["/var/log/*.log"],
                              open_files=1, waiting_files=0, events_read=7, events_put=7, bytes_put=70,
                              rotations=0, truncations=0, descriptor_waits=0, incomplete_scans=0)],
        descriptors=Descriptors(budget=100, open=1, waiting=0),
        collectors=[CollectorStatus(address="127.0.0.1:4141", state="up", last_success=999.0, events_ok=7,
                                    latency_buckets=[1, 2], latency_count=3, latency_sum=0.5)],
        totals=Totals(events_read=7, events_put=7, events_acked=2, last_ack=999.0),
    )


def test_a_status_file_reads_back_as_the_document_that_was_written():
    doc = live_document()
    text = json.dumps(doc.to_json())
    assert StatusDocument.from_json(json.loads(text)) == doc


def test_a_stopped_agents_document_says_only_what_it_knows():
    doc = StatusDocument(state="stopped", written_at=1.0, state_dir="/s",
                         channel=ChannelStatus(events=0, bytes=0, oldest_event_age=None),
                         sources=[SourceStatus(name="default", bytes_behind=0)])
    doc.agent = AgentProcess(running=False, pid=None, source="channel")
    out = doc.to_json()
    assert set(out) == {"state", "written_at", "state_dir", "channel", "sources", "collectors", "totals", "agent"}
    assert out["channel"] == {"events": 0, "bytes": 0, "oldest_event_age": None}
    assert out["sources"] == [{"name": "default", "files": [], "bytes_behind": 0}]
    assert out["totals"] == {} and out["collectors"] == []
    assert StatusDocument.from_json(out).totals is None


def test_unknown_keys_from_another_version_are_ignored():
    out = live_document().to_json()
    out["from_the_future"] = 1
    out["channel"]["also_new"] = True
    assert StatusDocument.from_json(out) == live_document()
