"""The put stage: the reader cuts on while batches are packed and committed, in order, bounded,
and a pack's or a put's error reaches the reader's thread with nothing lost or stored ahead."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from shipper.errors import ChannelIOError, StateError
from shipper.tail.putstage import PutStage
from tests.ops import common

from .helpers import bodies, drain, expected, lines, make_source, open_channel

GUARD = 60.0  # a failure guard for waits on other threads, never a measured time


def wait_until(cond, what: str) -> None:
    common.wait_until(cond, what, timeout=GUARD, interval=0.01)


class ScriptedChannel:
    """The real channel, with packs counted and commits that can be held or made to fail."""

    def __init__(self, channel, fail_puts: list | None = None) -> None:
        self.channel = channel
        self.packs = 0
        self.commits = 0
        self.release = threading.Event()
        self.release.set()
        self.fail_puts = list(fail_puts or [])  # exceptions raised by the next puts, in turn

    def offsets(self):
        return self.channel.offsets()

    def pack(self, events, **kw):
        self.packs += 1
        return self.channel.pack(events, **kw)

    def put_packed(self, packed, offsets=None, timeout=None):
        if self.fail_puts:
            raise self.fail_puts.pop(0)
        self.release.wait(GUARD)
        ok = self.channel.put_packed(packed, offsets, timeout=timeout)
        self.commits += ok
        return ok


def log_and_channel(tmp_path, data: bytes):
    """A file holding ``data`` and a fresh channel."""
    log = tmp_path / "app.log"
    log.write_bytes(data)
    return log, open_channel(tmp_path / "state")


def committed_offset(channel, log) -> int:
    """The committed offset record of ``log`` (0 if none)."""
    from shipper.tail.identity import Record

    for value in channel.offsets().values():
        rec = Record.decode(value)
        if rec.path == str(log):
            return rec.offset
    return 0


def test_the_reader_cuts_and_packs_the_next_batches_while_a_commit_is_held_and_stops_at_the_bound(tmp_path):
    log, ch = log_and_channel(tmp_path, lines("p", 0, 20_000, width=40))
    try:
        scripted = ScriptedChannel(ch)
        scripted.release.clear()  # the first commit waits
        source = make_source(scripted, log, batch_max_events=500)
        done = []
        t = threading.Thread(target=lambda: done.append(source.run_once()))
        t.start()
        # A serial put would hold the reader inside the first commit: no second pack, ever.
        wait_until(lambda: scripted.packs >= 3, "three batches packed while the first commit is held")
        time.sleep(0.3)  # give a reader that ignored the bound time to run ahead (it must not)
        assert scripted.commits == 0 and ch.stats().events == 0
        # Two batches handed over and one more queued by the blocked submit, one more being cut.
        assert source.counters["events"] <= 4 * 500
        assert committed_offset(ch, log) == 0
        scripted.release.set()
        t.join(GUARD)
        assert done == [True]
        assert bodies(drain(ch)) == expected("p", 0, 20_000, width=40)
        assert committed_offset(ch, log) == log.stat().st_size
    finally:
        ch.close()


def test_a_corrupt_channel_raised_in_the_commit_thread_reaches_the_reader_and_nothing_is_stored_ahead(tmp_path):
    log, ch = log_and_channel(tmp_path, lines("c", 0, 6_000, width=20))
    try:
        # The third commit fails as a corrupt database does (StateError: exit code 5 in the agent).
        scripted = ScriptedChannel(ch)
        source = make_source(scripted, log, batch_max_events=1000)
        real_put = scripted.put_packed

        def put_packed(packed, offsets=None, timeout=None):
            if scripted.commits == 2:
                raise StateError("channel database is corrupt (scripted)")
            return real_put(packed, offsets, timeout)

        scripted.put_packed = put_packed
        with pytest.raises(StateError, match="scripted"):
            source.run_once()
        stored = bodies(drain(ch))
        assert stored == expected("c", 0, 2000, width=20)  # the two batches committed, no more
        # The offset names exactly the lines stored: the next run reads the rest, once each.
        assert committed_offset(ch, log) == len(lines("c", 0, 2000, width=20))
        assert make_source(ch, log).run_once()
        assert bodies(drain(ch)) == expected("c", 2000, 6_000, width=20)
    finally:
        ch.close()


def test_a_corrupt_channel_in_run_stops_the_source_with_the_same_error(tmp_path):
    log, ch = log_and_channel(tmp_path, lines("r", 0, 3_000))
    try:
        scripted = ScriptedChannel(ch, fail_puts=[StateError("corrupt (scripted)")] * 10)
        source = make_source(scripted, log, batch_max_events=1000)
        with pytest.raises(StateError, match="scripted"):
            source.run(threading.Event())
        assert ch.stats().events == 0 and committed_offset(ch, log) == 0
    finally:
        ch.close()


def test_disk_full_in_the_commit_thread_is_logged_once_retried_and_loses_nothing(tmp_path, caplog):
    log, ch = log_and_channel(tmp_path, lines("d", 0, 5_000))
    try:
        full = ChannelIOError("channel put failed: the disk is full; nothing committed was lost, retry later")
        scripted = ScriptedChannel(ch, fail_puts=[full, full])
        source = make_source(scripted, log, batch_max_events=1000)
        with caplog.at_level(logging.INFO, logger="flume-ship.tail"):
            assert source.run_once()
        assert bodies(drain(ch)) == expected("d", 0, 5_000)
        assert source.counters["put_errors"] == 2
        msgs = [r.getMessage() for r in caplog.records]
        assert sum("channel write failed" in m and "retrying, nothing is lost" in m for m in msgs) == 1
        assert "tail: the channel accepts writes again" in msgs
    finally:
        ch.close()


def stop_a_source_held_by_a_full_channel(tmp_path, caplog, prefix: str, wrap=lambda ch: ch, then=None):
    """4,000 lines into a channel with room for 1,000; the source is stopped while its puts wait
    for room (``then(the source's channel)`` runs right after the stop). Returns the channel,
    the source and the shutdown warnings it logged."""
    from shipper.channel import Channel

    log = tmp_path / "app.log"
    log.write_bytes(lines(prefix, 0, 4_000))
    ch = Channel.open(tmp_path / "state", min_free_bytes=0, capacity_events=1_000)
    source = make_source(wrap(ch), log, batch_max_events=1000, put_timeout=0.1)
    stop = threading.Event()
    t = threading.Thread(target=source.run, args=(stop,))
    with caplog.at_level(logging.WARNING, logger="flume-ship.tail"):
        t.start()
        wait_until(lambda: ch.stats().put_blocked == "full", "the channel full, puts blocked")
        stop.set()
        source.wakeup()
        if then is not None:
            then(source.channel)
        t.join(GUARD)
    assert not t.is_alive()
    warned = [r.getMessage() for r in caplog.records if "not committed at shutdown" in r.getMessage()]
    return ch, source, warned


def read_all_again(tmp_path, prefix: str) -> None:
    """A new source over the reopened channel stores every line exactly once, in order."""
    ch = open_channel(tmp_path / "state")
    try:
        assert make_source(ch, tmp_path / "app.log").run_once()
        assert bodies(drain(ch)) == expected(prefix, 0, 4_000)
    finally:
        ch.close()


def test_stopping_while_the_channel_is_full_counts_every_uncommitted_event_and_reads_them_again(tmp_path, caplog):
    ch, source, warned = stop_a_source_held_by_a_full_channel(tmp_path, caplog, "f")
    ch.close()
    read = source.counters["events"]
    assert warned == [f"tail: {read - 1000} events not committed at shutdown; they will be read again"]
    read_all_again(tmp_path, "f")


class CountedChannel:
    """The real channel, with its put calls counted."""

    def __init__(self, channel) -> None:
        self.channel = channel
        self.puts = 0
        self.puts_at_close = 0

    def put_packed(self, packed, offsets=None, timeout=None):
        self.puts += 1
        return self.channel.put_packed(packed, offsets, timeout=timeout)

    def close(self) -> None:
        self.channel.close()
        self.puts_at_close = self.puts

    def __getattr__(self, name):
        return getattr(self.channel, name)


def test_a_channel_closed_under_a_stopping_source_ends_its_puts_at_once_and_the_lines_are_read_again(tmp_path, caplog):
    # The agent closes the channel after its sources' stop; a source still putting then (the
    # channel full, its stop not done in time) finds every put refused at once, for good.
    _, source, warned = stop_a_source_held_by_a_full_channel(
        tmp_path, caplog, "z", wrap=CountedChannel, then=lambda counted: counted.close())
    # At most the put in progress and the one of the final flush meet the closed channel; a put
    # loop that retried a closed channel until the shutdown deadline made thousands.
    after = source.channel.puts - source.channel.puts_at_close
    assert after <= 2, f"{after} puts on a closed channel"
    read = source.counters["events"]
    assert warned == [f"tail: {read - 1000} events not committed at shutdown; they will be read again"]
    read_all_again(tmp_path, "z")  # the first batch once, the rest read again


# ----- the stage alone -----

def test_batches_commit_in_submit_order_and_an_error_pauses_the_stage_until_drain_puts_the_rest():
    got, fail = [], [RuntimeError("scripted")]

    def put(packed, offsets):
        if packed == ["b2"] and fail:
            raise fail.pop()
        got.append(packed)

    stage = PutStage(lambda events, families: events, put, depth=2)
    stage.submit((["b1"], {}, []))
    stage.submit((["b2"], {}, []))
    with pytest.raises(RuntimeError, match="scripted"):
        stage.submit((["b3"], {}, []))
        stage.finish()
    assert got == [["b1"]]
    assert stage.pending_events() == 2  # b2 (failed) and b3, still queued
    with pytest.raises(RuntimeError, match="scripted"):
        stage.finish()  # the error stays until drain or discard settles it
    stage.drain()
    assert got == [["b1"], ["b2"], ["b3"]] and stage.pending_events() == 0
    stage.submit((["b4"], {}, []))
    stage.finish()
    stage.close()
    assert got[-1] == ["b4"]


def test_a_pack_error_is_raised_at_its_turn_after_the_batches_before_it_committed():
    got = []

    def pack(events, families):
        if events == ["bad"]:
            raise ValueError("events routed to unknown groups (scripted)")
        return events

    stage = PutStage(pack, lambda packed, offsets: got.append(packed), depth=3)
    stage.submit((["a"], {}, []), (["bad"], {}, []), (["c"], {}, []))
    with pytest.raises(ValueError, match="scripted"):
        stage.finish()
    assert got == [["a"]]
    stage.discard()
    assert stage.pending_events() == 0
    stage.close()


@pytest.mark.parametrize("hold", [60.0, 0.0])
def test_a_hot_file_fills_its_batch_over_passes_instead_of_cutting_one_at_every_pass_end(tmp_path, monkeypatch, hold):
    import shipper.tail.source as source_module

    # A long hold, so the test never depends on how fast the passes run; 0 is the old behaviour.
    monkeypatch.setattr(source_module, "_HOT_HOLD", hold)
    log, ch = log_and_channel(tmp_path, lines("h", 0, 20_000, width=40))
    try:
        scripted = ScriptedChannel(ch)
        # A turn of 64 KiB (~1,500 lines) per pass: the file stays hot for ~13 passes.
        source = make_source(scripted, log, batch_max_events=5000, read_chunk=16 * 1024,
                             max_bytes_per_file_turn=64 * 1024)
        assert source.run_once()
        if hold:
            # Whole batches of 5,000, never cut at a pass's end (plus, at most, one of offset records alone).
            assert scripted.packs <= 5
        else:
            assert scripted.packs > 10  # one small batch per pass
        assert bodies(drain(ch)) == expected("h", 0, 20_000, width=40)
        assert committed_offset(ch, log) == log.stat().st_size
    finally:
        ch.close()
