"""Lanes into a real Flume 1.11 AvroSource: several sinks in parallel, every file in order.

Flume 1.10+ runs the pipelined calls of one connection on different threads, so order into it
can only come from the sender. flume-ship's lanes (``--sinks 4``) send each file family on one
lane with one call in flight: ``--in-flight 4`` applies only to a collector that advertises
ordered pipelining in its handshake, and Flume's ``meta`` is null. The memory channel and
file_roll sink then write the batches in the order the source accepted them. Twelve files of
numbered lines, batches of 50 so that every file takes several calls: the output must hold every
line once, each file's lines rising.
"""

from __future__ import annotations

import re

import pytest

from shipper.sink.client import CollectorClient
from shipper.transport import Address
from tests.interop import flume
from tests.support import Proc, free_port

pytestmark = pytest.mark.interop

FILES, LINES = 12, 600


def test_four_lanes_into_flume_1_11_keep_every_file_in_order(start_agent, tmp_path):
    port = free_port()
    out = tmp_path / "out"
    agent = start_agent("1.11.0", flume.avro_to_file_roll("lanes", port, out))
    agent.wait_listening(port)
    with CollectorClient(Address("127.0.0.1", port)) as client:
        client.append_payload(0, b"")  # an empty batch: the handshake, nothing written
        assert client.connected and not client.ordered_pipeline  # Flume promises no ordered pipelining
    logs = tmp_path / "logs"
    logs.mkdir()
    total = 0
    for f in range(FILES):
        body = b"".join(b"f%02d %06d %s\n" % (f, i, b"x" * (f * 7 % 40)) for i in range(LINES))
        (logs / f"f{f:02d}.log").write_bytes(body)
        total += len(body)
    proc = Proc("tail", str(logs / "*.log"), "--to", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "state"),
                "--once", "--sinks", "4", "--in-flight", "4", "--batch-size", "50", "--min-free", "1K")
    assert proc.popen.wait(180) == 0, proc.stderr[-3000:]
    data = flume.wait_for_bytes(out, total, who=agent)
    last: dict[bytes, int] = {}
    seen = 0
    for line in data.splitlines():
        m = re.match(rb"(f\d\d) (\d{6}) ", line)
        assert m, line
        f, n = m.group(1), int(m.group(2))
        assert n == last.get(f, -1) + 1, f"{f.decode()}: line {n} after {last.get(f)} (lanes reordered a file)"
        last[f] = n
        seen += 1
    assert seen == FILES * LINES
