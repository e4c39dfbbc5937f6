"""The Thrift core behind the interface the Avro transports drive, for both roles.

``shipper.sink.client.CollectorClient``'s call loop and ``shipper.collector.Collector``'s connection loop
were written against ``shipper.avroipc``'s connections: ``receive_data``, ``next_event``,
``data_to_send`` and ``avroipc``'s event and error types. These two adapters put
``shipper.thriftrpc``'s connections behind that interface, so the Thrift client and collector reuse
those loops whole (deadlines, pipelining, close-on-failure, fsync before OK, stopping) and the
Thrift core stays free of the rest of ``shipper``. They translate events and errors, nothing more.
"""

from __future__ import annotations

from shipper import avroipc, thriftrpc


class _Core:
    def __init__(self, conn) -> None:
        self._conn = conn

    def receive_data(self, data: bytes) -> None:
        try:
            self._conn.receive_data(data)
        except thriftrpc.RemoteProtocolError as err:
            raise avroipc.RemoteProtocolError(str(err)) from err

    def next_event(self):
        event = self._conn.next_event()
        if isinstance(event, thriftrpc.CallSucceeded):
            # Thrift's Status is an IntEnum whose OK equals Avro's OK; its name (FAILED, ERROR,
            # UNKNOWN) is what the rejection message shows.
            return avroipc.CallSucceeded(event.serial, event.status)
        if isinstance(event, thriftrpc.CallFailed):
            return avroipc.CallFailed(event.serial, event.message)
        if isinstance(event, thriftrpc.CallReceived):
            return avroipc.CallReceived(event.serial, event.message, event.events)
        if isinstance(event, thriftrpc.ConnectionClosed):
            return avroipc.ConnectionClosed()
        return event

    def data_to_send(self) -> bytes:
        return self._conn.data_to_send()

    def parts_to_send(self) -> list:
        data = self._conn.data_to_send()
        return [data] if data else []

    @property
    def buffered(self) -> int:
        return self._conn.buffered

    @property
    def in_frame(self) -> bool:
        return self._conn.in_frame


class ClientCore(_Core):
    """``thriftrpc.ClientConnection`` for :class:`shipper.sink.client.CollectorClient`'s loop."""

    established = True  # Thrift has no handshake

    def __init__(self, proto: str) -> None:
        super().__init__(thriftrpc.ClientConnection(proto))

    def send_append_batch(self, encoded_events) -> int:
        return self._conn.send_append_batch(encoded_events)

    def send_append_batch_payload(self, count: int, payload: bytes) -> int:
        return self._conn.send_append_batch_payload(count, payload)


class ServerCore(_Core):
    """``thriftrpc.ServerConnection`` for :class:`shipper.collector.Collector`'s loop."""

    def __init__(self, max_frame_bytes: int, max_events_per_call: int) -> None:
        super().__init__(thriftrpc.ServerConnection(None, max_frame_bytes, max_events_per_call))

    def respond(self, serial: int, status) -> None:
        self._conn.respond(serial, thriftrpc.Status[status.name])
