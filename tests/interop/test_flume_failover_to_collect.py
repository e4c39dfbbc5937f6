"""Flume's failover and load-balancing RPC clients shipping to two ``flume-ship collect``.

``flume-ng avro-client -P rpc.properties`` builds its client with ``RpcClientFactory`` exactly as an
AvroSink does, so ``client.type = default_failover`` / ``default_loadbalance`` there are the real
FailoverRpcClient / LoadBalancingRpcClient. The client reads its stdin, so the test drives it
midway: half the lines, then one collector is SIGKILLed, then the rest. Every line must arrive
(duplicates are allowed: at-least-once), and each client type must show its own routing.
"""

from __future__ import annotations

import pytest

from tests.interop import flume
from tests.interop.collect import Collect, wait_records

pytestmark = pytest.mark.interop

BATCH = 10  # avro-client reads BATCH lines from stdin per appendBatch; the test writes whole batches


def bodies(recs) -> list[str]:
    return [r["body"].decode() for r in recs]


@pytest.mark.parametrize("version", flume.VERSIONS)
@pytest.mark.parametrize("client_type", ["default_failover", "default_loadbalance"])
def test_flume_rpc_client_loses_nothing_when_one_collect_dies_midway(client_type, version, flume_classpath,
                                                                      tmp_path):
    a = Collect(tmp_path / "collect-a", label="a")
    b = Collect(tmp_path / "collect-b", label="b")
    try:
        props = {
            "client.type": client_type,
            "hosts": "a b",
            "hosts.a": a.addr,
            "hosts.b": b.addr,
            "batch-size": BATCH,
            "connect-timeout": 5000,
            "request-timeout": 5000,
        }
        if client_type == "default_loadbalance":
            props.update({"host-selector": "round_robin", "backoff": "true"})
        rpc = flume.rpc_props(tmp_path / "rpc.properties", props)
        origin = f"{client_type}-{version}"
        header_file = tmp_path / "headers.properties"
        header_file.write_text(f"origin = {origin}\n")
        first = [f"{origin} first half {i:04d}" for i in range(20 * BATCH)]
        second = [f"{origin} second half {i:04d}" for i in range(20 * BATCH)]
        mine = lambda r: r["headers"].get("origin") == origin  # noqa: E731

        cli = flume.AvroCli(flume_classpath(version), tmp_path / "avro-client.log",
                            ["-P", str(rpc), "-R", str(header_file)], stdin_pipe=True, version=version)
        cli.write_lines(first)
        got = wait_records([a, b], mine, len(first), timeout=60)
        assert sorted(bodies(got)) == sorted(first)
        in_a, in_b = bodies([r for r in a.records() if mine(r)]), bodies([r for r in b.records() if mine(r)])
        if client_type == "default_failover":
            # One client at a time, starting with the first host: all of it went to a.
            assert in_a == first and in_b == []
            victim, survivor = a, b
        else:
            # Round robin: both collectors took a share.
            assert in_a and in_b, (len(in_a), len(in_b))
            victim, survivor = b, a

        victim.kill()
        cli.write_lines(second)
        cli.finish()

        want = set(first + second)
        got = wait_records([a, b], lambda r: mine(r) and r["body"].decode() in want, len(want), timeout=60)
        missing = want - set(bodies(got))
        assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:5]}"
        # After the kill, everything went to the survivor.
        assert set(second) <= set(bodies(r for r in survivor.records() if mine(r)))
    finally:
        a.kill()
        b.kill()
