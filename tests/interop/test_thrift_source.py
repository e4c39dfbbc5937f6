"""flume-ship as a client of a real Flume ThriftSource (send, tail --once, ping), Flume 1.11.0 and 1.9.0.

One agent per Flume version hosts one pipeline per Thrift setting (ThriftSource -> memory channel
-> file_roll): compact (Flume's default), binary, and compact over TLS. The file_roll sink writes
each event's body and "\\n", so the output must equal the input file byte for byte, in order.
"""

from __future__ import annotations

import pytest

from tests.interop import flume
from tests.interop.test_ship_to_flume_source import awkward_lines
from tests.support import Proc, free_port

pytestmark = pytest.mark.interop

MODES = ("compact", "binary", "tls")


class ThriftPipelines:
    def __init__(self, version, agent, ports, outs, tls, avro_port):
        self.version, self.agent, self.ports, self.outs, self.tls = version, agent, ports, outs, tls
        self.avro_port = avro_port

    def url(self, mode: str) -> str:
        query = "?protocol=binary" if mode == "binary" else ""
        return f"thrift://127.0.0.1:{self.ports[mode]}{query}"

    def flags(self, mode: str) -> list[str]:
        return ["--tls-ca", str(self.tls.cert_pem)] if mode == "tls" else []

    def written(self, mode: str) -> int:
        return len(flume.read_dir(self.outs[mode]))

    def since(self, mode: str, offset: int, expected_len: int) -> bytes:
        return flume.wait_for_bytes(self.outs[mode], offset + expected_len, who=self.agent)[offset:]


@pytest.fixture(scope="module", params=flume.VERSIONS)
def thrift_sources(request, flume_classpath, tls, tmp_path_factory):
    version = request.param
    base = tmp_path_factory.mktemp(f"flume-{version}-thrift-sources")
    source_opts = {
        "compact": {"type": "thrift"},
        "binary": {"type": "thrift", "protocol": "binary"},
        "tls": {"type": "thrift", **tls.source_props()},
    }
    ports = {mode: free_port() for mode in MODES}
    outs = {mode: base / "out" / mode for mode in MODES}
    props: dict = {}
    for mode in MODES:
        props.update(flume.avro_to_file_roll(mode, ports[mode], outs[mode], source=source_opts[mode]))
    avro_port = free_port()  # an AvroSource beside them, for ping's mismatch case
    props.update(flume.avro_to_file_roll("avro", avro_port, base / "out" / "avro"))
    agent = flume.Agent(flume_classpath(version), base, props, version=version)
    try:
        agent.wait_listening(*ports.values(), avro_port)
        yield ThriftPipelines(version, agent, ports, outs, tls, avro_port)
    finally:
        agent.stop()


def run(*args: str, timeout: float = 150) -> Proc:
    proc = Proc(*args)
    rc = proc.popen.wait(timeout)
    proc.stop()
    proc.rc = rc
    return proc


@pytest.mark.parametrize("mode", MODES)
def test_send_lines_arrive_byte_for_byte_in_order(mode, thrift_sources, tmp_path):
    data = awkward_lines(f"thrift-send-{mode}")
    src = tmp_path / "app.log"
    src.write_bytes(data)
    before = thrift_sources.written(mode)
    proc = run("send", str(src), "--to", thrift_sources.url(mode), *thrift_sources.flags(mode), "--batch-size", "300")
    assert proc.rc == 0, f"send exited {proc.rc}:\n{proc.stderr}"
    assert thrift_sources.since(mode, before, len(data)) == data


@pytest.mark.parametrize("mode", MODES)
def test_tail_once_lines_arrive_byte_for_byte_in_order(mode, thrift_sources, tmp_path):
    data = awkward_lines(f"thrift-tail-{mode}")
    log = tmp_path / "app.log"
    log.write_bytes(data)
    before = thrift_sources.written(mode)
    proc = run("tail", str(log), "--to", thrift_sources.url(mode), *thrift_sources.flags(mode),
               "--state-dir", str(tmp_path / "state"), "--batch-size", "300", "--once", "--deadline", "120")
    assert proc.rc == 0, f"tail --once exited {proc.rc}:\n{proc.stderr}"
    assert thrift_sources.since(mode, before, len(data)) == data


@pytest.mark.parametrize("mode", MODES)
def test_ping_reports_a_healthy_thrift_source(mode, thrift_sources):
    proc = run("ping", thrift_sources.url(mode), *thrift_sources.flags(mode), timeout=60)
    out = "\n".join(proc.out)
    assert proc.rc == 0, f"ping exited {proc.rc}:\n{out}\n{proc.stderr}"
    assert "verdict: healthy" in out


@pytest.mark.parametrize("target, said", [
    ("compact-at-binary", "speaks Thrift's binary protocol, not compact"),
    ("binary-at-compact", "speaks Thrift's compact protocol, not binary"),
    ("avro-at-thrift", "speaks Thrift (compact protocol), not Avro"),
    ("thrift-at-avro", "speaks Avro RPC"),
])
def test_ping_names_a_protocol_mismatch(target, said, thrift_sources):
    if target == "avro-at-thrift" and thrift_sources.version.startswith("1.9"):
        # Flume 1.9's ThriftSource (libthrift 0.9.3) trusts any frame length: Avro's first bytes make
        # it allocate until its selector thread dies of OutOfMemoryError and the source stops
        # serving (seen here; docs/interop.md). Nothing can be named after that.
        pytest.skip("Avro bytes crash a Flume 1.9 ThriftSource (OutOfMemoryError); see docs/interop.md")
    p = thrift_sources.ports
    url = {
        "compact-at-binary": f"thrift://127.0.0.1:{p['binary']}",
        "binary-at-compact": f"thrift://127.0.0.1:{p['compact']}?protocol=binary",
        "avro-at-thrift": f"127.0.0.1:{p['compact']}",
        "thrift-at-avro": f"thrift://127.0.0.1:{thrift_sources.avro_port}",
    }[target]
    proc = run("ping", url, "--request-timeout", "5", timeout=90)
    out = "\n".join(proc.out)
    assert proc.rc == 3, f"ping exited {proc.rc}:\n{out}\n{proc.stderr}"
    verdict = [line for line in proc.out if line.startswith("verdict")]
    assert verdict and said in verdict[0], out
