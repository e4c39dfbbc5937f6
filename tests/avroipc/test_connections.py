"""Client and server state machines wired back to back, no socket (avro-rpc-wire.md §3, §4, §9)."""

from __future__ import annotations

import json
import struct

import pytest

from shipper.avroipc import (
    CallLimits,
    CallRefused,
    PROTOCOL_HASH,
    PROTOCOL_HASH_1_11_1,
    PROTOCOL_TEXT,
    PROTOCOL_TEXT_1_11_1,
    CallFailed,
    CallReceived,
    CallSucceeded,
    ClientConnection,
    ConnectionClosed,
    HandshakeCompleted,
    HandshakeRetry,
    LocalProtocolError,
    ProtocolCache,
    RemoteProtocolError,
    ServerConnection,
    Status,
    encode_frame,
    protocol_hash,
)
from shipper.avroipc.avro import encode_long, encode_string
from shipper.avroipc.protocol import compact_json
from shipper.avroipc.flume_event import encode_event
from tests.avroipc import vectors as v
from tests.avroipc.test_vectors import drain

EV = [encode_event({"host": "a"}, b"line 1"), encode_event({}, b"line 2")]
EV_DECODED = [({"host": "a"}, b"line 1"), ({}, b"line 2")]


def other_protocol() -> str:
    """A protocol text neither side knows in advance (a different doc string)."""
    obj = json.loads(PROTOCOL_TEXT)
    obj["doc"] = "a build of our own"
    return compact_json(json.dumps(obj))


def to_server(client: ClientConnection, server: ServerConnection) -> list:
    server.receive_data(client.data_to_send())
    return drain(server)


def to_client(server: ServerConnection, client: ClientConnection) -> list:
    client.receive_data(server.data_to_send())
    return drain(client)


def answer_all(server, events, status=Status.OK):
    for e in events:
        server.respond(e.serial, status)


def established_pair(**client_kw):
    client, server = ClientConnection(**client_kw), ServerConnection(ProtocolCache())
    client.send_append_batch([])
    answer_all(server, to_server(client, server))
    to_client(server, client)
    assert client.established and server.established
    return client, server


def test_first_call_gets_both_with_released_flume_hash():
    client, server = ClientConnection(), ServerConnection(ProtocolCache())
    serial = client.send_append_batch(EV)
    assert to_server(client, server) == [CallReceived(serial, "appendBatch", EV_DECODED)]
    server.respond(serial, Status.OK)
    assert to_client(server, client) == [
        HandshakeCompleted("BOTH", PROTOCOL_HASH, None),
        CallSucceeded(serial, Status.OK),
    ]


def test_unknown_client_protocol_none_then_resend_then_both_and_cached_for_the_next_connection():
    text = other_protocol()
    cache = ProtocolCache()
    client, server = ClientConnection(client_protocol=text, server_hash=PROTOCOL_HASH), ServerConnection(cache)
    serial = client.send_append(EV[0])
    assert to_server(client, server) == []  # NONE: the call did not run
    assert to_client(server, client) == [HandshakeRetry(PROTOCOL_HASH, PROTOCOL_TEXT)]
    (call,) = to_server(client, server)
    assert call.serial != serial and call.events == EV_DECODED[:1]
    server.respond(call.serial, Status.OK)
    assert to_client(server, client) == [
        HandshakeCompleted("BOTH", PROTOCOL_HASH, None),
        CallSucceeded(serial, Status.OK),
    ]
    # The server kept the text: a new connection from the same client gets BOTH at once.
    client2, server2 = ClientConnection(client_protocol=text, server_hash=PROTOCOL_HASH), ServerConnection(cache)
    s2 = client2.send_append(EV[0])
    answer_all(server2, to_server(client2, server2))
    assert to_client(server2, client2)[-1] == CallSucceeded(s2, Status.OK)


def test_flume_master_client_against_java_like_server_none_resend_both():
    client = ClientConnection(client_protocol=PROTOCOL_TEXT_1_11_1)
    server = ServerConnection(ProtocolCache(preregister=False))
    serial = client.send_append_batch(EV)
    assert to_server(client, server) == []
    assert to_client(server, client) == [HandshakeRetry(PROTOCOL_HASH, PROTOCOL_TEXT)]
    assert client.server_hash == PROTOCOL_HASH
    answer_all(server, to_server(client, server))
    assert to_client(server, client) == [
        HandshakeCompleted("BOTH", PROTOCOL_HASH, None),
        CallSucceeded(serial, Status.OK),
    ]
    assert server.cache.get(PROTOCOL_HASH_1_11_1) == PROTOCOL_TEXT_1_11_1


def test_server_with_another_protocol_answers_client_and_client_learns_its_hash():
    server_text = other_protocol()
    client, server = ClientConnection(), ServerConnection(ProtocolCache(server_text))
    serial = client.send_append_batch(EV)
    answer_all(server, to_server(client, server))
    assert to_client(server, client) == [
        HandshakeCompleted("CLIENT", protocol_hash(server_text), server_text),
        CallSucceeded(serial, Status.OK),
    ]


def test_out_of_order_answers_are_matched_by_serial():
    client, server = established_pair()
    serials = [client.send_append_batch(EV) for _ in range(3)]
    calls = to_server(client, server)
    assert [c.serial for c in calls] == serials
    server.respond(serials[2], Status.OK)
    server.respond(serials[0], Status.FAILED)
    server.respond_error(serials[1], "java.lang.Error: out of memory")
    assert to_client(server, client) == [
        CallSucceeded(serials[2], Status.OK),
        CallSucceeded(serials[0], Status.FAILED),
        CallFailed(serials[1], "java.lang.Error: out of memory"),
    ]
    assert client.pending_calls == 0 and server.pending_calls == 0


def test_failed_status_on_the_handshaking_call_still_establishes():
    client, server = ClientConnection(), ServerConnection(ProtocolCache())
    serial = client.send_append_batch(EV)
    answer_all(server, to_server(client, server), Status.FAILED)
    assert to_client(server, client)[-1] == CallSucceeded(serial, Status.FAILED)
    assert client.established


def test_system_error_on_the_handshaking_call_carries_the_handshake():
    client, server = ClientConnection(), ServerConnection(ProtocolCache())
    serial = client.send_append_batch(EV)
    (call,) = to_server(client, server)
    server.respond_error(call.serial, "boom")
    assert to_client(server, client) == [HandshakeCompleted("BOTH", PROTOCOL_HASH, None), CallFailed(serial, "boom")]


def test_unknown_status_is_decoded_as_not_ok():
    client, server = established_pair()
    serial = client.send_append(EV[0])
    answer_all(server, to_server(client, server), Status.UNKNOWN)
    assert to_client(server, client) == [CallSucceeded(serial, Status.UNKNOWN)]


def test_no_second_call_before_the_handshake_finishes():
    client = ClientConnection()
    client.send_append_batch(EV)
    with pytest.raises(LocalProtocolError):
        client.send_append_batch(EV)
    with pytest.raises(LocalProtocolError):
        client.send_ping()


def test_ping_is_answered_with_the_handshake_only():
    client, server = ClientConnection(), ServerConnection(ProtocolCache())
    client.send_ping()
    assert to_server(client, server) == []
    raw = server.data_to_send()
    assert raw == encode_frame(1, [b"\x00\x00\x00\x00"])  # BOTH, one buffer
    client.receive_data(raw)
    assert drain(client) == [HandshakeCompleted("BOTH", PROTOCOL_HASH, None)]
    assert client.established and server.established
    serial = client.send_append(EV[0])
    answer_all(server, to_server(client, server))
    assert to_client(server, client) == [CallSucceeded(serial, Status.OK)]


def test_ping_with_unknown_protocol_goes_through_none():
    client = ClientConnection(client_protocol=other_protocol())
    server = ServerConnection(ProtocolCache())
    client.send_ping()
    to_server(client, server)
    assert isinstance(to_client(server, client)[0], HandshakeRetry)
    to_server(client, server)
    assert to_client(server, client) == [HandshakeCompleted("BOTH", PROTOCOL_HASH, None)]


def test_serials_wrap_to_negative_like_java():
    client, server = established_pair()
    client._next_serial = 2**31 - 1
    a, b = client.send_append(EV[0]), client.send_append(EV[0])
    assert (a, b) == (2**31 - 1, -(2**31))
    answer_all(server, to_server(client, server))
    assert to_client(server, client) == [CallSucceeded(a, Status.OK), CallSucceeded(b, Status.OK)]


def test_eof_is_reported_and_repeated():
    client, server = established_pair()
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed() == server.next_event()
    client.receive_data(b"")
    assert client.next_event() == ConnectionClosed()
    with pytest.raises(LocalProtocolError):
        client.send_append(EV[0])


def test_server_refuses_to_answer_a_call_it_never_received():
    client, server = established_pair()
    with pytest.raises(LocalProtocolError):
        server.respond(99, Status.OK)


# --- the server against odd or hostile clients ---


def request(serial, head: bytes, params: bytes) -> bytes:
    return encode_frame(serial, [head, params])


def handshake(client_hash=PROTOCOL_HASH, text=None, server_hash=PROTOCOL_HASH, meta=b"\x02\x00") -> bytes:
    proto = b"\x00" if text is None else b"\x02" + encode_string(text)
    return client_hash + proto + server_hash + meta


BATCH_HEAD = b"\x00" + encode_string("appendBatch")
ONE = b"\x02" + EV[0] + b"\x00"


def answer(server: ServerConnection, data: bytes) -> tuple[list, list[bytes]]:
    """Feed a request; return the events and the response's buffers (if any)."""
    server.receive_data(data)
    events = drain(server)
    out = server.data_to_send()
    bufs = []
    if out:
        count = struct.unpack(">i", out[4:8])[0]
        pos = 8
        for _ in range(count):
            (n,) = struct.unpack(">i", out[pos : pos + 4])
            bufs.append(out[pos + 4 : pos + 4 + n])
            pos += 4 + n
        assert pos == len(out)
    return events, bufs


def system_error_text(bufs: list[bytes]) -> str:
    body = b"".join(bufs[2:])
    assert bufs[1] == b"\x00" and body[:2] == b"\x01\x00"
    return body[2:].decode(errors="replace")


def test_request_without_handshake_on_a_fresh_connection_gets_a_system_error():
    server = ServerConnection(ProtocolCache())
    events, bufs = answer(server, request(1, BATCH_HEAD, ONE))
    assert reasons(events) == ["handshake"] and bufs[0] == b"" and system_error_text(bufs)
    assert not server.established
    events, bufs = answer(server, request(2, handshake() + BATCH_HEAD, ONE))
    assert [e.serial for e in events] == [2]


def test_second_handshake_on_an_established_connection_is_a_system_error_and_the_connection_lives():
    server = ServerConnection(ProtocolCache())
    events, _ = answer(server, request(1, handshake() + BATCH_HEAD, ONE))
    server.respond(1, Status.OK)
    server.data_to_send()
    events, bufs = answer(server, request(2, handshake() + BATCH_HEAD, ONE))
    assert reasons(events) == ["metadata"] and bufs[0] == b"" and system_error_text(bufs)
    events, _ = answer(server, request(3, BATCH_HEAD, ONE))
    assert [e.serial for e in events] == [3]


def test_unknown_message_is_a_system_error_named_like_java():
    server = ServerConnection(ProtocolCache())
    _, bufs = answer(server, request(1, handshake() + b"\x00" + encode_string("appendAll"), ONE))
    assert bufs[0] == b"\x00\x00\x00\x00"  # the handshake still goes with this answer
    assert system_error_text(bufs).endswith("No such remote message: appendAll")
    assert server.established


@pytest.mark.parametrize("meta", [b"\x00", b"\x02\x00", b"\x02\x02\x02k\x04vv\x00", b"\x02\x01\x08\x02k\x04vv\x00"])
def test_handshake_meta_null_empty_with_entries_or_negative_block(meta):
    server = ServerConnection(ProtocolCache())
    events, _ = answer(server, request(1, handshake(meta=meta) + BATCH_HEAD, ONE))
    assert events == [CallReceived(1, "appendBatch", EV_DECODED[:1])]


def test_request_metadata_with_entries_and_negative_block_counts():
    server = ServerConnection(ProtocolCache())
    head = handshake() + b"\x02\x02a\x02b\x00" + encode_string("appendBatch")
    params = b"\x01" + encode_long(len(EV[0])) + EV[0] + b"\x00"  # count -1 with a byte size
    events, _ = answer(server, request(1, head, params))
    assert events == [CallReceived(1, "appendBatch", EV_DECODED[:1])]


def test_client_text_that_is_not_a_protocol_is_a_system_error():
    server = ServerConnection(ProtocolCache())
    _, bufs = answer(server, request(1, handshake(client_hash=bytes(16), text="{not json") + BATCH_HEAD, ONE))
    assert system_error_text(bufs) and not server.established


def test_too_many_events_in_one_call_is_a_system_error():
    server = ServerConnection(ProtocolCache(), max_events_per_call=2)
    params = b"\x06" + EV[1] * 3 + b"\x00"
    events, bufs = answer(server, request(1, handshake() + BATCH_HEAD, params))
    assert reasons(events) == ["events"] and "more than 2 events" in system_error_text(bufs)


def test_bytes_after_the_parameters_are_a_system_error():
    server = ServerConnection(ProtocolCache())
    events, bufs = answer(server, request(1, handshake() + BATCH_HEAD, ONE + b"\x00"))
    assert reasons(events) == ["malformed"] and system_error_text(bufs)


def test_learned_protocol_cache_is_bounded():
    cache = ProtocolCache(max_learned=2)
    texts = [PROTOCOL_TEXT.replace('"protocol":', f'"x{i}":0,"protocol":') for i in range(5)]
    for text in texts:
        cache.learn(protocol_hash(text), text)
    assert [cache.get(protocol_hash(t)) is not None for t in texts] == [True, True, False, False, False]


def test_client_text_that_does_not_match_its_hash_is_refused_and_not_cached():
    cache = ProtocolCache()
    server = ServerConnection(cache)
    text = PROTOCOL_TEXT.replace('"protocol":', '"x":0,"protocol":')
    events, bufs = answer(server, request(1, handshake(client_hash=bytes(16), text=text) + BATCH_HEAD, ONE))
    assert reasons(events) == ["protocol"] and "MD5" in system_error_text(bufs)
    assert cache.get(bytes(16)) is None and not server.established


def test_client_text_over_the_cap_is_refused_before_it_is_decoded():
    server = ServerConnection(ProtocolCache(), limits=CallLimits(max_protocol_bytes=100))
    text = PROTOCOL_TEXT
    events, bufs = answer(server, request(1, handshake(client_hash=protocol_hash(text), text=text) + BATCH_HEAD, ONE))
    assert reasons(events) == ["protocol"] and "over the cap of 100" in system_error_text(bufs)


def test_request_metadata_over_the_cap_is_refused():
    server = ServerConnection(ProtocolCache(), limits=CallLimits(max_meta_entries=1))
    head = handshake() + b"\x04\x02a\x02b\x02c\x02d\x00" + encode_string("appendBatch")
    events, _ = answer(server, request(1, head, ONE))
    assert reasons(events) == ["metadata"]


@pytest.mark.parametrize(
    "limits, headers, body, reason",
    [
        (CallLimits(max_headers_per_event=3), {f"k{i}": "v" for i in range(4)}, b"x", "headers"),
        (CallLimits(max_header_bytes_per_event=20), {"k": "v" * 30}, b"x", "header-bytes"),
        (CallLimits(max_headers_per_call=5), {"a": "1", "b": "2"}, b"x", "headers"),
        (CallLimits(max_header_bytes_per_call=20), {"a": "1", "b": "2"}, b"x", "header-bytes"),
        (CallLimits(max_body_bytes=10), {}, b"y" * 11, "body"),
    ],
)
def test_call_limits_refuse_the_call_with_their_reason_and_the_connection_lives(limits, headers, body, reason):
    server = ServerConnection(ProtocolCache(), limits=limits)
    params = encode_long(3) + encode_event(headers, body) * 3 + b"\x00"
    events, bufs = answer(server, request(1, handshake() + BATCH_HEAD, params))
    assert reasons(events) == [reason] and system_error_text(bufs)
    ok = encode_long(1) + encode_event({}, b"fine") + b"\x00"
    events, _ = answer(server, request(2, BATCH_HEAD, ok))
    assert [e.serial for e in events] == [2]


def reasons(events) -> list[str]:
    assert all(isinstance(e, CallRefused) for e in events), events
    return [e.reason for e in events]


# --- the client against odd or hostile servers ---


def test_answer_for_an_unknown_serial_is_a_remote_error():
    client, server = established_pair()
    client.receive_data(v.V4_RESPONSE)
    with pytest.raises(RemoteProtocolError, match="serial 3"):
        client.next_event()


def test_none_after_the_text_was_sent_is_a_remote_error_not_a_loop():
    client = ClientConnection(client_protocol=PROTOCOL_TEXT_1_11_1)
    client.send_append_batch(EV)
    client.data_to_send()
    client.receive_data(v.V7_NONE_RESPONSE)
    drain(client)
    resend = client.data_to_send()
    none_again = v.V7_NONE_RESPONSE[:3] + resend[3:4] + v.V7_NONE_RESPONSE[4:]
    client.receive_data(none_again)
    with pytest.raises(RemoteProtocolError, match="NONE"):
        client.next_event()


def test_none_without_the_server_protocol_is_a_remote_error():
    client = ClientConnection()
    client.send_append_batch(EV)
    client.receive_data(encode_frame(1, [b"\x04\x00\x00\x00"]))
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_handshake_in_every_response_is_caught_not_misread_as_ok():
    # §6.1-2: a stateless server sends BOTH again; Java reads 00000000 as meta/flag/OK.
    client, _ = established_pair()
    serial = client.send_append_batch(EV)
    client.receive_data(encode_frame(serial, [b"\x00\x00\x00\x00", b"\x00", b"\x00\x02"]))
    with pytest.raises(RemoteProtocolError, match="bytes after"):
        client.next_event()


def test_response_metadata_with_entries_and_negative_block_counts():
    client, _ = established_pair()
    serial = client.send_append(EV[0])
    meta = b"\x01\x08\x02k\x04vv\x00"  # one entry in a block of count -1, byte size 4
    client.receive_data(encode_frame(serial, [b"", meta, b"\x00\x02"]))
    assert drain(client) == [CallSucceeded(serial, Status.FAILED)]


def test_error_union_branch_other_than_string_is_a_remote_error():
    client, _ = established_pair()
    serial = client.send_append(EV[0])
    client.receive_data(encode_frame(serial, [b"", b"\x00", b"\x01\x02\x02x"]))
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_remote_error_is_sticky():
    client, _ = established_pair()
    client.receive_data(b"\x00\x00\x00\x01\x00\x00\x00\x00")
    for _ in range(2):
        with pytest.raises(RemoteProtocolError):
            client.next_event()
