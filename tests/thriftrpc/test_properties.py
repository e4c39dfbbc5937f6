"""Property tests of the Thrift core: round trips hold, and hostile input only ever yields
RemoteProtocolError without allocating beyond what the frame could hold.

Every length and count in a frame is checked against the bytes left in that frame before anything
is sliced or built, and a frame's own length against ``max_frame_bytes`` before it is buffered; the
memory bound asserted here is the frame's size times the per-object overhead of the events a frame
of that size can describe (each at least 3 bytes), plus a constant.
"""

from __future__ import annotations

import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper.avroipc.flume_event import encode_event as avro_event
from shipper.thriftrpc import (
    CallFailed,
    CallSucceeded,
    ClientConnection,
    RemoteProtocolError,
    ServerConnection,
    Status,
    frame,
    transcode_payload,
)
from shipper.thriftrpc import codec
from tests.thriftrpc import reference

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
text = st.text(max_size=40)
events = st.lists(st.tuples(st.dictionaries(text, text, max_size=6), st.binary(max_size=300)), max_size=30)
protos = st.sampled_from(("compact", "binary"))


@SETTINGS
@given(protos, events)
def test_stored_events_transcode_to_what_thrift_writes_and_decode_back(proto, evs):
    payload = b"".join(avro_event(headers, body) for headers, body in evs)
    structs = transcode_payload(proto, len(evs), payload)
    assert structs == b"".join(codec.encode_event(proto, h, b) for h, b in evs)
    client, server = ClientConnection(proto), ServerConnection()
    client.send_append_batch_payload(len(evs), payload)
    wire = client.data_to_send()
    assert reference.read_call(proto, wire[4:])[3] == evs
    server.receive_data(wire)
    assert server.next_event().events == evs


@SETTINGS
@given(protos, events, st.integers(1, 0x7FFFFFFF), st.sampled_from(list(Status)))
def test_what_thrift_writes_we_read_in_both_roles(proto, evs, seqid, status):
    server = ServerConnection()
    server.receive_data(frame(reference.append_batch_call(proto, seqid, evs)))
    call = server.next_event()
    assert call.events == evs
    server.respond(call.serial, status)
    assert server.data_to_send()[4:] == reference.status_reply(proto, seqid, int(status))


def _bounded(feed, data: bytes) -> None:
    tracemalloc.start()
    try:
        try:
            feed(data)
        except RemoteProtocolError:
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 + 400 * len(data), f"{peak} bytes for {len(data)} bytes of input"


@SETTINGS
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_either_role(data):
    server = ServerConnection(max_frame_bytes=1 << 20)
    _bounded(server.receive_data, data)
    for proto in ("compact", "binary"):
        client = ClientConnection(proto, max_frame_bytes=1 << 20)
        for _ in range(3):
            client.send_events([])
        _bounded(client.receive_data, data)


@SETTINGS
@given(protos, events, st.data())
def test_mutated_calls_yield_events_or_a_protocol_error(proto, evs, data):
    wire = bytearray(reference.append_batch_call(proto, 1, evs))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del wire[data.draw(st.integers(0, len(wire) - 1)):]
    server = ServerConnection(max_frame_bytes=1 << 20)
    _bounded(server.receive_data, frame(bytes(wire)))


@SETTINGS
@given(protos, st.data())
def test_mutated_answers_yield_an_answer_or_a_protocol_error(proto, data):
    wire = bytearray(reference.status_reply(proto, 1, 0))
    i = data.draw(st.integers(0, len(wire) - 1))
    wire[i] = data.draw(st.integers(0, 255))
    client = ClientConnection(proto)
    client.send_events([])
    try:
        client.receive_data(frame(bytes(wire)))
    except RemoteProtocolError:
        return
    event = client.next_event()
    assert event is None or isinstance(event, (CallSucceeded, CallFailed))


def _generic(proto: str, structs: bytes, n: int):
    r = codec.reader_for(proto, structs)
    return [codec.read_event(r, codec.TYPES[proto]) for _ in range(n)], r.pos


def _fast(proto: str, structs: bytes, n: int):
    r = codec.reader_for(proto, structs)
    return codec.read_events(r, proto, n), r.pos


@SETTINGS
@given(protos, st.lists(st.tuples(st.dictionaries(st.text(max_size=200), text, max_size=4),
                                  st.binary(max_size=400)), max_size=10), st.data())
def test_the_fast_event_loop_agrees_with_the_generic_reader(proto, evs, data):
    structs = bytearray(b"".join(codec.encode_event(proto, h, b) for h, b in evs))
    if structs and data.draw(st.booleans()):
        structs[data.draw(st.integers(0, len(structs) - 1))] = data.draw(st.integers(0, 255))
    outcomes = []
    for read in (_generic, _fast):
        try:
            outcomes.append(read(proto, bytes(structs), len(evs)))
        except RemoteProtocolError:
            outcomes.append("error")
    assert outcomes[0] == outcomes[1]
