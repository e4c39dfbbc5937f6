"""The Thrift core against Apache Thrift's own protocols, byte for byte, in both roles."""

from __future__ import annotations

import struct

import pytest

from shipper.avroipc.flume_event import encode_event as avro_event
from shipper.thriftrpc import (
    CallFailed,
    CallReceived,
    CallSucceeded,
    ClientConnection,
    ConnectionClosed,
    FrameDecoder,
    LocalProtocolError,
    RemoteProtocolError,
    ServerConnection,
    Status,
    frame,
    transcode_payload,
)
from shipper.thriftrpc import codec
from tests.thriftrpc import reference

PROTOS = ("compact", "binary")
EVENTS = [
    ({"host": "web-1", "file": "/var/log/app.log"}, b"first line"),
    ({}, b""),
    ({"k": "v" * 300}, b"x" * 70000),  # multi-byte varints and a long header value
    ({"\u00e9t\u00e9": "\u65e5\u672c"}, bytes(range(256))),
] + [({"n": str(i)}, b"line %d" % i) for i in range(20)]  # more than 14: the long list header


def stored(events) -> bytes:
    return b"".join(avro_event(headers, body) for headers, body in events)


def unframe(data: bytes) -> bytes:
    (n,) = struct.unpack(">i", data[:4])
    assert len(data) == 4 + n
    return data[4:]


@pytest.mark.parametrize("proto", PROTOS)
def test_append_batch_call_is_byte_for_byte_what_thrift_writes(proto):
    conn = ClientConnection(proto)
    seqid = conn.send_append_batch_payload(len(EVENTS), stored(EVENTS))
    assert seqid == 1
    assert unframe(conn.data_to_send()) == reference.append_batch_call(proto, 1, EVENTS)


@pytest.mark.parametrize("proto", PROTOS)
def test_thrift_reads_what_we_encode_from_headers_and_bodies(proto):
    conn = ClientConnection(proto)
    conn.send_events(EVENTS)
    name, mtype, seqid, events = reference.read_call(proto, unframe(conn.data_to_send()))
    assert (name, mtype, seqid) == ("appendBatch", 1, 1)
    assert events == EVENTS


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("status", list(Status))
def test_server_reply_is_what_thrift_writes_and_the_client_reads_it(proto, status):
    server = ServerConnection()
    server.receive_data(frame(reference.append_batch_call(proto, 7, EVENTS)))
    call = server.next_event()
    assert isinstance(call, CallReceived) and call.message == "appendBatch" and call.events == EVENTS
    assert server.proto == proto
    server.respond(call.serial, status)
    out = server.data_to_send()
    assert unframe(out) == reference.status_reply(proto, 7, int(status))
    client = ClientConnection(proto)
    client._seqid = 6
    client.send_events(EVENTS)
    client.receive_data(out)
    assert client.next_event() == CallSucceeded(7, status)


@pytest.mark.parametrize("proto", PROTOS)
def test_client_and_server_back_to_back_fed_one_byte_at_a_time(proto):
    client, server = ClientConnection(proto), ServerConnection()
    serials = [client.send_events(EVENTS[:n]) for n in (0, 1, 5, len(EVENTS))]
    wire = client.data_to_send()
    calls = []
    for i in range(len(wire)):
        server.receive_data(wire[i : i + 1])
        while (ev := server.next_event()) is not None:
            calls.append(ev)
    assert [len(c.events) for c in calls] == [0, 1, 5, len(EVENTS)]
    for c in reversed(calls):  # answers in any order
        server.respond(c.serial, Status.OK)
    back = server.data_to_send()
    for i in range(len(back)):
        client.receive_data(back[i : i + 1])
    got = []
    while (ev := client.next_event()) is not None:
        got.append(ev)
    assert sorted(e.serial for e in got) == serials and all(e.status is Status.OK for e in got)
    client.receive_data(b"")
    assert client.next_event() == ConnectionClosed()


def test_old_non_strict_binary_calls_are_accepted():
    strict = reference.append_batch_call("binary", 3, EVENTS[:2])
    name_len = struct.unpack(">i", strict[4:8])[0]
    name = strict[8 : 8 + name_len]
    seqid = strict[8 + name_len : 12 + name_len]
    old = struct.pack(">i", name_len) + name + b"\x01" + seqid + strict[12 + name_len :]
    server = ServerConnection()
    server.receive_data(frame(old))
    assert server.next_event().events == EVENTS[:2]


@pytest.mark.parametrize("proto", PROTOS)
def test_unknown_method_is_answered_with_an_application_exception(proto):
    server = ServerConnection()
    server.receive_data(frame(codec.message_header(proto, b"ping", codec.CALL, 5) + b"\x00"))
    assert server.next_event() is None
    out = server.data_to_send()
    client = ClientConnection(proto)
    client._pending[5] = b"ping"
    client.receive_data(out)
    event = client.next_event()
    assert isinstance(event, CallFailed) and "Invalid method name: 'ping'" in event.message and "type 1" in event.message


@pytest.mark.parametrize("proto", PROTOS)
def test_respond_error_reaches_the_client_as_call_failed(proto):
    client, server = ClientConnection(proto), ServerConnection()
    serial = client.send_events(EVENTS[:1])
    server.receive_data(client.data_to_send())
    server.respond_error(server.next_event().serial, "disk on fire")
    client.receive_data(server.data_to_send())
    event = client.next_event()
    assert isinstance(event, CallFailed) and event.serial == serial and "disk on fire" in event.message


def test_single_append_call_is_received_as_one_event():
    for proto in PROTOS:
        server = ServerConnection()
        server.receive_data(frame(codec.append_call(proto, 1, codec.encode_event(proto, *EVENTS[0]))))
        call = server.next_event()
        assert call.message == "append" and call.events == EVENTS[:1]


@pytest.mark.parametrize("proto", PROTOS)
def test_answer_in_the_other_protocol_is_named(proto):
    other = "binary" if proto == "compact" else "compact"
    client = ClientConnection(proto)
    client.send_events([])
    with pytest.raises(RemoteProtocolError, match=f"speaks {other}"):
        client.receive_data(frame(reference.status_reply(other, 1, 0)))


def test_answer_to_a_call_never_made_is_a_protocol_error():
    client = ClientConnection("compact")
    client.send_events([])
    with pytest.raises(RemoteProtocolError, match="sequence id 9"):
        client.receive_data(frame(reference.status_reply("compact", 9, 0)))


def test_status_outside_the_enum_is_a_protocol_error():
    client = ClientConnection("binary")
    client.send_events([])
    with pytest.raises(RemoteProtocolError, match="Status 9"):
        client.receive_data(frame(reference.status_reply("binary", 1, 9)))


def test_frame_over_the_limit_is_refused_from_its_length_alone():
    decoder = FrameDecoder(max_frame_bytes=1000)
    with pytest.raises(RemoteProtocolError, match="out of bounds"):
        decoder.feed(struct.pack(">i", 1001))
    with pytest.raises(RemoteProtocolError, match="out of bounds"):
        FrameDecoder().feed(struct.pack(">i", -1))


def test_call_over_the_event_limit_is_answered_with_an_exception_and_the_connection_stays():
    server = ServerConnection(max_events_per_call=3)
    server.receive_data(frame(reference.append_batch_call("compact", 1, EVENTS[:3])))
    assert len(server.next_event().events) == 3
    server.receive_data(frame(reference.append_batch_call("compact", 2, EVENTS[:4])))
    assert server.next_event() is None
    client = ClientConnection("compact")
    client._pending[2] = b"appendBatch"
    client.receive_data(server.data_to_send())
    event = client.next_event()
    assert isinstance(event, CallFailed) and "limit of 3" in event.message
    server.receive_data(frame(reference.append_batch_call("compact", 3, EVENTS[:1])))
    assert server.next_event().events == EVENTS[:1]


def test_a_count_larger_than_the_frame_is_refused():
    # compact list header claiming 2^31 events in a 20-byte frame
    msg = codec.message_header("compact", b"appendBatch", codec.CALL, 1) + b"\x19\xfc\xff\xff\xff\xff\x07"
    with pytest.raises(RemoteProtocolError, match="does not fit"):
        ServerConnection().receive_data(frame(msg))


def test_trailing_bytes_after_a_call_are_a_protocol_error():
    with pytest.raises(RemoteProtocolError, match="after the end"):
        ServerConnection().receive_data(frame(reference.append_batch_call("compact", 1, EVENTS[:1]) + b"\x00"))


def test_not_thrift_at_all_is_named():
    with pytest.raises(RemoteProtocolError, match="not a Thrift message"):
        ServerConnection().receive_data(frame(b"GET / HTTP/1.1\r\n"))


def test_unknown_fields_are_skipped():
    # an event struct with an extra i64 field 9 and a nested struct field 10 before the known ones
    from thrift.Thrift import TType

    for proto in PROTOS:
        buf, p = reference.protocol(proto)

        p.writeStructBegin("x")
        p.writeFieldBegin("extra", TType.I64, 9)
        p.writeI64(-5)
        p.writeFieldEnd()
        p.writeFieldBegin("nested", TType.STRUCT, 10)
        p.writeStructBegin("y")
        p.writeFieldBegin("s", TType.STRING, 1)
        p.writeString("ignored")
        p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()
        p.writeFieldEnd()
        p.writeFieldBegin("headers", TType.MAP, 1)
        p.writeMapBegin(TType.STRING, TType.STRING, 1)
        p.writeString("a")
        p.writeString("b")
        p.writeMapEnd()
        p.writeFieldEnd()
        p.writeFieldBegin("body", TType.STRING, 2)
        p.writeBinary(b"B")
        p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()
        event = buf.getvalue()
        server = ServerConnection()
        server.receive_data(frame(codec.append_call(proto, 1, event)))
        assert server.next_event().events == [({"a": "b"}, b"B")]


def test_event_without_its_body_is_refused():
    for proto in PROTOS:
        event = codec.encode_event(proto, {"a": "b"}, b"")
        cut = event[: event.index(b"\x18" if proto == "compact" else b"\x0b\x00\x02")] + b"\x00"
        with pytest.raises(RemoteProtocolError, match="required"):
            ServerConnection().receive_data(frame(codec.append_call(proto, 1, cut)))


def test_transcoding_refuses_a_payload_that_is_not_count_events():
    payload = stored(EVENTS[:2])
    with pytest.raises(LocalProtocolError):
        transcode_payload("compact", 3, payload)
    with pytest.raises(LocalProtocolError):
        transcode_payload("binary", 1, payload)
    with pytest.raises(LocalProtocolError):
        transcode_payload("compact", 2, payload[:-1])


def test_transcoding_reads_avro_maps_written_in_several_blocks():
    # Avro allows a map in blocks, and a negative count followed by a byte size
    block = lambda s: bytes((len(s) * 2,)) + s  # noqa: E731 - a short Avro string
    avro = b"\x01" + b"\x06" + block(b"a") + block(b"1") + b"\x02" + block(b"b") + block(b"2") + b"\x00" + block(b"body")
    assert transcode_payload("compact", 1, avro) == codec.encode_event("compact", {"a": "1", "b": "2"}, b"body")


@pytest.mark.parametrize("proto", PROTOS)
def test_shared_headers_are_reused_and_a_change_is_seen(proto):
    # Runs of equal headers take the reuse paths (transcoder and decoder); each change must be seen,
    # including a map that starts like the previous one, and a reused dict must not be shared.
    a, ab, b = {"src": "app"}, {"src": "app", "x": "1"}, {"src": "ap"}
    evs = [(a, b"1"), (a, b"2"), (ab, b"3"), (ab, b"4"), ({}, b"5"), ({}, b""), (b, b"7"), (a, b"8")]
    structs = transcode_payload(proto, len(evs), stored(evs))
    assert structs == b"".join(codec.encode_event(proto, h, body) for h, body in evs)
    server = ServerConnection()
    server.receive_data(frame(codec.append_batch_call(proto, 1, len(evs), structs)))
    got = server.next_event().events
    assert got == evs
    got[0][0]["mutated"] = "yes"
    assert got[1][0] == a
