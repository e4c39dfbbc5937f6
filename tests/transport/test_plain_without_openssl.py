"""A plain (no TLS) agent never loads OpenSSL: ``ssl``, ``_hashlib`` and ``hmac`` are imported
only where a TLS context is built (or a hash other than Flume's protocol MD5 is asked for). Loading
them cost ~8 ms of every start, most of it OpenSSL's own initialisation."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
import socket, sys, threading, time
import shipper.cli, shipper.cli.tail, shipper.agent.core, shipper.agent.runners, shipper.sink.client
import shipper.tail.source, shipper.tail.identity, shipper.channel, shipper.transport
from shipper.avroipc import ClientConnection
from shipper.transport import Address, ClientOptions, open_stream
from shipper.transport.tls import reason
from shipper.tail.identity import fingerprint, new_generation

server = socket.create_server(("127.0.0.1", 0))
got = bytearray()
def serve():
    conn, _ = server.accept()
    while data := conn.recv(65536):
        got.extend(data)
t = threading.Thread(target=serve, daemon=True); t.start()
stream = open_stream(Address("127.0.0.1", server.getsockname()[1]), ClientOptions())
conn = ClientConnection()
conn.send_append_batch_payload(1, b"\\x00\\x02hi")
stream.send(conn.parts_to_send(), time.monotonic() + 30)
stream.close(); t.join(30)
assert got and fingerprint(b"head") and len(new_generation()) == 12
assert reason(OSError(111, "Connection refused")) == "Connection refused"
print(sorted(m for m in ("ssl", "_ssl", "_hashlib", "hmac", "secrets") if m in sys.modules))
"""


def test_a_plain_agent_and_connection_never_load_openssl():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_a_tls_context_still_loads_ssl_when_asked_for(tmp_path):
    code = ("import sys\nfrom shipper.transport.tls import TLSOptions, client_tls_context, ssl_errors\n"
            "assert ssl_errors() == ()\n"
            "ctx = client_tls_context(TLSOptions(insecure=True))\n"
            "import ssl\nassert ssl_errors() is ssl.SSLError and isinstance(ctx, ssl.SSLContext)\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.stdout.strip() == "ok", r.stdout + r.stderr
