"""Ordered pipelining: several calls in flight per lane, and still every file in order.

``flume-ship collect`` advertises in its handshake ``meta`` that it applies a connection's calls
in order and refuses every call behind a refused one; the sink keeps ``--in-flight`` leases in
flight only into such a collector. The scenarios refuse a call in the middle of a pipelined
stream (a real collect's per-event cap; a write that fails once in a real collector on a real
socket) and check the collector's files: nothing lost, no line out of order, and nothing behind
the refused call written before it. A plain Avro server (the real protocol core without the
promise) is not pipelined into. Flume: tests/interop/test_lanes_into_flume.py.
"""

from __future__ import annotations

import errno
import random
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shipper.avroipc.flume_event import encode_event
from shipper.channel import CHUNK_EVENTS
from shipper.collector.server import Collector, CollectorOptions
from shipper.collector.writer import RollingWriter
from shipper.errors import CollectorRejected
from shipper.sink.client import CollectorClient
from shipper.transport import Address
from tests.faultproxy import FaultProxy
from tests.sink.test_delivery_e2e import check_delivery, collected, wait_for_count, write_lines
from tests.support import ROOT, Proc

BATCH = 100


@pytest.fixture
def collect(tmp_path):
    procs = []

    def start(*flags: str, out: Path | None = None) -> tuple[str, Path]:
        out = out or tmp_path / "out"
        p = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(out), *flags)
        procs.append(p)
        return p.wait_for(r"listening on (\S+)").group(1), out

    yield start
    for p in procs:
        p.stop()


def address(text: str) -> Address:
    host, port = text.rsplit(":", 1)
    return Address(host, int(port))


def payload(lines: list[bytes]) -> tuple[int, bytes]:
    return len(lines), b"".join(encode_event({}, line) for line in lines)


def test_collect_advertises_ordered_pipelining_and_a_plain_avro_server_does_not(collect, tmp_path):
    addr, _ = collect()
    with CollectorClient(address(addr)) as client:
        assert not client.ordered_pipeline  # not known before a handshake
        client.append_payload(*payload([b"hello"]))
        assert client.ordered_pipeline
    plain = subprocess.Popen([sys.executable, "-m", "tests.agent.picky_collector", str(tmp_path / "plain.out"),
                              "NEVER"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        with CollectorClient(address(plain.stdout.readline().split()[-1])) as client:
            client.append_payload(*payload([b"hello"]))
            assert client.connected and not client.ordered_pipeline
    finally:
        plain.kill()
        plain.wait()


def test_collect_writes_none_of_the_calls_behind_a_refused_one(collect):
    addr, out = collect("--max-body-bytes", "1K")
    batches = [[b"b%d %04d" % (b, i) for i in range(10)] for b in range(8)]
    batches[2][5] = b"too long " + b"y" * 2000  # over --max-body-bytes: collect refuses that call
    answered: list[int] = []
    with CollectorClient(address(addr)) as client:
        with pytest.raises(CollectorRejected) as refused:
            client.append_payloads([payload(b) for b in batches], window=8, ordered=True,
                                   on_ack=lambda k, _n: answered.append(k))
    assert answered == [0, 1]
    assert refused.value.acknowledged == 20
    # Batches 3..7 were in flight behind the refused one: refused too, none of them written.
    assert collected(out) == batches[0] + batches[1]


def test_pipelined_tail_keeps_order_when_collect_refuses_a_call_in_the_middle(collect, tmp_path):
    addr, out = collect("--max-body-bytes", "1K")
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "app.log", 0, 2500)
    with open(logs / "app.log", "ab") as f:
        f.write(b"line 0002500 " + b"z" * 2000 + b"\n")  # refused by collect on every attempt
    write_lines(logs / "app.log", 2501, 2499)
    config = tmp_path / "ship.toml"
    config.write_text(f'[delivery]\ncollectors = ["{addr}"]\nmax_rejects = 1\n')
    tail = Proc("tail", str(logs / "*.log"), "--config", str(config), "--state-dir", str(tmp_path / "state"),
                "--once", "--batch-size", str(BATCH), "--in-flight", "4", "--request-timeout", "5",
                "--busy-penalty", "0.1", "--deadline", "120")
    tail.popen.wait(180)
    lines = collected(out)
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == sorted(set(numbers)), "a line arrived twice or out of order"
    missing = sorted(set(range(5000)) - set(numbers))
    # Only the refused call's batch is moved aside (to the dead letters), one contiguous run.
    assert 2500 in missing and len(missing) <= BATCH and missing == list(range(missing[0], missing[-1] + 1)), \
        f"{len(missing)} lines missing: {missing[:5]}...\n{tail.stderr[-2000:]}"
    assert "moved to the dead letters" in tail.stderr


class FailingOnce(RollingWriter):
    """The collector's real writer; the first write holding ``marker`` fails as a full disk would,
    after a pause in which the sink's next calls reach the collector's socket (so they are read
    after the failure, on the same connection)."""

    def __init__(self, directory: str, marker: bytes):
        super().__init__(directory)
        self.marker, self.failed, self.writes = marker, False, 0

    def write_counted(self, batches):
        batches = list(batches)
        self.writes += 1
        if not self.failed and any(body.startswith(self.marker) for events in batches for _, body in events):
            self.failed = True
            time.sleep(0.5)
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return super().write_counted(batches)


def test_pipelined_tail_sends_everything_behind_a_failed_write_again_in_order(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    writer = FailingOnce(str(out), b"a 0001500 ")
    server = Collector(CollectorOptions(listen=Address("127.0.0.1", 0)), writer)
    bound = server.bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        logs = tmp_path / "logs"
        logs.mkdir()
        write_lines(logs / "a.log", 0, 3000, tag="a")
        tail = Proc("tail", str(logs / "*.log"), "--to", str(bound), "--state-dir", str(tmp_path / "state"),
                    "--once", "--batch-size", str(BATCH), "--in-flight", "4", "--busy-penalty", "0.1",
                    "--backoff-max", "0.5", "--deadline", "120")
        assert tail.popen.wait(180) == 0, tail.stderr[-3000:]
        assert writer.failed and "answered FAILED" in tail.stderr, tail.stderr[-2000:]
        expected = [f"a {i:07d} {'x' * 60}".encode() for i in range(3000)]
        # The calls behind the failed one were refused unwritten: every line once, in order.
        check_delivery(collected(out), expected, max_dups=0)
    finally:
        server.stop()
        thread.join(10)


def test_into_a_server_without_the_promise_one_call_at_a_time(collect):
    """A real Avro server core that answers each call only after 50 ms without more bytes: a client
    with two calls out would show them both pending; ordered=True keeps it to one."""
    from shipper.avroipc import CallReceived, ProtocolCache, ServerConnection, Status

    listener = socket.create_server(("127.0.0.1", 0))
    most = [0]

    def serve() -> None:
        sock, _ = listener.accept()
        conn, pending = ServerConnection(ProtocolCache()), []
        with sock:
            while True:
                if select.select([sock], [], [], 0.05 if pending else None)[0]:
                    data = sock.recv(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                    pending += [e.serial for e in iter(conn.next_event, None) if isinstance(e, CallReceived)]
                    most[0] = max(most[0], len(pending))
                else:
                    for serial in pending:
                        conn.respond(serial, Status.OK)
                    pending.clear()
                    sock.sendall(conn.data_to_send())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with CollectorClient(Address("127.0.0.1", listener.getsockname()[1])) as client:
        acked = client.append_payloads([payload([b"n %d" % i]) for i in range(6)], window=4, ordered=True)
    thread.join(10)
    listener.close()
    assert acked == 6 and most[0] == 1


def test_sigkill_with_calls_in_flight_loses_nothing_and_repeats_at_most_in_flight_plus_one(collect, tmp_path):
    """Answers held 30 ms by a proxy, so every kill lands with leases in flight: after 4 kills and a
    last run, every line is there, in order (first arrivals), and each kill repeated at most
    ``--in-flight`` + 1 leases."""
    addr, out = collect()
    host, port = addr.rsplit(":", 1)
    proxy = FaultProxy((host, int(port)), mode="delay", delay=0.03)
    logs = tmp_path / "logs"
    logs.mkdir()
    total, kills, in_flight = 40_000, 4, 4
    write_lines(logs / "app.log", 0, total)
    rng = random.Random(17)

    def start() -> Proc:
        return Proc("tail", str(logs / "*.log"), "--to", proxy.address, "--state-dir", str(tmp_path / "state"),
                    "--batch-size", str(BATCH), "--in-flight", str(in_flight), "--linger", "0.05")

    try:
        for _ in range(kills):
            tail = start()
            tail.wait_for(r"app\.log: reading")
            time.sleep(rng.uniform(0.3, 1.0))
            tail.kill()
        tail = start()
        try:
            lines = wait_for_count(out, total, procs=[tail])
        finally:
            tail.stop()
        expected = [f"line {i:07d} {'x' * 60}".encode() for i in range(total)]
        check_delivery(lines, expected, max_dups=kills * (in_flight + 1) * max(BATCH, CHUNK_EVENTS))
    finally:
        proxy.close()
