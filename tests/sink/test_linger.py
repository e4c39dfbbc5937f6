"""A partial batch lingers for more events, but the remainder of a burst goes at once.

Real channel, real sockets on 127.0.0.1, the real protocol core on the collector side. The linger
here is an hour: a test that waited it out would fail at its (generous) deadline, not pass late.
"""

from __future__ import annotations

import threading
import time

from shipper.avroipc.flume_event import encode_event
from shipper.channel import Channel
from shipper.sink.client import CollectorClient
from shipper.sink.policy import Selector
from shipper.sink.worker import CollectorPool, SinkOptions, SinkWorker
from shipper.transport import ClientOptions
from tests.sink.test_split_delivery import ScriptedCollector

HOUR = 3600.0
DEADLINE = 60.0  # what a passing run never comes near


class NackRecording(Channel):
    """Records the size of every lease given back (a sink lingering gives its partial lease back)."""

    nacked: list[int]

    def nack(self, lease) -> None:
        self.nacked.append(lease.count)
        super().nack(lease)


def until(predicate) -> bool:
    deadline = time.monotonic() + DEADLINE
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


def start_worker(ch, collector: ScriptedCollector, stopping: threading.Event) -> tuple[SinkWorker, threading.Thread]:
    options = SinkOptions(batch_size=1000, linger=HOUR, backoff_initial=0.01, backoff_max=0.05)
    pool = CollectorPool([collector.address], Selector(1), options)
    w = SinkWorker(ch, pool, lambda a: CollectorClient(a, ClientOptions(request_timeout=10)), options,
                   stopping=stopping, abort=threading.Event())
    t = threading.Thread(target=w.run)
    t.start()
    return w, t


def bodies(collector: ScriptedCollector) -> list[bytes]:
    return [b for call in collector.accepted for b in call]


def test_the_remainder_of_a_burst_is_sent_without_waiting_out_the_linger_and_a_trickle_still_lingers(tmp_path):
    collector = ScriptedCollector()
    stopping = threading.Event()
    t = None
    try:
        with NackRecording.open(tmp_path, min_free_bytes=0, chunk_events=100) as ch:
            ch.nacked = []
            ch.put([encode_event({}, b"line %05d" % i) for i in range(2500)])
            w, t = start_worker(ch, collector, stopping)
            # Two whole batches, then the burst's remainder of 500: sent at once, not in an hour.
            assert until(lambda: len(bodies(collector)) == 2500), [len(c) for c in collector.calls]
            assert [len(c) for c in collector.accepted] == [1000, 1000, 500]
            assert until(lambda: ch.stats().events == 0)  # all acked
            assert ch.nacked == []  # nothing was given back to linger
            # A trickle after it: the partial batch is given back to linger for more events.
            ch.put([encode_event({}, b"late %02d" % i) for i in range(10)])
            assert until(lambda: ch.nacked == [10]), ch.nacked
            assert len(bodies(collector)) == 2500  # not sent: it lingers
            stopping.set()  # cuts the linger short; the lingering events stay in the channel
            t.join(DEADLINE)
            assert not t.is_alive() and w.error is None
            assert ch.stats().events == 10
        assert bodies(collector) == [b"line %05d" % i for i in range(2500)]
    finally:
        stopping.set()
        if t is not None:
            t.join(DEADLINE)
        collector.close()
