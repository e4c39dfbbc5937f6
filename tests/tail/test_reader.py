"""The line cutter and encoder alone: bytes in, encoded events out (no files)."""

from hypothesis import given, settings, strategies as st

from shipper.avroipc.flume_event import decode_event, encode_event, encode_event_with, encode_headers
from shipper.tail.reader import Cursor, Encoder, LineCutter


def cut(data_pieces, max_line=1 << 20, long_lines="split", room=10**9, event_ids=False, headers=None):
    cutter = LineCutter(max_line, long_lines)
    enc = Encoder(event_ids)
    enc.begin(headers or {}, "g")
    cur = Cursor()
    out = []
    for piece in data_pieces:
        buf = cur.pending + piece
        out += cutter.consume(cur, buf, room, enc)
        while cur.leftover:
            out += cutter.consume(cur, cur.pending, room, enc)
    return [decode_event(e) for e in out], cur, cutter


def test_complete_lines_become_events_and_the_partial_waits():
    events, cur, _ = cut([b"one\ntwo\nthr"])
    assert [e.body for e in events] == [b"one", b"two"]
    assert cur.offset == 8 and cur.pending == b"thr"


def test_crlf_loses_its_cr_and_a_lone_cr_stays():
    events, _, _ = cut([b"a\r\nb\rc\n\r\n"])
    assert [e.body for e in events] == [b"a", b"b\rc", b""]


def test_bodies_are_raw_bytes():
    raw = bytes(range(256)).replace(b"\n", b"")
    events, _, _ = cut([raw + b"\n"])
    assert events[0].body == raw


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
       st.integers(1, 17))
def test_any_chunking_gives_the_same_events(lines, step):
    data = b"".join(line + b"\n" for line in lines)
    whole, _, _ = cut([data])
    pieces = [data[i:i + step] for i in range(0, len(data), step)]
    chunked, cur, _ = cut(pieces)
    assert [e.body for e in chunked] == [e.body for e in whole]
    assert [e.body for e in whole] == [line[:-1] if line.endswith(b"\r") else line for line in lines]
    assert cur.offset == len(data)


def test_room_bounds_the_events_and_the_rest_stays_as_leftover():
    cutter, enc, cur = LineCutter(1 << 20), Encoder(), Cursor()
    enc.begin({}, "g")
    out = cutter.consume(cur, b"a\nbb\nccc\ndd", 2, enc)
    assert [decode_event(e).body for e in out] == [b"a", b"bb"]
    assert cur.offset == 5 and cur.pending == b"ccc\ndd" and cur.leftover
    out = cutter.consume(cur, cur.pending, 10, enc)
    assert [decode_event(e).body for e in out] == [b"ccc"]
    assert cur.offset == 9 and cur.pending == b"dd" and not cur.leftover


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=40),
       st.lists(st.integers(1, 9), min_size=1, max_size=8), st.integers(1, 23), st.booleans())
def test_a_batch_filling_mid_block_gives_the_events_of_one_unbounded_call(lines, rooms, step, crlf):
    """The source's pattern: a leftover is consumed again from ``cur.pending`` (the lines split
    off it are reused), then the next read is appended to it (a new buffer: split afresh)."""
    data = b"".join(line + (b"\r\n" if crlf else b"\n") for line in lines) + b"part"
    whole, _, _ = cut([data])
    cutter, enc, cur = LineCutter(1 << 20), Encoder(), Cursor()
    enc.begin({"host": "h"}, "g")
    out, calls = [], 0
    for i in range(0, len(data), step):
        buf = cur.pending + data[i:i + step]
        while True:
            out += cutter.consume(cur, buf, rooms[calls % len(rooms)], enc)
            calls += 1
            if cur.ahead is not None:  # kept only beside the very pending they were split from
                assert cur.leftover and cur.ahead[0] is cur.pending
            if not cur.leftover:
                break
            buf = cur.pending
    assert out == [encode_event({"host": "h"}, e.body) for e in whole]
    # A line's own trailing "\r" is stripped only when "\n" alone ends it (then "\r\n" ends it);
    # written with "\r\n", only the terminator's "\r" goes ("\r\r\n" is the body "\r").
    assert [decode_event(e).body for e in out] == [line if crlf or not line.endswith(b"\r") else line[:-1]
                                                   for line in lines]
    assert cur.offset == len(data) - 4 and cur.pending == b"part"


def test_lines_kept_for_a_leftover_are_not_used_for_another_buffer():
    cutter, enc, cur = LineCutter(1 << 20), Encoder(), Cursor()
    enc.begin({}, "g")
    cutter.consume(cur, b"a\nbb\nccc\ndd", 1, enc)
    assert cur.ahead is not None and cur.ahead[0] is cur.pending
    out = cutter.consume(cur, bytes(bytearray(cur.pending)) + b"x\n", 10, enc)  # equal start, another object
    assert [decode_event(e).body for e in out] == [b"bb", b"ccc", b"ddx"]
    assert cur.ahead is None and cur.pending == b""


def test_over_long_line_is_split_into_numbered_pieces_without_losing_bytes():
    events, cur, cutter = cut([b"x" * 25 + b"\nnext\n"], max_line=10)
    assert [(e.body, e.headers.get("split")) for e in events] == [
        (b"x" * 10, "1"), (b"x" * 10, "2"), (b"x" * 5, "3"), (b"next", None)]
    assert cutter.long_lines == 1 and cur.offset == 31


def test_over_long_line_with_no_newline_is_split_as_it_grows_and_flushed_at_the_end():
    events, cur, cutter = cut([b"y" * 12, b"y" * 12], max_line=10)
    assert [e.body for e in events] == [b"y" * 10, b"y" * 10]
    assert cur.pending == b"y" * 4
    enc = Encoder()
    enc.begin({}, "g")
    last = [decode_event(e) for e in cutter.flush_partial(cur, enc)]
    assert [(e.body, e.headers["split"]) for e in last] == [(b"y" * 4, "3")]
    assert cur.offset == 24 and cur.pending == b""


def test_over_long_line_truncated_drops_the_rest_up_to_the_newline():
    events, cur, cutter = cut([b"z" * 15, b"z" * 15 + b"\nok\n"], max_line=10, long_lines="truncate")
    assert [(e.body, e.headers.get("truncated")) for e in events] == [(b"z" * 10, "true"), (b"ok", None)]
    assert cutter.long_lines == 1 and cutter.dropped_bytes == 20 and cur.offset == 34


def test_precomputed_encoding_matches_the_event_codec():
    headers = {"host": "h", "file": "/var/log/app.log", "timestamp": "1700000000000"}
    enc = Encoder()
    enc.begin(headers, "g")
    body = b"b" * 9000
    out = enc.run([b"short", body], 0, False)
    h = encode_headers(headers)
    assert out == [encode_event_with(h, b"short"), encode_event_with(h, body)]
    assert out[0] == encode_event(headers, b"short")


def test_many_short_lines_encode_like_the_codec_across_blocks_with_changing_headers():
    # Blocks of many short lines take the per-length lead table; it must follow the headers
    # from block to block and grow when a later block has longer lines.
    enc = Encoder()
    blocks = [
        ({"host": "h", "timestamp": "1700000000000"}, [b"x" * (i % 40) for i in range(200)]),
        ({"host": "h", "timestamp": "1700000000000"}, [b"y" * (i % 90) for i in range(300)]),
        ({"host": "h", "timestamp": "1700000000001"}, [b"z" * (i % 30) for i in range(100)]),
        ({"host": "h", "timestamp": "1700000000001"}, [b"w" * 500, b"v"]),  # fewer lines than bytes
    ]
    for headers, lines in blocks:
        enc.begin(headers, "g")
        assert enc.run(lines, 0, False) == [encode_event(headers, b) for b in lines]
        crlf = [b + b"\r" for b in lines]
        assert enc.run(crlf, 0, True) == [encode_event(headers, b) for b in lines]
    assert enc.run([], 0, False) == []

def test_event_ids_are_generation_and_byte_offset_and_encode_like_the_codec():
    headers = {"host": "h"}
    events, _, _ = cut([b"ab\r\ncd\n"], event_ids=True, headers=headers)
    assert [(e.body, e.headers["id"]) for e in events] == [(b"ab", "g:0"), (b"cd", "g:4")]
    enc = Encoder(True)
    enc.begin(headers, "g")
    assert enc.run([b"ab"], 7, False) == [encode_event({"host": "h", "id": "g:7"}, b"ab")]
