"""What one call may carry: the per-call and per-event caps the server role enforces.

Java's Responder decodes whatever arrives: a call of 10 million unique header keys becomes
10 million map entries before anything looks at it. These caps are checked while decoding, each
one before the objects it guards are created (a map block's count before its entries, a body's
length before its slice), so a hostile call costs at most one cap's worth of memory and is then
answered with an Avro system error. Every refusal carries a short ``reason`` (the key under
which the transport counts it) and a message that names the cap and the flag-sized number.

Defaults are far above what Flume's AvroSink or flume-ship's sink send (a batch of 100 to 1,000
events of a few headers each) and low enough that the objects of one call stay in the tens of
megabytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipper.avroipc.avro import AvroDecodeError


@dataclass(frozen=True, slots=True)
class CallLimits:
    max_events: int = 100_000  # events in one appendBatch
    max_body_bytes: int = 16 * 1024 * 1024  # one event's body
    max_headers_per_event: int = 1024  # header entries of one event
    max_header_bytes_per_event: int = 256 * 1024  # one event's encoded header map
    max_headers_per_call: int = 200_000  # header entries of all the events of one call
    max_header_bytes_per_call: int = 16 * 1024 * 1024  # encoded header maps of one call
    max_meta_entries: int = 64  # entries of a call's (ignored) request metadata map
    max_protocol_bytes: int = 64 * 1024  # a handshake's client protocol text (Flume's: 1,334)


DEFAULT_CALL_LIMITS = CallLimits()


class LimitExceeded(AvroDecodeError):
    """A call goes past one of the :class:`CallLimits`; ``reason`` names which (for counting)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
