"""The server role: Java ``Responder`` + ``NettyServer`` behaviour, without the I/O.

Theory of operation (avro-rpc-wire.md §3.2, §4, §5, P2, P4-P9):

* Per connection one flag, ``established``. Until it is set every request must start with a
  HandshakeRequest; after it is set none may (a second handshake is read as call metadata and
  fails, giving a system error, as in Java).
* Handshake: ``remote`` = the protocol cached under ``clientHash``; if none and the request
  carries ``clientProtocol``, that text is cached under ``clientHash``, once checked: at most
  ``max_protocol_bytes`` long (checked before it is decoded) and with that very MD5 (Java checks
  neither; a hostile client could otherwise pin large texts in the cache). match = BOTH if ``serverHash`` is ours and remote is known, CLIENT if remote
  is known but ``serverHash`` is not ours, else NONE. Non-BOTH answers carry our text and hash;
  ``meta`` is null (as Java's) unless the server gives ``handshake_meta`` (``flume-ship collect``
  advertises ordered pipelining there; the promise itself is the server's to keep). NONE answers
  with the handshake alone and does not run the call.
* The handshake response goes in front of the answer to that request, and in no later one.
* A request whose frame is sound but whose call cannot be decoded (no or bad handshake on a
  fresh connection, unknown message, bad record, too many events, bytes after the parameters)
  is answered at once with an Avro system error and the connection stays open, as Java does.
  Broken framing is a RemoteProtocolError: the transport closes the connection.
* Responses: ``chunks(handshake or nothing) + chunks(metadata 00) + chunks(flag + value)``.
  A ping (empty message name after a handshake) gets the handshake response alone.

* Every call refused with a system error is also reported to the transport as a
  :class:`CallRefused` event (reason + text), so the server can count and log it; the caps of
  :class:`CallLimits` (events, body, headers, metadata, protocol text) refuse a call this way.

Deviation from Java, on purpose: Java ignores bytes after the parameters; we answer a system
error instead of running a call we may have misread.
"""

from __future__ import annotations

import json
from collections import deque

from shipper.avroipc.avro import AvroDecodeError, Reader, encode_string
from shipper.avroipc.errors import LocalProtocolError
from shipper.avroipc.events import CallReceived, CallRefused, ConnectionClosed, ConnectionEvent
from shipper.avroipc.flume_event import read_event, read_event_array
from shipper.avroipc.framing import (
    DEFAULT_MAX_BUFFERS,
    DEFAULT_MAX_FRAME_BYTES,
    Frame,
    Inbox,
    chunks,
    encode_frame,
)
from shipper.avroipc.protocol import (
    PROTOCOL_HASH,
    PROTOCOL_HASH_1_11_1,
    PROTOCOL_TEXT,
    PROTOCOL_TEXT_1_11_1,
    HandshakeMatch,
    HandshakeResponse,
    Status,
    encode_handshake_response,
    protocol_hash,
    read_handshake_request,
)
from shipper.avroipc.limits import DEFAULT_CALL_LIMITS, CallLimits, LimitExceeded

DEFAULT_MAX_EVENTS_PER_CALL = 100_000
DEFAULT_MAX_CACHED_PROTOCOLS = 64

_STATUS_BYTES = {Status.OK: b"\x00\x00", Status.FAILED: b"\x00\x02", Status.UNKNOWN: b"\x00\x04"}
_EMPTY_META = b"\x00"
_EMPTY_HANDSHAKE = b""


class ProtocolCache:
    """Client protocols known to one server, by hash; shared by all its connections.

    Both released Flume texts are known from the start so Java clients get BOTH at once (P4).
    Texts sent by clients are added under their ``clientHash``, up to ``max_learned`` of them (a
    bound Java does not have; it keeps a hostile client from growing the cache without end).
    """

    def __init__(
        self,
        server_protocol: str = PROTOCOL_TEXT,
        *,
        preregister: bool = True,
        max_learned: int = DEFAULT_MAX_CACHED_PROTOCOLS,
    ) -> None:
        self.server_protocol = server_protocol
        self.server_hash = protocol_hash(server_protocol)
        self.max_learned = max_learned
        # preregister=False behaves like a Java Responder, which knows only its own protocol.
        self._known: dict[bytes, str] = {self.server_hash: server_protocol}
        if preregister:
            self._known.setdefault(PROTOCOL_HASH, PROTOCOL_TEXT)
            self._known.setdefault(PROTOCOL_HASH_1_11_1, PROTOCOL_TEXT_1_11_1)
        self._learned = 0

    def get(self, client_hash: bytes) -> str | None:
        return self._known.get(client_hash)

    def learn(self, client_hash: bytes, text: str) -> None:
        """Cache a client's text; ValueError if it is not a protocol's JSON (Java parses it too)
        or not the text its ``client_hash`` names (Java does not check; every client, Java's
        included, sends the MD5 of the very text it sends)."""
        if protocol_hash(text) != client_hash:
            raise ValueError("client protocol does not match its MD5 hash")
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"client protocol is not JSON: {exc}") from None
        if not isinstance(obj, dict) or "protocol" not in obj:
            raise ValueError("client protocol is not an Avro protocol")
        if client_hash in self._known or self._learned >= self.max_learned:
            return
        self._known.setdefault(client_hash, text)
        self._learned += 1


class _BadCall(Exception):
    """The call cannot be decoded; answer a system error with this text."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ServerConnection:
    def __init__(
        self,
        cache: ProtocolCache,
        *,
        max_buffers: int = DEFAULT_MAX_BUFFERS,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_events_per_call: int = DEFAULT_MAX_EVENTS_PER_CALL,
        limits: CallLimits = DEFAULT_CALL_LIMITS,
        handshake_meta: dict[str, bytes] | None = None,
    ) -> None:
        self.cache = cache
        self.handshake_meta = handshake_meta
        self.max_events_per_call = min(max_events_per_call, limits.max_events)
        self.limits = limits
        self.established = False
        self._inbox = Inbox(max_buffers, max_frame_bytes)
        self._pending: dict[int, deque[bytes]] = {}  # serial -> handshake prefixes of open calls
        self._out: list[bytes] = []

    @property
    def pending_calls(self) -> int:
        """Calls handed out by next_event() and not answered yet."""
        return sum(len(q) for q in self._pending.values())

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out as calls (partial and queued frames)."""
        return self._inbox.buffered

    @property
    def in_frame(self) -> bool:
        """True while a frame has begun and is not complete."""
        return self._inbox.in_frame

    @property
    def calls_waiting(self) -> bool:
        """Complete frames wait to be handled, and the stream is in order (no framing error kept)."""
        return bool(self._inbox.frames) and self._inbox.error is None

    # --- receiving ---

    def receive_data(self, data: bytes) -> None:
        self._inbox.receive_data(data)

    def next_event(self) -> ConnectionEvent | None:
        frames = self._inbox.frames
        while frames:
            event = self._handle(frames.popleft())
            if event is not None:
                return event
        return ConnectionClosed() if self._inbox.end() else None

    def _handle(self, frame: Frame) -> CallReceived | None:
        serial = frame.serial
        r = Reader(frame.payload())
        handshake = _EMPTY_HANDSHAKE
        try:
            if not self.established:
                handshake, match = self._handshake(r)
                if match == HandshakeMatch.NONE:
                    self._out.append(encode_frame(serial, chunks(handshake)))
                    return None
                self.established = True
            try:
                r.read_bytes_map(self.limits.max_meta_entries)  # request metadata: Java sends {}, entries are ignored
                name = r.read_string()
            except AvroDecodeError as exc:
                raise _BadCall("metadata", f"org.apache.avro.AvroRuntimeException: bad call header: {exc}") from None
            if name == "" and handshake:
                self._out.append(encode_frame(serial, chunks(handshake)))  # a handshake ping
                return None
            events = self._read_params(r, name)
        except _BadCall as exc:
            self._send(serial, handshake, _system_error(str(exc)))
            return CallRefused(serial, exc.reason, str(exc))
        self._pending.setdefault(serial, deque()).append(handshake)
        return CallReceived(serial, name, events)

    def _handshake(self, r: Reader) -> tuple[bytes, HandshakeMatch]:
        try:
            req = read_handshake_request(r, self.limits.max_protocol_bytes, self.limits.max_meta_entries)
        except LimitExceeded as exc:
            raise _BadCall(exc.reason, f"org.apache.avro.AvroRuntimeException: {exc}") from None
        except AvroDecodeError as exc:
            raise _BadCall("handshake", f"org.apache.avro.AvroRuntimeException: no valid handshake: {exc}") from None
        cache = self.cache
        remote = cache.get(req.client_hash)
        if remote is None and req.client_protocol is not None:
            try:
                cache.learn(req.client_hash, req.client_protocol)
            except ValueError as exc:
                raise _BadCall("protocol", f"org.apache.avro.SchemaParseException: {exc}") from None
            remote = req.client_protocol
        if remote is None:
            match = HandshakeMatch.NONE
        elif req.server_hash == cache.server_hash:
            match = HandshakeMatch.BOTH
        else:
            match = HandshakeMatch.CLIENT
        meta = self.handshake_meta if match != HandshakeMatch.NONE else None
        if match == HandshakeMatch.BOTH:
            resp = HandshakeResponse(match, None, None, meta)
        else:
            resp = HandshakeResponse(match, cache.server_protocol, cache.server_hash, meta)
        return encode_handshake_response(resp), match

    def _read_params(self, r: Reader, name: str) -> list[tuple[dict[str, str], bytes]]:
        try:
            if name == "appendBatch":
                events, pos = read_event_array(r.buf, r.pos, self.max_events_per_call, self.limits)
            elif name == "append":
                event, pos = read_event(r.buf, r.pos, self.limits)
                events = [event]
            else:
                raise _BadCall("unknown-message", f"org.apache.avro.AvroRuntimeException: No such remote message: {name}")
        except LimitExceeded as exc:
            raise _BadCall(exc.reason, f"org.apache.avro.AvroRuntimeException: {name} refused: {exc}") from None
        except AvroDecodeError as exc:
            raise _BadCall("malformed", f"org.apache.avro.AvroRuntimeException: bad {name} parameters: {exc}") from None
        if pos != r.end:
            raise _BadCall("malformed", f"org.apache.avro.AvroRuntimeException: {r.end - pos} bytes after the {name} parameters")
        return events

    # --- answering ---

    def _take(self, serial: int) -> bytes:
        queue = self._pending.get(serial)
        if not queue:
            raise LocalProtocolError(f"no received call with serial {serial} is waiting for an answer")
        handshake = queue.popleft()
        if not queue:
            del self._pending[serial]
        return handshake

    def _send(self, serial: int, handshake: bytes, body: bytes) -> None:
        self._out.append(encode_frame(serial, [*chunks(handshake), _EMPTY_META, *chunks(body)]))

    def respond(self, serial: int, status: Status) -> None:
        handshake = self._take(serial)
        self._send(serial, handshake, _STATUS_BYTES[Status(status)])

    def respond_error(self, serial: int, message: str) -> None:
        """Answer with an Avro system error (error flag 1); Java clients fail the call."""
        handshake = self._take(serial)
        self._send(serial, handshake, _system_error(message))

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out


def _system_error(message: str) -> bytes:
    # error flag true, union branch 0 (the only branch of ["string"]), the text
    return b"\x01\x00" + encode_string(message)
