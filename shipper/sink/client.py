"""One collector, one connection: ``append_batch(events)`` returns on OK, or raises.

Theory of operation
-------------------
:class:`CollectorClient` drives the protocol core in the client role
(``shipper.avroipc.ClientConnection``) over a blocking :class:`shipper.transport.stream.Stream`. A call is:
queue it in the core, send the core's bytes, then read and feed the core until it yields the
answer for that call's serial, all before one deadline (``request_timeout``). On a fresh
connection that first call carries the Avro handshake, so the deadline covers it too (Flume's
"Handshake timed out" is that case). A NONE from the server makes the core queue the call again
with our protocol text; we just send whatever the core has queued after each read.

Errors carry the policy (``shipper.errors``): every failure, whatever its kind, closes the
connection before the error leaves this module, so the next call starts clean with a new
connection and a new handshake (Flume's "DEAD client" lesson, without the death). Lower-layer
errors are translated once, here or in ``shipper.transport.stream``.

:func:`probe` is the ``ping`` command's engine: it runs the same steps one at a time (resolve,
TCP, TLS, handshake, an empty ``appendBatch``) and reports each with its time and a verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import BinaryIO, Callable, Iterable, Iterator, Sequence

from shipper.avroipc import (
    PROTOCOL_HASH,
    PROTOCOL_HASH_1_11_1,
    CallFailed,
    CallSucceeded,
    ClientConnection,
    ConnectionClosed,
    HandshakeCompleted,
    RemoteProtocolError,
    Status,
)
from shipper.errors import (
    CollectorRejected,
    ConnectTimeout,
    PeerProtocolError,
    RequestTimeout,
    ShipperError,
    TransportError,
    printable,
)
from shipper.event import encode_event_with, encode_headers
from shipper.transport.stream import (
    Address,
    CertificateError,
    ClientCertificateRefused,
    ClientOptions,
    PeerClosed,
    Stream,
    client_pipeline,
    client_tls_context,
    connect_tcp,
    open_stream,
    resolve,
)


class CollectorClient:
    """A connection to one collector, opened on demand and closed on any failure."""

    def __init__(self, address: Address, options: ClientOptions = ClientOptions()) -> None:
        self.address = address
        self.options = options
        self._stream: Stream | None = None
        self._conn: ClientConnection | None = None
        # The hash the collector said it speaks, reused on the next connection (as Java does) so
        # a collector with another protocol text costs one NONE round trip only once.
        self._server_hash: bytes | None = None
        self._tls_ctx = client_tls_context(options.tls) if options.tls is not None else None

    @property
    def connected(self) -> bool:
        return self._stream is not None

    def connect(self) -> None:
        if self._stream is None:
            self._stream = open_stream(self.address, self.options, self._tls_ctx)
            self._conn = ClientConnection(server_hash=self._server_hash)

    def append_batch(self, encoded_events: Sequence[bytes]) -> None:
        """Deliver one batch; returns only when the collector answered OK for all of it."""
        self.append_batches([encoded_events], window=1)

    def append_payload(self, count: int, payload: bytes) -> None:
        """Deliver ``count`` encoded events joined in ``payload`` (as the channel stores them) as
        one appendBatch; returns only when the collector answered OK."""
        self.append_payloads([(count, payload)], window=1)

    def append_batches(
        self,
        batches: Iterable[Sequence[bytes]],
        *,
        window: int = 4,
        on_ack: Callable[[int], None] | None = None,
    ) -> int:
        """Deliver many batches with up to ``window`` calls in flight; returns the events acknowledged.

        Pipelining hides the round trip and the collector's fsync (a collector writes the calls
        that arrive together with one fsync). Before the handshake completes only one call is
        out (wire doc P2). Each call has its own ``request_timeout``; answers may come back in
        any order. ``on_ack(n)`` is called as each batch of ``n`` events is acknowledged OK.
        The first failure closes the connection and raises, with ``.acknowledged`` set on the
        error to the events acknowledged OK before it; calls still in flight count as not
        delivered (the collector may hold them anyway: at-least-once).
        """
        return self._pipeline(
            ((len(batch), batch) for batch in batches),
            lambda conn, batch: conn.send_append_batch(batch),
            window,
            None if on_ack is None else (lambda _i, n: on_ack(n)),
        )

    def append_payloads(
        self,
        payloads: Iterable[tuple[int, bytes]],
        *,
        window: int = 4,
        on_ack: Callable[[int, int], None] | None = None,
    ) -> int:
        """Like :meth:`append_batches` for ``(count, payload)`` pairs of pre-joined events; no
        per-event work. ``on_ack(index, count)`` names the pair (its position in ``payloads``)
        that was acknowledged OK, so a caller can retry only the others after a failure."""
        return self._pipeline(((item[0], item) for item in payloads),
                              lambda conn, item: conn.send_append_batch_payload(*item), window, on_ack)

    def _pipeline(self, items: Iterable, send: Callable, window: int,
                  on_ack: Callable[[int, int], None] | None) -> int:
        """The shared loop: ``items`` yields ``(count, x)``; ``send(conn, x)`` queues one call.

        A call answered with an error or a status other than OK stops the sending; the answers
        to the calls already out are still read (the connection is in step), so the ones the
        collector accepted count as delivered and need not be sent again; then it raises."""
        acked = 0
        inflight: dict[int, tuple[int, int, float]] = {}  # serial -> (index, events, deadline)
        pending = enumerate(items)
        more = True
        refused: ShipperError | None = None
        try:
            self.connect()
            stream, conn = self._stream, self._conn
            while True:
                while more and refused is None and len(inflight) < (window if conn.established else 1):
                    item = next(pending, None)
                    if item is None:
                        more = False
                        break
                    index, (count, x) = item
                    deadline = time.monotonic() + self.options.request_timeout
                    inflight[send(conn, x)] = (index, count, deadline)
                    stream.send(conn.data_to_send(), deadline)
                if not inflight:
                    if refused is not None:
                        raise refused
                    return acked
                stream_deadline = min(d for _, _, d in inflight.values())
                conn.receive_data(stream.recv(stream_deadline))
                while (event := conn.next_event()) is not None:
                    if isinstance(event, (CallSucceeded, CallFailed)) and event.serial in inflight:
                        index, count, _ = inflight.pop(event.serial)
                        if not (isinstance(event, CallSucceeded) and event.status == Status.OK):
                            refused = refused or rejection(self.address, event)
                            continue
                        acked += count
                        if on_ack is not None:
                            on_ack(index, count)
                    elif isinstance(event, HandshakeCompleted):
                        self._server_hash = event.server_hash
                    elif isinstance(event, ConnectionClosed):
                        raise PeerClosed(f"{self.address} closed the connection before answering")
                out = conn.data_to_send()  # a NONE handshake re-queued the call
                if out:
                    stream.send(out, stream_deadline)
        except RemoteProtocolError as err:
            self.close()
            failure = PeerProtocolError(f"{self.address} broke the protocol: {err}")
            failure.acknowledged = acked
            raise failure from err
        except ShipperError as err:
            self.close()
            if refused is not None and err is not refused:
                refused.acknowledged = acked  # the refusal is the news; what followed is noise
                raise refused from err
            err.acknowledged = acked
            raise
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        stream, self._stream, self._conn = self._stream, None, None
        if stream is not None:
            stream.close()

    def __enter__(self) -> "CollectorClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- internals

    def _handshake_only(self, deadline: float) -> HandshakeCompleted:
        """A handshake "ping" (empty message name): answered with the handshake alone."""
        stream, conn = self._stream, self._conn
        conn.send_ping()
        try:
            while True:
                out = conn.data_to_send()
                if out:
                    stream.send(out, deadline)
                data = stream.recv(deadline)
                conn.receive_data(data)
                while (event := conn.next_event()) is not None:
                    if isinstance(event, HandshakeCompleted):
                        return event
                    if isinstance(event, CallFailed):
                        raise CollectorRejected(f"{self.address} answered the handshake with an error: {printable(event.message)}")
                    if isinstance(event, ConnectionClosed):
                        raise PeerClosed(f"{self.address} closed the connection before answering the handshake")
        except RemoteProtocolError as err:
            raise PeerProtocolError(f"{self.address} broke the protocol: {err}") from err


def rejection(address: Address, answer) -> CollectorRejected:
    """The error for an answer that is not OK; carries ``.status`` or ``.message``."""
    if isinstance(answer, CallFailed):
        err = CollectorRejected(f"{address} answered with an error: {printable(answer.message)}")
        err.status, err.message = None, answer.message
    else:
        err = CollectorRejected(f"{address} answered {answer.status.name}: it did not accept the events")
        err.status, err.message = answer.status, None
    return err


# --------------------------------------------------------------------------- ping


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


def client_for(address: Address, options: ClientOptions = ClientOptions()) -> "CollectorClient":
    """The client for the RPC the address names (``thrift://`` or Avro); one interface for both."""
    if address.rpc == "thrift":
        from shipper.sink.thrift_client import ThriftCollectorClient

        return ThriftCollectorClient(address, options)
    return CollectorClient(address, options)


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

    stream = Stream(sock, client_pipeline(address, options, tls_ctx), address)
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
        tls = stream.pipeline.tls
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


# --------------------------------------------------------------------------- one-shot sending


def split_lines(stream: BinaryIO) -> Iterator[bytes]:
    """Lines as raw bytes without their ``\\n`` (and a ``\\r`` before it); a last line without one counts."""
    for line in stream:
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        yield line


def send_lines(
    client: CollectorClient,
    lines: Iterable[bytes],
    *,
    batch_size: int,
    headers: dict[str, str] | None = None,
    window: int = 4,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Ship every line as one event, ``batch_size`` per call; returns the count acknowledged OK.

    Raises the client's errors with ``.acknowledged`` set (see :meth:`CollectorClient.append_batches`).
    """
    encoded_headers = encode_headers(headers)

    def batches() -> Iterator[list[bytes]]:
        batch: list[bytes] = []
        for line in lines:
            batch.append(encode_event_with(encoded_headers, line))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    return client.append_batches(batches(), window=window, on_ack=progress)
