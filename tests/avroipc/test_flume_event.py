"""The AvroFlumeEvent codec (shipper.avroipc.flume_event): the hot paths and the pieces encoders build from."""

from __future__ import annotations

import pytest

from shipper.avroipc.avro import AvroDecodeError, encode_string
from shipper.avroipc.flume_event import (
    FlumeEvent,
    decode_event,
    encode_batch,
    encode_event,
    encode_event_with,
    encode_headers,
    encode_headers_open,
    read_event_array,
)

A = {"host": "web-1", "file": "/var/log/a"}
B = {"host": "web-2"}


def test_runs_of_identical_headers_decode_to_independent_dicts():
    events = [(A, b"1"), (A, b"2"), (B, b"3"), (A, b"4"), ({}, b"5"), (A, b""), (B, b"7")]
    data = encode_batch([encode_event(h, b) for h, b in events])
    got, pos = read_event_array(data)
    assert got == events and pos == len(data)
    got[0][0]["host"] = "changed"  # one event's headers are its own
    assert got[1][0] == A and got[3][0] == A


def test_a_body_that_starts_like_the_previous_headers_is_still_a_body():
    prev = encode_headers(B)
    events = [(B, b"x"), ({}, prev + b"tail")]
    data = encode_batch([encode_event(h, b) for h, b in events])
    assert read_event_array(data)[0] == events


@pytest.mark.parametrize(
    "data",
    [
        b"\x02\x00\x0a",  # body length 5, nothing follows
        b"\x02\x00\x01",  # negative body length
        b"\x02\x00\x81\x01" + b"x" * 100,  # negative body length in two bytes (-65)
        b"\x02\x00\x80\x01" + b"x" * 63,  # body length 64 in two bytes, one byte short
        b"\x02\x00\x80",  # a two-byte body length cut after its first byte
        b"\x02\x02\x02\xff\x00\x00\x00",  # header key not UTF-8
        b"\x7e\x00",  # count 63 with 1 byte left
        b"\x02\x00\x00",  # missing the array's end
    ],
)
def test_malformed_arrays_are_decode_errors(data):
    with pytest.raises(AvroDecodeError):
        read_event_array(data)


@pytest.mark.parametrize("size", [0, 63, 64, 65, 200, 8191, 8192, 70000])
def test_body_lengths_of_one_two_and_three_bytes_decode_alike(size):
    bodies = [b"a" * size, b"b" * (size // 2), b"c"]
    data = encode_batch([encode_event({}, body) for body in bodies] + [encode_event(A, b"d" * size)])
    events, pos = read_event_array(data)
    assert events == [({}, body) for body in bodies] + [(A, b"d" * size)] and pos == len(data)


def test_max_events_is_checked_before_the_events_are_built():
    data = encode_batch([encode_event({}, b"")] * 10)
    with pytest.raises(AvroDecodeError, match="more than 9"):
        read_event_array(data, 0, 9)
    assert len(read_event_array(data, 0, 10)[0]) == 10


def test_every_encoding_path_gives_the_same_bytes():
    one = encode_event(A, b"body")
    assert encode_event_with(encode_headers(A), b"body") == one
    assert encode_headers_open(A, "id") + encode_string("g:7") + b"\x00" == encode_headers({**A, "id": "g:7"})
    assert encode_event(None, b"x") == encode_event({}, b"x") == b"\x00\x02x"
    assert decode_event(one) == FlumeEvent(b"body", A)
    with pytest.raises(AvroDecodeError, match="1 bytes after the event"):
        decode_event(one + b"\x00")
    events, pos = read_event_array(encode_batch([one, encode_event({}, b"x")]) + b"more")
    assert events == [(A, b"body"), ({}, b"x")] and pos == len(one) + 5
