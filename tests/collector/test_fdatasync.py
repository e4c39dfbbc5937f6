"""collect with fsync per batch: OK only after the fdatasync that covers the call, and one
fdatasync for every batch written while the previous one ran (group commit).

A real collector on a real socket and real files; the disk is slowed by holding the writer's
fdatasync (``shipper.collector.writer._datasync``) on an event until the test lets it go, so
"the sync has not returned yet" is a state the test controls rather than a timing it hopes for.
The client is the real Avro protocol core on a plain socket, so the test decides when each call
goes out.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from pathlib import Path

import pytest

from shipper.avroipc import CallFailed, CallSucceeded, ClientConnection, Status
from shipper.avroipc.flume_event import encode_event
from shipper.collector import writer as writer_module
from shipper.collector.server import Collector, CollectorOptions
from shipper.collector.writer import RollingWriter
from shipper.transport import Address
from tests.ops import common

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

    def send(self, lines: list[bytes]) -> int:
        serial = self.core.send_append_batch([encode_event({}, line) for line in lines])
        self.sock.sendall(self.core.data_to_send())
        return serial

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
    common.wait_until(condition, what, timeout=WAIT, interval=0.01)


def test_no_call_is_answered_ok_before_the_fdatasync_that_covers_it_returns(server, held):
    address, out = server
    client = Client(address)
    try:
        first = client.send([b"hello"])  # (the handshake; it opens the file)
        held.wait_began()
        held.release.set()
        assert client.answer(first) == CallSucceeded(first, Status.OK)
        held.release.clear()
        serial = client.send(lines("a"))
        held.wait_began()  # the batch is in the file; its fdatasync has begun and is held
        assert written(out)[-50:] == lines("a")
        assert not client.has_answer_waiting()
        held.release.set()
        assert client.answer(serial) == CallSucceeded(serial, Status.OK)
    finally:
        client.close()


def test_one_fdatasync_covers_every_write_made_while_the_previous_one_ran(tmp_path, held):
    writer = RollingWriter(str(tmp_path))
    first = threading.Thread(target=writer.write, args=([[({}, b"one")]],))
    first.start()
    held.wait_began()  # the first write's thread is inside its fdatasync
    later = [threading.Thread(target=writer.write, args=([[({}, b"w%d" % k)]],)) for k in range(5)]
    for t in later:
        t.start()
    wait_until(lambda: writer.events_written == 0 and os.path.getsize(writer.current_path) == 19, "five writes")
    held.release.set()
    for t in (first, *later):
        t.join(WAIT)
    assert writer.events_written == 6
    assert held.calls == 2  # the five writes made during the first share the second
    writer.close()
    assert sorted(Path(writer.directory).glob("*.log"))[0].read_bytes().splitlines()[0] == b"one"
