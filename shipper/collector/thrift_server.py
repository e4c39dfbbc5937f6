"""``flume-ship collect --protocol thrift``: the collector, serving Flume's ThriftSourceProtocol.

Theory of operation
-------------------
:class:`ThriftCollector` is :class:`shipper.collector.Collector` (threads, limits, TLS, the
rolling writer, fsync before OK, stopping) with the Thrift core under each connection instead of
the Avro one: ``shipper.transport.thrift.ServerCore`` drives ``thriftrpc.ServerConnection`` and gives the shared
loop the events it knows. Each connection's protocol (compact or binary, strict or not) is detected from
its first frame, so one port serves Flume's ThriftSink and ThriftRpcClient whichever protocol they
are configured with. The collector's connection limits apply as they are (allow-list, connection
count, timeouts, the memory budget charged with the core's ``buffered`` bytes, mutual TLS); of the
per-call caps, the frame cap is ``--max-call-bytes`` (a frame above it is refused from its length
alone and the peer disconnected) and the events cap the Avro one (100,000): a call above it is
answered with a ``TApplicationException`` before its events are decoded. (The header and body
caps of the Avro core are not enforced by the Thrift core.) Unknown methods are answered with one too, as Java's processor does.
Thrift in Flume has no compression, so none is offered here.
"""

from __future__ import annotations

from shipper.collector.server import Collector, CollectorOptions
from shipper.errors import ConfigError
from shipper.collector.writer import RollingWriter
from shipper.transport.thrift import ServerCore


class ThriftCollector(Collector):
    def __init__(self, options: CollectorOptions, writer: RollingWriter, *,
                 max_frame_bytes: int | None = None, max_events_per_call: int | None = None) -> None:
        if options.compress:
            raise ConfigError("Flume's Thrift RPC has no compression: drop --compress with --protocol thrift")
        super().__init__(options, writer)
        # (from collect's limits unless given: --max-call-bytes, and the events cap of a call)
        self.max_frame_bytes = max_frame_bytes or options.limits.max_call_bytes
        self.max_events_per_call = max_events_per_call or options.limits.call.max_events

    def _new_connection(self):
        return ServerCore(self.max_frame_bytes, self.max_events_per_call)
