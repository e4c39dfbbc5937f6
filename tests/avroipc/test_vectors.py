"""Every captured vector of avro-rpc-wire.md §8, byte for byte, in both roles.

Encoding: the bytes our side writes equal the vector. Decoding: the vector, fed whole, one byte
at a time, or with the start of the next frame behind it, gives the right events and nothing else.
"""

from __future__ import annotations

import pytest

from shipper.avroipc import (
    PROTOCOL_HASH,
    PROTOCOL_TEXT,
    PROTOCOL_TEXT_1_11_1,
    CallFailed,
    CallReceived,
    CallSucceeded,
    ClientConnection,
    HandshakeCompleted,
    HandshakeRetry,
    ProtocolCache,
    ServerConnection,
    Status,
)
from shipper.avroipc.avro import encode_long
from shipper.avroipc.flume_event import encode_event
from tests.avroipc import vectors as v

NEXT_FRAME = bytes.fromhex("00000063 00000002 0000")  # the start of some later frame


class Feeder:
    """Feeds a connection in one of the modes, carrying the 'trailing' bytes into the next feed."""

    def __init__(self, conn, mode: str) -> None:
        self.conn = conn
        self.mode = mode
        self.carried = 0

    def feed(self, data: bytes, following: bytes = NEXT_FRAME) -> list:
        for piece in v.pieces(data[self.carried :], self.mode, following):
            self.conn.receive_data(piece)
        self.carried = 7 if self.mode == "trailing" else 0
        return drain(self.conn)


def drain(conn) -> list:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


def enc(events) -> list[bytes]:
    return [encode_event(headers, body) for headers, body in events]


@pytest.mark.parametrize("mode", v.FEED_MODES)
def test_client_session_v1_to_v6_is_byte_exact(mode):
    client = ClientConnection()
    feeder = Feeder(client, mode)

    assert client.send_append_batch(enc(v.V1_EVENTS)) == 1
    assert client.data_to_send() == v.V1_REQUEST
    assert feeder.feed(v.V2_RESPONSE, v.V3_RESPONSE) == [
        HandshakeCompleted("BOTH", PROTOCOL_HASH, None),
        CallSucceeded(1, Status.OK),
    ]
    assert client.established

    # Established: several calls in flight, no handshake on the wire.
    assert client.send_append_batch(enc(v.V3_EVENTS)) == 2
    assert client.send_append(enc(v.V4_EVENTS)[0]) == 3
    assert client.send_append_batch(enc(v.V3_EVENTS)) == 4
    assert client.send_append_batch([]) == 5
    sent = client.data_to_send()
    assert sent.startswith(v.V3_REQUEST + v.V4_REQUEST)
    assert sent.endswith(v.V5_REQUEST)

    assert feeder.feed(v.V3_RESPONSE, v.V4_RESPONSE) == [CallSucceeded(2, Status.FAILED)]
    assert feeder.feed(v.V4_RESPONSE, v.V6_RESPONSE) == [CallSucceeded(3, Status.OK)]
    assert feeder.feed(v.V6_RESPONSE, v.V5_RESPONSE) == [CallFailed(4, v.V6_MESSAGE)]
    assert feeder.feed(v.V5_RESPONSE) == [CallSucceeded(5, Status.OK)]
    assert client.pending_calls == 0


@pytest.mark.parametrize("mode", v.FEED_MODES)
def test_server_session_v1_to_v6_is_byte_exact(mode):
    server = ServerConnection(ProtocolCache())
    feeder = Feeder(server, mode)

    assert feeder.feed(v.V1_REQUEST, v.V3_REQUEST) == [CallReceived(1, "appendBatch", v.V1_EVENTS)]
    assert server.established
    server.respond(1, Status.OK)
    assert server.data_to_send() == v.V2_RESPONSE

    assert feeder.feed(v.V3_REQUEST, v.V4_REQUEST) == [CallReceived(2, "appendBatch", v.V3_EVENTS)]
    server.respond(2, Status.FAILED)
    assert server.data_to_send() == v.V3_RESPONSE

    call4 = v.V3_REQUEST[:3] + b"\x04" + v.V3_REQUEST[4:]
    assert feeder.feed(v.V4_REQUEST, call4) == [CallReceived(3, "append", v.V4_EVENTS)]
    server.respond(3, Status.OK)
    assert server.data_to_send() == v.V4_RESPONSE

    assert feeder.feed(call4, v.V5_REQUEST)[0].serial == 4
    server.respond_error(4, v.V6_MESSAGE)
    assert server.data_to_send() == v.V6_RESPONSE

    assert feeder.feed(v.V5_REQUEST) == [CallReceived(5, "appendBatch", [])]
    server.respond(5, Status.OK)
    assert server.data_to_send() == v.V5_RESPONSE


def test_server_answers_in_the_order_the_application_responds():
    server = ServerConnection(ProtocolCache())
    server.receive_data(v.V1_REQUEST)
    drain(server)
    server.respond(1, Status.OK)
    server.data_to_send()
    server.receive_data(v.V3_REQUEST + v.V4_REQUEST)
    assert [e.serial for e in drain(server)] == [2, 3]
    server.respond(3, Status.OK)
    server.respond(2, Status.FAILED)
    assert server.data_to_send() == v.V4_RESPONSE + v.V3_RESPONSE


@pytest.mark.parametrize("mode", v.FEED_MODES)
def test_client_none_then_resend_with_the_1_11_1_text_v7(mode):
    client = ClientConnection(client_protocol=PROTOCOL_TEXT_1_11_1)
    feeder = Feeder(client, mode)
    assert client.send_append_batch(enc(v.V1_EVENTS)) == 1
    assert client.data_to_send() == v.V7_FIRST_REQUEST

    assert feeder.feed(v.V7_NONE_RESPONSE, v.V7_BOTH_RESPONSE) == [HandshakeRetry(PROTOCOL_HASH, PROTOCOL_TEXT)]
    assert not client.established
    assert client.data_to_send() == v.V7_RESEND
    assert len(v.V7_RESEND) - 8 - 4 - 9 - 4 == 1339  # the buffer size the capture shows

    # The final answer carries the caller's serial (1), not the resend's (2).
    assert feeder.feed(v.V7_BOTH_RESPONSE) == [
        HandshakeCompleted("BOTH", PROTOCOL_HASH, None),
        CallSucceeded(1, Status.OK),
    ]
    assert client.established


@pytest.mark.parametrize("mode", v.FEED_MODES)
def test_server_that_knows_only_itself_answers_none_then_both_v7(mode):
    server = ServerConnection(ProtocolCache(preregister=False))
    feeder = Feeder(server, mode)
    assert feeder.feed(v.V7_FIRST_REQUEST, v.V7_RESEND) == []  # NONE: the call is not run
    assert server.data_to_send() == v.V7_NONE_RESPONSE
    assert not server.established
    assert feeder.feed(v.V7_RESEND) == [CallReceived(2, "appendBatch", v.V1_EVENTS)]
    server.respond(2, Status.OK)
    assert server.data_to_send() == v.V7_BOTH_RESPONSE


def test_server_preregistering_1_11_1_answers_client_without_a_round_trip():
    # Our default cache knows the 8076 text, so a Flume-master client (which guesses its own
    # hash as serverHash) gets CLIENT at once: the call runs on the first request.
    server = ServerConnection(ProtocolCache())
    server.receive_data(v.V7_FIRST_REQUEST)
    assert drain(server) == [CallReceived(1, "appendBatch", v.V1_EVENTS)]
    server.respond(1, Status.OK)
    assert server.data_to_send() == v.V8_RESPONSE


@pytest.mark.parametrize("mode", v.FEED_MODES)
def test_client_reads_client_match_v8(mode):
    wrong = bytes(16)
    client = ClientConnection(server_hash=wrong)
    client.send_append_batch(enc(v.V1_EVENTS))
    sent = client.data_to_send()
    assert sent == v.V1_REQUEST.replace(bytes(1) + PROTOCOL_HASH + b"\x02\x00", bytes(1) + wrong + b"\x02\x00")
    assert Feeder(client, mode).feed(v.V8_RESPONSE) == [
        HandshakeCompleted("CLIENT", PROTOCOL_HASH, PROTOCOL_TEXT),
        CallSucceeded(1, Status.OK),
    ]
    assert client.server_hash == PROTOCOL_HASH


def test_server_answers_client_match_to_a_wrong_server_hash_v8():
    server = ServerConnection(ProtocolCache())
    request = v.V1_REQUEST.replace(bytes(1) + PROTOCOL_HASH + b"\x02\x00", bytes(1) + bytes(16) + b"\x02\x00")
    server.receive_data(request)
    (call,) = drain(server)
    server.respond(call.serial, Status.OK)
    assert server.data_to_send() == v.V8_RESPONSE


def test_avro_primitives_v10():
    assert encode_long(1334) == bytes.fromhex("ec14")
    assert encode_long(1289) == bytes.fromhex("9214")
    assert encode_long(20000) == bytes.fromhex("c0b802")
    assert len(encode_event({}, bytes(20000))) == 20004  # 00, c0b802, body
    assert len(b"\x02" + encode_event({}, bytes(20000)) + b"\x00") == 20006


def test_client_splits_a_20000_byte_body_like_java_v10():
    client = ClientConnection()
    client.send_append_batch([encode_event({}, bytes(20000))])
    frame = client.data_to_send()
    lens, pos = [], 8
    while pos < len(frame):
        n = int.from_bytes(frame[pos : pos + 4], "big")
        lens.append(n)
        pos += 4 + n
    assert lens == [48, 8192, 8192, 3622]
    server = ServerConnection(ProtocolCache())
    server.receive_data(frame)
    assert drain(server) == [CallReceived(1, "appendBatch", [({}, bytes(20000))])]


def test_the_written_out_protocol_hashes_are_the_md5s_of_the_texts():
    import hashlib

    from shipper.avroipc import PROTOCOL_HASH_1_11_1, protocol_hash

    assert PROTOCOL_HASH == hashlib.md5(PROTOCOL_TEXT.encode("utf-8")).digest()
    assert PROTOCOL_HASH_1_11_1 == hashlib.md5(PROTOCOL_TEXT_1_11_1.encode("utf-8")).digest()
    other = PROTOCOL_TEXT.replace("AvroSourceProtocol", "OtherProtocol")
    assert protocol_hash(other) == hashlib.md5(other.encode("utf-8")).digest()


def test_the_small_length_table_is_zigzag_of_every_length_it_holds():
    from shipper.avroipc.avro import SMALL_ZIGZAG, zigzag

    assert len(SMALL_ZIGZAG) == 8192
    assert all(SMALL_ZIGZAG[n] == zigzag(n) for n in range(8192))
