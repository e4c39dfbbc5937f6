"""The two roles of Flume's Thrift RPC as state machines: bytes in, events out.

Framing (Thrift's framed transport, which Flume's ThriftSource and ThriftRpcClient use)::

    frame     i32 big-endian length | that many bytes: one whole message

A length above ``max_frame_bytes`` (or below 0) is refused as soon as its four bytes arrive,
before anything is buffered for it; memory per connection is one frame plus one read.

Client (:class:`ClientConnection`): ``send_append_batch*`` queues an ``appendBatch`` call with a
new sequence id (1, 2, ...) and returns it; :meth:`next_event` yields :class:`CallSucceeded`
(a REPLY with a ``Status``) or :class:`CallFailed` (an EXCEPTION: a ``TApplicationException``)
for that id. A reply to an id we are not waiting for, a reply in the other protocol, or bytes that
are no message at all raise :class:`RemoteProtocolError`; the transport then closes the
connection. There is no handshake: a connection is usable at once (``established`` is True).

Server (:class:`ServerConnection`): detects the protocol from the first frame (compact starts
``82``, binary ``80 01``, or ``00`` in the old non-strict form) and keeps it for the connection,
as Flume's ThriftSource serves one protocol per port; yields :class:`CallReceived` for every
``append``/``appendBatch``; the caller answers each with :meth:`respond` (a Status) or
:meth:`respond_error`. An unknown method is answered by the core itself with a
``TApplicationException`` of type UNKNOWN_METHOD, as Java's processor does. A call with more than
``max_events_per_call`` events is answered with a ``TApplicationException`` before its events are
decoded; the connection stays (the frame was whole and understood).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from shipper.thriftrpc import codec
from shipper.thriftrpc.codec import CALL, COMPACT, EXCEPTION, ONEWAY, PROTOCOLS, REPLY, TYPES, Status
from shipper.thriftrpc.errors import LocalProtocolError, RemoteProtocolError
from shipper.thriftrpc.transcode import transcode_payload

# Thrift's own Java default for a framed transport is 16 MB; ours matches the Avro collector's cap.
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_EVENTS_PER_CALL = 100_000
UNKNOWN_METHOD, INTERNAL_ERROR = 1, 6
_LEN = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class CallSucceeded:
    """The server answered the call with a Status (OK or not: check ``status``)."""

    serial: int
    status: Status


@dataclass(frozen=True, slots=True)
class CallFailed:
    """The server answered the call with a TApplicationException."""

    serial: int
    message: str


@dataclass(frozen=True, slots=True)
class CallReceived:
    """Server side: a decoded call; answer it with respond() or respond_error()."""

    serial: int
    message: str  # "append" | "appendBatch"
    events: list[tuple[dict[str, str], bytes]] = field(repr=False)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """receive_data(b"") was called: the peer closed its side."""


class FrameDecoder:
    """Length-prefixed frames out of a byte stream, each at most ``max_frame_bytes``."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 1:
            raise LocalProtocolError("max_frame_bytes must be at least 1")
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._need: int | None = None

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        while True:
            if self._need is None:
                if len(self._buf) < 4:
                    return frames
                (n,) = _LEN.unpack_from(self._buf)
                if n < 0 or n > self.max_frame_bytes:
                    raise RemoteProtocolError(
                        f"frame length {n} is out of bounds (limit {self.max_frame_bytes} bytes): not Thrift's framed transport?")
                del self._buf[:4]
                self._need = n
            if len(self._buf) < self._need:
                return frames
            frames.append(bytes(self._buf[: self._need]))
            del self._buf[: self._need]
            self._need = None

    @property
    def partial(self) -> bool:
        return bool(self._buf) or self._need is not None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a frame."""
        return len(self._buf)


class _OverLimit(Exception):
    """A well-formed call the server refuses to decode (answered with an exception)."""


def frame(message: bytes) -> bytes:
    return _LEN.pack(len(message)) + message


def _check_protocol(proto: str) -> str:
    if proto not in PROTOCOLS:
        raise LocalProtocolError(f"unknown Thrift protocol {proto!r}: use compact or binary")
    return proto


class _Connection:
    """What both roles share: frames in, one message handled each (``_handle``: an event or None),
    bytes out, and end of stream."""

    def __init__(self, max_frame_bytes: int) -> None:
        self._frames = FrameDecoder(max_frame_bytes)
        self._events: deque = deque()
        self._out: list[bytes] = []
        self._closed = False

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means it closed its side."""
        if not data:
            self._closed = True
            return
        for message in self._frames.feed(data):
            event = self._handle(message)
            if event is not None:
                self._events.append(event)

    def next_event(self):
        """The next event, :class:`ConnectionClosed` (repeated) after EOF, or None: more bytes needed."""
        if self._events:
            return self._events.popleft()
        if self._closed:
            return ConnectionClosed()
        return None

    def data_to_send(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    @property
    def buffered(self) -> int:
        """Bytes of a frame not yet complete (a server's memory budget charges them)."""
        return self._frames.buffered

    @property
    def in_frame(self) -> bool:
        """True while a frame has begun and is not complete (a server's frame timeout runs)."""
        return self._frames.partial

    def _handle(self, message: bytes):  # pragma: no cover - each role defines it
        raise NotImplementedError


class ClientConnection(_Connection):
    """The caller's side: queue appendBatch calls, read their answers."""

    established = True  # no handshake in Thrift

    def __init__(self, proto: str = COMPACT, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        super().__init__(max_frame_bytes)
        self.proto = _check_protocol(proto)
        self._pending: dict[int, bytes] = {}  # seqid -> method name
        self._seqid = 0

    def _next_seqid(self) -> int:
        self._seqid = self._seqid % 0x7FFFFFFF + 1
        return self._seqid

    def send_append_batch_structs(self, count: int, structs: bytes) -> int:
        """``count`` events already encoded as Thrift structs in this connection's protocol."""
        seqid = self._next_seqid()
        self._out.append(frame(codec.append_batch_call(self.proto, seqid, count, structs)))
        self._pending[seqid] = b"appendBatch"
        return seqid

    def send_append_batch_payload(self, count: int, payload: bytes) -> int:
        """``count`` events stored Avro-encoded and joined (as the channel keeps them)."""
        return self.send_append_batch_structs(count, transcode_payload(self.proto, count, payload))

    def send_append_batch(self, encoded_events: Sequence[bytes]) -> int:
        """Avro-encoded events, one ``bytes`` each (the ``send`` command's shape)."""
        return self.send_append_batch_payload(len(encoded_events), b"".join(encoded_events))

    def send_events(self, events: Sequence[tuple[dict[str, str] | None, bytes]]) -> int:
        """(headers, body) pairs, encoded here."""
        return self.send_append_batch_structs(
            len(events), b"".join(codec.encode_event(self.proto, h, b) for h, b in events))

    @property
    def pending_calls(self) -> int:
        return len(self._pending)

    def _handle(self, message: bytes):
        """One answer: CallSucceeded or CallFailed."""
        r = codec.reader_for(self.proto, message)
        if self.proto == COMPACT and message[:1] != b"\x82":
            raise RemoteProtocolError(f"the answer is not in the compact protocol (first bytes {message[:4].hex()})"
                                      + (": the collector speaks binary" if message[:2] == b"\x80\x01" else ""))
        if self.proto != COMPACT and message[:1] == b"\x82":
            raise RemoteProtocolError("the answer is in the compact protocol, not binary: the collector speaks compact")
        name, mtype, seqid = r.message_begin()
        if seqid not in self._pending:
            raise RemoteProtocolError(f"an answer with sequence id {seqid}, which no call of ours is waiting for")
        if name != self._pending.pop(seqid):
            raise RemoteProtocolError(f"the answer names method {name!r}, not the one called")
        types = TYPES[self.proto]
        status: int | None = None
        text, kind = "", 0
        r.struct_begin()
        while (f := r.field_begin())[0] != types["stop"]:
            ttype, fid = f
            if mtype == REPLY and fid == 0 and ttype == types["i32"]:
                status = r.i32()
            elif mtype == EXCEPTION and fid == 1 and ttype == types["binary"]:
                text = r.binary().decode("utf-8", "replace")
            elif mtype == EXCEPTION and fid == 2 and ttype == types["i32"]:
                kind = r.i32()
            else:
                r.skip(ttype)
        r.struct_end()
        if mtype == EXCEPTION:
            return CallFailed(seqid, f"{text or 'no message'} (TApplicationException type {kind})")
        if mtype != REPLY:
            raise RemoteProtocolError(f"an answer of message type {mtype}, neither REPLY nor EXCEPTION")
        if status is None:
            raise RemoteProtocolError("a REPLY without its Status")
        try:
            return CallSucceeded(seqid, Status(status))
        except ValueError:
            raise RemoteProtocolError(f"Status {status} is none of OK, FAILED, ERROR, UNKNOWN") from None


class ServerConnection(_Connection):
    """The collector's side: decode calls, answer them in any order."""

    def __init__(
        self,
        proto: str | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_events_per_call: int = DEFAULT_MAX_EVENTS_PER_CALL,
    ) -> None:
        super().__init__(max_frame_bytes)
        self.proto = None if proto is None else _check_protocol(proto)
        self.max_events_per_call = max_events_per_call
        self._calls: dict[int, tuple[bytes, int, bool]] = {}  # serial -> (name, seqid, oneway)
        self._serial = 0

    @property
    def pending_calls(self) -> int:
        return len(self._calls)

    def _handle(self, message: bytes) -> CallReceived | None:
        if self.proto is None:
            self.proto = codec.detect(message)
        elif codec.detect(message) != self.proto:
            raise RemoteProtocolError(f"a message in another protocol than the connection's ({self.proto})")
        r = codec.reader_for(self.proto, message)
        name, mtype, seqid = r.message_begin()
        if mtype not in (CALL, ONEWAY):
            raise RemoteProtocolError(f"message type {mtype} where a call was expected")
        if name not in (b"append", b"appendBatch"):
            if mtype == CALL:
                self._out.append(frame(codec.exception_reply(
                    self.proto, name, seqid, f"Invalid method name: '{name.decode('utf-8', 'replace')}'", UNKNOWN_METHOD)))
            return None
        try:
            events = self._read_args(r, name)
        except _OverLimit as err:
            # The frame is whole and understood: refuse the call, keep the connection (as Avro's core does).
            if mtype == CALL:
                self._out.append(frame(codec.exception_reply(self.proto, name, seqid, str(err), INTERNAL_ERROR)))
            return None
        self._serial += 1
        self._calls[self._serial] = (name, seqid, mtype == ONEWAY)
        return CallReceived(self._serial, name.decode(), events)

    def _read_args(self, r, name: bytes) -> list[tuple[dict[str, str], bytes]]:
        types = TYPES[self.proto]
        events: list | None = None
        r.struct_begin()
        while (f := r.field_begin())[0] != types["stop"]:
            ttype, fid = f
            if fid == 1 and name == b"appendBatch" and ttype == types["list"]:
                etype, n = r.list_begin()
                if n and etype != types["struct"]:
                    raise RemoteProtocolError("appendBatch's list does not hold structs")
                if n > self.max_events_per_call:
                    raise _OverLimit(f"a call of {n} events is over the collector's limit of {self.max_events_per_call}")
                events = codec.read_events(r, self.proto, n)
            elif fid == 1 and name == b"append" and ttype == types["struct"]:
                events = [codec.read_event(r, types)]
            else:
                r.skip(ttype)
        r.struct_end()
        if events is None:
            raise RemoteProtocolError(f"{name.decode()} without its events argument")
        if r.pos != r.end:
            raise RemoteProtocolError(f"{r.end - r.pos} bytes after the end of the call")
        return events

    def respond(self, serial: int, status: Status) -> None:
        name, seqid, oneway = self._take(serial)
        if not oneway:
            self._out.append(frame(codec.status_reply(self.proto, name, seqid, status)))

    def respond_error(self, serial: int, message: str) -> None:
        name, seqid, oneway = self._take(serial)
        if not oneway:
            self._out.append(frame(codec.exception_reply(self.proto, name, seqid, message, INTERNAL_ERROR)))

    def _take(self, serial: int) -> tuple[bytes, int, bool]:
        try:
            return self._calls.pop(serial)
        except KeyError:
            raise LocalProtocolError(f"no call {serial} is waiting for an answer") from None
