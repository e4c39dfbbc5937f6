"""Stored events to Thrift: the channel's Avro bytes become ``ThriftFlumeEvent`` structs.

The channel stores events once, in Flume's ``AvroFlumeEvent`` encoding, joined back to back: that
is already the middle of an Avro ``appendBatch``, so the Avro path sends them untouched. A batch
that goes to a Thrift collector (configured so, or after a failover) is re-encoded here, at send
time, from those same bytes: the channel stays protocol-independent and the Avro path pays nothing.

The Avro layout read (no schema resolution needed, it is fixed)::

    headers   blocks of: zigzag count (negative: |count| entries and then a zigzag byte size),
              that many (key, value) strings, each a zigzag length and UTF-8 bytes; a 0 count ends
    body      zigzag length, bytes

Strings are copied as byte slices (no UTF-8 decoding and re-encoding: Avro and Thrift both carry
UTF-8). Every length is checked against what is left. The cost per event is measured in
bench/bench_codec.py; it is the price of a Thrift collector, paid only by Thrift collectors.
"""

from __future__ import annotations

import struct

from shipper.thriftrpc.codec import COMPACT, varint
from shipper.thriftrpc.errors import LocalProtocolError

_I32 = struct.Struct(">i")


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    pos += 1
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos
    result, shift = b & 0x7F, 7
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise LocalProtocolError("stored event: varint too long")


_VARINT1 = [bytes((i,)) for i in range(128)]


def transcode_payload(proto: str, count: int, payload: bytes) -> bytes:
    """``count`` Avro-encoded events joined in ``payload`` -> the same events as Thrift structs.

    Events of one batch mostly share their headers (one tailed file, one set of static headers),
    and Avro's map encoding is prefix-free: when the bytes at an event's start are the previous
    event's map, its Thrift map (field headers included) is reused instead of rebuilt.

    A payload that does not hold exactly ``count`` well-formed events raises LocalProtocolError
    (the channel handed us bytes it should not have: a bug or a damaged store, never the peer).
    """
    compact = proto == COMPACT
    out: list[bytes] = []
    extend = out.extend
    pos, end = 0, len(payload)
    last_avro, last_thrift = b"\xff", b""  # 0xff starts no map: never matches the first event
    try:
        for _ in range(count):
            if payload.startswith(last_avro, pos):
                pos += len(last_avro)
                head = last_thrift
            else:
                start = pos
                pairs, pos = _map(payload, pos, end, compact)
                entries = len(pairs) // 4  # a length and the bytes, for the key and the value
                if compact:
                    head = b"".join((b"\x1b", varint(entries) + b"\x88" if entries else b"\x00", *pairs, b"\x18"))
                else:
                    head = b"".join((b"\x0d\x00\x01\x0b\x0b", _I32.pack(entries), *pairs, b"\x0b\x00\x02"))
                last_avro, last_thrift = payload[start:pos], head
            b = payload[pos]
            if b < 0x80 and not b & 1:
                length = b >> 1
                pos += 1
            else:
                length, pos = _long(payload, pos)
            if length < 0 or pos + length > end:
                raise LocalProtocolError("stored event: the body runs past the payload")
            if compact:
                extend((head, _VARINT1[length] if length < 128 else varint(length), payload[pos : pos + length], b"\x00"))
            else:
                extend((head, _I32.pack(length), payload[pos : pos + length], b"\x00"))
            pos += length
    except IndexError:
        raise LocalProtocolError("stored event: the payload ends inside an event") from None
    if pos != end:
        raise LocalProtocolError(f"stored payload: {end - pos} bytes left after {count} events")
    return b"".join(out)


def _map(payload: bytes, pos: int, end: int, compact: bool) -> tuple[list[bytes], int]:
    """The header map at ``pos`` as Thrift string encodings, key and value alternating."""
    pairs: list[bytes] = []
    while True:
        n, pos = _long(payload, pos)
        if n == 0:
            return pairs, pos
        if n < 0:
            n = -n
            _, pos = _long(payload, pos)
        for _ in range(2 * n):
            length, pos = _long(payload, pos)
            if length < 0 or pos + length > end:
                raise LocalProtocolError("stored event: a header string runs past the payload")
            pairs.append(varint(length) if compact else _I32.pack(length))
            pairs.append(payload[pos : pos + length])
            pos += length
