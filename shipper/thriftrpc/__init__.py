"""Sans-IO core of Flume's Thrift RPC (``ThriftSourceProtocol``), both roles, compact and binary.

The same shape as ``shipper.avroipc``: bytes in, events out; events in, bytes out. Nothing here
opens sockets, reads clocks or starts threads, and nothing here imports from the rest of
``shipper``. The Thrift client (``shipper.sink.thrift_client``) and collector
(``shipper.collector.thrift_server``) drive these state machines over ``shipper.transport``'s
streams (timeouts, TLS). The codec is ours, not a Thrift library's: the reasons are measured and
written down in docs/protocol.md ("Why our own codec").

Typical client use::

    conn = ClientConnection("compact")
    seqid = conn.send_append_batch_payload(count, stored_avro_payload)
    sock.sendall(conn.data_to_send())
    while (event := conn.next_event()) is None:
        conn.receive_data(sock.recv(65536))
"""

from shipper.thriftrpc.codec import BINARY, COMPACT, PROTOCOLS, Status, encode_event
from shipper.thriftrpc.connection import (
    DEFAULT_MAX_EVENTS_PER_CALL,
    DEFAULT_MAX_FRAME_BYTES,
    CallFailed,
    CallReceived,
    CallSucceeded,
    ClientConnection,
    ConnectionClosed,
    FrameDecoder,
    ServerConnection,
    frame,
)
from shipper.thriftrpc.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from shipper.thriftrpc.transcode import transcode_payload

__all__ = [
    "BINARY",
    "COMPACT",
    "CallFailed",
    "CallReceived",
    "CallSucceeded",
    "ClientConnection",
    "ConnectionClosed",
    "DEFAULT_MAX_EVENTS_PER_CALL",
    "DEFAULT_MAX_FRAME_BYTES",
    "FrameDecoder",
    "LocalProtocolError",
    "PROTOCOLS",
    "ProtocolError",
    "RemoteProtocolError",
    "ServerConnection",
    "Status",
    "encode_event",
    "frame",
    "transcode_payload",
]
