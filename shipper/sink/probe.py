"""``flume-ship ping``'s engine: the client's steps one at a time, each with its time and a verdict.

:func:`probe` resolves, connects over TCP, does the TLS handshake, the Avro handshake and an
empty ``appendBatch``, with the same transport and protocol core as :class:`CollectorClient`,
and stops at the first failure with a plain verdict (a refused port is not a silent one; a TLS
or compression mismatch is named as such).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from shipper.avroipc import PROTOCOL_HASH, PROTOCOL_HASH_1_11_1, ClientConnection
from shipper.errors import (
    CertificateError,
    ClientCertificateRefused,
    CollectorRejected,
    ConnectTimeout,
    PeerClosed,
    PeerProtocolError,
    RequestTimeout,
    ShipperError,
    TransportError,
)
from shipper.sink.client import CollectorClient
from shipper.transport import Address, ClientOptions, Stream, client_layer_stack, connect_tcp, resolve


KNOWN_PROTOCOLS = {
    PROTOCOL_HASH: "Flume 1.2 to 1.11.0 AvroSourceProtocol",
    PROTOCOL_HASH_1_11_1: "Flume 1.11.1+ AvroSourceProtocol",
}


@dataclass(slots=True)
class Step:
    name: str  # resolve, tcp, tls, handshake, appendBatch
    ok: bool
    detail: str
    seconds: float | None = None
    closed: bool = False  # failed because the peer hung up on us (not a timeout)


@dataclass(slots=True)
class ProbeReport:
    address: Address
    steps: list[Step] = field(default_factory=list)
    verdict: str = ""  # one plain sentence: "healthy", or what is wrong and what to check

    @property
    def healthy(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)


def probe(address: Address, options: ClientOptions) -> ProbeReport:
    """Diagnose one collector step by step, the way an operator needs after "Handshake timed out"."""
    if address.rpc == "thrift":
        from shipper.sink.thrift_client import probe_thrift

        return probe_thrift(address, options)
    report = ProbeReport(address)
    _probe_into(report, address, options)
    named = False
    if not report.healthy and _closed_early(report) and options.tls is None:
        named = _name_compression_mismatch(report, address, options)
    if not report.healthy and not named and report.steps[-1].name == "handshake":
        from shipper.sink.thrift_client import name_other_rpc

        name_other_rpc(report, address, options)
    return report


def connect_steps(report: ProbeReport, address: Address, options: ClientOptions, tls_ctx):
    """The steps every protocol shares: resolve, TCP, TLS; each recorded in ``report``.

    Returns ``(sock, stream)`` (the caller closes both), or None after recording the failure and
    its verdict."""
    steps = report.steps
    started = time.monotonic()
    try:
        infos = resolve(address)
    except TransportError as err:
        steps.append(Step("resolve", False, str(err)))
        report.verdict = f"the name {address.host} does not resolve: check the spelling and DNS"
        return None
    addrs = sorted({info[4][0] for info in infos})
    steps.append(Step("resolve", True, ", ".join(addrs), time.monotonic() - started))

    started = time.monotonic()
    try:
        sock = connect_tcp(address, infos, started + options.connect_timeout)
    except ConnectTimeout:
        steps.append(Step("tcp", False, f"no answer within {options.connect_timeout:g} s"))
        report.verdict = (
            "TCP connect timed out: the host is down or a firewall drops the packets "
            "(a refusal would have come back at once)"
        )
        return None
    except TransportError as err:
        steps.append(Step("tcp", False, str(err)))
        if isinstance(err.__cause__, ConnectionRefusedError):
            report.verdict = f"connection refused: nothing listens on port {address.port} there; is the collector running, on that port?"
        else:
            report.verdict = f"TCP connect failed with a system error: {_cause_text(err)}"
        return None
    peer = sock.getpeername()
    steps.append(Step("tcp", True, f"connected to {Address(peer[0], peer[1])}", time.monotonic() - started))

    stream = Stream(sock, client_layer_stack(address, options, tls_ctx), address)
    if options.tls is not None:
        started = time.monotonic()
        try:
            stream.tls_handshake(started + options.connect_timeout)
        except ConnectTimeout:
            steps.append(Step("tls", False, f"no TLS reply within {options.connect_timeout:g} s"))
            report.verdict = (
                "connected, but the TLS handshake got no reply: the collector may not use TLS, may expect "
                "deflate under TLS in the other layering (--tls-layering), or a middlebox holds the connection"
            )
            sock.close()
            return None
        except TransportError as err:
            steps.append(Step("tls", False, str(err)))
            report.verdict = _tls_verdict(err)
            sock.close()
            return None
        tls = stream.layers.tls
        steps.append(Step("tls", True, f"{tls.version()}, server {tls.peer_subject() or '(not verified)'}", time.monotonic() - started))
    return sock, stream


def _probe_into(report: ProbeReport, address: Address, options: ClientOptions) -> None:
    steps = report.steps
    client = CollectorClient(address, options)  # loads the TLS context once (config errors first)
    connected = connect_steps(report, address, options, client._tls_ctx)
    if connected is None:
        return
    sock, stream = connected
    try:
        client._stream, client._conn = stream, ClientConnection()

        started = time.monotonic()
        try:
            hs = client._handshake_only(started + options.request_timeout)
        except RequestTimeout:
            steps.append(Step("handshake", False, f"no handshake reply within {options.request_timeout:g} s"))
            report.verdict = (
                "connected, but no Avro handshake reply within the request timeout. Likely causes: the collector "
                "expects deflate (--compress) or TLS (--tls) and we differ, or TLS+deflate in the other layering "
                "(--tls-layering); a middlebox or load balancer that accepts TCP but does not forward; "
                "a collector too busy to answer"
            )
            return
        except TransportError as err:
            hung_up = isinstance(err, PeerClosed) or isinstance(err.__cause__, ConnectionResetError)
            steps.append(Step("handshake", False, str(err), closed=hung_up))
            if isinstance(err, ClientCertificateRefused):
                report.verdict = ("the collector requires a client certificate it trusts (mutual TLS): give "
                                  "--tls-cert and --tls-key, signed by the CA of its --tls-client-ca")
            elif hung_up:
                report.verdict = (
                    "the collector closed the connection without answering the handshake: its compression "
                    f"(we sent {options.compress or 'no compression'}) or TLS setting likely differs from ours"
                )
            else:
                report.verdict = f"the handshake failed with a system error: {_cause_text(err)}"
            return
        except (PeerProtocolError, CollectorRejected) as err:
            steps.append(Step("handshake", False, str(err)))
            report.verdict = "the peer does not speak Flume's Avro RPC as expected (is it an AvroSource?)"
            return
        known = KNOWN_PROTOCOLS.get(hs.server_hash, "an unknown protocol") if hs.server_hash else "?"
        steps.append(
            Step(
                "handshake",
                True,
                f"match {hs.match}, server protocol {hs.server_hash.hex() if hs.server_hash else '?'} ({known})",
                time.monotonic() - started,
            )
        )

        started = time.monotonic()
        try:
            client.append_batch([])
        except CollectorRejected as err:
            steps.append(Step("appendBatch", False, str(err)))
            report.verdict = "the collector refuses even an empty batch: its channel or storage is failing"
            return
        except RequestTimeout:
            steps.append(Step("appendBatch", False, f"no reply within {options.request_timeout:g} s"))
            report.verdict = "handshake fine, but an empty appendBatch got no reply: the collector is stuck or overloaded"
            return
        except ShipperError as err:
            steps.append(Step("appendBatch", False, str(err)))
            report.verdict = f"the empty appendBatch failed: {err}"
            return
        steps.append(Step("appendBatch", True, "empty batch answered OK", time.monotonic() - started))
        report.verdict = "healthy"
    finally:
        client.close()
        sock.close()


def _closed_early(report: ProbeReport) -> bool:
    last = report.steps[-1]
    return last.name == "handshake" and last.closed


def _name_compression_mismatch(report: ProbeReport, address: Address, options: ClientOptions) -> bool:
    """The collector hung up on our first bytes: see whether it talks with the other compression."""
    other = None if options.compress == "deflate" else "deflate"
    second = ProbeReport(address)
    _probe_into(second, address, replace(options, compress=other))
    if second.healthy:
        flag = "--compress deflate" if other else "no --compress"
        report.verdict = (
            f"compression mismatch: the collector answers with {flag} "
            f"(its compression-type is {'deflate' if other else 'none'}); set the same on both sides"
        )
    return second.healthy


def _tls_verdict(err: TransportError) -> str:
    if isinstance(err, CertificateError):
        return "the server's certificate does not verify: give its CA with --tls-ca (or --tls-insecure for a test)"
    if isinstance(err, PeerClosed):
        return "the collector closed the connection during the TLS handshake: it may not use TLS, or expects deflate first"
    return f"TLS failed: {_cause_text(err)}"


def _cause_text(err: BaseException) -> str:
    cause = err.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return f"{cause.strerror} (errno {cause.errno})"
    return str(cause or err)
