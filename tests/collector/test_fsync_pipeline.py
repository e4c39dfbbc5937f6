"""collect with fsync per batch: OK only after the fdatasync that covers the call, and the
connection goes on reading and writing its next calls while that fdatasync runs.

A connection that has nothing else to do syncs itself (one fdatasync for every write so far);
one that is receiving its client's next call hands the sync to the writer's fsync thread and
reads on. A real collector on a real socket and real files; the disk is slowed by holding the writer's
fdatasync (``shipper.collector.writer._datasync``) on an event until the test lets it go, so
"the sync has not returned yet" is a state the test controls rather than a timing it hopes for.
The client is the real Avro protocol core on a plain socket, so the test decides when each call
goes out (a pipelining client would send them all at once).
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from shipper.avroipc import CallFailed, CallSucceeded, ClientConnection, Status
from shipper.avroipc.flume_event import encode_event
from shipper.collector import writer as writer_module
from shipper.collector.server import Collector, CollectorOptions
from shipper.collector.writer import RollingWriter
from shipper.transport import Address

WAIT = 30.0  # the longest any condition below is waited for (a bound, never a measured time)


class HeldSync:
    """Stands in for the writer's fdatasync: each call records that it began, waits until the
    test releases it, then syncs for real (or fails, when told to)."""

    def __init__(self) -> None:
        self.began = threading.Semaphore(0)
        self.release = threading.Event()
        self.fail_next = False
        self.calls = 0
        self._real = writer_module._datasync

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.began.release()
        assert self.release.wait(WAIT), "the test never released the fdatasync"
        if self.fail_next:
            self.fail_next = False
            raise OSError(errno.EIO, "Input/output error (injected)")
        self._real(fd)

    def wait_began(self) -> None:
        assert self.began.acquire(timeout=WAIT), "no fdatasync began"


@pytest.fixture
def held(monkeypatch):
    sync = HeldSync()
    monkeypatch.setattr(writer_module, "_datasync", sync)
    yield sync
    sync.release.set()


@pytest.fixture
def server(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    collector = Collector(CollectorOptions(listen=Address("127.0.0.1", 0)), RollingWriter(str(out)))
    bound = collector.bind()
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    yield bound, out
    collector.stop()
    thread.join(WAIT)


class Client:
    """One Avro connection whose calls the test sends one by one."""

    def __init__(self, address: Address) -> None:
        self.sock = socket.create_connection((address.host, address.port), timeout=WAIT)
        self.core = ClientConnection()
        self.answers: dict[int, object] = {}

    def send(self, *calls: list[bytes], hold_back: int = 0) -> list[int]:
        """Send calls in one piece; with ``hold_back``, all but the last bytes of the last one
        (sent by :meth:`finish`): the collector then has the first whole and the next begun."""
        serials = [self.core.send_append_batch([encode_event({}, line) for line in lines]) for lines in calls]
        out = self.core.data_to_send()
        self.sock.sendall(out[:len(out) - hold_back])
        self.held_back = out[len(out) - hold_back:]
        return serials

    def finish(self) -> None:
        self.sock.sendall(self.held_back)

    def _flush(self) -> None:
        out = self.core.data_to_send()
        if out:
            self.sock.sendall(out)

    def answer(self, serial: int):
        while serial not in self.answers:
            data = self.sock.recv(65536)
            assert data, "the collector closed the connection"
            self.core.receive_data(data)
            while (event := self.core.next_event()) is not None:
                if isinstance(event, (CallSucceeded, CallFailed)):
                    self.answers[event.serial] = event
            self._flush()  # (a handshake retry goes out again)
        return self.answers[serial]

    def has_answer_waiting(self) -> bool:
        self.sock.setblocking(False)
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(WAIT)

    def close(self) -> None:
        self.sock.close()


def lines(tag: str, n: int = 50) -> list[bytes]:
    return [f"{tag} {i:04d}".encode() for i in range(n)]


def written(out: Path) -> list[bytes]:
    return [line for f in sorted(out.glob("events-*.log")) for line in f.read_bytes().splitlines()]


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.01)


@pytest.fixture
def client(server, held):
    """A connection whose first call (its handshake and its fdatasync) is done, so a scenario
    starts from an established connection and a writer whose file is open; and the output."""
    address, out = server
    c = Client(address)
    [serial] = c.send([b"hello"])
    held.wait_began()
    held.release.set()
    assert c.answer(serial) == CallSucceeded(serial, Status.OK)
    held.release.clear()
    yield c, out
    c.close()


def b_written_during_the_sync_of_a(client: Client, held: HeldSync, out: Path) -> tuple[int, int]:
    first, second = client.send(lines("a"), lines("b"), hold_back=10)  # a whole, b begun
    held.wait_began()  # a is written and its fdatasync (in the writer's fsync thread) is held
    client.finish()
    # The connection's thread is not stuck in that fdatasync: it reads the rest of b, decodes
    # and writes it while a is still unanswered.
    wait_until(lambda: written(out)[1:] == lines("a") + lines("b"), "call b written")
    assert not client.has_answer_waiting()
    return first, second


def test_no_call_is_answered_ok_before_the_fdatasync_that_covers_it_returns(client, held):
    client, out = client
    [serial] = client.send(lines("a"))
    held.wait_began()  # the batch is in the file; its fdatasync has begun and is held
    assert written(out)[-50:] == lines("a")
    assert not client.has_answer_waiting()
    held.release.set()
    assert client.answer(serial) == CallSucceeded(serial, Status.OK)


def test_a_connection_reads_and_writes_the_call_it_is_receiving_while_the_fdatasync_of_the_last_runs(client, held):
    client, out = client
    first, second = b_written_during_the_sync_of_a(client, held, out)
    held.release.set()
    assert client.answer(first) == CallSucceeded(first, Status.OK)
    assert client.answer(second) == CallSucceeded(second, Status.OK)


def test_after_a_failed_fdatasync_the_later_calls_are_failed_too_and_the_next_refused_unwritten(client, held):
    client, out = client
    first, second = b_written_during_the_sync_of_a(client, held, out)
    held.fail_next = True
    held.release.set()
    # The fdatasync covering a failed. b's bytes were synced when the file was closed after that
    # failure, yet b must not be answered OK behind a refused call: FAILED too.
    assert client.answer(first) == CallSucceeded(first, Status.FAILED)
    assert client.answer(second) == CallSucceeded(second, Status.FAILED)
    [third] = client.send(lines("c"))
    answer = client.answer(third)
    assert isinstance(answer, CallFailed) and "refused unwritten" in answer.message
    assert b"c 0000" not in written(out)


def test_one_fdatasync_covers_every_write_made_while_the_previous_one_ran(tmp_path, held):
    writer = RollingWriter(str(tmp_path))
    first = writer.submit([[({}, b"one")]])
    writer.sync_behind()
    held.wait_began()  # the fsync thread is inside the first fdatasync
    later = [writer.submit([[({}, b"w%d" % k)]]) for k in range(5)]
    writer.sync_behind()  # (asked while one runs: the thread syncs again once it is done)
    assert not writer.settled(later[-1].seq)
    held.release.set()
    assert writer.settled(first.seq, wait=True) and writer.settled(later[-1].seq, wait=True)
    assert held.calls == 2  # the five writes made during the first share the second
    writer.close()
    assert (tmp_path / os.listdir(tmp_path)[0]).read_bytes() == b"one\nw0\nw1\nw2\nw3\nw4\n"
