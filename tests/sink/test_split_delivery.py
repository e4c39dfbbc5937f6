"""A lease bigger than the batch: sent as pipelined calls of at most batch_size events, acked in
the channel only when every call answered OK, and after a failure only the unanswered part is
sent again. Real channel, real sockets on 127.0.0.1, the real protocol core on the server side;
the server answers FAILED to the calls the test names."""

from __future__ import annotations

import socket
import threading

from shipper.avroipc import CallReceived, ProtocolCache, ServerConnection, Status
from shipper.channel import Channel
from shipper.sink.client import CollectorClient
from shipper.avroipc.flume_event import encode_event
from shipper.transport import Address, ClientOptions
from shipper.sink.policy import Selector
from shipper.sink.worker import CollectorPool, SinkOptions, SinkWorker


class ScriptedCollector:
    """Accepts connections one after another; records every appendBatch (its event bodies in
    order) and answers FAILED to the calls whose overall number (0-based) is in ``fail``."""

    def __init__(self, fail: set[int] = frozenset()):
        self.fail = set(fail)
        self.calls: list[list[bytes]] = []
        self.accepted: list[list[bytes]] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = Address("127.0.0.1", self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        cache = ProtocolCache()
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            conn = ServerConnection(cache)
            with sock:
                while data := sock.recv(1 << 16):
                    conn.receive_data(data)
                    while (event := conn.next_event()) is not None:
                        if isinstance(event, CallReceived) and event.message == "appendBatch":
                            n = len(self.calls)
                            bodies = [body for _, body in event.events]
                            self.calls.append(bodies)
                            if n in self.fail:
                                conn.respond(event.serial, Status.FAILED)
                            else:
                                self.accepted.append(bodies)
                                conn.respond(event.serial, Status.OK)
                        elif isinstance(event, CallReceived):
                            conn.respond(event.serial, Status.OK)
                    sock.sendall(conn.data_to_send())

    def close(self) -> None:
        self.listener.close()


def worker(ch: Channel, collector: ScriptedCollector, batch_size: int, window: int = 1) -> SinkWorker:
    options = SinkOptions(batch_size=batch_size, linger=0, backoff_initial=0.01, backoff_max=0.05, window=window)
    pool = CollectorPool([collector.address], Selector(1), options)
    return SinkWorker(ch, pool, lambda a: CollectorClient(a, ClientOptions(request_timeout=10)), options,
                      stopping=threading.Event(), abort=threading.Event())


def bodies(n: int) -> list[bytes]:
    return [b"line %05d" % i for i in range(n)]


def test_a_chunk_bigger_than_the_batch_goes_out_as_batch_sized_calls_in_order(tmp_path):
    collector = ScriptedCollector()
    with Channel.open(tmp_path, min_free_bytes=0, chunk_events=1000) as ch:
        ch.put([encode_event({}, b) for b in bodies(1000)])
        lease = ch.take(300, 1 << 30)
        assert lease.count == 1000  # the whole chunk
        w = worker(ch, collector, batch_size=300)
        w.deliver(lease)
        ch.ack(lease)
        w.close()
    assert [len(c) for c in collector.calls] == [300, 300, 300, 100]
    assert [b for c in collector.calls for b in c] == bodies(1000)
    collector.close()


def test_a_refused_call_is_resumed_from_in_order_and_the_lease_waits_for_it(tmp_path):
    collector = ScriptedCollector(fail={1})  # the second call of the first attempt is refused
    with Channel.open(tmp_path, min_free_bytes=0, chunk_events=1000) as ch:
        ch.put([encode_event({}, b) for b in bodies(1000)])
        lease = ch.take(250, 1 << 30)
        w = worker(ch, collector, batch_size=250)  # default window: one call at a time
        w.deliver(lease)  # returns only once every part was answered OK
        w.close()
        assert ch.stats().leased_events == 1000  # delivering does not ack; the caller does
    # part 0 accepted, part 1 refused; the retry resumes at part 1, so nothing arrives twice or
    # out of order
    firsts = [c[0] for c in collector.calls]
    assert firsts == [b"line 00000", b"line 00250", b"line 00250", b"line 00500", b"line 00750"]
    assert [b for c in collector.accepted for b in c] == bodies(1000)
    assert collector.connections == 2  # the refusal closed the connection; the retry made a new one
    collector.close()


def test_pipelined_parts_answered_ok_are_not_sent_again(tmp_path):
    collector = ScriptedCollector(fail={1})
    with Channel.open(tmp_path, min_free_bytes=0, chunk_events=1000) as ch:
        ch.put([encode_event({}, b) for b in bodies(1000)])
        lease = ch.take(250, 1 << 30)
        w = worker(ch, collector, batch_size=250, window=4)
        w.deliver(lease)  # returns only once every part was answered OK
        w.close()
        assert ch.stats().leased_events == 1000  # delivering does not ack; the caller does
    # first attempt: four calls, the second FAILED and the others answered OK (the client still
    # reads the answers owed after a refusal); the retry sends that part only (so it lands last)
    assert [c[0] for c in collector.calls[:4]] == [b"line 00000", b"line 00250", b"line 00500", b"line 00750"]
    assert collector.calls[4:] == [bodies(1000)[250:500]]
    assert sorted(b for c in collector.accepted for b in c) == bodies(1000)  # everything, nothing twice
    assert collector.connections == 2  # the failure closed the connection; the retry made a new one
    collector.close()


def test_a_lease_within_the_batch_is_one_call_of_the_stored_bytes(tmp_path):
    collector = ScriptedCollector()
    with Channel.open(tmp_path, min_free_bytes=0, chunk_events=100) as ch:
        for i in range(0, 300, 100):
            ch.put([encode_event({}, b) for b in bodies(300)[i:i + 100]])
        lease = ch.take(1000, 1 << 30)
        assert len(lease.chunks) == 3
        w = worker(ch, collector, batch_size=1000)
        w.deliver(lease)
        w.close()
    assert collector.calls == [bodies(300)]
    collector.close()
