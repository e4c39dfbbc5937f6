"""Multiline events and rules on real files and the real channel: writes, rotation, restart, truncation.

Driven with poll() (no threads, no timing); the committed offset record is checked where it matters:
it must sit at an event boundary whenever an event is held.
"""

from __future__ import annotations

import os

import pytest

from shipper.tail.identity import KEY_PREFIX, Record
from shipper.tail.rules import rules_from

from .helpers import append, bodies, drain, make_source, open_channel, poll_until_quiet

HEAD = b"2024-05-01 12:00:01,002 ERROR request failed\n"
TRACE = (
    b"java.lang.IllegalStateException: pool exhausted\n"
    b"\tat com.example.Pool.take(Pool.java:42)\n"
    b"Caused by: java.net.SocketTimeoutException: Read timed out\n"
    b"\t... 12 more\n"
)


def line(n: int) -> bytes:
    return b"2024-05-01 12:00:%02d,000 INFO line %d\n" % (n % 60, n)


def event(head: bytes = HEAD, trace: bytes = TRACE) -> bytes:
    return (head + trace)[:-1]


@pytest.fixture
def channel(tmp_path):
    ch = open_channel(tmp_path / "state")
    yield ch
    ch.close()


def java(**more):
    return rules_from(multiline=more.pop("multiline", "java"), **more)


def offset_of(channel, path) -> int:
    st = os.stat(path)
    raw = channel.offsets()[f"{KEY_PREFIX}{st.st_dev}:{st.st_ino}"]
    return Record.decode(raw).offset


def test_stack_trace_split_across_two_writes_is_one_event(tmp_path, channel):
    log = tmp_path / "app.log"
    log.write_bytes(line(0) + HEAD + TRACE[:60])  # the second write has not happened yet
    src = make_source(channel, log, rules=java())
    poll_until_quiet(src)
    assert bodies(drain(channel)) == [line(0)[:-1]]
    assert offset_of(channel, log) == len(line(0))  # committed at the held event's first byte
    append(log, TRACE[60:] + line(1))
    poll_until_quiet(src)
    assert bodies(drain(channel)) == [event()]
    assert offset_of(channel, log) == len(line(0) + HEAD + TRACE)  # line 1 is held now


def test_stack_trace_at_rotation_is_finished_whole_from_the_rotated_file(tmp_path, channel):
    log = tmp_path / "app.log"
    log.write_bytes(line(0) + HEAD + TRACE[:60])
    src = make_source(channel, log, rules=java())
    poll_until_quiet(src)
    append(log, TRACE[60:])  # the logger finishes the trace, then the file is rotated
    os.rename(log, tmp_path / "app.log.1")
    # The new file starts with lines that look like continuations: they must not join the old event.
    log.write_bytes(b"\tat looks.Like(AFrame.java:1)\n" + line(1))
    poll_until_quiet(src)
    src.run_once()  # --once: what is held at the end of the data is shipped
    assert bodies(drain(channel)) == [line(0)[:-1], event(), b"\tat looks.Like(AFrame.java:1)", line(1)[:-1]]


def test_restart_in_the_middle_of_an_event_reads_it_again_whole_and_once(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(line(0) + HEAD + TRACE[:70])
    ch = open_channel(tmp_path / "state")
    try:
        poll_until_quiet(make_source(ch, log, rules=java()))
        first = bodies(drain(ch))
    finally:
        ch.close()  # a stop (or a crash): the held event was never committed
    append(log, TRACE[70:] + line(1))
    ch = open_channel(tmp_path / "state")
    try:
        src = make_source(ch, log, rules=java())
        src.run_once()
        rest = bodies(drain(ch))
    finally:
        ch.close()
    assert first + rest == [line(0)[:-1], event(), line(1)[:-1]]


def test_held_event_is_shipped_after_the_timeout_and_not_before(tmp_path, channel):
    log = tmp_path / "app.log"
    log.write_bytes(HEAD + TRACE)
    src = make_source(channel, log, rules=java(multiline={"preset": "java", "timeout": 3600}))
    poll_until_quiet(src)
    poll_until_quiet(src)
    assert drain(channel) == []
    ch2 = channel
    src = make_source(ch2, log, rules=java(multiline={"preset": "java", "timeout": 0}))
    poll_until_quiet(src)
    assert bodies(drain(ch2)) == [event()]
    assert offset_of(ch2, log) == len(HEAD + TRACE)


def test_partial_line_timeout_still_applies_with_a_longer_multiline_timeout(tmp_path, channel):
    log = tmp_path / "app.log"
    log.write_bytes(HEAD + TRACE + b"no newline yet")
    src = make_source(channel, log, partial_line_timeout=0,
                      rules=java(multiline={"preset": "java", "timeout": 3600}))
    poll_until_quiet(src)
    assert bodies(drain(channel)) == [event(), b"no newline yet"]


def test_max_lines_on_a_real_file_ships_every_line_in_marked_pieces(tmp_path, channel):
    log = tmp_path / "app.log"
    frames = b"".join(b"\tat f%d(F.java:%d)\n" % (i, i) for i in range(25))
    log.write_bytes(HEAD + frames + line(1))
    src = make_source(channel, log, rules=java(multiline={"preset": "java", "max_lines": 10}))
    src.run_once()
    got = drain(channel)
    assert b"\n".join(bodies(got)) + b"\n" == HEAD + frames + line(1)
    assert [e.headers.get("split") for e in got] == ["1", "2", "3", None]


def test_mixed_include_and_exclude_drop_events_advance_the_offset_and_count(tmp_path):
    log = tmp_path / "app.log"
    data = line(0) + HEAD + TRACE + b"2024-05-01 12:00:02,000 DEBUG pool state\n" + b"2024-05-01 WARN disk\n"
    log.write_bytes(data)
    rules = java(include_lines=["ERROR", "WARN", "DEBUG"], exclude_lines=["DEBUG"])
    ch = open_channel(tmp_path / "state")
    try:
        src = make_source(ch, log, rules=rules)
        src.run_once()
        assert bodies(drain(ch)) == [event(), b"2024-05-01 WARN disk"]
        assert src.rule_counts()["dropped"] == 2
        assert offset_of(ch, log) == len(data)
    finally:
        ch.close()
    ch = open_channel(tmp_path / "state")
    try:
        src = make_source(ch, log, rules=rules)
        src.run_once()
        assert drain(ch) == []  # nothing dropped is read again after a restart
        assert src.rule_counts()["dropped"] == 0
    finally:
        ch.close()


def test_truncation_while_an_event_is_held_ships_it_instead_of_losing_it(tmp_path, channel):
    log = tmp_path / "app.log"
    log.write_bytes(line(0) + HEAD + TRACE)
    src = make_source(channel, log, rules=java(multiline={"preset": "java", "timeout": 3600}))
    poll_until_quiet(src)
    with open(log, "r+b") as fh:
        fh.truncate(0)
    append(log, line(5))
    poll_until_quiet(src)
    src.run_once()
    assert bodies(drain(channel)) == [line(0)[:-1], event(), line(5)[:-1]]
    assert src.counters["truncations"] == 1


def test_a_time_that_does_not_parse_keeps_the_read_time_on_a_real_file(tmp_path, channel):
    log = tmp_path / "app.log"
    log.write_bytes(b"2024-05-01T12:00:00Z ok\nyesterday-ish broken\n")
    rules = rules_from(event_time={"regex": r"^(?P<time>\S+)", "format": "iso8601",
                                   "unparsed_header": "time_unparsed"})
    src = make_source(channel, log, rules=rules)
    src.run_once()
    a, b = drain(channel)
    assert a.headers["timestamp"] == "1714564800000" and "time_unparsed" not in a.headers
    assert b.headers["time_unparsed"] == "true" and b.headers["timestamp"] != "1714564800000"
    assert src.rule_counts()["time_unparsed"] == 1


def test_flume_header_keys_byte_offset_and_uuid(tmp_path, channel):
    log = tmp_path / "app.log"
    log.write_bytes(line(0) + line(1))
    src = make_source(channel, log, file_key="basename", host_key="hostname", timestamp_key="ts", host="10.0.0.7",
                      byte_offset_header=True, uuid_header="eventId")
    src.run_once()
    a, b = drain(channel)
    assert a.headers["basename"] == str(log) and a.headers["hostname"] == "10.0.0.7" and "ts" in a.headers
    assert "file" not in a.headers and "host" not in a.headers and "timestamp" not in a.headers
    assert (a.headers["byteoffset"], b.headers["byteoffset"]) == ("0", str(len(line(0))))
    assert a.headers["eventId"] != b.headers["eventId"]


def test_exclude_globs_by_name_and_by_path(tmp_path, channel):
    (tmp_path / "keep").mkdir()
    (tmp_path / "archive").mkdir()
    for p in ("keep/app.log", "keep/debug-app.log", "archive/old.log"):
        (tmp_path / p).write_bytes(p.encode() + b"\n")
    src = make_source(channel, tmp_path / "**" / "*.log",
                      exclude=("debug-*.log", str(tmp_path / "archive" / "*")))
    poll_until_quiet(src)
    assert bodies(drain(channel)) == [b"keep/app.log"]


def test_ignore_older_takes_an_old_file_from_its_end_and_reads_what_is_appended(tmp_path, channel):
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    old.write_bytes(line(0))
    new.write_bytes(line(1))
    os.utime(old, (os.stat(old).st_atime, os.stat(old).st_mtime - 7200))
    src = make_source(channel, tmp_path / "*.log", ignore_older=3600)
    poll_until_quiet(src)
    assert bodies(drain(channel)) == [line(1)[:-1]]
    append(old, line(2))
    poll_until_quiet(src)
    assert bodies(drain(channel)) == [line(2)[:-1]]
    assert src.counters["ignored_older"] == 1
