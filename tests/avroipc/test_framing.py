"""Netty framing (avro-rpc-wire.md §2, P9): serial, count, length-prefixed buffers; caps; chunking."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import example, given, settings, strategies as st

from shipper.avroipc import (
    DEFAULT_MAX_FRAME_BYTES,
    Frame,
    FrameDecoder,
    LocalProtocolError,
    RemoteProtocolError,
    encode_frame,
)
from shipper.avroipc.framing import chunks, chunks_of
from tests.avroipc import vectors as v


def test_empty_message_is_one_empty_buffer_never_count_zero():
    assert encode_frame(7, []) == bytes.fromhex("00000007 00000001 00000000")
    assert encode_frame(7, [b""]) == bytes.fromhex("00000007 00000001 00000000")


def test_negative_serial_round_trips():
    frame = encode_frame(-5, [b"ab"])
    assert FrameDecoder().feed(frame) == [Frame(-5, (b"ab",))]


def test_serial_outside_int32_is_our_mistake():
    with pytest.raises(LocalProtocolError):
        encode_frame(2**31, [b""])


@pytest.mark.parametrize("mode", v.FEED_MODES)
def test_java_chunked_frame_with_zero_length_buffers_decodes(mode):
    frame = encode_frame(3, [b"", b"\x00", b"x" * 8192, b"y" * 8192, b"z" * 5])
    dec = FrameDecoder()
    got = []
    for p in v.pieces(frame, mode, encode_frame(4, [b"next"])):
        got += dec.feed(p)
    assert got == [Frame(3, (b"", b"\x00", b"x" * 8192, b"y" * 8192, b"z" * 5))]
    assert got[0].payload() == b"\x00" + b"x" * 8192 + b"y" * 8192 + b"zzzzz"
    assert dec.in_frame == (mode == "trailing")


def test_many_frames_in_one_read():
    data = b"".join(encode_frame(i, [bytes([i])] * (i + 1)) for i in range(1, 20))
    frames = FrameDecoder().feed(data)
    assert [f.serial for f in frames] == list(range(1, 20))
    assert frames[5].buffers == (b"\x06",) * 7


def test_chunks_cut_like_java_byte_buffer_output_stream():
    assert [len(c) for c in chunks(bytes(20006))] == [8192, 8192, 3622]
    assert [len(c) for c in chunks(bytes(8192))] == [8192]
    assert [len(c) for c in chunks(bytes(8193))] == [8192, 1]
    assert chunks(b"") == [b""]




@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 30000), max_size=5))
@example([1, 8191, 1])
@example([2, 8190, 8192, 1])
@example([8192, 8192, 0, 1])
@example([3, 16384, 1])
@example([0, 0])
def test_chunks_of_parts_cut_exactly_like_chunks_of_their_concatenation(sizes):
    parts = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    whole = b"".join(parts)
    assert [bytes(c) for c in chunks_of(parts)] == [bytes(c) for c in chunks(whole)]
@pytest.mark.parametrize(
    "header",
    [
        struct.pack(">ii", 1, 0),  # count 0: Java would lose sync
        struct.pack(">ii", 1, -1),
        struct.pack(">ii", 1, -1291780095),  # a TLS ClientHello read as a frame header
        struct.pack(">iii", 1, 1, -4),  # negative buffer length
    ],
)
def test_bad_counts_and_lengths_are_remote_errors(header):
    dec = FrameDecoder()
    with pytest.raises(RemoteProtocolError):
        dec.feed(header)
    with pytest.raises(RemoteProtocolError):  # and the stream stays refused
        dec.feed(encode_frame(1, [b""]))


def test_deflate_header_read_as_plain_frame_is_refused_early():
    # A deflate client against a plain server: 78 9c 62 60 | 60 60 64 60 -> count 1616929888.
    with pytest.raises(RemoteProtocolError, match="over the cap"):
        FrameDecoder().feed(bytes.fromhex("789c6260606064606060026283"))


def test_buffer_count_cap():
    dec = FrameDecoder(max_buffers=4)
    assert dec.feed(encode_frame(1, [b""] * 4))
    with pytest.raises(RemoteProtocolError):
        dec.feed(encode_frame(2, [b""] * 5)[:8])


def test_frame_byte_cap_counts_all_buffers():
    dec = FrameDecoder(max_frame_bytes=100)
    assert dec.feed(encode_frame(1, [b"a" * 50, b"b" * 50]))
    with pytest.raises(RemoteProtocolError):
        dec.feed(encode_frame(2, [b"a" * 50, b"b" * 51]))


def test_header_claiming_2_gib_is_refused_after_12_bytes():
    dec = FrameDecoder()
    with pytest.raises(RemoteProtocolError):
        dec.feed(struct.pack(">iii", 1, 1, 2**31 - 1))
    assert DEFAULT_MAX_FRAME_BYTES < 2**31 - 1


def test_header_claiming_2_gib_under_a_raised_cap_waits_without_allocating():
    dec = FrameDecoder(max_frame_bytes=2**32)
    tracemalloc.start()
    try:
        assert dec.feed(struct.pack(">iii", 1, 1, 2**31 - 1)) == []
        for _ in range(16):
            assert dec.feed(bytes(65536)) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert dec.in_frame and dec.buffered == 16 * 65536
    assert peak < 8 * 1024 * 1024  # only what arrived (1 MiB), never the claimed 2 GiB


@pytest.mark.parametrize("mode", v.FEED_MODES)
def test_a_whole_frame_comes_as_its_message_in_one_buffer(mode):
    buffers = [b"", b"\x00", b"x" * 8192, b"y" * 8192, b"z" * 5]
    dec = FrameDecoder(whole=True)
    got = []
    for p in v.pieces(encode_frame(3, buffers), mode, encode_frame(4, [b"next"])):
        got += dec.feed(p)
    assert got == [Frame(3, (b"".join(buffers),))]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6), st.lists(st.integers(1, 900), max_size=20))
def test_frames_cut_anywhere_decode_the_same_whole_or_by_buffer(buffers, cuts):
    stream = encode_frame(1, buffers) + encode_frame(2, buffers[::-1])
    pieces, pos = [], 0
    for n in cuts:
        pieces.append(stream[pos : pos + n])
        pos += n
    pieces.append(stream[pos:])
    by_buffer, whole = FrameDecoder(), FrameDecoder(whole=True)
    got_b, got_w = [], []
    for p in pieces:
        got_b += by_buffer.feed(p)
        got_w += whole.feed(p)
        assert whole.buffered <= len(stream)  # (views hold at most what arrived)
    assert got_b == [Frame(1, tuple(buffers)), Frame(2, tuple(buffers[::-1]))]
    assert [(f.serial, f.payload()) for f in got_w] == [(f.serial, f.payload()) for f in got_b]
    assert whole.buffered == 0 and not whole.in_frame


def test_a_partial_frame_counts_every_read_it_holds_a_view_into():
    dec = FrameDecoder(whole=True)
    frame = encode_frame(1, [b"a" * 100])
    assert dec.feed(frame + frame[:20]) == [Frame(1, (b"a" * 100,))]
    assert dec.buffered == len(frame) + 20  # the next frame's 8 bytes are in a view of that read
    assert dec.feed(frame[20:]) == [Frame(1, (b"a" * 100,))]
    assert dec.buffered == 0


def test_a_length_cut_at_the_end_of_a_held_read_is_counted_once():
    dec = FrameDecoder(whole=True)
    frame = encode_frame(1, [b"abc", b"de"])
    assert dec.feed(frame[:17]) == []  # header, a length, "abc", and half the second length
    assert dec.buffered == 17  # those two bytes are in the carry and in the read the view holds
    assert dec.feed(frame[17:18]) == [] and dec.buffered == 18
    assert dec.feed(frame[18:]) == [Frame(1, (b"abcde",))] and dec.buffered == 0


def test_a_mutable_input_is_copied_so_changing_it_afterwards_changes_nothing():
    dec = FrameDecoder(whole=True)
    frame = bytearray(encode_frame(1, [b"abc" * 10]))
    assert dec.feed(frame[:20]) == []
    part = bytearray(frame[20:])
    frames = dec.feed(part)
    part[:] = bytes(len(part))
    assert frames == [Frame(1, (b"abc" * 10,))]
