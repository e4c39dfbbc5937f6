"""`flume-ship tail` to Thrift collectors, end to end: real processes, faults injected by a proxy.

The collectors are ``flume-ship collect --protocol thrift`` (and a plain Avro one for the mixed
groups). The proxy works on TCP, so its protocol-neutral faults apply: refuse, silent, reset,
garbage, blackhole. ``status`` and ``/metrics`` name a Thrift collector by its URL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faultproxy import FaultProxy
from tests.ops.common import http_get, status, wait_until
from tests.sink.test_delivery_e2e import check_resume_after_fault, collected, start_tail, wait_for_count, write_lines
from tests.support import Proc


@pytest.fixture
def collector(tmp_path):
    procs = []

    def start(out: Path, *flags: str) -> str:
        p = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(out), *flags)
        procs.append(p)
        return p.wait_for(r"listening on (\S+)").group(1)

    yield start
    for p in procs:
        p.stop()


def lines(start: int, count: int) -> list[bytes]:
    return [f"line {i:07d} {'x' * 60}".encode() for i in range(start, start + count)]


@pytest.mark.parametrize("fault", ["refuse", "silent", "reset", "garbage", "blackhole"])
def test_delivery_to_a_thrift_collector_resumes_after_fault(tmp_path, collector, fault):
    out = tmp_path / "out"
    check_resume_after_fault(tmp_path, collector(out, "--protocol", "thrift"), out, fault, scheme="thrift://")


@pytest.mark.parametrize("first", ["thrift", "avro"])
def test_mixed_failover_group_fails_over_both_ways_and_loses_nothing(tmp_path, collector, first):
    """The channel keeps events protocol-free: a lease read for one kind goes to the other."""
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    out_t, out_a = tmp_path / "out_thrift", tmp_path / "out_avro"
    addr_t = collector(out_t, "--protocol", "thrift")
    addr_a = collector(out_a)
    primary_addr, primary_out, other_addr, other_out = (
        (addr_t, out_t, addr_a, out_a) if first == "thrift" else (addr_a, out_a, addr_t, out_t))
    host, port = primary_addr.rsplit(":", 1)
    proxy = FaultProxy((host, int(port)), mode="pass")
    url = lambda a, kind: f"thrift://{a}?protocol=binary" if kind == "thrift" else a  # noqa: E731
    second = "avro" if first == "thrift" else "thrift"
    tail = start_tail(tmp_path, f"{url(proxy.address, first)},{url(other_addr, second)}")
    try:
        write_lines(log, 0, 1000)
        wait_for_count(primary_out, 1000, procs=[tail])
        assert collected(other_out) == []  # failover: the first healthy collector takes everything
        proxy.set_mode("refuse")
        write_lines(log, 1000, 1000)
        wait_until(lambda: collected(other_out), "the second collector used", procs=[tail])
        proxy.set_mode("pass")
        write_lines(log, 2000, 1000)
        want = set(lines(0, 3000))
        wait_until(lambda: want <= set(collected(primary_out)) | set(collected(other_out)),
                   "every line in one of the two", timeout=90, procs=[tail])
        assert tail.stop() == 0
    finally:
        proxy.close()
        tail.stop()


def test_status_and_metrics_name_thrift_collectors(tmp_path, collector):
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    addr_t = collector(tmp_path / "out_t", "--protocol", "thrift")
    addr_a = collector(tmp_path / "out_a")
    thrift_url = f"thrift://{addr_t}?protocol=binary"
    write_lines(log, 0, 500)
    tail = start_tail(tmp_path, f"{thrift_url},{addr_a}", "--balance", "round_robin",
                      "--metrics-listen", "127.0.0.1:0", "--status-interval", "0.3")
    try:
        url = "http://" + tail.wait_for(r"metrics on http://(\S+)/metrics").group(1)
        wait_for_count(tmp_path / "out_t", 1, procs=[tail])
        doc = wait_until(lambda: (d := status(tmp_path / "state"))["totals"].get("events_acked") == 500 and d,
                         "500 events acknowledged", procs=[tail])
        names = {c["address"] for c in doc["collectors"]}
        assert {thrift_url, addr_a} <= names, doc["collectors"]
        code, body = http_get(url + "/metrics")
        assert code == 200 and f'collector="{thrift_url}"'.encode() in body
    finally:
        tail.stop()
