"""Scenarios for lanes: a group's parallel queues, one file family each, order kept per family."""

from __future__ import annotations

import sqlite3

from shipper.channel import DB_NAME, Channel
from shipper.channel.groups import IMPLICIT, GroupQueues, group_of, lane_names, lane_of
from tests.channel.test_groups import drain


def open_lanes(path, lanes=4, names=(IMPLICIT,), adopt=(IMPLICIT,), **kw):
    kw.setdefault("min_free_bytes", 0)
    kw.setdefault("chunk_events", 3)
    ch = Channel.open(path, **kw)
    return ch, GroupQueues(ch, names, adopt, lanes={n: lanes for n in names})


def put_files(ch, q, files: dict[str, list[bytes]], group=IMPLICIT):
    """One put holding every file's lines, file after file, with their families."""
    events, runs = [], []
    for family, lines in files.items():
        events += lines
        runs.append((family, len(lines)))
    ch.put(events, runs=q.route([((group,), len(events))], runs))


def families_for(lanes: int, count: int) -> list[str]:
    """``count`` family names that fall into ``count`` different lanes (count <= lanes)."""
    out, seen, i = [], set(), 0
    while len(out) < count:
        name = f"/var/log/app{i}.log"
        if lane_of(name, lanes) not in seen:
            seen.add(lane_of(name, lanes))
            out.append(name)
        i += 1
    return out


def test_lane_names_and_their_group():
    assert lane_names("a", 1) == ("a",)
    assert lane_names("a", 3) == ("a#0/3", "a#1/3", "a#2/3")
    assert {group_of(n) for n in lane_names("web.x-1", 4)} == {"web.x-1"}
    assert group_of("#2/4") == IMPLICIT and group_of("a") == "a"
    # Stable across processes (a restart must find each family in the lane it left it in).
    import zlib

    assert lane_of("/var/log/app.log", 4) == zlib.crc32(b"/var/log/app.log") % 4
    assert lane_of("/var/log/app.log", 1) == 0


def test_each_family_takes_one_lane_in_order_and_lanes_are_independent(tmp_path):
    ch, q = open_lanes(tmp_path, lanes=4)
    fams = families_for(4, 4)
    views = q.lane_views(IMPLICIT)
    for round_ in range(3):  # interleaved puts, several files in each
        put_files(ch, q, {f: [b"%s %d.%d" % (f.encode(), round_, i) for i in range(5)] for f in fams})
    # Lane 2's collector is down: it takes and gives back; the others go on regardless.
    stuck = views[lane_of(fams[0], 4)]
    held = stuck.take(100, 1 << 20)
    got = {}
    for v in views:
        if v is not stuck:
            got[v.name] = drain(v)
    stuck.nack(held)
    got[stuck.name] = drain(stuck)
    for f in fams:
        lane = lane_names(IMPLICIT, 4)[lane_of(f, 4)]
        assert got[lane] == [b"%s %d.%d" % (f.encode(), r, i) for r in range(3) for i in range(5)]
    assert ch.stats().events == 0
    ch.close()


def test_a_lane_takes_only_its_own_chunks_while_another_lane_holds_a_lease(tmp_path):
    ch, q = open_lanes(tmp_path, lanes=2, chunk_events=1)
    a, b = families_for(2, 2)
    put_files(ch, q, {a: [b"a0", b"a1"], b: [b"b0"]})
    va, vb = (q.lane_views(IMPLICIT)[lane_of(f, 2)] for f in (a, b))
    first = va.take(1, 1 << 20)
    assert first.events == [b"a0"]
    assert drain(vb) == [b"b0"]
    assert va.take(1, 1 << 20).events == [b"a1"]  # the next of its own, never b's
    ch.close()


def test_a_changed_lane_count_drains_the_backlog_through_lane_0_before_the_others(tmp_path):
    ch, q = open_lanes(tmp_path, lanes=2)
    fams = families_for(4, 4)
    put_files(ch, q, {f: [b"%s old%d" % (f.encode(), i) for i in range(4)] for f in fams})
    ch.close()
    # Restarted with 4 lanes: families now hash elsewhere; old lines must still go first.
    ch, q = open_lanes(tmp_path, lanes=4)
    put_files(ch, q, {f: [b"%s new%d" % (f.encode(), i) for i in range(4)] for f in fams})
    views = q.lane_views(IMPLICIT)
    for v in views[1:]:
        assert v.take(100, 1 << 20) is None, f"{v.name} may not overtake the old backlog"
        assert not v.wait_for_events(0.01)
    lane0 = drain(views[0])
    assert lane0[:16] == [b"%s old%d" % (f.encode(), i) for f in fams for i in range(4)]
    got = {v.name: drain(v) for v in views[1:]}
    got[views[0].name] = lane0[16:]
    for f in fams:
        assert got[views[lane_of(f, 4)].name] == [b"%s new%d" % (f.encode(), i) for i in range(4)]
    ch.close()


def test_the_barrier_survives_a_crash_during_the_drain(tmp_path):
    ch, q = open_lanes(tmp_path, lanes=2)
    fams = families_for(3, 3)
    put_files(ch, q, {f: [b"old"] for f in fams})
    ch.close()
    ch, q = open_lanes(tmp_path, lanes=3)  # rekeyed to lane 0, barrier stored
    put_files(ch, q, {f: [b"new"] for f in fams})
    ch._conn.close()  # no clean close: the process "dies" here
    ch._conn = None
    ch._closed = True
    ch._lock.release()
    ch, q = open_lanes(tmp_path, lanes=3)  # same layout: nothing to rekey, but the barrier holds
    views = q.lane_views(IMPLICIT)
    assert all(v.take(10, 1 << 20) is None for v in views[1:])
    first = drain(views[0])
    assert first[:3] == [b"old"] * 3
    assert len(first) + sum(len(drain(v)) for v in views[1:]) == 6
    assert ch.stats().events == 0
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("SELECT count(*) FROM lane_barrier").fetchone()[0] == 0, "cleared once drained"
    db.close()
    ch.close()


def test_chunks_written_without_lanes_are_adopted_by_lane_0_first(tmp_path):
    ch = Channel.open(tmp_path, min_free_bytes=0, chunk_events=2)
    ch.put([b"plain%d" % i for i in range(5)])
    ch.close()
    ch, q = open_lanes(tmp_path, lanes=2)
    fam = next(f for f in families_for(2, 2) if lane_of(f, 2) == 1)
    put_files(ch, q, {fam: [b"laned"]})
    views = q.lane_views(IMPLICIT)
    assert views[1].take(10, 1 << 20) is None
    assert drain(views[0]) == [b"plain%d" % i for i in range(5)]
    assert drain(views[1]) == [b"laned"]
    ch.close()


def test_no_routes_lanes_deliver_chunks_owed_to_old_groups_once(tmp_path):
    ch = Channel.open(tmp_path, min_free_bytes=0)
    q = GroupQueues(ch, ["a", "b"])
    ch.put([b"x", b"y"], groups=[("a", "b"), ("b",)])
    ch.close()
    ch, q = open_lanes(tmp_path, lanes=2)  # routes removed, two sinks: every chunk once
    assert sorted(drain(q.lane_views(IMPLICIT)[0])) == [b"x", b"y"]
    assert ch.stats().events == 0
    ch.close()


def test_routes_adopt_what_lanes_without_routes_left(tmp_path):
    ch, q = open_lanes(tmp_path, lanes=3)
    fams = families_for(3, 3)
    put_files(ch, q, {f: [f.encode()] for f in fams})
    ch.close()
    ch = Channel.open(tmp_path, min_free_bytes=0)
    q = GroupQueues(ch, ["main"], ["main"], lanes={"main": 2})
    assert q.orphans() == {}
    assert sorted(drain(q.view("main#0/2"))) == sorted(f.encode() for f in fams)
    ch.close()


def test_stats_of_a_laned_group_sum_its_lanes(tmp_path):
    ch, q = open_lanes(tmp_path, names=("a", "b"), adopt=("a",), lanes=2)
    fams = families_for(2, 2)
    events = [b"1", b"2", b"3"]
    ch.put(events, runs=q.route([(("a", "b"), 3)], [(fams[0], 2), (fams[1], 1)]))
    stats = q.stats()
    assert stats["a"].events == 3 and stats["b"].events == 3
    assert sum(stats[n].events for n in lane_names("a", 2)) == 3
    ch.close()


def test_a_batch_given_up_on_goes_to_the_secondary_groups_first_lane(tmp_path):
    ch, q = open_lanes(tmp_path, names=("a", "s"), adopt=("a",), lanes=2)
    fam = next(f for f in families_for(2, 2) if lane_of(f, 2) == 1)
    ch.put([b"p"], runs=q.route([(("a",), 1)], [(fam, 1)]))
    view = q.view(lane_names("a", 2)[1], secondary="s")
    lease = view.take(10, 1 << 20)
    assert view.dead_letter(lease, "rejected") == "group s"
    assert drain(q.view("s#0/2")) == [b"p"]
    assert ch.stats().events == 0
    ch.close()


def test_a_removed_laned_group_is_reported_by_its_name_and_kept(tmp_path):
    ch, q = open_lanes(tmp_path, names=("a", "b"), adopt=("a",), lanes=2)
    fams = families_for(2, 2)
    ch.put([b"1", b"2"], runs=q.route([(("a", "b"), 2)], [(fams[0], 1), (fams[1], 1)]))
    ch.close()
    ch = Channel.open(tmp_path, min_free_bytes=0)
    q = GroupQueues(ch, ["a"], ["a"], lanes={"a": 2})
    assert q.orphans() == {"b": 2}
    assert sum(len(drain(v)) for v in q.lane_views("a")) == 2
    assert ch.stats().events == 2, "b still owes them: kept, not dropped"
    ch.close()


def test_routing_runs_cross_group_runs_with_family_runs(tmp_path):
    ch, q = open_lanes(tmp_path, names=("a", "b"), adopt=("a",), lanes=2)
    f0, f1 = (next(f for f in families_for(2, 2) if lane_of(f, 2) == i) for i in (0, 1))
    runs = q.route([(("a",), 3), (("a", "b"), 2)], [(f0, 2), (f1, 2), (f0, 1)])
    assert runs == [(("a#0/2",), 2), (("a#1/2",), 1), (("a#1/2", "b#1/2"), 1), (("a#0/2", "b#0/2"), 1)]
    events = [b"1", b"2", b"3", b"4", b"5"]
    ch.put(events, runs=runs)
    assert drain(q.view("a#0/2")) == [b"1", b"2", b"5"] and drain(q.view("a#1/2")) == [b"3", b"4"]
    assert drain(q.view("b#1/2")) == [b"4"] and drain(q.view("b#0/2")) == [b"5"]
    assert ch.stats().events == 0
    ch.close()


def test_a_lane_acks_several_leases_in_one_transaction(tmp_path):
    ch, q = open_lanes(tmp_path, lanes=2, chunk_events=2)
    fam = families_for(2, 1)[0]
    put_files(ch, q, {fam: [b"l %d" % i for i in range(6)]})
    view = q.lane_views(IMPLICIT)[lane_of(fam, 2)]
    a, b, c = (view.take(2, 1 << 20) for _ in range(3))
    view.ack_all([a, b])
    view.nack(c)
    assert drain(view) == [b"l 4", b"l 5"]
    assert ch.stats().events == 0
    ch.close()


def test_a_lane_takes_nothing_of_a_put_still_waiting_for_its_fdatasync(tmp_path, monkeypatch):
    # The put commits, then syncs the WAL without the channel's lock; a lane's take (which reads
    # through the write connection) must not lease its chunks before the sync returned.
    import threading

    from tests.channel.test_channel_basics import hold_put_syncs

    entered, release = hold_put_syncs(monkeypatch, "putter")
    ch, q = open_lanes(tmp_path, lanes=1)
    try:
        family = families_for(1, 1)[0]
        lane = lane_names(IMPLICIT, 1)[0]
        put_files(ch, q, {family: [b"x", b"y", b"z"]})  # synced (from this thread: not held)
        putter = threading.Thread(target=put_files, args=(ch, q, {family: [b"a", b"b", b"c"]}), name="putter")
        putter.start()
        try:
            assert entered.wait(30), "the put never synced the WAL after its commit"
            first = q.take(lane, 10, 1 << 20)
            assert first.events == [b"x", b"y", b"z"]  # not the next put's: committed, not yet durable
            q.ack(lane, first)
        finally:
            release.set()
            putter.join(30)
        assert q.take(lane, 10, 1 << 20).events == [b"a", b"b", b"c"]
    finally:
        ch.close()
