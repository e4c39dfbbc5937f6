"""Sans-IO core of Flume's Avro RPC (Netty framing, handshake, calls, deflate).

Bytes in, events out; events in, bytes out. Nothing here opens sockets, reads clocks or starts
threads, and nothing here imports from the rest of ``shipper``: the transport layers
(``shipper.transport``, ``shipper.sink.client``, ``shipper.collector.server``) drive these state machines. The
wire format followed is avro-rpc-wire.md; the project's own notes are docs/protocol.md.

Typical client use::

    conn = ClientConnection()
    serial = conn.send_append_batch(encoded_events)
    sock.sendall(conn.data_to_send())
    while (event := conn.next_event()) is None:     # None: more bytes are needed
        conn.receive_data(sock.recv(65536))
        ... also send conn.data_to_send() (a NONE handshake re-queues the call)
"""

from shipper.avroipc.compression import DEFAULT_MAX_DECODED_BYTES, InflateLimitExceeded, ZlibDecoder, ZlibEncoder
from shipper.avroipc.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from shipper.avroipc.events import (
    CallFailed,
    CallReceived,
    CallRefused,
    CallSucceeded,
    ConnectionClosed,
    ConnectionEvent,
    HandshakeCompleted,
    HandshakeRetry,
)
from shipper.avroipc.framing import (
    DEFAULT_MAX_BUFFERS,
    DEFAULT_MAX_FRAME_BYTES,
    Frame,
    FrameDecoder,
    encode_frame,
)
from shipper.avroipc.protocol import (
    ORDERED_PIPELINE,
    ORDERED_PIPELINE_VERSION,
    PROTOCOL_HASH,
    PROTOCOL_HASH_1_11_1,
    PROTOCOL_TEXT,
    PROTOCOL_TEXT_1_11_1,
    Status,
    promises_ordered_pipeline,
    protocol_hash,
)
from shipper.avroipc.limits import DEFAULT_CALL_LIMITS, CallLimits, LimitExceeded
from shipper.avroipc.requestor import ClientConnection
from shipper.avroipc.responder import DEFAULT_MAX_EVENTS_PER_CALL, ProtocolCache, ServerConnection

__all__ = [
    "CallFailed",
    "CallLimits",
    "CallReceived",
    "CallRefused",
    "DEFAULT_CALL_LIMITS",
    "CallSucceeded",
    "ClientConnection",
    "ConnectionClosed",
    "ConnectionEvent",
    "DEFAULT_MAX_BUFFERS",
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_EVENTS_PER_CALL",
    "DEFAULT_MAX_FRAME_BYTES",
    "Frame",
    "FrameDecoder",
    "HandshakeCompleted",
    "HandshakeRetry",
    "InflateLimitExceeded",
    "LimitExceeded",
    "LocalProtocolError",
    "ORDERED_PIPELINE",
    "ORDERED_PIPELINE_VERSION",
    "PROTOCOL_HASH",
    "PROTOCOL_HASH_1_11_1",
    "PROTOCOL_TEXT",
    "PROTOCOL_TEXT_1_11_1",
    "ProtocolCache",
    "ProtocolError",
    "RemoteProtocolError",
    "ServerConnection",
    "Status",
    "ZlibDecoder",
    "ZlibEncoder",
    "encode_frame",
    "promises_ordered_pipeline",
    "protocol_hash",
]
