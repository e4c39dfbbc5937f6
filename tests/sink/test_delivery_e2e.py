"""`flume-ship tail` end to end: real shipper and collector processes, faults injected by a proxy.

Each scenario writes numbered lines, breaks the path to the collector in one way, repairs it, and
then checks the collector's files: every line arrived, in order, and duplicates (a batch re-sent
after a fault ate its answer) stay within the batches that were in flight.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from shipper.channel import CHUNK_EVENTS
from shipper.sink.worker import SinkOptions
from tests.faultproxy import FaultProxy
from tests.support import Proc

BATCH = 200
WINDOW = SinkOptions().window  # calls in flight when a lease is sent as several batches


def write_lines(path: Path, start: int, count: int, tag: str = "line") -> None:
    with open(path, "ab") as f:
        f.write(b"".join(f"{tag} {i:07d} {'x' * 60}\n".encode() for i in range(start, start + count)))


def collected(outdir: Path) -> list[bytes]:
    lines: list[bytes] = []
    for p in sorted(outdir.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            lines.extend(p.read_bytes().splitlines())
    return lines


def wait_for_count(outdir: Path, expected: int, timeout: float = 90.0, procs=()) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        got = collected(outdir)
        if len(set(got)) >= expected:
            return got
        for p in procs:
            if p.popen.poll() is not None:
                raise AssertionError(f"{p.argv} exited {p.popen.returncode}:\n{p.stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"only {len(set(got))} of {expected} distinct lines arrived\n"
                + "\n".join(f"--- {p.argv}\n{p.stderr}" for p in procs)
            )
        time.sleep(0.2)


def check_delivery(lines: list[bytes], expected: list[bytes], max_dups: int) -> int:
    """All expected lines present, first occurrences in order; returns the duplicate count."""
    seen: set[bytes] = set()
    firsts: list[bytes] = []
    for line in lines:
        if line not in seen:
            seen.add(line)
            firsts.append(line)
    missing = [l for l in expected if l not in seen]
    assert not missing, f"{len(missing)} lines lost, first {missing[:3]}"
    assert firsts == expected, "lines arrived out of order"
    dups = len(lines) - len(firsts)
    assert dups <= max_dups, f"{dups} duplicates, more than the {max_dups} in flight at the faults"
    return dups


@pytest.fixture
def collector(tmp_path):
    procs = []

    def start(out: Path | None = None, port: int = 0) -> tuple[Proc, str, Path]:
        out = out or tmp_path / "out"
        p = Proc("collect", "--listen", f"127.0.0.1:{port}", "--out", str(out))
        procs.append(p)
        m = p.wait_for(r"listening on (\S+)")
        return p, m.group(1), out

    yield start
    for p in procs:
        p.stop()


def start_tail(tmp_path: Path, to: str, *extra: str, name: str = "tail") -> Proc:
    return Proc(
        "tail", str(tmp_path / "logs" / "*.log"), "--to", to,
        "--state-dir", str(tmp_path / "state"),
        "--batch-size", str(BATCH), "--linger", "0.05",
        "--connect-timeout", "1", "--request-timeout", "2",
        "--backoff-max", "2", "--max-penalty", "2",
        *extra,
    )


@pytest.mark.parametrize("fault", ["refuse", "silent", "failed", "syserror", "reset", "garbage", "blackhole"])
def test_delivery_resumes_after_fault(tmp_path, collector, fault):
    _, addr, out = collector()
    check_resume_after_fault(tmp_path, addr, out, fault)


def check_resume_after_fault(tmp_path: Path, addr: str, out: Path, fault: str, scheme: str = "") -> None:
    """``tail`` through a proxy to the collector at ``addr`` (``scheme`` prefixed to the proxy's
    address: "thrift://" for a Thrift collector); the proxy breaks the path, then repairs it."""
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    host, port = addr.rsplit(":", 1)
    proxy = FaultProxy((host, int(port)), mode="pass")
    tail = start_tail(tmp_path, scheme + proxy.address)
    try:
        write_lines(log, 0, 1000)
        wait_for_count(out, 1000, procs=[tail])
        before = proxy.connections
        proxy.set_mode(fault)
        write_lines(log, 1000, 1000)
        time.sleep(3)  # long enough for several attempts to hit the fault
        proxy.set_mode("pass")
        lines = wait_for_count(out, 2000, procs=[tail])
        attempts = proxy.connections - before
        expected = [f"line {i:07d} {'x' * 60}".encode() for i in range(2000)]
        # A duplicate needs an attempt whose batch reached the collector but whose answer was lost:
        # the calls in flight when the fault began (their OK may be cut off), plus those of each
        # connection made during the fault when the fault still forwards requests. The channel's
        # chunks (1,000 events) are bigger than BATCH here, so the sink sends a lease as BATCH-sized
        # calls, WINDOW (by default 1) at a time; calls answered OK are not sent again.
        max_dups = BATCH * WINDOW * (1 + (attempts if fault in ("reset", "blackhole") else 0))
        dups = check_delivery(lines, expected, max_dups=max_dups)
        print(f"{fault}: {attempts} connections during the fault, {dups} duplicates")
        assert tail.stop() == 0
    finally:
        proxy.close()
        tail.stop()


def test_collector_restart_is_survived(tmp_path, collector):
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    first, addr, out = collector()
    port = int(addr.rsplit(":", 1)[1])
    tail = start_tail(tmp_path, addr)
    try:
        write_lines(log, 0, 3000)
        wait_for_count(out, 1, procs=[tail])
        first.kill()
        write_lines(log, 3000, 2000)
        time.sleep(2)
        collector(out=out, port=port)
        lines = wait_for_count(out, 5000, procs=[tail])
        # the calls in flight when the collector died (WINDOW per connection), and one more round
        check_delivery(lines, [f"line {i:07d} {'x' * 60}".encode() for i in range(5000)],
                       max_dups=BATCH * WINDOW * 2)
    finally:
        tail.stop()


def test_failover_to_the_second_collector_and_back(tmp_path, collector):
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    _, addr_a, out_a = collector(out=tmp_path / "out_a")
    _, addr_b, out_b = collector(out=tmp_path / "out_b")
    host, port = addr_a.rsplit(":", 1)
    proxy = FaultProxy((host, int(port)), mode="pass")
    tail = start_tail(tmp_path, f"{proxy.address},{addr_b}")
    try:
        write_lines(log, 0, 1000)
        wait_for_count(out_a, 1000, procs=[tail])
        assert collected(out_b) == []  # failover: the first healthy collector takes everything
        proxy.set_mode("refuse")
        write_lines(log, 1000, 1000)
        deadline = time.monotonic() + 60
        while not collected(out_b) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert collected(out_b), tail.stderr
        proxy.set_mode("pass")
        write_lines(log, 2000, 1000)
        expected = [f"line {i:07d} {'x' * 60}".encode() for i in range(3000)]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            both = collected(out_a) + collected(out_b)
            if set(expected) <= set(both):
                break
            time.sleep(0.2)
        both = set(collected(out_a)) | set(collected(out_b))
        assert set(expected) <= both, f"{len(set(expected) - both)} lines lost"
    finally:
        proxy.close()
        tail.stop()


def test_round_robin_uses_every_collector(tmp_path, collector):
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    outs, addrs = [], []
    for n in range(3):
        _, addr, out = collector(out=tmp_path / f"out{n}")
        outs.append(out)
        addrs.append(addr)
    tail = start_tail(tmp_path, ",".join(addrs), "--balance", "round_robin")
    try:
        write_lines(log, 0, 20 * BATCH)
        expected = {f"line {i:07d} {'x' * 60}".encode() for i in range(20 * BATCH)}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = set().union(*(collected(o) for o in outs))
            if expected <= got:
                break
            time.sleep(0.2)
        assert expected <= set().union(*(collected(o) for o in outs))
        assert all(collected(o) for o in outs), "a collector got no batch"
    finally:
        tail.stop()


def test_sigkill_at_random_moments_loses_nothing(tmp_path, collector):
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    _, addr, out = collector()
    rng = random.Random(1234)
    total = 0
    for round_ in range(8):
        write_lines(log, total, 2500)
        total += 2500
        tail = start_tail(tmp_path, addr)
        time.sleep(rng.uniform(0.3, 2.0))
        tail.kill()
    tail = start_tail(tmp_path, addr)
    try:
        lines = wait_for_count(out, total, procs=[tail])
        expected = [f"line {i:07d} {'x' * 60}".encode() for i in range(total)]
        # Each kill can leave at most the leases in flight and the delivered one whose ack commits
        # unacknowledged (in_flight + 1), to be sent again whole: a lease is whole chunks, so it
        # holds up to max(BATCH, one chunk) events.
        check_delivery(lines, expected, max_dups=9 * (SinkOptions().in_flight + 1) * max(BATCH, CHUNK_EVENTS))
    finally:
        tail.stop()


def test_sigterm_drains_and_exits_zero(tmp_path, collector):
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    _, addr, out = collector()
    write_lines(log, 0, 5000)
    tail = start_tail(tmp_path, addr)
    wait_for_count(out, 1, procs=[tail])
    assert tail.stop(signal.SIGTERM) == 0
    # Whatever was not shipped before the stop is shipped by the next run, nothing twice.
    tail = start_tail(tmp_path, addr)
    try:
        lines = wait_for_count(out, 5000, procs=[tail])
        check_delivery(lines, [f"line {i:07d} {'x' * 60}".encode() for i in range(5000)], max_dups=0)
    finally:
        tail.stop()


def test_once_ships_everything_and_exits_zero(tmp_path, collector):
    (tmp_path / "logs").mkdir()
    write_lines(tmp_path / "logs" / "a.log", 0, 3000, tag="a")
    write_lines(tmp_path / "logs" / "b.log", 0, 3000, tag="b")
    _, addr, out = collector()
    once = start_tail(tmp_path, addr, "--once", "--deadline", "60")
    assert once.popen.wait(90) == 0, once.stderr
    lines = collected(out)
    assert set(lines) == {f"{t} {i:07d} {'x' * 60}".encode() for t in "ab" for i in range(3000)}
    assert len(lines) == 6000


def test_once_exits_6_when_the_deadline_passes(tmp_path):
    (tmp_path / "logs").mkdir()
    write_lines(tmp_path / "logs" / "a.log", 0, 100)
    proxy = FaultProxy(("127.0.0.1", 9), mode="refuse")
    once = start_tail(tmp_path, proxy.address, "--once", "--deadline", "3")
    try:
        assert once.popen.wait(60) == 6, once.stderr
        assert "deadline" in once.stderr
    finally:
        proxy.close()
        once.stop()


def test_a_second_agent_on_the_same_state_dir_exits_4(tmp_path, collector):
    (tmp_path / "logs").mkdir()
    _, addr, _ = collector()
    first = start_tail(tmp_path, addr)
    try:
        first.wait_for("shipping")
        second = start_tail(tmp_path, addr)
        assert second.popen.wait(30) == 4
        assert "Traceback" not in second.stderr
    finally:
        first.stop()
