"""Sans-IO core of Flume's Avro RPC (Netty framing, handshake, calls, deflate).

Bytes in, events out; events in, bytes out. Nothing here opens sockets, reads clocks or starts
threads, and nothing here imports from the rest of ``shipper``: the transport layers
(``shipper.net``, ``shipper.collector``) drive these state machines. The wire format followed
is described in docs/protocol.md.
"""
