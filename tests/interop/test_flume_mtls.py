"""A real Flume client against ``collect --tls-client-ca`` (mutual TLS), Flume 1.11.0 and 1.9.0.

Neither version's RPC client (NettyAvroRpcClient, used by the AvroSink and by avro-client) can
present a client certificate: it builds its SSLContext with trust managers only (no key
managers), and no sink parameter names a keystore (checked in the 1.9.0 and 1.11.0 jars; see
docs/interop.md). So what a user can rely on is the refusal: the client is turned away at the TLS
handshake, nothing is written, and both sides say why in their logs.
"""

from __future__ import annotations

import pytest

from tests.interop import flume
from tests.interop.collect import Collect

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("version", flume.VERSIONS)
def test_a_flume_client_without_a_certificate_is_refused_with_a_clear_line_on_both_sides(
        version, flume_classpath, tls, tmp_path):
    collect = Collect(tmp_path / "out", "--tls-cert", str(tls.cert_pem), "--tls-key", str(tls.key_pem),
                      "--tls-client-ca", str(tls.cert_pem), label="collect-mtls")
    try:
        src = tmp_path / "input.txt"
        src.write_text("one\ntwo\n")
        props = {"hosts": "h1", "hosts.h1": collect.addr, "batch-size": 10, **tls.client_props()}
        if version.startswith("1.9"):
            props["include-protocols"] = "TLSv1.2"  # (Netty 3 and TLS 1.3: see docs/interop.md)
        rpc = flume.rpc_props(tmp_path / "rpc.properties", props)
        cli = flume.AvroCli(flume_classpath(version), tmp_path / "avro-client.log", ["-P", str(rpc), "-F", str(src)],
                            version=version)
        with pytest.raises(AssertionError) as failed:
            cli.finish()
        flume_log = str(failed.value)
        assert "Unable to deliver events to Flume" in flume_log
        if version.startswith("1.11"):
            # TLS 1.3: the client's handshake is over before the collector's certificate_required
            # alert arrives; the client names the alert when it reads it before the close that
            # follows, and otherwise only sees the connection closed (1 run in ~50, under load).
            assert ("SSLHandshakeException: Received fatal alert: certificate_required" in flume_log
                    or "disconnected" in flume_log), flume_log
        # (1.9's Netty 3 client, on TLS 1.2, is still writing when the collector closes: it logs
        # only "Broken pipe" under the delivery failure; the collector's line says why.)
        collect.proc.wait_for(r"TLS error, disconnected: the client presented no certificate, and "
                              r"--tls-client-ca requires one", timeout=30)
        assert collect.records() == []
    finally:
        collect.kill()
