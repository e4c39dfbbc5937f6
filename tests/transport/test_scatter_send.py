"""The client's scatter write (``Stream.send`` of a frame's pieces): exactly the frame's bytes on
the wire, through partial writes and more pieces than one ``sendmsg`` takes, and the deadline."""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from shipper.avroipc import ClientConnection
from shipper.avroipc.flume_event import encode_event
from shipper.errors import RequestTimeout
from shipper.transport import Address, LayerStack, Stream
from shipper.transport.stream import IOV_MAX


def drain(sock: socket.socket, into: bytearray, pause: float = 0.0) -> threading.Thread:
    def run() -> None:
        while data := sock.recv(7000):
            into.extend(data)
            if pause:
                time.sleep(pause)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def plain_stream(sock: socket.socket) -> Stream:
    return Stream(sock, LayerStack([]), Address("127.0.0.1", 1))


def test_many_pieces_through_partial_writes_arrive_as_their_concatenation():
    rnd = random.Random(17)
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # every sendmsg stops part-way
    blob = rnd.randbytes(1 << 20)
    parts: list = []
    for _ in range(3 * IOV_MAX):  # more pieces than one sendmsg may carry
        kind = rnd.randrange(4)
        if kind == 0:
            parts.append(b"")
        elif kind == 1:
            parts.append(rnd.randbytes(rnd.randrange(1, 9)))
        else:
            start = rnd.randrange(len(blob) - 9000)
            parts.append(memoryview(blob)[start : start + rnd.randrange(1, 9000)])
    expected = b"".join(parts)
    got = bytearray()
    reader = drain(b, got, pause=0.0005)
    plain_stream(a).send(list(parts), time.monotonic() + 60)
    a.shutdown(socket.SHUT_WR)
    reader.join(60)
    assert bytes(got) == expected
    a.close()
    b.close()


def test_a_batch_sent_as_pieces_is_byte_for_byte_the_joined_frame():
    events = [encode_event({"host": "h"}, bytes([i % 250]) * (900 + i % 300)) for i in range(1500)]
    payload = b"".join(events)
    joined, pieces = ClientConnection(), ClientConnection()
    joined.send_append_batch_payload(len(events), payload)
    pieces.send_append_batch_payload(len(events), payload)
    expected = joined.data_to_send()
    parts = pieces.parts_to_send()
    assert any(isinstance(p, memoryview) and p.obj is payload for p in parts)  # the payload uncopied
    a, b = socket.socketpair()
    got = bytearray()
    reader = drain(b, got)
    plain_stream(a).send(parts, time.monotonic() + 60)
    a.shutdown(socket.SHUT_WR)
    reader.join(60)
    assert bytes(got) == expected
    assert pieces.parts_to_send() == []
    a.close()
    b.close()


def test_a_peer_that_reads_nothing_makes_the_scatter_write_time_out():
    a, b = socket.socketpair()
    parts = [memoryview(bytes(8192))] * 2048  # 16 MiB: far more than the socket buffers hold
    with pytest.raises(RequestTimeout):
        plain_stream(a).send(parts, time.monotonic() + 0.5)
    a.close()
    b.close()
