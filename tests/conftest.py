"""Fixtures for the transport tests: a collector on a thread, TLS material, silent servers."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import threading
from pathlib import Path

import pytest

from shipper.collector.server import Collector, CollectorOptions
from shipper.transport import Address, TLSOptions
from shipper.collector.writer import RollingWriter


class RunningCollector:
    def __init__(self, out: Path, listen: Address = Address("127.0.0.1", 0), **options) -> None:
        self.out = out
        self.writer = RollingWriter(str(out), fsync=True)
        self.collector = Collector(CollectorOptions(listen=listen, **options), self.writer)
        self.address = self.collector.bind()
        self.thread = threading.Thread(target=self.collector.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.collector.stop()
        self.thread.join(30)

    def output(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.out.glob("events-*")))


@pytest.fixture
def start_collector(tmp_path):
    """start_collector(**CollectorOptions fields) -> RunningCollector, stopped at teardown."""
    running: list[RunningCollector] = []

    def start(**options) -> RunningCollector:
        out = tmp_path / f"out{len(running)}"
        out.mkdir()
        c = RunningCollector(out, **options)
        running.append(c)
        return c

    yield start
    for c in running:
        c.stop()


@pytest.fixture
def silent_server():
    """A listening socket that accepts and never answers; yields its Address."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_loop():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(conn)

    t = threading.Thread(target=accept_loop, daemon=True)
    t.start()
    yield Address("127.0.0.1", listener.getsockname()[1])
    stop.set()
    t.join(5)
    for s in accepted:
        s.close()
    listener.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1 / localhost, as PEM files: ca, cert, key; and
    client certificates for mutual TLS: client_cert/client_key (CN "client agent-7", same CA) and
    stranger_cert/stranger_key (signed by another CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flume-ship test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "collector.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )

    def client_cert(name: str, issuer_name, issuer_key) -> None:
        """A client certificate (mutual TLS) for CN=``name``, signed by the given issuer."""
        k = ec.generate_private_key(ec.SECP256R1())
        c = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer_name)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
        tag = name.split()[0]
        paths[f"{tag}_cert"] = d / f"{tag}.pem"
        paths[f"{tag}_key"] = d / f"{tag}.key"
        paths[f"{tag}_cert"].write_bytes(c.public_bytes(serialization.Encoding.PEM))
        paths[f"{tag}_key"].write_bytes(
            k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
        )

    client_cert("client agent-7", ca_name, ca_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    client_cert("stranger", x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some other CA")]), other_key)
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture
def server_tls(tls_files) -> TLSOptions:
    return TLSOptions(cert_file=tls_files["cert"], key_file=tls_files["key"])
