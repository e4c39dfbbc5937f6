"""Multiline events end to end: ``flume-ship tail --multiline java`` killed with SIGKILL while stack
traces are being written, restarted, and judged by what ``flume-ship collect`` wrote.

At the edge an event is never split or repeated: the committed offset sits at an event's first
byte, so a kill loses only the held event's memory and the restart reads it again whole. Delivery
stays at-least-once: a kill between a batch's delivery and its acknowledgement sends that batch
again. Such a repeat is a whole event with the same ``id`` header (file generation + byte offset),
so a receiver can drop it; the scenario counts them and bounds them by the batches in flight.
"""

from __future__ import annotations

import json
import random
import threading
import time

from tests.reliability.harness import IN_FLIGHT, REPORT, Collector, Row, start_tail

KILLS = 4


def java_event(n: int) -> bytes:
    return (b"2024-05-01 12:00:00,000 ERROR request %06d failed\n" % n
            + b"java.lang.IllegalStateException: attempt %d\n" % n
            + b"".join(b"\tat com.example.Frame%d.call(Frame.java:%d)\n" % (i, i) for i in range(8))
            + b"Caused by: java.io.IOException: closed\n\t... 7 more\n")


def debug_line(n: int) -> bytes:
    return b"2024-05-01 12:00:00,000 DEBUG pool state %06d\n" % n


def received(col: Collector) -> list[dict]:
    out = []
    for p in col.files():
        data = p.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            out.append(json.loads(line))
    return out


def test_kill_9_while_stack_traces_are_written_never_splits_an_event(tmp_path, cleanup):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(b"")
    written = [0]
    stop = threading.Event()

    def writer():
        # Each trace in two writes with a pause between, so kills land inside held events; a
        # DEBUG line after every tenth (dropped by the exclude rule).
        n = 0
        while not stop.is_set() and n < 4000:
            data = java_event(n)
            with open(log, "ab") as fh:
                fh.write(data[:len(data) // 2])
            time.sleep(0.001)
            with open(log, "ab") as fh:
                fh.write(data[len(data) // 2:] + (debug_line(n) if n % 10 == 9 else b""))
            n += 1
            written[0] = n
            time.sleep(0.001)

    col = Collector(tmp_path / "out", fmt="jsonl")
    cleanup.append(col.stop)
    flags = ("--multiline", "java", "--exclude-lines", "DEBUG", "--event-id")
    t = threading.Thread(target=writer)
    t.start()
    rng = random.Random(20261130)
    try:
        for _ in range(KILLS):
            tail = start_tail(str(log), col.addr, tmp_path / "state", *flags)
            time.sleep(rng.uniform(0.3, 1.0))  # where the kill lands; not an assertion
            tail.kill()
    finally:
        stop.set()
        t.join()
    tail = start_tail(str(log), col.addr, tmp_path / "state", *flags)
    cleanup.append(tail.kill)
    restarted = time.monotonic()
    want = {java_event(n)[:-1].decode() for n in range(written[0])}
    deadline = time.monotonic() + 120  # a guard against a hang; the last event waits for its 5 s timeout
    while time.monotonic() < deadline:
        got = received(col)
        if want <= {r["body"] for r in got}:
            break
        time.sleep(0.5)
    got = received(col)
    bodies = [r["body"] for r in got]
    assert set(bodies) == want, f"{len(want - set(bodies))} missing, {len(set(bodies) - want)} split or foreign"
    by_id: dict[str, str] = {}
    for r in got:
        assert by_id.setdefault(r["headers"]["id"], r["body"]) == r["body"]  # a repeat is the same event
    repeats = len(bodies) - len(set(bodies))
    assert len(by_id) == len(want)
    assert repeats <= KILLS * IN_FLIGHT
    assert not any("DEBUG" in b for b in bodies)
    REPORT.append(Row(f"kill -9 inside multiline events (x{KILLS})", len(want), 0, repeats, KILLS * IN_FLIGHT,
                      time.monotonic() - restarted, "events (stack traces), not lines; repeats are whole "
                      "events with their id; 0 split"))
