"""Who may send: ``collect --tls-client-ca`` (mutual TLS) with ``send``, ``ping`` and ``tail``
presenting a certificate, the refusals on both sides, and the TLS flag rules of the clients."""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.support import Proc, cli_argv


def run(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), input=stdin, capture_output=True, timeout=timeout)


def lines(cp: subprocess.CompletedProcess) -> list[str]:
    return [line for line in cp.stderr.decode().splitlines() if line.strip()]


@pytest.fixture
def mtls_collect(tmp_path, tls_files):
    proc = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "out"), "--tls-cert",
                tls_files["cert"], "--tls-key", tls_files["key"], "--tls-client-ca", tls_files["ca"])
    addr = proc.wait_for(r"listening on (127\.0\.0\.1:\d+) .*tls on, client certificates required").group(1)
    yield proc, addr
    proc.kill()


def output(tmp_path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((tmp_path / "out").glob("events-*")))


def test_send_with_a_client_certificate_is_accepted_and_its_subject_logged(tmp_path, tls_files, mtls_collect):
    proc, addr = mtls_collect
    cp = run("send", "-", "--to", addr, "--tls-ca", tls_files["ca"], "--tls-cert", tls_files["client_cert"],
             "--tls-key", tls_files["client_key"], stdin=b"one\ntwo\n")
    assert cp.returncode == 0, cp.stderr
    proc.wait_for(r"client 127\.0\.0\.1:\d+ connected \(TLSv1\.3, certificate subject: commonName=client agent-7\)")
    assert proc.stop(signal.SIGTERM) == 0
    assert output(tmp_path) == b"one\ntwo\n"


def test_send_without_a_certificate_is_refused_with_a_clear_line_on_both_sides(tmp_path, tls_files, mtls_collect):
    proc, addr = mtls_collect
    cp = run("send", "-", "--to", addr, "--tls-ca", tls_files["ca"], stdin=b"nope\n")
    assert cp.returncode == 3
    out = lines(cp)
    assert len(out) == 1 and "requires a client certificate: give --tls-cert and --tls-key" in out[0], out
    proc.wait_for(r"TLS error, disconnected: the client presented no certificate, and --tls-client-ca requires one")
    assert proc.stop() == 0
    assert output(tmp_path) == b""


def test_a_certificate_from_another_ca_is_refused(tmp_path, tls_files, mtls_collect):
    proc, addr = mtls_collect
    cp = run("send", "-", "--to", addr, "--tls-ca", tls_files["ca"], "--tls-cert", tls_files["stranger_cert"],
             "--tls-key", tls_files["stranger_key"], stdin=b"nope\n")
    assert cp.returncode == 3
    assert len(lines(cp)) == 1, lines(cp)
    proc.wait_for(r"TLS error, disconnected: the client certificate did not verify")
    assert proc.stop() == 0
    assert output(tmp_path) == b""


def test_ping_presents_a_certificate(tls_files, mtls_collect):
    _proc, addr = mtls_collect
    cp = run("ping", addr, "--tls-ca", tls_files["ca"], "--tls-cert", tls_files["client_cert"], "--tls-key",
             tls_files["client_key"])
    assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()
    assert b"verdict: healthy" in cp.stdout


def test_ping_without_a_certificate_names_mutual_tls_in_its_verdict(tls_files, mtls_collect):
    _proc, addr = mtls_collect
    cp = run("ping", addr, "--tls-ca", tls_files["ca"])
    assert cp.returncode == 3
    assert b"verdict: the collector requires a client certificate it trusts (mutual TLS)" in cp.stdout


def test_tail_presents_a_certificate(tmp_path, tls_files, mtls_collect):
    proc, addr = mtls_collect
    src = tmp_path / "app.log"
    src.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    cp = run("tail", str(src), "--to", addr, "--state-dir", str(tmp_path / "state"), "--once", "--deadline", "60",
             "--tls-ca", tls_files["ca"], "--tls-cert", tls_files["client_cert"], "--tls-key",
             tls_files["client_key"], "--no-host-header", timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert proc.stop() == 0
    assert output(tmp_path) == src.read_bytes()


def test_tls_insecure_with_tls_ca_is_a_usage_error(tls_files):
    for cmd in (["send", "-", "--to", "127.0.0.1:9"], ["ping", "127.0.0.1:9"]):
        cp = run(*cmd, "--tls-insecure", "--tls-ca", tls_files["ca"], stdin=b"")
        assert cp.returncode == 2
        assert "--tls-insecure" in cp.stderr.decode() and "--tls-ca" in cp.stderr.decode()


def test_tail_config_with_tls_insecure_and_tls_ca_is_refused(tmp_path, tls_files):
    cfg = tmp_path / "f.toml"
    cfg.write_text(f'[delivery]\ncollectors = ["127.0.0.1:9"]\ntls_insecure = true\ntls_ca = "{tls_files["ca"]}"\n'
                   f'[sources.a]\npaths = ["{tmp_path}/*.log"]\n')
    cp = run("validate", str(cfg))
    assert cp.returncode == 2
    assert "delivery.tls_insecure" in cp.stderr.decode()


def test_turning_verification_off_is_logged_as_a_warning(tmp_path, tls_files):
    proc = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "out"), "--tls-cert",
                tls_files["cert"], "--tls-key", tls_files["key"])
    addr = proc.wait_for(r"listening on (127\.0\.0\.1:\d+)").group(1)
    try:
        cp = run("send", "-", "--to", addr, "--tls-insecure", stdin=b"x\n")
        assert cp.returncode == 0, cp.stderr
        assert "WARNING" in cp.stderr.decode() and "verification is OFF" in cp.stderr.decode()
    finally:
        proc.kill()


def test_a_collector_error_text_cannot_forge_client_log_lines():
    """A hostile collector answers with a system error full of newlines and escape codes: the
    client's one error line shows them escaped."""
    import socket
    import threading

    from shipper.avroipc import CallReceived, ProtocolCache, ServerConnection

    evil = "boom\n2026-01-01T00:00:00 INFO flume-ship: all good\x1b[2J"
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        sock, _ = listener.accept()
        conn = ServerConnection(ProtocolCache())
        with sock:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                conn.receive_data(data)
                while (event := conn.next_event()) is not None:
                    if isinstance(event, CallReceived):
                        conn.respond_error(event.serial, evil)
                sock.sendall(conn.data_to_send())

    threading.Thread(target=serve, daemon=True).start()
    cp = run("send", "-", "--to", f"127.0.0.1:{listener.getsockname()[1]}", stdin=b"x\n")
    listener.close()
    assert cp.returncode == 3
    err = cp.stderr.decode()
    assert len(lines(cp)) == 1, err
    assert "\x1b" not in err and "boom\\n2026-01-01T00:00:00 INFO" in err and "\\x1b[2J" in err
