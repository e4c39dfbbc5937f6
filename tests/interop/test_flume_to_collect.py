"""Real Flume clients shipping to ``flume-ship collect``, Flume 1.11.0 and 1.9.0.

Two kinds of Flume client, each over plain, deflate, TLS and TLS with deflate:

* an agent's **AvroSink**: spooldir source (``fileHeader = true`` and a static interceptor give every
  event two headers) -> memory channel -> AvroSink -> collect;
* **``flume-ng avro-client``** (AvroCLIClient) with ``-R headerFile`` and ``-P`` RPC properties.

Per Flume version one set of four collectors (one per transport) and one agent (four pipelines) are
shared by the module; each case tells its own events apart by a header value.
"""

from __future__ import annotations

import os

import pytest

from tests.interop import flume
from tests.interop.collect import Collect, wait_records

pytestmark = pytest.mark.interop

MODES = ("plain", "deflate", "tls", "tls+deflate")


def collect_flags(mode: str, version: str, tls: flume.Tls) -> list[str]:
    flags: list[str] = []
    if "deflate" in mode:
        flags += ["--compress", "deflate"]
    if "tls" in mode:
        flags += ["--tls-cert", str(tls.cert_pem), "--tls-key", str(tls.key_pem)]
    if mode == "tls+deflate":
        flags += ["--tls-layering", "tls-outside" if version.startswith("1.9") else "zlib-outside"]
    return flags


def client_props(mode: str, tls: flume.Tls, version: str) -> dict:
    """The Flume RPC client keys (AvroSink parameters or avro-client -P) for ``mode``."""
    props: dict = {}
    if "deflate" in mode:
        props.update({"compression-type": "deflate", "compression-level": 6})
    if "tls" in mode:
        props.update(tls.client_props())
        if version.startswith("1.9"):
            # Flume 1.9's Netty 3 SslHandler fails TLS 1.3 handshakes with an OpenSSL server on
            # Java 11+ ("Tag mismatch!"); operators pin TLS 1.2 (docs/interop.md).
            props["include-protocols"] = "TLSv1.2"
    return props


class Setup:
    def __init__(self, version, classpath, tls, base, collects, spools, agent):
        self.version, self.classpath, self.tls, self.base = version, classpath, tls, base
        self.collects, self.spools, self.agent = collects, spools, agent


@pytest.fixture(scope="module", params=flume.VERSIONS)
def setup(request, flume_classpath, tls, tmp_path_factory):
    version = request.param
    classpath = flume_classpath(version)
    base = tmp_path_factory.mktemp(f"flume-{version}-to-collect")
    collects: dict[str, Collect] = {}
    agent = None
    try:
        for mode in MODES:
            tag = mode.replace("+", "-")
            collects[mode] = Collect(base / f"collect-{tag}", *collect_flags(mode, version, tls), label=tag)
        props: dict = {}
        spools = {}
        for mode in MODES:
            tag = mode.replace("+", "_")
            spools[mode] = base / f"spool-{tag}"
            spools[mode].mkdir()
            s, c, k = f"s_{tag}", f"c_{tag}", f"k_{tag}"
            props.update({
                f"sources.{s}.type": "spooldir",
                f"sources.{s}.spoolDir": spools[mode],
                f"sources.{s}.pollDelay": 200,
                f"sources.{s}.fileHeader": "true",
                f"sources.{s}.interceptors": "i1",
                f"sources.{s}.interceptors.i1.type": "static",
                f"sources.{s}.interceptors.i1.key": "origin",
                f"sources.{s}.interceptors.i1.value": f"avro-sink-{tag}",
                f"sources.{s}.channels": c,
                f"channels.{c}.type": "memory",
                f"channels.{c}.capacity": 10000,
                f"channels.{c}.transactionCapacity": 1000,
                f"sinks.{k}.type": "avro",
                f"sinks.{k}.channel": c,
                f"sinks.{k}.hostname": "127.0.0.1",
                f"sinks.{k}.port": collects[mode].port,
                f"sinks.{k}.batch-size": 100,
            })
            props.update({f"sinks.{k}.{key}": v for key, v in client_props(mode, tls, version).items()})
        agent = flume.Agent(classpath, base / "agent", props, version=version)
        agent.wait_log("started", timeout=60)
        agent.check_configuration()
        yield Setup(version, classpath, tls, base, collects, spools, agent)
    finally:
        if agent:
            agent.stop()
        for c in collects.values():
            c.kill()


def lines_for(tag: str, n: int) -> list[str]:
    # ASCII on purpose: AvroCLIClient reads with the JVM's default charset (see docs/interop.md).
    return [f"{tag} event {i:05d} user=alice path=/a/b?c=d&e=f" for i in range(n)]


@pytest.mark.parametrize("mode", MODES)
def test_flume_avro_sink_events_reach_collect_with_headers(mode, setup, tmp_path):
    tag = mode.replace("+", "_")
    check_spooled_lines_reach_collect(tmp_path, setup.spools[mode], setup.collects[mode], f"avro-sink-{tag}",
                                      lines_for(f"sink-{tag}", 1500))


def check_spooled_lines_reach_collect(tmp_path, spool, collect: Collect, origin: str, lines: list[str]) -> None:
    """Drop ``lines`` as one file into a spooldir source whose static interceptor sets ``origin``;
    ``collect`` must get every line, in order, with exactly the two headers."""
    staged = tmp_path / f"{origin}.log"
    staged.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    dropped = spool / staged.name
    os.replace(staged, dropped)  # spooldir wants files complete and immutable once they appear

    recs = wait_records([collect], lambda r: r["headers"].get("origin") == origin, len(lines), timeout=60)

    assert [r["body"].decode() for r in recs] == lines
    assert all(r["headers"] == {"origin": origin, "file": str(dropped)} for r in recs), recs[0]["headers"]


@pytest.mark.parametrize("mode", MODES)
def test_flume_avro_client_events_reach_collect_with_headers(mode, setup, tmp_path):
    tag = mode.replace("+", "_")
    lines = lines_for(f"cli-{tag}", 500)
    src = tmp_path / "input.txt"
    src.write_text("".join(f"{line}\n" for line in lines))
    header_file = tmp_path / "headers.properties"
    header_file.write_text(f"origin = avro-client-{tag}\nhost = web-01\nenv = prod eu\n")
    collect = setup.collects[mode]
    rpc = flume.rpc_props(tmp_path / "rpc.properties", {
        "hosts": "h1", "hosts.h1": collect.addr, "batch-size": 100, **client_props(mode, setup.tls, setup.version)})

    flume.AvroCli(setup.classpath, tmp_path / "avro-client.log",
                  ["-P", str(rpc), "-F", str(src), "-R", str(header_file)], version=setup.version).finish()

    origin = f"avro-client-{tag}"
    recs = wait_records([collect], lambda r: r["headers"].get("origin") == origin, len(lines), timeout=30)
    assert [r["body"].decode() for r in recs] == lines
    assert all(r["headers"] == {"origin": origin, "host": "web-01", "env": "prod eu"} for r in recs)
