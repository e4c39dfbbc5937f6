"""Flume events and their Avro encoding (``AvroFlumeEvent``), kept apart from any transport.

``record AvroFlumeEvent { map<string> headers; bytes body; }``: the headers map (one block,
``00`` when empty) followed by the body as Avro ``bytes``. An ``appendBatch`` parameter is an
array of those: the count, the encoded events back to back, then ``00``.

The channel stores events already encoded, so the sink sends stored bytes as they are; this is
why the encoder works on pieces: the tail source encodes the headers map once for a run of lines
that share it (:func:`encode_headers`) and then only prefixes each body with its length
(:func:`encode_event_with`). Both paths give the same bytes as :func:`encode_event`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from shipper.avroipc.avro import (
    AvroDecodeError,
    Reader,
    encode_bytes,
    encode_string_map,
)
from shipper.avroipc.flume_event import encode_batch_param, read_event_array


@dataclass(frozen=True, slots=True)
class Event:
    """One Flume event: string headers and a raw byte body."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return encode_event(self.body, self.headers)


def encode_headers(headers: Mapping[str, str] | None) -> bytes:
    """The encoded headers map, to be reused for many bodies."""
    return encode_string_map(dict(headers) if headers else None)


def encode_event_with(encoded_headers: bytes, body: bytes) -> bytes:
    """One encoded event from pre-encoded headers and a body."""
    return encoded_headers + encode_bytes(body)


def encode_event(body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
    return encode_headers(headers) + encode_bytes(body)


def encode_batch(encoded_events: Sequence[bytes]) -> bytes:
    """The ``appendBatch`` parameter: an array of already-encoded events, in one block."""
    return encode_batch_param(encoded_events)


def read_event(reader: Reader) -> Event:
    headers = reader.read_string_map()
    body = reader.read_bytes()
    return Event(body=body, headers=headers)


def decode_event(data: bytes) -> Event:
    """Decode exactly one encoded event; trailing bytes are an error."""
    reader = Reader(data)
    event = read_event(reader)
    if not reader.at_end():
        raise AvroDecodeError(f"{reader.remaining} bytes after the event")
    return event


def read_batch(reader: Reader) -> list[Event]:
    # The collector's tight loop (shipper.avroipc.flume_event), wrapped into Event objects.
    pairs, reader.pos = read_event_array(reader.buf, reader.pos)
    return [Event(body=body, headers=headers) for headers, body in pairs]


def decode_batch(data: bytes) -> list[Event]:
    reader = Reader(data)
    events = read_batch(reader)
    if not reader.at_end():
        raise AvroDecodeError(f"{reader.remaining} bytes after the batch")
    return events


def encode_events(events: Iterable[Event]) -> list[bytes]:
    return [e.encode() for e in events]
