"""`--give-up-after SECONDS`: the distinct "gave up" exit (9) for a run that should end rather than
wait for ever, on real processes. Off by default (a service outlasts an outage); it counts time
without any acknowledgement, not the run's length, and what it leaves queued ships next time."""

from __future__ import annotations

import socket

import pytest

from shipper.errors import EXIT_GAVE_UP, EXIT_OK
from tests.faultproxy import FaultProxy
from tests.reliability.harness import Collector
from tests.support import Proc


@pytest.fixture
def dead():
    """HOST:PORT where nobody listens (connections refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def lines(path, n):
    path.write_bytes(b"".join(b"event %05d\n" % i for i in range(n)))


def test_once_gives_up_with_exit_9_and_the_next_run_ships_everything(tmp_path, dead):
    f = tmp_path / "a.log"
    lines(f, 1000)
    state = str(tmp_path / "st")
    p = Proc("tail", "--once", str(f), "--to", dead, "--state-dir", state, "--give-up-after", "2",
             "--progress-interval", "1")
    assert p.popen.wait(60) == EXIT_GAVE_UP, p.stderr
    p.stop()
    assert "giving up: 1000 events queued and nothing acknowledged for" in p.stderr
    assert "progress: shipped 0 events" in p.stderr  # never silent while it waited
    col = Collector(tmp_path / "out")
    try:
        again = Proc("tail", "--once", str(f), "--to", col.addr, "--state-dir", state)
        assert again.popen.wait(60) == EXIT_OK, again.stderr
        again.stop()
        assert sorted(col.bodies()) == [b"event %05d" % i for i in range(1000)]
    finally:
        col.stop()


def test_service_gives_up_too_when_asked(tmp_path, dead):
    f = tmp_path / "a.log"
    lines(f, 10)
    p = Proc("tail", str(f), "--to", dead, "--state-dir", str(tmp_path / "st"), "--give-up-after", "2")
    assert p.popen.wait(60) == EXIT_GAVE_UP, p.stderr
    p.stop()
    assert "giving up: 10 events queued" in p.stderr


def test_slow_but_moving_delivery_does_not_give_up(tmp_path):
    """Each batch takes a while, the whole run longer than --give-up-after: acknowledgements keep
    it going (it is not a deadline)."""
    f = tmp_path / "a.log"
    lines(f, 1000)
    col = Collector(tmp_path / "out")
    proxy = FaultProxy(("127.0.0.1", col.port), mode="delay", delay=0.5)
    try:
        p = Proc("tail", "--once", str(f), "--to", proxy.address, "--state-dir", str(tmp_path / "st"),
                 "--batch-size", "100", "--linger", "0", "--give-up-after", "3")
        assert p.popen.wait(120) == EXIT_OK, p.stderr
        p.stop()
        assert "giving up" not in p.stderr
        assert len(col.bodies()) == 1000
    finally:
        proxy.close()
        col.stop()
