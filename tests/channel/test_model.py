"""Model-based test: any sequence of put / take / ack / nack / reopen against an in-memory reference.

The reference is a list of stored events in channel order, each marked with the lease holding it.
take leases the first run of unleased events that no other lease interrupts, within max_events and
max_bytes (always at least one event); ack removes a lease's events; nack unmarks them; reopen drops
every lease (a restart); put with timeout=0 is accepted exactly when the capacity rules say so.
"""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shipper.channel import Channel

CAP_EVENTS = 12
CAP_BYTES = 400

bodies = st.binary(min_size=0, max_size=60)


class ChannelModel(RuleBasedStateMachine):
    @initialize()
    def start(self):
        self.dir = tempfile.mkdtemp(prefix="chmodel-", dir="/dev/shm")
        self.ch = self._open()
        self.stored: list[list] = []  # [body, lease_id or None] in channel order
        self.leases = {}  # lease id -> Lease
        self.offsets: dict[str, bytes] = {}
        self.counter = 0

    def _open(self):
        return Channel.open(self.dir, capacity_events=CAP_EVENTS, capacity_bytes=CAP_BYTES, min_free_bytes=0)

    def teardown(self):
        self.ch.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(n=st.integers(0, 8), size=st.integers(0, 60), keys=st.lists(st.sampled_from("abc"), max_size=2),
          delete=st.booleans())
    def put(self, n, size, keys, delete):
        events = []
        for _ in range(n):
            self.counter += 1
            events.append(str(self.counter).encode().ljust(size, b"."))
        offsets = {k: (None if delete and k in self.offsets else str(self.counter).encode()) for k in keys}
        nbytes = sum(map(len, events))
        total = sum(len(e[0]) for e in self.stored)
        fits = not events or not self.stored or (
            len(self.stored) + n <= CAP_EVENTS and total + nbytes <= CAP_BYTES)
        accepted = self.ch.put(events, offsets, timeout=0)
        assert accepted == fits
        if accepted:
            self.stored.extend([e, None] for e in events)
            for k, v in offsets.items():
                if v is None:
                    self.offsets.pop(k, None)
                else:
                    self.offsets[k] = v

    @rule(max_events=st.integers(1, 6), max_bytes=st.integers(1, 200))
    def take(self, max_events, max_bytes):
        lease = self.ch.take(max_events, max_bytes)
        free = [i for i, e in enumerate(self.stored) if e[1] is None]
        if not free:
            assert lease is None
            return
        assert lease is not None
        expect, nbytes = [], 0
        for i in range(free[0], len(self.stored)):
            body, holder = self.stored[i]
            if holder is not None or len(expect) == max_events:
                break
            if expect and nbytes + len(body) > max_bytes:
                break
            expect.append(i)
            nbytes += len(body)
        assert lease.events == [self.stored[i][0] for i in expect]
        assert lease.nbytes == nbytes
        for i in expect:
            self.stored[i][1] = lease.id
        self.leases[lease.id] = lease

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def ack(self, data):
        lid = data.draw(st.sampled_from(sorted(self.leases)))
        self.ch.ack(self.leases.pop(lid))
        self.stored = [e for e in self.stored if e[1] != lid]

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def nack(self, data):
        lid = data.draw(st.sampled_from(sorted(self.leases)))
        self.ch.nack(self.leases.pop(lid))
        for e in self.stored:
            if e[1] == lid:
                e[1] = None

    @rule()
    def reopen(self):
        self.ch.close()
        self.ch = self._open()
        self.leases.clear()
        for e in self.stored:
            e[1] = None

    @invariant()
    def counters_and_offsets_match(self):
        s = self.ch.stats()
        assert s.events == len(self.stored)
        assert s.bytes == sum(len(e[0]) for e in self.stored)
        assert s.leased_events == sum(1 for e in self.stored if e[1] is not None)
        assert self.ch.offsets() == self.offsets


ChannelModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_any_sequence_of_operations_matches_the_reference = ChannelModel.TestCase


def test_reopen_rule_reaches_stored_events_after_restart():
    """A directed case the model covers only by chance: everything is takeable after a reopen."""
    d = tempfile.mkdtemp(dir="/dev/shm")
    try:
        ch = Channel.open(d, min_free_bytes=0)
        ch.put([b"1", b"2", b"3"], {"f": b"3"})
        lease = ch.take(2, 1000)
        assert lease.events == [b"1", b"2"]
        ch.close()  # lease lost with the "process"
        ch = Channel.open(d, min_free_bytes=0)
        assert ch.take(10, 1000).events == [b"1", b"2", b"3"]
        assert ch.offsets() == {"f": b"3"}
        ch.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
