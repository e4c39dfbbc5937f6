"""appendBatch from a pre-joined payload: byte for byte what the per-event path sends."""

from __future__ import annotations

import pytest

from shipper.avroipc import CallReceived, CallSucceeded, ClientConnection, ProtocolCache, ServerConnection, Status
from shipper.avroipc.flume_event import encode_event
from tests.avroipc.test_vectors import drain


def events(n: int, size: int) -> list[bytes]:
    return [encode_event({"host": "h%d" % (i % 3)}, (b"%06d " % i).ljust(size, b"z")) for i in range(n)]


@pytest.mark.parametrize("n,size", [(0, 0), (1, 10), (3, 100), (200, 100), (1000, 30)])
def test_payload_frames_equal_the_per_event_frames_including_the_8192_byte_split(n, size):
    evs = events(n, size)
    a, b = ClientConnection(), ClientConnection()
    a.send_append_batch(evs)
    b.send_append_batch_payload(n, b"".join(evs))
    first = a.data_to_send()
    assert first == b.data_to_send()
    # and again once established (no handshake in front): same serials, same bytes
    for conn in (a, b):
        server = ServerConnection(ProtocolCache())
        server.receive_data(first)
        for call in drain(server):
            server.respond(call.serial, Status.OK)
        conn.receive_data(server.data_to_send())
        drain(conn)
        assert conn.established
    assert a.send_append_batch(evs) == b.send_append_batch_payload(n, b"".join(evs))
    assert a.data_to_send() == b.data_to_send()


def test_a_server_decodes_the_payload_call_into_the_events():
    evs = events(50, 300)  # ~15 KB: the parameters cross several 8192-byte buffers
    client, server = ClientConnection(), ServerConnection(ProtocolCache())
    serial = client.send_append_batch_payload(len(evs), b"".join(evs))
    server.receive_data(client.data_to_send())
    calls = [e for e in drain(server) if isinstance(e, CallReceived)]
    assert len(calls) == 1 and calls[0].message == "appendBatch"
    assert [body for _, body in calls[0].events] == [(b"%06d " % i).ljust(300, b"z") for i in range(50)]
    assert [h for h, _ in calls[0].events] == [{"host": "h%d" % (i % 3)} for i in range(50)]
    server.respond(calls[0].serial, Status.OK)
    client.receive_data(server.data_to_send())
    assert CallSucceeded(serial, Status.OK) in drain(client)


def test_a_count_that_cannot_match_the_payload_is_refused():
    client = ClientConnection()
    with pytest.raises(ValueError):
        client.send_append_batch_payload(0, b"\x00\x02a")
    with pytest.raises(ValueError):
        client.send_append_batch_payload(2, b"")
