"""Collectors that misbehave: no handshake, FAILED, a half-open socket; and ten shippers fanning in.

Each fault scenario runs a steady writer, breaks the path through the proxy (and resets the open
connections, so the fault hits at once, mid-batch), holds the fault, repairs it, stops the writer,
and times how long the shipper takes to deliver everything written.
"""

from __future__ import annotations

import time

import pytest

from tests.reliability.harness import (
    BATCH, Collector, ProxyProc, SteadyWriter, Stream, check, record, start_tail, wait_delivered,
)

FAULTS = {
    # the collector accepts TCP but never completes the Avro handshake
    "silent": "collector accepts TCP, never completes the handshake",
    # the collector answers every call with Status FAILED
    "failed": "collector answers FAILED",
    # the peer is gone without a FIN or RST: nothing moves either way on the open socket
    "blackhole": "half-open socket (peer silently gone)",
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_collector_fault_mid_stream(tmp_path, cleanup, scale, fault):
    (tmp_path / "logs").mkdir()
    stream = Stream("s", tmp_path / "logs" / "app.log")
    col = Collector(tmp_path / "out")
    cleanup.append(col.stop)
    proxy = ProxyProc(col.addr)
    cleanup.append(proxy.close)
    tail = start_tail(str(tmp_path / "logs" / "*.log"), proxy.address, tmp_path / "state")
    cleanup.append(tail.kill)
    with SteadyWriter([stream], chunk=100, interval=0.05):
        time.sleep(1.0)
        before = proxy.connections
        proxy.set_mode(fault, drop=fault != "blackhole")  # blackhole freezes open connections itself
        time.sleep(3.0 * scale)
        attempts = proxy.connections - before
        proxy.set_mode("pass")
        repaired = time.monotonic()
    t = wait_delivered([col], [stream], [tail])
    recover = time.monotonic() - repaired
    # The batch in flight when the fault began may have reached the collector without its OK coming
    # back; under a half-open socket every attempt may do the same.
    bound = BATCH * (1 + (attempts if fault == "blackhole" else 0))
    record(f"{FAULTS[fault]}", t, bound, recover, f"{attempts} connection attempts during the fault")
    check(t, bound)
    assert tail.stop() == 0


def test_ten_shippers_three_collectors_one_restarted(tmp_path, cleanup, scale):
    cols = [Collector(tmp_path / f"out{i}") for i in range(3)]
    for c in cols:
        cleanup.append(c.stop)
    to = ",".join(c.addr for c in cols)
    streams, tails = [], []
    for i in range(10):
        d = tmp_path / f"host{i}"
        d.mkdir()
        streams.append(Stream(f"h{i}", d / "app.log"))
        streams[-1].write(10)
        tails.append(start_tail(str(d / "*.log"), to, d / "state", "--balance", "round_robin"))
        cleanup.append(tails[-1].kill)
    with SteadyWriter(streams, chunk=40, interval=0.1):
        time.sleep(2.0)
        cols[1].kill()  # SIGKILL: batches it wrote but never answered come again, elsewhere
        time.sleep(2.0 * scale)
        cols[1].start()  # same port, same output directory
        restarted = time.monotonic()
        time.sleep(1.0 * scale)
    t = wait_delivered(cols, streams, tails)
    recover = time.monotonic() - restarted
    after_restart = len(cols[1].files())
    bound = 10 * BATCH  # each shipper: at most its one batch in flight at the killed collector
    record("fan-in: 10 shippers -> 3 collectors, one restarted", t, bound, recover,
           "round_robin; recover = restart to last line")
    check(t, bound)
    assert after_restart >= 1
    for tail in tails:
        assert tail.stop() == 0
