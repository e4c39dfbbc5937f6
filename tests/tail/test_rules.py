"""Event rules without files: the cutter fed bytes whole, one byte at a time and in random blocks.

Every scenario checks the offset too: what the channel would store must sit at an event boundary.
"""

from __future__ import annotations

import random
import re

import pytest

from shipper.avroipc.flume_event import decode_event
from shipper.tail.events import EventCutter
from shipper.tail.reader import Cursor, Encoder
from shipper.tail.rules import PRESETS, RuleError, rules_from

JAVA = (
    b"2024-05-01 12:00:00,001 INFO service started\n"
    b"2024-05-01 12:00:01,002 ERROR request failed\n"
    b"java.lang.IllegalStateException: connection pool exhausted\n"
    b"\tat com.example.Pool.take(Pool.java:42)\n"
    b"\tat com.example.Handler.run(Handler.java:7)\n"
    b"Caused by: java.net.SocketTimeoutException: Read timed out\n"
    b"\tat java.base/java.net.SocketInputStream.read(SocketInputStream.java:183)\n"
    b"\t... 12 more\n"
    b"2024-05-01 12:00:02,003 INFO next request\n"
)
JAVA_EVENTS = [
    b"2024-05-01 12:00:00,001 INFO service started",
    JAVA.split(b"\n", 2)[1] + b"\n" + JAVA.split(b"\n", 2)[2].split(b"\n2024")[0],
    b"2024-05-01 12:00:02,003 INFO next request",
]

PYTHON = (
    b"2024-05-01 12:00:00 INFO ok\n"
    b"2024-05-01 12:00:01 ERROR handler crashed\n"
    b"Traceback (most recent call last):\n"
    b'  File "app.py", line 3, in <module>\n'
    b"    main()\n"
    b"ValueError: bad value\n"
    b"\n"
    b"During handling of the above exception, another exception occurred:\n"
    b"\n"
    b"Traceback (most recent call last):\n"
    b'  File "app.py", line 5, in <module>\n'
    b"requests.exceptions.ConnectionError: refused\n"
    b"2024-05-01 12:00:02 INFO next\n"
)

GO = (
    b"2024/05/01 12:00:00 serving\n"
    b"panic: runtime error: index out of range [5] with length 3\n"
    b"\n"
    b"goroutine 1 [running]:\n"
    b"main.handler(0xc000012345)\n"
    b"\t/src/app/main.go:12 +0x1d\n"
    b"main.(*Server).serve(...)\n"
    b"\t/src/app/server.go:40\n"
    b"created by net/http.(*Server).Serve in goroutine 1\n"
    b"\t/usr/local/go/src/net/http/server.go:3285 +0x4b4\n"
    b"2024/05/01 12:00:01 restarted\n"
)


def cut(data: bytes, blocks, *, room: int = 10_000, flush: bool = True, max_line: int = 1 << 20,
        event_ids: bool = False, **rules):
    """Feed ``data`` in blocks of the given sizes; returns (events, cursor, cutter)."""
    extra = {k: rules.pop(k) for k in ("byte_offset_key", "uuid_key", "timestamp_key") if k in rules}
    cutter = EventCutter(rules_from(**rules), max_line, **extra)
    cur, enc = Cursor(), Encoder(event_ids)
    enc.begin({"host": "h1", "timestamp": "5"}, "g1")
    out, pos = [], 0
    for n in blocks:
        block = data[pos:pos + n]
        pos += n
        out += cutter.consume(cur, cur.pending + block, room, enc)
        while cur.leftover:
            out += cutter.consume(cur, cur.pending, room, enc)
    assert pos >= len(data)
    if flush:
        out += cutter.flush_partial(cur, enc)
    return [decode_event(e) for e in out], cur, cutter


def splits(data: bytes, seed: int = 1):
    rng = random.Random(seed)
    yield [len(data)]
    yield [1] * len(data)
    sizes, left = [], len(data)
    while left > 0:
        sizes.append(rng.randint(1, 40))
        left -= sizes[-1]
    yield sizes


@pytest.mark.parametrize("blocks", list(splits(JAVA)), ids=["whole", "bytewise", "random"])
def test_java_stack_trace_with_exception_line_caused_by_and_more_is_one_event(blocks):
    events, cur, cutter = cut(JAVA, blocks, multiline="java")
    assert [e.body for e in events] == JAVA_EVENTS
    assert cur.offset == len(JAVA)
    assert cutter.joined == 6


@pytest.mark.parametrize("preset, data, firsts, last_line, lines", [
    ("python", PYTHON, [b"2024-05-01 12:00:00 INFO ok", b"2024-05-01 12:00:01 ERROR handler crashed",
                        b"2024-05-01 12:00:02 INFO next"], b"requests.exceptions.ConnectionError: refused", 11),
    ("go", GO, [b"2024/05/01 12:00:00 serving", b"panic: runtime error: index out of range [5] with length 3",
                b"2024/05/01 12:00:01 restarted"], b"\t/usr/local/go/src/net/http/server.go:3285 +0x4b4", 9),
], ids=["python traceback with a chained exception", "go panic with its goroutines"])
def test_python_and_go_presets_make_one_event_of_a_trace(preset, data, firsts, last_line, lines):
    for blocks in splits(data, 3):
        events, _, _ = cut(data, blocks, multiline=preset)
        assert [e.body.split(b"\n")[0] for e in events] == firsts
        assert events[1].body.endswith(last_line) and events[1].body.count(b"\n") == lines - 1


def test_the_last_event_is_held_uncommitted_until_a_new_event_starts():
    first = JAVA[: JAVA.index(b"\tat com.example.Handler")]
    events, cur, _ = cut(first, [len(first)], multiline="java", flush=False)
    assert [e.body for e in events] == [JAVA_EVENTS[0]]
    assert cur.offset == len(JAVA_EVENTS[0]) + 1  # the committed offset is the held event's first byte
    assert cur.pending == first[cur.offset:]


@pytest.mark.parametrize("data, rule, want", [
    (b"[1] a\n  x\ny\n[2] b\n[3] c\nz\n", {"start": r"^\["}, [b"[1] a\n  x\ny", b"[2] b", b"[3] c\nz"]),
    (b"x1\nx2\n.a\n.b\nx3\n", {"pattern": r"^x", "negate": True}, [b"x1", b"x2\n.a\n.b", b"x3"]),
], ids=["start pattern", "continuation pattern with negate"])
def test_a_start_pattern_or_a_negated_continuation_makes_other_lines_join(data, rule, want):
    for blocks in ([len(data)], [3, 4, 100]):
        events, cur, _ = cut(data, blocks, multiline=rule)
        assert [e.body for e in events] == want
        assert cur.offset == len(data)


def test_unanchored_pattern_is_searched_in_the_line():
    data = b"a\nfoo CONT bar\nb\n"
    events, _, _ = cut(data, [len(data)], multiline={"pattern": "CONT"})
    assert [e.body for e in events] == [b"a\nfoo CONT bar", b"b"]


@pytest.mark.parametrize("blocks", [[10_000], [7] * 2000], ids=["whole", "small blocks"])
def test_max_lines_cuts_the_event_into_split_pieces_and_drops_nothing(blocks):
    data = b"start\n" + b"".join(b"  at frame %d\n" % i for i in range(11)) + b"next\n"
    events, cur, cutter = cut(data, blocks, multiline={"pattern": r"^\s", "max_lines": 5})
    got = [(e.body, e.headers.get("split")) for e in events]
    assert b"\n".join(b for b, _ in got) + b"\n" == data
    assert [s for _, s in got] == ["1", "2", "3", None]
    assert all(b.count(b"\n") < 5 for b, _ in got)
    assert cur.offset == len(data) and cutter.cut_events == 1


def test_max_bytes_bounds_a_held_event_before_it_completes():
    data = b"start\n" + b"".join(b"  at frame %04d\n" % i for i in range(100))
    events, cur, _ = cut(data, [64] * 40, multiline={"pattern": r"^\s", "max_bytes": 200}, flush=False)
    assert events and all(len(e.body) <= 200 for e in events)
    assert [e.headers["split"] for e in events] == [str(i) for i in range(1, len(events) + 1)]
    assert len(cur.pending) <= 200 + 64  # what is held stays bounded
    assert cur.offset + len(cur.pending) == len(data)


def test_a_full_batch_stops_at_an_event_boundary_and_resumes():
    data = JAVA * 5
    events, cur, _ = cut(data, [len(data)], room=2, multiline="java")
    assert [e.body for e in events] == JAVA_EVENTS * 5
    assert cur.offset == len(data)


def test_include_then_exclude_apply_to_whole_events_and_are_counted():
    data = JAVA + b"2024-05-01 12:00:03,000 DEBUG noise\n"
    events, cur, cutter = cut(data, [len(data)], multiline="java", include_lines=["ERROR", "DEBUG"],
                              exclude_lines=["DEBUG"])
    assert [e.body for e in events] == [JAVA_EVENTS[1]]
    assert cutter.dropped == 3
    assert cur.offset == len(data)  # dropped events advance the offset


def test_extraction_sets_headers_and_preserve_existing_keeps_the_sources():
    data = b"host=web7 level=WARN msg=x\nno match here\n"
    events, _, cutter = cut(data, [len(data)], extract={"regex": r"host=(?P<host>\S+) level=(?P<level>\S+)"})
    assert events[0].headers["host"] == "web7" and events[0].headers["level"] == "WARN"
    assert events[1].headers == {"host": "h1", "timestamp": "5"}
    assert cutter.extract_misses == 1
    events, _, _ = cut(data, [len(data)], extract={"regex": r"host=(?P<host>\S+) level=(?P<level>\S+)",
                                                    "preserve_existing": True})
    assert events[0].headers["host"] == "h1" and events[0].headers["level"] == "WARN"


@pytest.mark.parametrize("stamp, fmt, tz, ms", [
    ("2024-05-01T12:00:00.250Z", "iso8601", "local", 1714564800250),
    ("2024-05-01T14:00:00+02:00", "iso8601", "local", 1714564800000),
    ("2024-05-01 12:00:00", "iso8601", "UTC", 1714564800000),
    ("2024-05-01 14:00:00,5", "%Y-%m-%d %H:%M:%S,%f", "Europe/Berlin", 1714564800500),
    ("1714564800", "epoch_s", "UTC", 1714564800000),
    ("1714564800.5", "epoch_s", "UTC", 1714564800500),
    ("1714564800123", "epoch_ms", "UTC", 1714564800123),
])
def test_event_time_formats_and_zones(stamp, fmt, tz, ms):
    data = f"[{stamp}] something\n".encode()
    events, _, cutter = cut(data, [len(data)], event_time={"regex": r"^\[(?P<time>[^\]]+)\]", "format": fmt,
                                                           "timezone": tz})
    assert events[0].headers["timestamp"] == str(ms)
    assert cutter.time_unparsed == 0


def test_a_multiline_event_takes_the_time_of_its_first_line():
    events, _, _ = cut(JAVA, [len(JAVA)], multiline="java", event_time={
        "regex": r"^(?P<time>\S+ \S+)", "format": "%Y-%m-%d %H:%M:%S,%f", "timezone": "UTC"})
    assert events[1].headers["timestamp"] == "1714564801002"


def test_a_time_that_does_not_parse_keeps_the_read_time_is_counted_and_marked():
    data = b"2024-13-45 99:00:00 bad month\n2024-05-01 12:00:00 good\nno stamp\n"
    events, _, cutter = cut(data, [len(data)], extract={"regex": r"^(?P<time>\S+ \S+)"}, event_time={
        "format": "%Y-%m-%d %H:%M:%S", "timezone": "UTC", "unparsed_header": "time_unparsed"})
    assert [e.headers["timestamp"] for e in events] == ["5", "1714564800000", "5"]
    assert [e.headers.get("time_unparsed") for e in events] == ["true", None, "true"]
    assert cutter.time_unparsed == 2


def test_byte_offset_uuid_and_event_id_headers_name_each_events_first_byte():
    events, _, _ = cut(JAVA, [len(JAVA)], multiline="java", event_ids=True, byte_offset_key="byteoffset",
                       uuid_key="uuid")
    starts = [0, len(JAVA_EVENTS[0]) + 1, len(JAVA_EVENTS[0]) + len(JAVA_EVENTS[1]) + 2]
    assert [e.headers["byteoffset"] for e in events] == [str(s) for s in starts]
    assert [e.headers["id"] for e in events] == [f"g1:{s}" for s in starts]
    uuids = [e.headers["uuid"] for e in events]
    assert len(set(uuids)) == 3 and all(re.fullmatch(r"[0-9a-f-]{36}", u) for u in uuids)


def test_crlf_lines_are_joined_with_plain_newlines():
    data = JAVA.replace(b"\n", b"\r\n")
    events, cur, _ = cut(data, [50] * 20, multiline="java")
    assert [e.body for e in events] == JAVA_EVENTS
    assert cur.offset == len(data)


def test_an_over_long_line_closes_the_held_event_and_is_split_as_on_the_line_path():
    data = b"start\n  more\n" + b"x" * 25 + b"\nnext\n"
    events, cur, _ = cut(data, [len(data)], max_line=10, multiline={"pattern": r"^\s"})
    assert [(e.body, e.headers.get("split")) for e in events] == [
        (b"start\n  more", None), (b"x" * 10, "1"), (b"x" * 10, "2"), (b"x" * 5, "3"), (b"next", None)]
    assert cur.offset == len(data)


def test_flush_joins_an_incomplete_last_line_that_continues_the_held_event():
    data = b"start\n  at a\n  at b"  # no final newline
    events, cur, _ = cut(data, [len(data)], multiline="java")
    assert [e.body for e in events] == [b"start\n  at a\n  at b"]
    assert cur.offset == len(data) and not cur.pending


@pytest.mark.parametrize("rules, key", [
    ({"multiline": "ruby"}, "multiline.preset"),
    ({"multiline": {"start": "("}}, "multiline.start"),
    ({"multiline": {"preset": "java", "pattern": "x"}}, "multiline"),
    ({"multiline": {"pattern": "x", "max_lines": 0}}, "multiline.max_lines"),
    ({"multiline": {"pattern": "x", "timeout": "5s"}}, "multiline.timeout"),
    ({"multiline": {"pattern": "x", "colour": 1}}, "multiline.colour"),
    ({"exclude_lines": ["ok", "[unclosed"]}, "exclude_lines[1]"),
    ({"extract": {"regex": "no groups"}}, "extract.regex"),
    ({"extract": {"regex": "(?P<id>x)"}}, "extract.regex"),
    ({"event_time": {"format": "iso8601"}}, "event_time.regex"),
    ({"event_time": {"regex": "(?P<t>x)"}}, "event_time.group"),
    ({"event_time": {"regex": "(?P<time>x)", "format": "dd/MM/yyyy"}}, "event_time.format"),
    ({"event_time": {"regex": "(?P<time>x)", "timezone": "Mars/Olympus"}}, "event_time.timezone"),
])
def test_bad_rules_name_the_key(rules, key):
    with pytest.raises(RuleError) as info:
        rules_from(**rules)
    assert info.value.key == key
    errors: list = []
    rules_from(**rules, errors=errors)
    assert [e.key for e in errors] == [key]


def test_presets_compile_and_keep_plain_log_lines_apart():
    plain = b"2024-05-01 12:00:00 INFO GET /index.html 200\n" * 3
    for name in PRESETS:
        events, _, cutter = cut(plain, [len(plain)], multiline=name)
        assert len(events) == 3 and cutter.joined == 0, name


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("rule", [{"pattern": r"^\s"}, {"start": r"^\d"}])
def test_any_blocks_and_any_batch_room_give_the_same_events(seed, rule):
    rng = random.Random(seed)
    parts = []
    for i in range(300):
        parts.append(b"%d event\n" % i if rng.random() < 0.6 else b"  cont %d\n" % i)
    data = b"".join(parts) + (b"  tail" if seed % 2 else b"")
    ml = dict(rule, max_lines=rng.choice([2, 3, 500]), max_bytes=rng.choice([40, 1 << 20]))
    want, _, _ = cut(data, [len(data)], multiline=ml)
    sizes, left = [], len(data)
    while left > 0:
        sizes.append(rng.randint(1, 120))
        left -= sizes[-1]
    got, cur, _ = cut(data, sizes, room=rng.randint(1, 7), multiline=ml)
    assert [(e.body, e.headers.get("split")) for e in got] == [(e.body, e.headers.get("split")) for e in want]
    assert cur.offset == len(data)
    # Nothing lost, nothing added: the bodies give back the file.
    assert b"\n".join(e.body for e in want) == data.rstrip(b"\n")
