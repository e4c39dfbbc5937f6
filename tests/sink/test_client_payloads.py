"""append_payload / append_payloads: pre-joined events (as the channel stores them) to our collector."""

from __future__ import annotations

import pytest

from shipper.sink.client import CollectorClient
from shipper.avroipc.flume_event import encode_event
from shipper.transport import ClientOptions

FAST = dict(connect_timeout=5.0, request_timeout=10.0)


def payload(tag: str, n: int) -> tuple[int, bytes, bytes]:
    """(count, joined encoded events, the lines the collector writes for them)."""
    bodies = [f"{tag} {i:05d} ".encode() + b"p" * (i % 90) for i in range(n)]
    return n, b"".join(encode_event({}, b) for b in bodies), b"".join(b + b"\n" for b in bodies)


@pytest.mark.parametrize("compress", [None, "deflate"])
def test_pipelined_payloads_arrive_in_order_byte_for_byte(start_collector, compress):
    col = start_collector(compress=compress)
    parts = [payload(f"p{k}", n) for k, n in enumerate([1, 700, 3, 1000, 250, 42])]
    acked = []
    with CollectorClient(col.address, ClientOptions(compress=compress, **FAST)) as client:
        client.append_payload(0, b"")  # an empty batch is a valid call
        total = client.append_payloads([(n, p) for n, p, _ in parts], window=3,
                                       on_ack=lambda i, n: acked.append((i, n)))
    assert total == sum(n for n, _, _ in parts)
    assert sorted(acked) == [(i, n) for i, (n, _, _) in enumerate(parts)]
    assert col.output() == b"".join(lines for _, _, lines in parts)


def test_a_single_payload_is_one_call(start_collector):
    col = start_collector()
    n, p, lines = payload("one", 1500)
    with CollectorClient(col.address, ClientOptions(**FAST)) as client:
        client.append_payload(n, p)
    assert col.output() == lines
