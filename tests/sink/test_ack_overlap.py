"""A delivered lease's ack commits while the next lease is sent, and one worker's order holds.

Real channel, real sockets on 127.0.0.1, the real protocol core on the collector side. The channel
here holds every ack (the commit) until the collector has received the NEXT batch: a worker that
acked before sending the next lease would wait out each hold, and the holds record that.
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

HOLD = 10.0  # upper bound of one hold; a passing run never waits it out


class AckAfterNextSend(Channel):
    """Each ack first waits until the collector has seen the call after the acked lease's."""

    collector: ScriptedCollector
    total: int
    overlapped: list[bool]

    def ack(self, lease) -> None:
        if lease.last_seq < self.total:  # a later lease exists: it must be on its way already
            want = lease.last_seq // 100 + 1  # calls of 100 events: this one's number + 1
            deadline = time.monotonic() + HOLD
            while len(self.collector.calls) < want and time.monotonic() < deadline:
                time.sleep(0.005)
            self.overlapped.append(len(self.collector.calls) >= want)
        super().ack(lease)


def run_worker(ch, collector: ScriptedCollector, *, stopping=None) -> SinkWorker:
    options = SinkOptions(batch_size=100, linger=0, backoff_initial=0.01, backoff_max=0.05)
    pool = CollectorPool([collector.address], Selector(1), options)
    w = SinkWorker(ch, pool, lambda a: CollectorClient(a, ClientOptions(request_timeout=10)), options,
                   stopping=stopping or threading.Event(), abort=threading.Event(),
                   exit_when_empty=threading.Event())
    w.exit_when_empty.set()
    t = threading.Thread(target=w.run)
    t.start()
    t.join(120)
    assert not t.is_alive()
    return w


def test_the_ack_of_one_lease_commits_while_the_next_is_sent_in_order(tmp_path):
    collector = ScriptedCollector()
    events = [encode_event({}, b"line %05d" % i) for i in range(600)]
    try:
        with AckAfterNextSend.open(tmp_path, min_free_bytes=0, chunk_events=100) as ch:
            ch.collector, ch.total, ch.overlapped = collector, 600, []
            ch.put(events)
            w = run_worker(ch, collector)
            assert w.error is None and w.delivered_events == 600
            assert ch.overlapped == [True] * 5  # every ack but the last overlapped the next send
            assert ch.stats().events == 0  # everything acked, the last one too
        assert [b for call in collector.accepted for b in call] == [b"line %05d" % i for i in range(600)]
    finally:
        collector.close()


def test_a_failed_send_after_an_overlapped_ack_resends_only_the_unanswered_lease(tmp_path):
    collector = ScriptedCollector(fail={2})  # the third call is refused once, then sent again
    events = [encode_event({}, b"line %05d" % i) for i in range(400)]
    try:
        with Channel.open(tmp_path, min_free_bytes=0, chunk_events=100) as ch:
            ch.put(events)
            w = run_worker(ch, collector)
            assert w.error is None and w.delivered_events == 400 and ch.stats().events == 0
        got = [b for call in collector.accepted for b in call]
        assert got == [b"line %05d" % i for i in range(400)]  # in order, nothing twice
    finally:
        collector.close()
