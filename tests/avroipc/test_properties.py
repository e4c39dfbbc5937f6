"""Property tests: random and mutated input only ever yields RemoteProtocolError, and round trips hold.

Memory stays bounded because every allocation in the core is checked against bytes that actually
arrived (framing) or against the bytes left in a frame (records); the caps are lowered here so
that a random length is far more often "too big" than "wait for more".
"""

from __future__ import annotations

import io

import avro.io
import avro.schema
import fastavro
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper.avroipc import (
    CallRefused,
    CallFailed,
    CallReceived,
    CallSucceeded,
    ClientConnection,
    ConnectionClosed,
    FrameDecoder,
    HandshakeCompleted,
    HandshakeRetry,
    ProtocolCache,
    RemoteProtocolError,
    ServerConnection,
    Status,
    ZlibDecoder,
    ZlibEncoder,
    encode_frame,
)
from shipper.avroipc.avro import AvroDecodeError
from shipper.avroipc.flume_event import encode_batch, encode_event, read_event, read_event_array
from tests.avroipc import vectors as v

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CAPS = dict(max_buffers=64, max_frame_bytes=1 << 20)

headers_st = st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=3)
body_st = st.binary(max_size=300)
events_st = st.lists(st.tuples(headers_st, body_st), max_size=12)

# A whole client -> server byte stream of a real session (handshake, then established calls)
# and the matching server -> client stream, to mutate.
REQUEST_STREAM = v.V1_REQUEST + v.V3_REQUEST + v.V4_REQUEST + v.V5_REQUEST
RESPONSE_STREAM = v.V2_RESPONSE + v.V3_RESPONSE + v.V4_RESPONSE + v.V6_RESPONSE + v.V5_RESPONSE


@st.composite
def mutated(draw, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "set"]))
        i = draw(st.integers(0, max(len(b) - 1, 0)))
        if kind == "flip" and b:
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and b:
            b[i] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif kind == "delete":
            del b[i : i + draw(st.integers(1, 16))]
        elif kind == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "truncate":
            del b[i:]
    return bytes(b)


def split(draw, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    out, prev = [], 0
    for c in cuts + [len(data)]:
        out.append(data[prev:c])
        prev = c
    return [p for p in out if p]


def run_server(server: ServerConnection, pieces: list[bytes], sent: list | None = None) -> list:
    """Feed and answer everything; return the events. Only RemoteProtocolError may escape."""
    events = []
    for p in pieces:
        if not p:
            continue  # b"" would mean EOF
        server.receive_data(p)
        while (e := server.next_event()) is not None:
            if isinstance(e, CallRefused):  # already answered with a system error
                continue
            assert isinstance(e, CallReceived)
            assert e.message in ("append", "appendBatch")
            for headers, body in e.events:
                assert isinstance(body, bytes) and all(isinstance(k, str) for k in headers)
            server.respond(e.serial, Status.OK)
            events.append(e)
        out = server.data_to_send()
        if sent is not None:
            sent.append(out)
    return events


def run_client(client: ClientConnection, pieces: list[bytes]) -> list:
    events = []
    for p in pieces:
        if not p:
            continue
        client.receive_data(p)
        while (e := client.next_event()) is not None:
            assert isinstance(e, (HandshakeCompleted, HandshakeRetry, CallSucceeded, CallFailed))
            events.append(e)
        client.data_to_send()
    return events


@SETTINGS
@given(st.binary(max_size=400), st.booleans())
def test_server_fed_random_bytes_raises_only_remote_protocol_errors(data, established):
    server = ServerConnection(ProtocolCache(), **CAPS)
    server.established = established
    try:
        run_server(server, [data])
    except RemoteProtocolError:
        pass


@SETTINGS
@given(st.data())
def test_server_fed_a_mutated_session_raises_only_remote_protocol_errors(data):
    stream = data.draw(mutated(REQUEST_STREAM))
    server = ServerConnection(ProtocolCache(), **CAPS)
    try:
        run_server(server, split(data.draw, stream))
    except RemoteProtocolError:
        pass
    server.receive_data(b"")
    try:
        server.next_event()
    except RemoteProtocolError:
        pass


@SETTINGS
@given(st.data())
def test_client_fed_a_mutated_session_raises_only_remote_protocol_errors(data):
    client = ClientConnection(**CAPS)
    client.send_append_batch([encode_event({}, b"hello")])
    run_client(client, [v.V2_RESPONSE])
    for _ in range(4):
        client.send_append(encode_event({}, b"x"))
    stream = data.draw(mutated(RESPONSE_STREAM[len(v.V2_RESPONSE) :]))
    try:
        events = run_client(client, split(data.draw, stream))
    except RemoteProtocolError:
        return
    assert all(e.serial in (2, 3, 4, 5) for e in events)


@SETTINGS
@given(st.data())
def test_client_fed_a_mutated_handshake_raises_only_remote_protocol_errors(data):
    client = ClientConnection(**CAPS)
    client.send_append_batch([encode_event({}, b"hello")])
    source = data.draw(st.sampled_from([v.V2_RESPONSE, v.V7_NONE_RESPONSE, v.V8_RESPONSE]))
    try:
        run_client(client, split(data.draw, data.draw(mutated(source))))
    except RemoteProtocolError:
        pass


@SETTINGS
@given(st.binary(max_size=400))
def test_client_fed_random_bytes_raises_only_remote_protocol_errors(data):
    client = ClientConnection(**CAPS)
    client.send_append_batch([])
    try:
        run_client(client, [data])
    except RemoteProtocolError:
        pass


@SETTINGS
@given(st.binary(max_size=64), st.integers(0, 2**31 - 1))
def test_frame_header_with_any_length_never_allocates_it(prefix, claimed):
    dec = FrameDecoder(max_buffers=16, max_frame_bytes=1 << 16)
    header = encode_frame(1, [b""])[:8] + claimed.to_bytes(4, "big")
    try:
        frames = dec.feed(header)
    except RemoteProtocolError:
        assert claimed > 1 << 16
        return
    assert claimed <= 1 << 16
    body = prefix[:claimed]
    frames += dec.feed(body)
    assert dec.buffered <= len(body)
    assert (frames != []) == (len(body) == claimed)


@SETTINGS
@given(st.data())
def test_deflate_decoder_fed_mutated_streams_raises_only_remote_protocol_errors(data):
    stream = data.draw(mutated(b"".join(v.V9_CLIENT_WRITES)))
    dec = ZlibDecoder(max_output=1 << 20)
    try:
        for p in split(data.draw, stream):
            dec.decode(p)
    except RemoteProtocolError:
        pass


@SETTINGS
@given(st.binary(max_size=200))
def test_event_array_reader_fed_random_bytes_raises_only_decode_errors(data):
    try:
        events, pos = read_event_array(data, 0, 1000)
    except AvroDecodeError:
        return
    assert pos <= len(data) and len(events) <= len(data) // 2


@SETTINGS
@given(events_st, st.data())
def test_client_to_server_round_trip_in_random_pieces(events, data):
    client, server = ClientConnection(), ServerConnection(ProtocolCache())
    serial = client.send_append_batch([encode_event(h, b) for h, b in events])
    sent: list[bytes] = []
    got = run_server(server, split(data.draw, client.data_to_send()), sent)
    assert got == [CallReceived(serial, "appendBatch", events)]
    answers = run_client(client, split(data.draw, b"".join(sent)))
    assert answers[-1] == CallSucceeded(serial, Status.OK)


@SETTINGS
@given(events_st, st.integers(0, 9))
def test_deflate_round_trip_of_many_frames(events, level):
    enc, dec = ZlibEncoder(level), ZlibDecoder()
    frames = [encode_frame(i, [encode_batch([encode_event(h, b) for h, b in events])]) for i in range(3)]
    assert b"".join(dec.decode(enc.encode(f)) for f in frames) == b"".join(frames)


# --- cross-checks of the record codec against Apache's avro package and fastavro ---

EVENT_SCHEMA = {
    "type": "record",
    "name": "AvroFlumeEvent",
    "namespace": "org.apache.flume.source.avro",
    "fields": [
        {"name": "headers", "type": {"type": "map", "values": "string"}},
        {"name": "body", "type": "bytes"},
    ],
}
APACHE_EVENT = avro.schema.parse(__import__("json").dumps(EVENT_SCHEMA))
APACHE_ARRAY = avro.schema.parse(__import__("json").dumps({"type": "array", "items": EVENT_SCHEMA}))
FAST_ARRAY = fastavro.parse_schema({"type": "array", "items": EVENT_SCHEMA})


def apache_encode(schema, datum) -> bytes:
    out = io.BytesIO()
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(out))
    return out.getvalue()


@SETTINGS
@given(headers_st, body_st)
def test_event_encoding_equals_apache_avro(headers, body):
    ours = encode_event(headers, body)
    assert ours == apache_encode(APACHE_EVENT, {"headers": headers, "body": body})
    assert read_event(ours) == ((headers, body), len(ours))


@SETTINGS
@given(events_st)
def test_batch_equals_apache_avro_and_decodes_like_fastavro(events):
    datum = [{"headers": h, "body": b} for h, b in events]
    ours = encode_batch([encode_event(h, b) for h, b in events])
    apache = apache_encode(APACHE_ARRAY, datum)
    # Apache's Python writer puts an empty array as 00 and one block otherwise, like Java.
    assert ours == apache
    assert read_event_array(apache, 0) == (events, len(apache))
    assert fastavro.schemaless_reader(io.BytesIO(ours), FAST_ARRAY) == datum


@SETTINGS
@given(st.lists(events_st, min_size=1, max_size=4))
def test_multi_block_arrays_from_fastavro_style_writers_decode(blocks):
    # Readers must accept several blocks, and negative counts with a byte size (§4).
    from shipper.avroipc.avro import encode_long

    parts = []
    flat = []
    for i, block in enumerate(blocks):
        if not block:
            continue
        body = b"".join(encode_event(h, b) for h, b in block)
        if i % 2:
            parts.append(encode_long(-len(block)) + encode_long(len(body)) + body)
        else:
            parts.append(encode_long(len(block)) + body)
        flat += block
    data = b"".join(parts) + b"\x00"
    assert read_event_array(data, 0) == (flat, len(data))
    assert fastavro.schemaless_reader(io.BytesIO(data), FAST_ARRAY) == [{"headers": h, "body": b} for h, b in flat]


def test_connection_closed_is_not_an_error_after_random_input():
    server = ServerConnection(ProtocolCache())
    server.receive_data(v.V1_REQUEST[:10])
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed()
