"""Scenarios for per-group queues in one channel: a dead group holds up nobody, acks per group."""

from __future__ import annotations

import sqlite3

import pytest

from shipper.channel import DB_NAME, Channel
from shipper.channel.groups import GroupQueues


def open_groups(path, names=("a", "b"), adopt=(), **kw):
    kw.setdefault("min_free_bytes", 0)
    ch = Channel.open(path, **kw)
    return ch, GroupQueues(ch, names, adopt)


def drain(view, n=1000):
    out = []
    while (lease := view.take(n, 1 << 20)) is not None:
        out += lease.events
        view.ack(lease)
    return out


def test_replicated_events_stay_until_every_group_acked(tmp_path):
    ch, q = open_groups(tmp_path, chunk_events=2)
    a, b = q.view("a"), q.view("b")
    events = [b"e%d" % i for i in range(5)]
    ch.put(events, groups=[("a", "b")] * 5)
    assert drain(a) == events
    assert ch.stats().events == 5, "b still owes them: nothing may be deleted"
    assert a.take(10, 1 << 20) is None
    assert drain(b) == events
    assert ch.stats().events == 0
    ch.close()


def test_a_dead_group_does_not_hold_up_a_live_one(tmp_path):
    ch, q = open_groups(tmp_path, chunk_events=1)
    a, b = q.view("a"), q.view("b")
    for i in range(4):
        ch.put([b"x%d" % i], groups=[("a", "b")])
        dead = b.take(1, 1 << 20)  # b takes but never acks (its collector is down)
        b.nack(dead)
        assert drain(a) == [b"x%d" % i]
    assert q.stats()["a"].events == 0 and q.stats()["b"].events == 4
    assert drain(b) == [b"x%d" % i for i in range(4)]  # in order once it comes back
    ch.close()


def test_routed_events_are_cut_into_chunks_per_route_and_keep_order(tmp_path):
    ch, q = open_groups(tmp_path)
    a, b = q.view("a"), q.view("b")
    events = [b"1", b"2", b"3", b"4", b"5"]
    ch.put(events, groups=[("a",), ("b",), ("b",), ("a", "b"), ("a",)])
    assert drain(a) == [b"1", b"4", b"5"]
    assert drain(b) == [b"2", b"3", b"4"]
    assert ch.stats().events == 0
    ch.close()


def test_per_group_queues_survive_a_restart(tmp_path):
    ch, q = open_groups(tmp_path)
    ch.put([b"1", b"2"], {"k": b"off"}, groups=[("a", "b")] * 2)
    drain(q.view("a"))
    ch.close()
    ch, q = open_groups(tmp_path)
    assert q.stats()["a"].events == 0 and q.stats()["b"].events == 2
    assert drain(q.view("b")) == [b"1", b"2"]
    assert ch.offsets() == {"k": b"off"}
    ch.close()


def test_events_put_without_groups_are_adopted_by_the_default_groups(tmp_path):
    with Channel.open(tmp_path, min_free_bytes=0) as ch:
        ch.put([b"old"])
    ch, q = open_groups(tmp_path, adopt=("a", "b"))
    assert drain(q.view("a")) == [b"old"] and drain(q.view("b")) == [b"old"]
    assert ch.stats().events == 0
    ch.close()


def test_a_group_dropped_from_the_config_keeps_what_it_owes(tmp_path):
    ch, q = open_groups(tmp_path)
    ch.put([b"1"], groups=[("b",)])
    ch.close()
    ch, q = open_groups(tmp_path, names=("a",))
    assert q.orphans() == {"b": 1}
    assert ch.stats().events == 1
    ch.close()


def test_puts_must_name_known_groups(tmp_path):
    ch, q = open_groups(tmp_path)
    with pytest.raises(ValueError):
        ch.put([b"1"], groups=[("nope",)])
    with pytest.raises(ValueError):
        ch.put([b"1"])
    assert ch.stats().events == 0
    ch.close()


def test_group_rows_are_in_the_same_transaction_as_the_chunks(tmp_path):
    ch, q = open_groups(tmp_path, chunk_events=2)
    ch.put([b"%d" % i for i in range(5)], groups=[("a", "b")] * 5)
    ch.close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    chunks = {k for (k,) in conn.execute("SELECT last_seq FROM chunks")}
    owed = {(g, k) for g, k in conn.execute("SELECT grp, last_seq FROM group_pending")}
    conn.close()
    assert owed == {(g, k) for g in "ab" for k in chunks}


def test_a_batch_a_group_gives_up_on_goes_to_its_secondary_or_the_dead_letters(tmp_path):
    from shipper.channel.deadletter import list_dead, read_events

    ch, q = open_groups(tmp_path, names=("a", "b", "c"))
    ch.put([b"p1", b"p2"], groups=[("a",), ("c",)])
    a, c = q.view("a", secondary="b"), q.view("c")
    assert a.dead_letter(a.take(10, 1 << 20), "rejected") == "group b"
    assert q.stats()["a"].events == 0 and drain(q.view("b")) == [b"p1"]
    assert c.dead_letter(c.take(10, 1 << 20), "rejected 3 times") == "the dead letters"
    assert ch.stats().events == 0
    ch.close()
    (dead,) = list_dead(tmp_path)
    assert (dead.group, dead.count, dead.reason) == ("c", 1, "rejected 3 times")
    assert [events for _, events in read_events(tmp_path, None)] == [[b"p2"]]


def test_requeue_puts_dead_letters_back_at_the_end_of_their_group(tmp_path):
    from shipper.channel.deadletter import list_dead, requeue

    ch, q = open_groups(tmp_path)
    ch.put([b"bad"], groups=[("b",)])
    b = q.view("b")
    b.dead_letter(b.take(10, 1 << 20), "x")
    ch.put([b"later"], groups=[("b",)])
    ch.close()
    with Channel.open(tmp_path, min_free_bytes=0) as plain:
        assert requeue(plain, None) == (1, 1)
    assert list_dead(tmp_path) == []
    ch, q = open_groups(tmp_path)
    assert drain(q.view("a")) == [] and drain(q.view("b")) == [b"later", b"bad"]
    ch.close()
