"""Real Flume Thrift clients shipping to ``flume-ship collect --protocol thrift``, Flume 1.11.0 and 1.9.0.

* an agent's **ThriftSink** (compact, binary, compact over TLS): spooldir source (``fileHeader =
  true`` and a static interceptor give every event two headers) -> memory channel -> ThriftSink;
* Flume's **ThriftRpcClient** through the SDK (``java/ThriftSend.java``: ``RpcClientFactory`` with
  ``client.type = thrift``, as the ThriftSink builds it), compact and binary, three headers each.

One collector per mode (each serves compact and binary alike, told apart per connection) and one
agent per Flume version are shared by the module; each case tells its events apart by a header.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.interop import flume
from tests.interop.collect import Collect, wait_records
from tests.interop.test_flume_to_collect import check_spooled_lines_reach_collect

pytestmark = pytest.mark.interop

MODES = ("compact", "binary", "tls")


class Setup:
    def __init__(self, version, classpath, collects, spools, agent):
        self.version, self.classpath, self.collects, self.spools, self.agent = version, classpath, collects, spools, agent


@pytest.fixture(scope="module", params=flume.VERSIONS)
def setup(request, flume_classpath, tls, tmp_path_factory):
    version = request.param
    classpath = flume_classpath(version)
    base = tmp_path_factory.mktemp(f"flume-{version}-thrift-to-collect")
    collects: dict[str, Collect] = {}
    agent = None
    try:
        for mode in MODES:
            flags = ["--protocol", "thrift"]
            if mode == "tls":
                flags += ["--tls-cert", str(tls.cert_pem), "--tls-key", str(tls.key_pem)]
            collects[mode] = Collect(base / f"collect-{mode}", *flags, label=mode)
        props: dict = {}
        spools = {}
        for mode in MODES:
            spools[mode] = base / f"spool-{mode}"
            spools[mode].mkdir()
            s, c, k = f"s_{mode}", f"c_{mode}", f"k_{mode}"
            props.update({
                f"sources.{s}.type": "spooldir",
                f"sources.{s}.spoolDir": spools[mode],
                f"sources.{s}.pollDelay": 200,
                f"sources.{s}.fileHeader": "true",
                f"sources.{s}.interceptors": "i1",
                f"sources.{s}.interceptors.i1.type": "static",
                f"sources.{s}.interceptors.i1.key": "origin",
                f"sources.{s}.interceptors.i1.value": f"thrift-sink-{mode}",
                f"sources.{s}.channels": c,
                f"channels.{c}.type": "memory",
                f"channels.{c}.capacity": 10000,
                f"channels.{c}.transactionCapacity": 1000,
                f"sinks.{k}.type": "thrift",
                f"sinks.{k}.channel": c,
                f"sinks.{k}.hostname": "127.0.0.1",
                f"sinks.{k}.port": collects[mode].port,
                f"sinks.{k}.batch-size": 100,
            })
            if mode == "binary":
                props[f"sinks.{k}.protocol"] = "binary"
            if mode == "tls":
                props.update({f"sinks.{k}.{key}": v for key, v in tls.client_props().items()})
        agent = flume.Agent(classpath, base / "agent", props, version=version)
        agent.wait_log("started", timeout=60)
        agent.check_configuration()
        yield Setup(version, classpath, collects, spools, agent)
    finally:
        if agent:
            agent.stop()
        for c in collects.values():
            c.kill()


def lines_for(tag: str, n: int) -> list[str]:
    return [f"{tag} event {i:05d} user=alice path=/a/b?c=d&e=f caf\u00e9" for i in range(n)]


@pytest.mark.parametrize("mode", MODES)
def test_flume_thrift_sink_events_reach_collect_with_headers(mode, setup, tmp_path):
    check_spooled_lines_reach_collect(tmp_path, setup.spools[mode], setup.collects[mode], f"thrift-sink-{mode}",
                                      lines_for(f"sink-{mode}", 1500))


@pytest.mark.parametrize("proto", ["compact", "binary"])
def test_flume_thrift_rpc_client_events_reach_collect_with_headers(proto, setup, tmp_path):
    lines = lines_for(f"rpc-{proto}", 700)
    src = tmp_path / "input.txt"
    src.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    collect = setup.collects["compact"]  # one port serves both protocols
    origin = f"thrift-rpc-{proto}-{setup.version}"
    log = tmp_path / "thrift-send.log"
    jvm = flume.Jvm(f"flume {setup.version} ThriftRpcClient", setup.classpath, str(flume.JAVA_DIR / "ThriftSend.java"),
                    ["127.0.0.1", str(collect.port), proto, str(src), "100",
                     f"origin={origin}", "host=web-01", "env=prod eu"], log)
    try:
        rc = jvm.wait(180)
    except subprocess.TimeoutExpired:
        jvm.stop()
        raise AssertionError(f"ThriftSend did not finish:\n{jvm.log_tail()}") from None
    assert rc == 0 and f"SENT {len(lines)}" in jvm.log(), jvm.log_tail()

    recs = wait_records([collect], lambda r: r["headers"].get("origin") == origin, len(lines), timeout=30)
    assert [r["body"].decode() for r in recs] == lines
    assert [r["headers"] for r in recs] == [
        {"origin": origin, "host": "web-01", "env": "prod eu", "seq": str(i)} for i in range(len(lines))]
