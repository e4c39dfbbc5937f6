"""deflate (avro-rpc-wire.md §5.1, V9): one zlib stream per direction, a sync flush per write."""

from __future__ import annotations

import tracemalloc
import zlib

import pytest

from shipper.avroipc import (
    CallReceived,
    CallSucceeded,
    ClientConnection,
    ConnectionClosed,
    HandshakeCompleted,
    ProtocolCache,
    RemoteProtocolError,
    ServerConnection,
    Status,
    ZlibDecoder,
    ZlibEncoder,
)
from shipper.avroipc.flume_event import encode_event
from tests.avroipc import vectors as v
from tests.avroipc.test_vectors import drain

# Python's zlib gave JZlib's bytes for these frames; a different zlib build (zlib-ng) need not.
STOCK_ZLIB = "ng" not in zlib.ZLIB_RUNTIME_VERSION


@pytest.mark.skipif(not STOCK_ZLIB, reason="byte equality with JZlib holds for stock zlib only")
def test_client_deflate_stream_equals_the_captured_v9():
    client = ClientConnection()
    enc = ZlibEncoder()
    client.send_append_batch([encode_event({}, b"hello")])
    writes = [enc.encode(client.data_to_send())]
    client.receive_data(v.V2_RESPONSE)
    drain(client)
    client.send_append_batch([encode_event({}, b"again")])
    writes.append(enc.encode(client.data_to_send()))
    writes.append(enc.finish())
    assert writes == v.V9_CLIENT_WRITES


@pytest.mark.skipif(not STOCK_ZLIB, reason="byte equality with JZlib holds for stock zlib only")
def test_server_deflate_stream_equals_the_captured_v9():
    server = ServerConnection(ProtocolCache())
    dec, enc = ZlibDecoder(), ZlibEncoder()
    out = b""
    for write in v.V9_CLIENT_WRITES:
        plain = dec.decode(write)
        if plain:  # receive_data(b"") would mean EOF
            server.receive_data(plain)
        for call in drain(server):
            server.respond(call.serial, Status.OK)
            out += enc.encode(server.data_to_send())
    assert out == v.V9_SERVER_STREAM
    assert dec.eof


@pytest.mark.parametrize("mode", v.FEED_MODES)
def test_server_decodes_the_v9_client_stream(mode):
    dec = ZlibDecoder()
    stream = b"".join(v.V9_CLIENT_WRITES)
    plain = b"".join(dec.decode(p) for p in v.pieces(stream, mode))
    if mode == "trailing":
        # 7 bytes beyond the stream's end cannot be the start of anything.
        with pytest.raises(RemoteProtocolError):
            ZlibDecoder().decode(stream + b"\x00" * 7)
        plain = ZlibDecoder().decode(stream)
    assert plain == v.V1_REQUEST + v.V9_SECOND_REQUEST
    server = ServerConnection(ProtocolCache())
    server.receive_data(plain)
    server.receive_data(b"")
    assert drain_until_closed(server) == [
        CallReceived(1, "appendBatch", [({}, b"hello")]),
        CallReceived(2, "appendBatch", [({}, b"again")]),
    ]


@pytest.mark.parametrize("mode", v.FEED_MODES)
def test_client_decodes_the_v9_server_stream(mode):
    cut = v.V9_SERVER_STREAM.index(b"\x00\x00\xff\xff") + 4  # the server's two writes
    first, second = v.V9_SERVER_STREAM[:cut], v.V9_SERVER_STREAM[cut:]
    client = ClientConnection()
    client.send_append_batch([encode_event({}, b"hello")])
    dec = ZlibDecoder()

    def feed(pieces):
        for p in pieces:
            plain = dec.decode(p)
            if plain:  # receive_data(b"") would mean EOF
                client.receive_data(plain)
        return drain(client)

    # "trailing": 3 bytes of the next write inflate to 8 bytes, the next frame's header only.
    fed_ahead = 3 if mode == "trailing" else 0
    assert feed([first + second[:3]] if fed_ahead else v.pieces(first, mode)) == [
        HandshakeCompleted("BOTH", v.PROTOCOL_HASH, None),
        CallSucceeded(1, Status.OK),
    ]
    client.send_append_batch([encode_event({}, b"again")])
    assert feed(v.pieces(second[fed_ahead:], "bytewise" if mode == "bytewise" else "whole")) == [
        CallSucceeded(2, Status.OK)
    ]


def drain_until_closed(conn) -> list:
    events = []
    while not isinstance(event := conn.next_event(), ConnectionClosed):
        events.append(event)
    return events


def test_eof_without_the_trailer_loses_nothing():
    dec = ZlibDecoder()
    assert dec.decode(b"".join(v.V9_CLIENT_WRITES[:2])) == v.V1_REQUEST + v.V9_SECOND_REQUEST
    assert not dec.eof


def test_stream_is_not_restarted_between_frames():
    enc = ZlibEncoder()
    first = enc.encode(v.V1_REQUEST)
    second = enc.encode(v.V1_REQUEST)
    assert first.startswith(b"\x78\x9c") and not second.startswith(b"\x78\x9c")
    assert second.endswith(b"\x00\x00\xff\xff")
    # The second write refers back to the first: it cannot be read on its own.
    assert ZlibDecoder().decode(first + second) == v.V1_REQUEST * 2


def test_plain_bytes_to_a_deflate_reader_are_refused():
    with pytest.raises(RemoteProtocolError):
        ZlibDecoder().decode(v.V1_REQUEST)


def test_zip_bomb_is_refused_without_inflating_it_all():
    bomb = zlib.compress(bytes(200 * 1024 * 1024), 9)  # 200 MiB of zeros in ~200 KB
    dec = ZlibDecoder(max_output=8 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError):
            dec.decode(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024


def test_large_legitimate_frame_inflates_across_many_steps():
    payload = bytes(range(256)) * 8192  # 2 MiB
    enc = ZlibEncoder()
    assert ZlibDecoder().decode(enc.encode(payload)) == payload
