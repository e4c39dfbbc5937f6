"""Our client against our collector over real loopback sockets, in one process (threads)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import pytest

from shipper.avroipc import Status
from shipper.sink.client import CollectorClient
from shipper.errors import CollectorRejected, ConnectTimeout, PeerProtocolError, RequestTimeout, TransportError
from shipper.avroipc.flume_event import encode_event
from shipper.transport import Address, ClientOptions, TLSOptions
from shipper.errors import CertificateError
from tests.conftest import RunningCollector

FAST = dict(connect_timeout=5.0, request_timeout=10.0)


def batches(n_batches: int, size: int, tag: str = "") -> list[list[bytes]]:
    return [[f"{tag}line {b}-{i} ".encode() + bytes([i % 256]) * (i % 7) for i in range(size)] for b in range(n_batches)]


def deliver(client: CollectorClient, bodies_per_batch: list[list[bytes]]) -> bytes:
    for bodies in bodies_per_batch:
        client.append_batch([encode_event({}, b) for b in bodies])
    return b"".join(b + b"\n" for bodies in bodies_per_batch for b in bodies)


@pytest.mark.parametrize("compress", [None, "deflate"])
def test_batches_arrive_in_order_byte_for_byte(start_collector, compress):
    col = start_collector(compress=compress)
    data = batches(20, 250)
    with CollectorClient(col.address, ClientOptions(compress=compress, **FAST)) as client:
        expected = deliver(client, data)
        assert client.connected
    assert col.output() == expected


def test_large_batch_with_big_bodies(start_collector):
    col = start_collector(compress="deflate")
    data = [[os.urandom(20000) for _ in range(50)]]
    with CollectorClient(col.address, ClientOptions(compress="deflate", **FAST)) as client:
        expected = deliver(client, data)
    assert col.output() == expected


def test_tls_verifies_against_the_given_ca(start_collector, server_tls, tls_files):
    col = start_collector(tls=server_tls)
    data = batches(3, 100)
    options = ClientOptions(tls=TLSOptions(ca_file=tls_files["ca"]), **FAST)
    with CollectorClient(col.address, options) as client:
        expected = deliver(client, data)
    assert col.output() == expected


def test_tls_without_the_ca_fails_verification_and_closes(start_collector, server_tls):
    col = start_collector(tls=server_tls)
    client = CollectorClient(col.address, ClientOptions(tls=TLSOptions(), **FAST))
    with pytest.raises(CertificateError, match="certificate verify failed"):
        client.append_batch([encode_event({}, b"x")])
    assert not client.connected
    assert col.output() == b""


def test_tls_name_mismatch_fails_verification(start_collector, server_tls, tls_files):
    col = start_collector(tls=server_tls)
    options = ClientOptions(tls=TLSOptions(ca_file=tls_files["ca"], server_name="other.example"), **FAST)
    with pytest.raises(CertificateError):
        CollectorClient(col.address, options).append_batch([encode_event({}, b"x")])


def test_tls_insecure_skips_verification(start_collector, server_tls):
    col = start_collector(tls=server_tls)
    with CollectorClient(col.address, ClientOptions(tls=TLSOptions(insecure=True), **FAST)) as client:
        expected = deliver(client, batches(2, 10))
    assert col.output() == expected


@pytest.mark.parametrize("layering", ["zlib-outside", "tls-outside"])
def test_tls_and_deflate_in_both_layerings(start_collector, server_tls, tls_files, layering):
    col = start_collector(tls=server_tls, compress="deflate", tls_layering=layering)
    options = ClientOptions(
        tls=TLSOptions(ca_file=tls_files["ca"]), compress="deflate", tls_layering=layering, **FAST
    )
    with CollectorClient(col.address, options) as client:
        expected = deliver(client, batches(10, 200))
    assert col.output() == expected


def test_zlib_outside_really_compresses_the_tls_records(server_tls, tls_files):
    """Flume >= 1.10: the raw bytes are a zlib stream (78 9c) that inflates to TLS records (16 03)."""
    import zlib

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    options = ClientOptions(
        tls=TLSOptions(ca_file=tls_files["ca"]), compress="deflate", connect_timeout=1.0, request_timeout=1.0
    )
    client = CollectorClient(Address("127.0.0.1", port), options)
    got = {}

    def server():
        conn, _ = listener.accept()
        conn.settimeout(5)
        got["raw"] = conn.recv(65536)
        conn.close()

    t = threading.Thread(target=server)
    t.start()
    with pytest.raises(TransportError):
        client.connect()
    t.join(10)
    listener.close()
    raw = got["raw"]
    assert raw[:2] == b"\x78\x9c"
    assert zlib.decompressobj().decompress(raw)[:2] == b"\x16\x03"


def test_layering_mismatch_fails_instead_of_hanging(start_collector, server_tls, tls_files):
    col = start_collector(tls=server_tls, compress="deflate", tls_layering="tls-outside")
    options = ClientOptions(
        tls=TLSOptions(ca_file=tls_files["ca"]), compress="deflate", tls_layering="zlib-outside",
        connect_timeout=3.0, request_timeout=3.0,
    )
    client = CollectorClient(col.address, options)
    with pytest.raises(TransportError):
        client.append_batch([encode_event({}, b"x")])
    assert not client.connected


def test_unwritable_output_answers_failed_then_recovers(start_collector):
    col = start_collector()
    # The output directory replaced by a file: the collector cannot open its first file.
    shutil.rmtree(col.out)
    col.out.write_bytes(b"not a directory")
    client = CollectorClient(col.address, ClientOptions(**FAST))
    with pytest.raises(CollectorRejected) as info:
        client.append_batch([encode_event({}, b"lost?")])
    assert info.value.status == Status.FAILED
    assert info.value.retriable
    assert not client.connected  # every failure closes the connection
    col.out.unlink()
    col.out.mkdir()
    client.append_batch([encode_event({}, b"kept")])  # a new connection, a new handshake
    assert client.connected
    client.close()
    assert col.output() == b"kept\n"


def test_garbage_client_is_disconnected_while_another_carries_on(start_collector):
    col = start_collector()
    good = CollectorClient(col.address, ClientOptions(**FAST))
    good.append_batch([encode_event({}, b"before")])
    bad = socket.create_connection((col.address.host, col.address.port))
    bad.sendall(b"\xff" * 64 + b"GET / HTTP/1.1\r\n\r\n")
    bad.settimeout(10)
    assert bad.recv(100) == b""  # the collector hung up on it
    bad.close()
    good.append_batch([encode_event({}, b"after")])
    good.close()
    assert col.output() == b"before\nafter\n"


def test_silent_server_gives_request_timeout_not_a_hang(silent_server):
    client = CollectorClient(silent_server, ClientOptions(connect_timeout=2.0, request_timeout=0.5))
    with pytest.raises(RequestTimeout):
        client.append_batch([encode_event({}, b"x")])
    assert not client.connected


def test_silent_server_with_tls_gives_connect_timeout(silent_server):
    options = ClientOptions(connect_timeout=0.5, request_timeout=5.0, tls=TLSOptions(insecure=True))
    client = CollectorClient(silent_server, options)
    with pytest.raises(ConnectTimeout):
        client.append_batch([encode_event({}, b"x")])
    assert not client.connected


def test_refused_is_a_transport_error():
    port = socket.create_server(("127.0.0.1", 0))
    addr = Address("127.0.0.1", port.getsockname()[1])
    port.close()
    with pytest.raises(TransportError, match="refused") as info:
        CollectorClient(addr, ClientOptions(**FAST)).append_batch([encode_event({}, b"x")])
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_server_sending_garbage_is_a_peer_protocol_error():
    listener = socket.create_server(("127.0.0.1", 0))
    def server():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"\x00\x00\x00\x01\xff\xff\xff\xff" + b"\x00" * 16)  # serial 1, count -1
        time.sleep(0.5)
        conn.close()

    t = threading.Thread(target=server)
    t.start()
    client = CollectorClient(Address("127.0.0.1", listener.getsockname()[1]), ClientOptions(**FAST))
    with pytest.raises(PeerProtocolError):
        client.append_batch([encode_event({}, b"x")])
    assert not client.connected
    t.join(10)
    listener.close()


def test_reconnects_after_the_collector_restarts_on_the_same_port(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    first = RunningCollector(out)
    client = CollectorClient(first.address, ClientOptions(**FAST))
    client.append_batch([encode_event({}, b"one")])
    first.stop()
    second = RunningCollector(out, listen=first.address)
    try:
        with pytest.raises(TransportError):  # the old connection is gone: closed, then reopened
            client.append_batch([encode_event({}, b"two?")])
        assert not client.connected
        client.append_batch([encode_event({}, b"two")])
    finally:
        client.close()
        second.stop()
    assert second.output() == b"one\ntwo\n"


@pytest.mark.parametrize("compress", [None, "deflate"])
def test_pipelined_batches_are_all_acknowledged_in_order(start_collector, compress):
    col = start_collector(compress=compress)
    data = batches(50, 40, tag="p")
    acks: list[int] = []
    with CollectorClient(col.address, ClientOptions(compress=compress, **FAST)) as client:
        n = client.append_batches(([encode_event({}, b) for b in bodies] for bodies in data), window=8, on_ack=acks.append)
    assert n == sum(acks) == 50 * 40
    assert col.output() == b"".join(b + b"\n" for bodies in data for b in bodies)


def test_pipelined_failure_reports_what_was_acknowledged(start_collector):
    col = start_collector()
    shutil.rmtree(col.out)
    col.out.write_bytes(b"")  # cannot write: every batch is answered FAILED
    client = CollectorClient(col.address, ClientOptions(**FAST))
    with pytest.raises(CollectorRejected) as info:
        client.append_batches(([encode_event({}, b"x")] for _ in range(10)), window=4)
    assert info.value.acknowledged == 0
    assert not client.connected


def test_client_that_never_reads_its_answers_is_disconnected_while_another_carries_on(start_collector):
    col = start_collector(send_timeout=1.0)
    # Established with a first call, then empty appendBatch calls (wire §8 V5) sent without ever
    # reading an answer, until the collector's answers fill every buffer on the way back.
    hog = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.connect((col.address.host, col.address.port))
    from shipper.avroipc import ClientConnection

    conn = ClientConnection()
    conn.send_append_batch([])
    hog.sendall(conn.data_to_send())
    answered = False
    while not answered:
        conn.receive_data(hog.recv(4096))
        while (event := conn.next_event()) is not None:
            answered = answered or hasattr(event, "status")
    assert conn.established
    call = bytes.fromhex("00000005" "00000002" "0000000d" "0016617070656e644261746368" "00000001" "00")
    dropped = threading.Event()

    def flood():
        try:
            while True:
                hog.sendall(call * 2048)
        except OSError:  # reset or broken pipe once the collector gives up on us
            dropped.set()

    threading.Thread(target=flood, daemon=True).start()
    with CollectorClient(col.address, ClientOptions(**FAST)) as other:
        expected = deliver(other, batches(3, 10, "other "))
    assert dropped.wait(20), "the collector kept a client that reads nothing"
    hog.close()
    assert col.output() == expected
