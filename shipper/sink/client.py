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

Ordered pipelining: the handshake response of ``flume-ship collect`` advertises in its ``meta``
that it applies one connection's calls in order and refuses every call after a refused one
(:func:`shipper.avroipc.promises_ordered_pipeline`); :attr:`CollectorClient.ordered_pipeline` says
whether the current connection's collector did. ``append_payloads(..., ordered=True)`` keeps its
``window`` only into such a collector and sends one call at a time into any other (Flume 1.10+
runs pipelined calls out of order, docs/interop.md).

Errors carry the policy (``shipper.errors``): every failure, whatever its kind, closes the
connection before the error leaves this module, so the next call starts clean with a new
connection and a new handshake (Flume's "DEAD client" lesson, without the death). Lower-layer
errors are translated once: the transport's in ``shipper.transport.stream``, the protocol core's
here (:func:`broke_protocol`).

:func:`send_lines` is the ``send`` command's engine; ``ping``'s is :mod:`shipper.sink.probe`.
"""

from __future__ import annotations

import time
from typing import BinaryIO, Callable, Iterable, Iterator, Sequence

from shipper.avroipc import (
    CallFailed, CallSucceeded, ClientConnection, ConnectionClosed, HandshakeCompleted, RemoteProtocolError,
    Status, promises_ordered_pipeline,
)
from shipper.avroipc.flume_event import encode_event_with, encode_headers
from shipper.errors import CollectorRejected, PeerClosed, PeerProtocolError, ShipperError, printable
from shipper.transport import Address, ClientOptions, Stream, client_tls_context, open_stream


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
        # The collector of this connection advertised ordered pipelining (known after the handshake).
        self.ordered_pipeline = False
        self._tls_ctx = client_tls_context(options.tls) if options.tls is not None else None

    @property
    def connected(self) -> bool:
        return self._stream is not None

    def connect(self) -> None:
        if self._stream is None:
            self._stream = open_stream(self.address, self.options, self._tls_ctx)
            self._conn = ClientConnection(server_hash=self._server_hash)
            self.ordered_pipeline = False

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
        ordered: bool = False,
    ) -> int:
        """Like :meth:`append_batches` for ``(count, payload)`` pairs of pre-joined events; no
        per-event work. ``on_ack(index, count)`` names the pair (its position in ``payloads``)
        that was acknowledged OK, so a caller can retry only the others after a failure.
        With ``ordered``, more than one call is in flight only if the collector advertised
        ordered pipelining (:attr:`ordered_pipeline`). ``payloads`` is pulled only when a call
        may go out, so it may be a generator that takes from a channel as room appears."""
        return self._pipeline(((item[0], item) for item in payloads),
                              lambda conn, item: conn.send_append_batch_payload(*item), window, on_ack, ordered)

    def _pipeline(self, items: Iterable, send: Callable, window: int,
                  on_ack: Callable[[int, int], None] | None, ordered: bool = False) -> int:
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
                while more and refused is None and len(inflight) < (
                        window if conn.established and (self.ordered_pipeline or not ordered) else 1):
                    item = next(pending, None)
                    if item is None:
                        more = False
                        break
                    index, (count, x) = item
                    deadline = time.monotonic() + self.options.request_timeout
                    inflight[send(conn, x)] = (index, count, deadline)
                    stream.send(conn.parts_to_send(), deadline)  # (a scatter write)
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
                        self.ordered_pipeline = promises_ordered_pipeline(event.meta)
                    elif isinstance(event, ConnectionClosed):
                        raise PeerClosed(f"{self.address} closed the connection before answering")
                out = conn.parts_to_send()  # a NONE handshake re-queued the call
                if out:
                    stream.send(out, stream_deadline)
        except RemoteProtocolError as err:
            self.close()
            failure = broke_protocol(self.address, err)
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
                        raise CollectorRejected(f"{self.address} answered the handshake with an error: "
                                                f"{printable(event.message)}", about_batch=False)
                    if isinstance(event, ConnectionClosed):
                        raise PeerClosed(f"{self.address} closed the connection before answering the handshake")
        except RemoteProtocolError as err:
            raise broke_protocol(self.address, err) from err


def rejection(address: Address, answer) -> CollectorRejected:
    """The error for an answer that is not OK; carries ``.status`` or ``.message``."""
    if isinstance(answer, CallFailed):
        return CollectorRejected(f"{address} answered with an error: {printable(answer.message)}", message=answer.message)
    return CollectorRejected(f"{address} answered {answer.status.name}: it did not accept the events",
                             status=answer.status)


def client_for(address: Address, options: ClientOptions = ClientOptions()) -> "CollectorClient":
    """The client for the RPC the address names (``thrift://`` or Avro); one interface for both."""
    if address.rpc == "thrift":
        from shipper.sink.thrift_client import ThriftCollectorClient

        return ThriftCollectorClient(address, options)
    return CollectorClient(address, options)


def broke_protocol(address: Address, err: RemoteProtocolError) -> PeerProtocolError:
    """The protocol core's complaint about the collector's bytes, as the sink's error (client role)."""
    return PeerProtocolError(f"{address} broke the protocol: {err}")


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
