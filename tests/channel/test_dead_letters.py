"""Scenarios for the dead letters at channel level: only the rejected part of a lease is set
aside (the rest leaves with the ack); a re-queue asked beside a running agent is carried out by
the agent's own channel, refused for a group it does not run, and withdrawn when not served."""

from __future__ import annotations

import pytest

from shipper.channel import Channel
from shipper.channel import deadletter as dl
from shipper.channel import deadrequests as dr
from tests.channel.test_groups import drain, open_groups


def test_only_the_given_event_ranges_of_a_lease_are_dead_lettered(tmp_path):
    ch = Channel.open(tmp_path, min_free_bytes=0, chunk_events=100)
    events = [b"e%02d" % i for i in range(25)]
    ch.put(events)
    lease = ch.take(10, 1 << 20)  # one chunk of 25: bigger than the batch
    assert lease.count == 25
    assert ch.dead_letter(lease, "rejected", ranges=[(10, 20)]) == "the dead letters"
    assert ch.stats().events == 0, "the accepted parts leave with the ack"
    ch.close()
    (batch, got), = dl.read_events(tmp_path, None)
    assert (batch.count, batch.group, got) == (10, None, events[10:20])


def test_a_secondary_gets_only_the_rejected_range_and_other_groups_keep_the_whole_chunk(tmp_path):
    ch, q = open_groups(tmp_path, names=("a", "b", "c"), chunk_events=100)
    events = [b"e%02d" % i for i in range(30)]
    ch.put(events, groups=[("a", "c")] * 30)
    a = q.view("a", secondary="b")
    lease = a.take(10, 1 << 20)
    assert a.dead_letter(lease, "rejected", ranges=[(0, 10), (20, 30)]) == "group b"
    assert q.stats()["a"].events == 0 and q.stats()["b"].events == 20
    assert drain(q.view("b")) == events[:10] + events[20:]
    assert drain(q.view("c")) == events, "group c still owes the original chunk"
    assert ch.stats().events == 0
    assert dl.list_dead(tmp_path) == []
    ch.close()


def test_ranges_outside_the_lease_are_refused_and_nothing_moves(tmp_path):
    ch = Channel.open(tmp_path, min_free_bytes=0)
    ch.put([b"x", b"y"])
    lease = ch.take(10, 1 << 20)
    with pytest.raises(ValueError):
        ch.dead_letter(lease, "rejected", ranges=[(1, 3)])
    ch.ack(lease)
    ch.close()
    assert dl.list_dead(tmp_path) == []


def dead_in_group(ch, q, group, body):
    ch.put([body], groups=[(group,)])
    view = q.view(group)
    view.dead_letter(view.take(10, 1 << 20), "rejected")


def test_a_requeue_asked_beside_the_agent_is_served_by_its_channel(tmp_path):
    ch, q = open_groups(tmp_path)  # "the agent": it holds the lock
    dead_in_group(ch, q, "a", b"bad")
    (dead,) = dl.list_dead(tmp_path)
    assert dr.ask_requeue(tmp_path, [dead.id], "b") == {dead.id: 1}
    assert dr.requests_left(tmp_path, [dead.id]) == ([dead.id], None)
    assert dr.serve_requests(ch, ["a", "b"], ["a"]) == (1, 1)
    assert dr.requests_left(tmp_path, [dead.id]) == ([], None)
    assert dl.list_dead(tmp_path) == []
    assert drain(q.view("a")) == [] and drain(q.view("b")) == [b"bad"]
    assert ch.stats().events == 0
    ch.close()


def test_a_requeue_naming_a_group_the_agent_does_not_run_is_refused_and_withdrawn(tmp_path):
    ch, q = open_groups(tmp_path)
    dead_in_group(ch, q, "a", b"bad")
    (dead,) = dl.list_dead(tmp_path)
    dr.ask_requeue(tmp_path, None, "nope")
    assert dr.serve_requests(ch, ["a", "b"], ["a"]) == (0, 0)
    left, error = dr.requests_left(tmp_path, [dead.id])
    assert left == [dead.id] and "no group named 'nope'" in error
    assert dr.withdraw(tmp_path, left) == [dead.id], "still a dead letter"
    assert dr.serve_requests(ch, ["a", "b"], ["a"]) == (0, 0)
    assert [d.id for d in dl.list_dead(tmp_path)] == [dead.id]
    ch.close()


def test_a_dead_letter_without_a_group_is_requeued_to_the_default_groups(tmp_path):
    ch = Channel.open(tmp_path, min_free_bytes=0)
    ch.put([b"old"])
    ch.dead_letter(ch.take(10, 1 << 20), "rejected")
    ch.close()
    ch, q = open_groups(tmp_path)
    dr.ask_requeue(tmp_path, None, None)
    assert dr.serve_requests(ch, ["a", "b"], ["b"]) == (1, 1)
    assert drain(q.view("a")) == [] and drain(q.view("b")) == [b"old"]
    ch.close()


def test_purge_beside_the_agent_and_a_request_for_a_purged_letter_is_dropped(tmp_path):
    ch, q = open_groups(tmp_path)
    dead_in_group(ch, q, "a", b"bad")
    (dead,) = dl.list_dead(tmp_path)
    dr.ask_requeue(tmp_path, None, None)
    assert dr.purge_beside(tmp_path, None) == (1, 1)
    assert dr.serve_requests(ch, ["a", "b"], ["a"]) == (0, 0)
    assert dr.requests_left(tmp_path, [dead.id]) == ([], None)
    assert ch.stats().events == 0
    assert [s.events for s in dl.summary(ch)] == []
    ch.close()


def test_the_summary_counts_dead_letters_per_group(tmp_path):
    ch, q = open_groups(tmp_path)
    dead_in_group(ch, q, "a", b"one")
    dead_in_group(ch, q, "a", b"three")
    dead_in_group(ch, q, "b", b"x")
    got = {s.group: (s.batches, s.events, s.bytes) for s in dl.summary(ch)}
    ch.close()
    assert got["a"][:2] == (2, 2) and got["b"][:2] == (1, 1) and got["a"][2] > got["b"][2]
