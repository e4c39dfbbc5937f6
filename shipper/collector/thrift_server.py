"""``flume-ship collect --protocol thrift``: the collector, serving Flume's ThriftSourceProtocol.

Theory of operation
-------------------
:class:`ThriftCollector` is :class:`shipper.collector.Collector` (threads, limits, TLS, the
rolling writer, fsync before OK, stopping) with the Thrift core under each connection instead of
the Avro one: ``shipper.transport.thrift.ServerCore`` drives ``thriftrpc.ServerConnection`` and gives the shared
loop the events it knows. Each connection's protocol (compact or binary, strict or not) is detected from
its first frame, so one port serves Flume's ThriftSink and ThriftRpcClient whichever protocol they
are configured with. Limits (the Avro collector's defaults: 64 MiB per frame, 100,000 events per
call): a frame above ``max_frame_bytes`` is refused from its length alone and the peer disconnected;
a call above ``max_events_per_call`` is answered with a ``TApplicationException`` before its events
are decoded. Unknown methods are answered with one too, as Java's processor does.
Thrift in Flume has no compression, so none is offered here.
"""

from __future__ import annotations

from shipper import thriftrpc
from shipper.collector.server import Collector, CollectorOptions
from shipper.errors import ConfigError
from shipper.collector.writer import RollingWriter
from shipper.transport.thrift import ServerCore


class ThriftCollector(Collector):
    def __init__(self, options: CollectorOptions, writer: RollingWriter, *,
                 max_frame_bytes: int = thriftrpc.DEFAULT_MAX_FRAME_BYTES,
                 max_events_per_call: int = thriftrpc.DEFAULT_MAX_EVENTS_PER_CALL) -> None:
        if options.compress:
            raise ConfigError("Flume's Thrift RPC has no compression: drop --compress with --protocol thrift")
        super().__init__(options, writer)
        self.max_frame_bytes = max_frame_bytes
        self.max_events_per_call = max_events_per_call

    def _new_connection(self):
        return ServerCore(self.max_frame_bytes, self.max_events_per_call)
