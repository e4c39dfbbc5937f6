"""Thrift collectors over real loopback sockets: our client against our collector and against a
scripted ThriftSource that answers FAILED, ERROR, UNKNOWN, an exception, garbage, a reset or
nothing; ping's mismatch verdicts."""

from __future__ import annotations

import shutil
import socket
import struct
import threading

import pytest

from shipper.sink.client import client_for
from shipper.sink.probe import probe
from shipper.errors import CollectorRejected, PeerProtocolError, RequestTimeout, TransportError
from shipper.avroipc.flume_event import encode_event
from shipper.errors import CertificateError
from shipper.transport import Address, ClientOptions, TLSOptions
from shipper.collector.writer import RollingWriter
from shipper.sink.thrift_client import ThriftCollectorClient
from shipper.collector.thrift_server import ThriftCollector
from shipper import thriftrpc
from shipper.collector.server import CollectorOptions
from tests.conftest import RunningCollector

FAST = dict(connect_timeout=5.0, request_timeout=10.0)
PROTOS = ("compact", "binary")


class RunningThriftCollector(RunningCollector):
    def __init__(self, out, listen=Address("127.0.0.1", 0), limits=None, **options):
        self.out = out
        self.writer = RollingWriter(str(out), fsync=True)
        self.collector = ThriftCollector(CollectorOptions(listen=listen, **options), self.writer, **(limits or {}))
        self.address = self.collector.bind()
        self.thread = threading.Thread(target=self.collector.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def thrift_collector(tmp_path):
    running = []

    def start(limits=None, **options):
        out = tmp_path / f"tout{len(running)}"
        out.mkdir()
        c = RunningThriftCollector(out, limits=limits, **options)
        running.append(c)
        return c

    yield start
    for c in running:
        c.stop()


def thrift(address: Address, proto: str = "compact") -> Address:
    return Address(address.host, address.port, "thrift", proto)


def lines(n: int, tag: str = "") -> list[bytes]:
    return [f"{tag}line {i} ".encode() + bytes([i % 256]) * (i % 5) for i in range(n)]


@pytest.mark.parametrize("proto", PROTOS)
def test_batches_arrive_in_order_byte_for_byte(thrift_collector, proto):
    col = thrift_collector()
    data = [lines(250, f"{b}-") for b in range(10)]
    with client_for(thrift(col.address, proto), ClientOptions(**FAST)) as client:
        assert isinstance(client, ThriftCollectorClient)
        for bodies in data:
            client.append_batch([encode_event({"h": "v"}, b) for b in bodies])
    assert col.output() == b"".join(b + b"\n" for bodies in data for b in bodies)


@pytest.mark.parametrize("proto", PROTOS)
def test_stored_payloads_pipelined_are_all_acknowledged(thrift_collector, proto):
    col = thrift_collector()
    data = [lines(40, f"p{b}-") for b in range(30)]
    payloads = [(len(bodies), b"".join(encode_event({}, b) for b in bodies)) for bodies in data]
    acked: list[int] = []
    with client_for(thrift(col.address, proto), ClientOptions(**FAST)) as client:
        n = client.append_payloads(payloads, window=8, on_ack=lambda i, _n: acked.append(i))
    assert n == 30 * 40 and sorted(acked) == list(range(30))
    assert col.output() == b"".join(b + b"\n" for bodies in data for b in bodies)


def test_tls_verifies_against_the_given_ca(thrift_collector, server_tls, tls_files):
    col = thrift_collector(tls=server_tls)
    options = ClientOptions(tls=TLSOptions(ca_file=tls_files["ca"]), **FAST)
    with client_for(thrift(col.address), options) as client:
        client.append_batch([encode_event({}, b"secret")])
    assert col.output() == b"secret\n"
    client = client_for(thrift(col.address), ClientOptions(tls=TLSOptions(), **FAST))
    with pytest.raises(CertificateError):
        client.append_batch([encode_event({}, b"x")])
    assert not client.connected


def test_compress_applies_to_avro_collectors_only(thrift_collector, caplog):
    col = thrift_collector()
    with caplog.at_level("INFO", logger="flume-ship.sink"):
        with client_for(thrift(col.address), ClientOptions(compress="deflate", **FAST)) as client:
            client.append_batch([encode_event({}, b"plain")])
    assert col.output() == b"plain\n"
    assert "applies to Avro collectors only" in caplog.text


def test_unwritable_output_answers_failed_then_recovers(thrift_collector):
    col = thrift_collector()
    shutil.rmtree(col.out)
    col.out.write_bytes(b"not a directory")
    client = client_for(thrift(col.address), ClientOptions(**FAST))
    with pytest.raises(CollectorRejected, match="answered FAILED") as info:
        client.append_batch([encode_event({}, b"x")])
    assert info.value.retriable and not client.connected
    col.out.unlink()
    col.out.mkdir()
    client.append_batch([encode_event({}, b"y")])
    client.close()
    assert col.output() == b"y\n"


def test_frame_over_the_limit_disconnects_that_client_only(thrift_collector):
    col = thrift_collector(limits={"max_frame_bytes": 1000})
    hostile = socket.create_connection((col.address.host, col.address.port))
    hostile.sendall(struct.pack(">i", 1 << 30))  # claims a 1 GiB frame
    hostile.settimeout(10)
    assert hostile.recv(10) == b""  # disconnected, nothing allocated for it
    hostile.close()
    with client_for(thrift(col.address), ClientOptions(**FAST)) as client:
        client.append_batch([encode_event({}, b"fine")])
    assert col.output() == b"fine\n"


def test_call_over_the_event_limit_is_refused(thrift_collector):
    col = thrift_collector(limits={"max_events_per_call": 10})
    client = client_for(thrift(col.address), ClientOptions(**FAST))
    with pytest.raises(CollectorRejected, match="limit of 10"):
        client.append_batch([encode_event({}, b"e")] * 11)
    client.append_batch([encode_event({}, b"e")] * 10)
    client.close()
    assert col.output() == b"e\n" * 10


# --------------------------------------------------------------------------- a scripted ThriftSource


class ScriptedSource:
    """Accepts connections and answers the calls on each with the next action of ``script``:
    ok, failed, error, unknown, exception, garbage, reset, close, silent. ``proto`` set: a
    connection in the other protocol is closed at once, as Flume's ThriftSource does."""

    def __init__(self, script: list[str], proto: str | None = None):
        self.script = list(script)
        self.proto = proto
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = Address("127.0.0.1", self.listener.getsockname()[1])
        self.calls = 0
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        core = thriftrpc.ServerConnection(self.proto)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                core.receive_data(data)
                while (ev := core.next_event()) is not None:
                    if isinstance(ev, thriftrpc.ConnectionClosed):
                        return
                    self.calls += 1
                    action = self.script.pop(0) if self.script else "ok"
                    if action in ("ok", "failed", "error", "unknown"):
                        core.respond(ev.serial, thriftrpc.Status[action.upper()])
                    elif action == "exception":
                        core.respond_error(ev.serial, "handler blew up")
                    elif action == "garbage":
                        conn.sendall(b"\x00\x00\x00\x05\xff\xfe\xfd\xfc\xfb")
                        continue
                    elif action == "reset":
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        conn.close()
                        return
                    elif action == "close":
                        conn.close()
                        return
                    elif action == "silent":
                        continue
                    conn.sendall(core.data_to_send())
        except (thriftrpc.RemoteProtocolError, OSError):
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        self.listener.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def scripted():
    made = []

    def make(script, proto=None):
        s = ScriptedSource(script, proto)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("action, error, text", [
    ("failed", CollectorRejected, "answered FAILED"),
    ("error", CollectorRejected, "answered ERROR"),
    ("unknown", CollectorRejected, "answered UNKNOWN"),
    ("exception", CollectorRejected, "handler blew up"),
    ("garbage", PeerProtocolError, "broke the protocol"),
    ("reset", TransportError, "reset|closed"),
    ("close", TransportError, "closed the connection"),
])
def test_each_failure_is_retriable_closes_the_connection_and_the_next_call_reconnects(scripted, action, error, text):
    source = scripted([action, "ok"])
    client = client_for(thrift(source.address), ClientOptions(**FAST))
    with pytest.raises(error, match=text) as info:
        client.append_batch([encode_event({}, b"x")])
    assert info.value.retriable
    assert not client.connected
    client.append_batch([encode_event({}, b"x")])  # a new connection, answered OK
    client.close()
    assert source.calls == 2


def test_silent_after_connect_is_a_request_timeout(scripted):
    source = scripted(["silent"])
    client = client_for(thrift(source.address), ClientOptions(connect_timeout=2.0, request_timeout=0.5))
    with pytest.raises(RequestTimeout):
        client.append_batch([encode_event({}, b"x")])
    assert not client.connected


def test_refused_is_a_transport_error():
    s = socket.create_server(("127.0.0.1", 0))
    addr = thrift(Address("127.0.0.1", s.getsockname()[1]))
    s.close()
    with pytest.raises(TransportError, match="refused"):
        client_for(addr, ClientOptions(**FAST)).append_batch([encode_event({}, b"x")])


# --------------------------------------------------------------------------- ping


def test_ping_thrift_collector_is_healthy(thrift_collector):
    col = thrift_collector()
    for proto in PROTOS:
        report = probe(thrift(col.address, proto), ClientOptions(**FAST))
        assert report.healthy, report
        assert [s.name for s in report.steps] == ["resolve", "tcp", "appendBatch"]


@pytest.mark.parametrize("proto", PROTOS)
def test_ping_names_a_compact_binary_mismatch(scripted, proto):
    other = "binary" if proto == "compact" else "compact"
    source = scripted([], proto=other)
    report = probe(thrift(source.address, proto), ClientOptions(**FAST))
    assert not report.healthy
    assert f"speaks Thrift's {other} protocol" in report.verdict
    assert str(thrift(source.address, other)) in report.verdict


def test_ping_avro_at_a_thrift_collector_names_thrift(thrift_collector):
    col = thrift_collector()
    report = probe(col.address, ClientOptions(**FAST))
    assert not report.healthy
    assert "speaks Thrift (compact protocol), not Avro" in report.verdict


def test_ping_thrift_at_an_avro_collector_names_avro(start_collector):
    col = start_collector()
    report = probe(thrift(col.address), ClientOptions(**FAST))
    assert not report.healthy
    assert "speaks Avro RPC" in report.verdict


def test_ping_thrift_reports_failed(scripted):
    source = scripted(["error"])
    report = probe(thrift(source.address), ClientOptions(**FAST))
    assert not report.healthy and "refuses even an empty batch" in report.verdict


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize("text, expected", [
    ("h:1", Address("h", 1)),
    ("avro://h:1", Address("h", 1)),
    ("thrift://h:1", Address("h", 1, "thrift", "compact")),
    ("THRIFT://[::1]:2?protocol=binary", Address("::1", 2, "thrift", "binary")),
    ("thrift://h:1?protocol=compact", Address("h", 1, "thrift", "compact")),
])
def test_collector_addresses_name_their_protocol(text, expected):
    assert Address.parse_collector(text) == expected
    assert Address.parse_collector(str(expected)) == expected


@pytest.mark.parametrize("text, says", [
    ("http://h:1", "unknown scheme"),
    ("thrift://h:1?protocol=json", "not an option"),
    ("avro://h:1?protocol=binary", "not an option"),
    ("thrift://h", "expected host:port"),
])
def test_bad_collector_addresses_say_why(text, says):
    from shipper.errors import ConfigError

    with pytest.raises(ConfigError, match=says):
        Address.parse_collector(text)
