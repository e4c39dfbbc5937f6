"""The client role: Java ``Requestor`` + ``NettyTransceiver`` behaviour, without the I/O.

Theory of operation (avro-rpc-wire.md §3.1, §4, P2, P7, P8):

* A request is ``[HandshakeRequest] + metadata 00 + message name + parameters``, framed as
  ``chunks(handshake + 00 + name) + chunks(parameters)`` under a fresh serial (1, 2, … wrapping
  as a signed 32-bit int, like Java's AtomicInteger).
* The handshake rides on requests only until a response says BOTH or CLIENT. Like Java we send
  ``clientHash`` = our hash, ``clientProtocol`` = null, ``serverHash`` = the hash we were given
  (or our own as a guess), ``meta`` = empty map (``02 00``). While that first call is out, any
  other ``send_*`` raises LocalProtocolError: Java never pipelines before the handshake. The
  response's ``meta`` (null from Java, a map from ``flume-ship collect``) goes out with
  HandshakeCompleted.
* NONE: the server did not run the call. We re-queue the same call under a new serial, now with
  ``clientProtocol`` = our text and ``serverHash`` = the server's, and report HandshakeRetry. The
  final CallSucceeded/CallFailed still carries the serial the caller got. A second NONE would
  loop forever, so it is a RemoteProtocolError.
* Once established, requests carry no handshake, responses are read without one, several calls
  may be in flight and answers may come in any order: they are matched by serial. An answer for
  a serial we are not waiting for is a RemoteProtocolError (Java drops the connection too).
* Outgoing frames are kept as pieces (:func:`~shipper.avroipc.framing.frame_parts`):
  :meth:`ClientConnection.parts_to_send` hands them over unjoined, so a transport with a scatter
  write sends a batch's stored payload without copying it (``data_to_send`` joins them).
* Unlike Java we refuse bytes left over after a response. This turns the "handshake in every
  response" server bug (§6.1-2, which Java silently misreads as OK) into a clean error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from shipper.avroipc.avro import AvroDecodeError, Reader, encode_long, encode_string
from shipper.avroipc.errors import LocalProtocolError, RemoteProtocolError
from shipper.avroipc.events import (
    CallFailed,
    CallSucceeded,
    ConnectionClosed,
    ConnectionEvent,
    HandshakeCompleted,
    HandshakeRetry,
)
from shipper.avroipc.flume_event import encode_batch
from shipper.avroipc.framing import (
    DEFAULT_MAX_BUFFERS,
    DEFAULT_MAX_FRAME_BYTES,
    Frame,
    Inbox,
    chunks,
    chunks_of,
    frame_parts,
)
from shipper.avroipc.protocol import (
    PROTOCOL_TEXT,
    HandshakeMatch,
    HandshakeRequest,
    Status,
    encode_handshake_request,
    protocol_hash,
    read_handshake_response,
)

_NAME_APPEND = b"\x00" + encode_string("append")  # request metadata {} + message name
_NAME_APPEND_BATCH = b"\x00" + encode_string("appendBatch")
_NAME_PING = b"\x00" + encode_string("")
_EMPTY_META = {}


@dataclass(slots=True)
class _Call:
    serial: int  # the serial the caller was given
    name: bytes  # metadata + message name, ready to send
    params: bytes | tuple[bytes, ...] | None  # None for a ping; a tuple: parts, sent back to back
    handshake: bool  # this request carried a handshake, so its response starts with one
    with_text: bool  # ... and that handshake carried our protocol text


class ClientConnection:
    def __init__(
        self,
        *,
        client_protocol: str = PROTOCOL_TEXT,
        server_hash: bytes | None = None,
        max_buffers: int = DEFAULT_MAX_BUFFERS,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.client_protocol = client_protocol
        self.client_hash = protocol_hash(client_protocol)
        if server_hash is not None and len(server_hash) != 16:
            raise ValueError("server_hash must be 16 bytes")
        self.server_hash = server_hash if server_hash is not None else self.client_hash
        self.established = False
        self._send_text = False
        self._next_serial = 1
        self._pending: dict[int, _Call] = {}  # wire serial -> call
        self._handshaking = False  # a handshake-carrying call is out
        self._out: list = []  # pieces of the frames queued (frame_parts), in order
        self._inbox = Inbox(max_buffers, max_frame_bytes)
        self._events: list[ConnectionEvent] = []

    # --- sending ---

    @property
    def pending_calls(self) -> int:
        """Calls sent and not answered yet."""
        return len(self._pending)

    def send_append_batch(self, encoded_events: Sequence[bytes]) -> int:
        return self._start(_NAME_APPEND_BATCH, encode_batch(encoded_events))

    def send_append_batch_payload(self, count: int, payload: bytes) -> int:
        """appendBatch with ``count`` encoded events already joined into ``payload``: the same
        bytes as :meth:`send_append_batch` of those events, without handling them one by one.
        The caller vouches that ``payload`` holds exactly ``count`` encoded AvroFlumeEvents."""
        if count < 0 or (count == 0) != (len(payload) == 0):
            raise ValueError(f"a payload of {len(payload)} bytes cannot hold {count} events")
        # As parts: the payload goes into the frame without a copy of it for the parameters.
        params = (encode_long(count), payload, b"\x00") if count else b"\x00"
        return self._start(_NAME_APPEND_BATCH, params)

    def send_append(self, encoded_event: bytes) -> int:
        return self._start(_NAME_APPEND, encoded_event)

    def send_ping(self) -> int:
        return self._start(_NAME_PING, None)

    def _start(self, name: bytes, params: bytes | tuple[bytes, ...] | None) -> int:
        if self._inbox.eof or self._inbox.error is not None:
            raise LocalProtocolError("the connection is closed or broken")
        if not self.established and self._handshaking:
            raise LocalProtocolError("a call is already out while the handshake is not finished")
        serial = self._take_serial()
        self._queue(serial, _Call(serial, name, params, False, False))
        return serial

    def _take_serial(self) -> int:
        serial = self._next_serial
        self._next_serial = -(2**31) if serial == 2**31 - 1 else serial + 1
        return serial

    def _queue(self, wire_serial: int, call: _Call) -> None:
        head = call.name
        if not self.established:
            call.handshake = True
            call.with_text = self._send_text
            req = HandshakeRequest(
                self.client_hash,
                self.client_protocol if self._send_text else None,
                self.server_hash,
                _EMPTY_META,
            )
            head = encode_handshake_request(req) + head
            self._handshaking = True
        buffers = chunks(head)
        if isinstance(call.params, tuple):
            buffers += chunks_of(call.params)
        elif call.params is not None:
            buffers += chunks(call.params)
        self._pending[wire_serial] = call
        self._out += frame_parts(wire_serial, buffers)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def parts_to_send(self) -> list:
        """What :meth:`data_to_send` would return, as pieces to write in order without joining
        them: a batch's stored payload goes from the caller's bytes to the socket uncopied."""
        out, self._out = self._out, []
        return out

    # --- receiving ---

    def receive_data(self, data: bytes) -> None:
        self._inbox.receive_data(data)

    def next_event(self) -> ConnectionEvent | None:
        frames = self._inbox.frames
        while not self._events:
            if frames:
                self._handle(frames.popleft())
            elif self._inbox.end():
                return ConnectionClosed()
            else:
                return None
        return self._events.pop(0)

    def _fail(self, message: str) -> RemoteProtocolError:
        return self._inbox.fail(message)

    def _handle(self, frame: Frame) -> None:
        call = self._pending.pop(frame.serial, None)
        if call is None:
            raise self._fail(f"response for serial {frame.serial}, which no call is waiting for")
        r = Reader(frame.payload())
        try:
            if call.handshake:
                self._handshaking = False
                if not self._read_handshake(r, frame.serial, call):
                    return  # NONE: the call went out again
                if call.params is None:
                    return  # ping: the handshake response is the whole answer
            self._read_call_response(r, call.serial)
        except AvroDecodeError as exc:
            raise self._fail(f"undecodable response to call {frame.serial}: {exc}") from None

    def _read_handshake(self, r: Reader, wire_serial: int, call: _Call) -> bool:
        resp = read_handshake_response(r)
        if resp.match != HandshakeMatch.BOTH:
            if resp.server_protocol is None or resp.server_hash is None:
                raise self._fail(f"handshake {resp.match.name} without the server's protocol and hash")
        if resp.match == HandshakeMatch.NONE:
            if call.with_text:
                raise self._fail("the server answered NONE although our protocol text was sent")
            self.server_hash = resp.server_hash
            self._send_text = True
            self._events.append(HandshakeRetry(resp.server_hash, resp.server_protocol))
            self._queue(self._take_serial(), call)
            return False
        if resp.match == HandshakeMatch.CLIENT:
            self.server_hash = resp.server_hash
        self.established = True
        self._events.append(HandshakeCompleted(resp.match.name, self.server_hash, resp.server_protocol, resp.meta))
        if call.params is None and not r.at_end():
            raise self._fail(f"{r.remaining} bytes after the handshake-only response")
        return True

    def _read_call_response(self, r: Reader, serial: int) -> None:
        r.read_bytes_map()  # response metadata: Java sends {}, entries are allowed and ignored
        if r.read_boolean():
            r.read_union_index(1)  # the error union is ["string"]
            event: ConnectionEvent = CallFailed(serial, r.read_string())
        else:
            event = CallSucceeded(serial, Status(r.read_enum(3)))
        if not r.at_end():
            raise self._fail(f"{r.remaining} bytes after the response to call {serial}")
        self._events.append(event)
