"""Flume events (``AvroFlumeEvent``): the one codec, used by the tail source, the sink and both roles.

``record AvroFlumeEvent { map<string> headers; bytes body; }`` is encoded as the headers map (one
block from Java: count, key/value strings, ``00``; an empty map is just ``00``) and then the body
as Avro ``bytes``. ``appendBatch``'s parameter is ``array<AvroFlumeEvent>``: count, the events,
``00``; an empty array is ``00``. A decoded event is a :class:`FlumeEvent` (named so, apart from
the connection events of :mod:`shipper.avroipc.events`).

Encoding: the channel stores events already encoded, so the sink sends stored bytes as they are
and :func:`encode_batch` only adds the array's count and end around them. Encoders of many events
with the same headers work on pieces: :func:`encode_headers` once for the run, then
:func:`encode_event_with` per body; the tail reader, which gives each line its own ``id``
header, starts each event with :func:`encode_headers_open` (the map up to its last value) and
appends the value, the map's end and the body. Every path gives the bytes of :func:`encode_event`.

Decoding: the collector decodes hundreds of thousands of events a second, so
:func:`read_event_array` is one tight loop over a ``bytes`` object with the one-byte varint case
inlined (header counts and lengths below 64 are one byte). It returns ``(headers, body)`` tuples.
Every length is checked against what is left before slicing, every count against the bytes left
(each event takes at least 2 bytes), and ``max_events`` bounds the Python objects one call can
create. The caps of :class:`shipper.avroipc.limits.CallLimits` (headers per event and per call,
header bytes, body size) are checked on the way, each before what it guards is allocated.
Measured against fastavro's ``schemaless_reader`` in bench/bench_codec.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from shipper.avroipc.avro import AvroDecodeError, encode_bytes, encode_long, encode_string, encode_string_map
from shipper.avroipc.limits import DEFAULT_CALL_LIMITS, CallLimits, LimitExceeded


@dataclass(frozen=True, slots=True)
class FlumeEvent:
    """One Flume event: string headers and a raw byte body."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def encode_headers(headers: Mapping[str, str] | None) -> bytes:
    """The encoded headers map, to be reused for many bodies."""
    return encode_string_map(dict(headers) if headers else None)


def encode_headers_open(headers: Mapping[str, str], last_key: str) -> bytes:
    """The map of ``headers`` plus ``last_key`` as its last entry, cut before that entry's value.

    Appending ``encode_string(value) + b"\\x00"`` completes the map: the same bytes as
    ``encode_headers({**headers, last_key: value})`` when ``last_key`` is not in ``headers``.
    """
    return (
        encode_long(len(headers) + 1)
        + b"".join(encode_string(k) + encode_string(v) for k, v in headers.items())
        + encode_string(last_key)
    )


def encode_event_with(encoded_headers: bytes, body: bytes) -> bytes:
    """One encoded event from a pre-encoded headers map and a body."""
    return encoded_headers + encode_bytes(body)


def encode_event(headers: Mapping[str, str] | None, body: bytes) -> bytes:
    """One encoded event, headers first as in the record."""
    return encode_headers(headers) + encode_bytes(body)


def encode_batch(encoded_events: Sequence[bytes]) -> bytes:
    """The ``appendBatch`` parameter around already-encoded events, in one block as Java writes it."""
    if not encoded_events:
        return b"\x00"
    return encode_long(len(encoded_events)) + b"".join(encoded_events) + b"\x00"


def _read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at ``pos``; returns (value, next position)."""
    result = 0
    shift = 0
    while True:
        b = buf[pos]  # IndexError at the end: the callers turn it into AvroDecodeError
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise AvroDecodeError("varint longer than 10 bytes")


def _read_headers(
    buf: bytes, pos: int, end: int, max_count: int, max_bytes: int
) -> tuple[dict[str, str], int]:
    """A ``map<string>`` at ``pos`` of at most ``max_count`` entries and ``max_bytes`` bytes.

    Each block's count is checked against ``max_count`` before its entries are decoded.
    """
    headers: dict[str, str] = {}
    start = pos
    while True:
        count, pos = _read_long(buf, pos)
        if count == 0:
            if pos - start > max_bytes:
                raise LimitExceeded("header-bytes", f"an event's headers take more than {max_bytes} bytes")
            return headers, pos
        if count < 0:
            count = -count
            size, pos = _read_long(buf, pos)
            if size < 0 or size > end - pos:
                raise AvroDecodeError(f"map block byte size {size} out of range")
        if count * 2 > end - pos:
            raise AvroDecodeError(f"map block count {count} exceeds the bytes left")
        if len(headers) + count > max_count:
            raise LimitExceeded("headers", f"an event has more than {max_count} headers")
        if pos - start > max_bytes:
            raise LimitExceeded("header-bytes", f"an event's headers take more than {max_bytes} bytes")
        for _ in range(count):
            n = buf[pos]
            if n < 0x80 and not n & 1:  # the usual short key: a one-byte, non-negative length
                n >>= 1
                pos += 1
            else:
                n, pos = _read_long(buf, pos)
                if n < 0:
                    raise AvroDecodeError("negative header key length")
            if n > end - pos:
                raise AvroDecodeError(f"header key length {n} exceeds the bytes left")
            key = buf[pos : pos + n].decode("utf-8")
            pos += n
            n = buf[pos]
            if n < 0x80 and not n & 1:
                n >>= 1
                pos += 1
            else:
                n, pos = _read_long(buf, pos)
                if n < 0:
                    raise AvroDecodeError("negative header value length")
            if n > end - pos:
                raise AvroDecodeError(f"header value length {n} exceeds the bytes left")
            headers[key] = buf[pos : pos + n].decode("utf-8")
            pos += n


def read_event(
    buf: bytes, pos: int = 0, limits: CallLimits = DEFAULT_CALL_LIMITS
) -> tuple[tuple[dict[str, str], bytes], int]:
    """One AvroFlumeEvent at ``pos``; returns ((headers, body), next position)."""
    end = len(buf)
    try:
        headers, pos = _read_headers(buf, pos, end, limits.max_headers_per_event, limits.max_header_bytes_per_event)
        n, pos = _read_long(buf, pos)
    except IndexError:
        raise AvroDecodeError("truncated event") from None
    except UnicodeDecodeError:
        raise AvroDecodeError("a header is not valid UTF-8") from None
    if n < 0 or n > end - pos:
        raise AvroDecodeError(f"body length {n} out of range")
    if n > limits.max_body_bytes:
        raise LimitExceeded("body", f"an event body of {n} bytes, over the cap of {limits.max_body_bytes}")
    return (headers, buf[pos : pos + n]), pos + n


def decode_event(data: bytes) -> FlumeEvent:
    """Exactly one encoded event; trailing bytes are an error."""
    (headers, body), pos = read_event(data)
    if pos != len(data):
        raise AvroDecodeError(f"{len(data) - pos} bytes after the event")
    return FlumeEvent(body=body, headers=headers)


def read_event_array(
    buf: bytes, pos: int = 0, max_events: int | None = None, limits: CallLimits = DEFAULT_CALL_LIMITS
) -> tuple[list[tuple[dict[str, str], bytes]], int]:
    """An ``array<AvroFlumeEvent>`` at ``pos``; returns (events, next position).

    Raises AvroDecodeError on any malformation, LimitExceeded past one of ``limits`` (or more
    than ``max_events`` events, when given).
    """
    end = len(buf)
    events: list[tuple[dict[str, str], bytes]] = []
    append = events.append
    limit = min(end, limits.max_events if max_events is None else max_events)
    max_body = limits.max_body_bytes
    max_hdr_event, max_hdr_bytes_event = limits.max_headers_per_event, limits.max_header_bytes_per_event
    # Per-call header budget, spent as events are decoded (each event is capped on its own
    # first, so the overshoot before the check is at most one event's worth).
    hdr_left, hdr_bytes_left = limits.max_headers_per_call, limits.max_header_bytes_per_call
    # A header entry takes at least 2 bytes: when the whole call is too small to pass either cap
    # (the usual case), the per-event accounting is skipped.
    count_call = hdr_left * 2 < end - pos or hdr_bytes_left < end - pos
    # Events of one batch mostly share their headers (one tailed file, one set of static
    # headers). Avro encodings are prefix-free, so when the bytes at ``pos`` start with the
    # previous event's encoded map, that is this event's map: copy the dict, skip the parse.
    last_raw = b"\x00"
    last_headers: dict[str, str] = {}
    try:
        while True:
            b = buf[pos]
            if b < 0x80:
                count = (b >> 1) ^ -(b & 1)
                pos += 1
            else:
                count, pos = _read_long(buf, pos)
            if count == 0:
                return events, pos
            if count < 0:
                count = -count
                size, pos = _read_long(buf, pos)
                if size < 0 or size > end - pos:
                    raise AvroDecodeError(f"array block byte size {size} out of range")
            if count * 2 > end - pos:
                raise AvroDecodeError(f"array block count {count} exceeds the bytes left")
            if len(events) + count > limit:
                raise LimitExceeded("events", f"more than {limit} events in one call")
            for _ in range(count):
                if buf[pos] == 0:
                    headers: dict[str, str] = {}
                    pos += 1
                else:
                    if buf.startswith(last_raw, pos):
                        headers = last_headers.copy()
                        pos += len(last_raw)
                    else:
                        start = pos
                        headers, pos = _read_headers(buf, pos, end, max_hdr_event, max_hdr_bytes_event)
                        last_raw = buf[start:pos]
                        last_headers = headers
                    if count_call:
                        hdr_left -= len(headers)
                        hdr_bytes_left -= len(last_raw)
                        if hdr_left < 0:
                            raise LimitExceeded("headers", f"more than {limits.max_headers_per_call} headers in one call")
                        if hdr_bytes_left < 0:
                            raise LimitExceeded(
                                "header-bytes", f"headers of more than {limits.max_header_bytes_per_call} bytes in one call"
                            )
                b = buf[pos]
                if b < 0x80:
                    if b & 1:
                        raise AvroDecodeError("negative body length")
                    n = b >> 1
                    pos += 1
                elif buf[pos + 1] < 0x80:  # two bytes: a body of 64 to 8191 bytes, a log line's length
                    n = (b & 0x7F) | (buf[pos + 1] << 7)
                    if n & 1:
                        raise AvroDecodeError("negative body length")
                    n >>= 1
                    pos += 2
                else:
                    n, pos = _read_long(buf, pos)
                    if n < 0:
                        raise AvroDecodeError("negative body length")
                if n > end - pos:
                    raise AvroDecodeError(f"body length {n} exceeds the bytes left")
                if n > max_body:
                    raise LimitExceeded("body", f"an event body of {n} bytes, over the cap of {max_body}")
                npos = pos + n
                append((headers, buf[pos:npos]))
                pos = npos
    except IndexError:
        raise AvroDecodeError("truncated event array") from None
    except UnicodeDecodeError:
        raise AvroDecodeError("a header is not valid UTF-8") from None
