"""Connection events: what the state machines hand to the transport (frozen, slotted dataclasses).

Not to be confused with a Flume event, which is :class:`shipper.avroipc.flume_event.FlumeEvent`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shipper.avroipc.protocol import Status


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """The server answered BOTH or CLIENT: the connection is established.

    ``server_hash`` is the hash now in use for the server (the one we sent, for BOTH; the
    server's, for CLIENT); a transport may remember it per address, as Java does, and pass it as
    ``server_hash`` to the next connection. ``server_protocol`` is the text the server sent, if any.
    ``meta`` is the response's ``meta`` map (None from Java servers; ``flume-ship collect``
    advertises ordered pipelining there: :func:`shipper.avroipc.protocol.promises_ordered_pipeline`).
    """

    match: str  # "BOTH" | "CLIENT"
    server_hash: bytes | None
    server_protocol: str | None
    meta: dict[str, bytes] | None = None


@dataclass(frozen=True, slots=True)
class HandshakeRetry:
    """The server answered NONE; the call was queued again with our protocol text."""

    server_hash: bytes
    server_protocol: str


@dataclass(frozen=True, slots=True)
class CallSucceeded:
    """The server answered the call with a Status (OK or not: check ``status``)."""

    serial: int
    status: Status


@dataclass(frozen=True, slots=True)
class CallFailed:
    """The server answered the call with an Avro system error (error flag 1)."""

    serial: int
    message: str


@dataclass(frozen=True, slots=True)
class CallReceived:
    """Server side: a decoded call; answer it with respond() or respond_error()."""

    serial: int
    message: str  # "append" | "appendBatch"
    events: list[tuple[dict[str, str], bytes]] = field(repr=False)


@dataclass(frozen=True, slots=True)
class CallRefused:
    """Server side: a call could not be run and was already answered with an Avro system error.

    ``reason`` is a short key for counting (``malformed``, ``unknown-message``, ``handshake``,
    ``protocol``, ``events``, ``body``, ``headers``, ``header-bytes``, ``metadata``); ``detail``
    is the text sent back to the client. Nothing is left to answer.
    """

    serial: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """receive_data(b"") was called: the peer closed its side."""


ConnectionEvent = (
    HandshakeCompleted | HandshakeRetry | CallSucceeded | CallFailed | CallReceived | CallRefused | ConnectionClosed
)
