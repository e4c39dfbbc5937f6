"""The AvroFlumeEvent codec on the hot paths (records.py) and its public face (shipper.event)."""

from __future__ import annotations

import pytest

from shipper.avroipc.avro import AvroDecodeError, Reader
from shipper.avroipc.flume_event import encode_batch_param, encode_event, read_event_array
from shipper.event import (
    Event,
    decode_batch,
    decode_event,
    encode_batch,
    encode_event as event_encode_event,
    encode_event_with,
    encode_headers,
    read_batch,
)

A = {"host": "web-1", "file": "/var/log/a"}
B = {"host": "web-2"}


def test_runs_of_identical_headers_decode_to_independent_dicts():
    events = [(A, b"1"), (A, b"2"), (B, b"3"), (A, b"4"), ({}, b"5"), (A, b""), (B, b"7")]
    data = encode_batch_param([encode_event(h, b) for h, b in events])
    got, pos = read_event_array(data)
    assert got == events and pos == len(data)
    got[0][0]["host"] = "changed"  # one event's headers are its own
    assert got[1][0] == A and got[3][0] == A


def test_a_body_that_starts_like_the_previous_headers_is_still_a_body():
    prev = encode_headers(B)
    events = [(B, b"x"), ({}, prev + b"tail")]
    data = encode_batch_param([encode_event(h, b) for h, b in events])
    assert read_event_array(data)[0] == events


@pytest.mark.parametrize(
    "data",
    [
        b"\x02\x00\x0a",  # body length 5, nothing follows
        b"\x02\x00\x01",  # negative body length
        b"\x02\x02\x02\xff\x00\x00\x00",  # header key not UTF-8
        b"\x7e\x00",  # count 63 with 1 byte left
        b"\x02\x00\x00",  # missing the array's end
    ],
)
def test_malformed_arrays_are_decode_errors(data):
    with pytest.raises(AvroDecodeError):
        read_event_array(data)


def test_max_events_is_checked_before_the_events_are_built():
    data = encode_batch_param([encode_event({}, b"")] * 10)
    with pytest.raises(AvroDecodeError, match="more than 9"):
        read_event_array(data, 0, 9)
    assert len(read_event_array(data, 0, 10)[0]) == 10


def test_event_module_keeps_its_public_names_and_bytes():
    pre = encode_headers(A)
    one = encode_event_with(pre, b"body")
    assert one == event_encode_event(b"body", A) == Event(b"body", A).encode() == encode_event(A, b"body")
    batch = encode_batch([one, event_encode_event(b"x")])
    assert decode_batch(batch) == [Event(b"body", A), Event(b"x", {})]
    assert decode_event(one) == Event(b"body", A)
    r = Reader(batch + b"more")
    assert read_batch(r) == [Event(b"body", A), Event(b"x", {})] and r.remaining == 4
    with pytest.raises(AvroDecodeError):
        decode_batch(batch + b"\x00")
