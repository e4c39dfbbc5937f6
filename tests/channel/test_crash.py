"""Crash tests with real processes: SIGKILL a writer+sinks child at random moments, dozens of times.

After every kill the parent reopens the channel (SQLite's WAL recovery, our quick_check) and checks
against what the child reported (see crash_child.py):
  * no acknowledged event is still in the channel;
  * every committed event is still there, unless an ack for it may have been in flight;
  * events and the tail offset moved together: every id up to the offset is stored or (maybe)
    acked, and nothing beyond the offset is stored;
  * the channel holds each id once, in put order.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

from shipper.channel import Channel
from tests.support import ROOT

ROUNDS = 30


def read_ids(path) -> list[list[int]]:
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")[:-1]  # an unterminated last line was cut by the kill
    return [[int(x) for x in line.split()] for line in lines]


def run_child(state, reports, seed, rng) -> None:
    child = subprocess.Popen([sys.executable, "-m", "tests.channel.crash_child", str(state), str(reports), str(seed)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if rng.random() < 0.8:  # mostly kill while it works; sometimes while it still opens
            line = child.stdout.readline()
            assert line == b"ready\n", child.stderr.read().decode()
        time.sleep(rng.uniform(0.0, 0.5))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        child.stdout.close()
        child.stderr.close()


def test_sigkill_at_random_moments_loses_no_committed_event_and_returns_no_acked_one(tmp_path):
    state, reports = tmp_path / "state", tmp_path / "reports"
    reports.mkdir()
    rng = random.Random(20261124)
    for rnd in range(ROUNDS):
        run_child(state, reports, rng.randrange(1 << 30), rng)

        committed = set()
        for first, last in read_ids(reports / "committed"):
            committed.update(range(first, last + 1))
        intent = {i for ids in read_ids(reports / "intent") for i in ids}
        acked = {i for ids in read_ids(reports / "acked") for i in ids}

        with Channel.open(state, min_free_bytes=0) as ch:
            lease = ch.take(1 << 30, 1 << 40)
            stored = [int(e.rstrip(b".")) for e in lease.events] if lease else []
            offset = int(ch.offsets().get("w", b"0"))
        held = set(stored)

        assert stored == sorted(held), f"round {rnd}: order broken or duplicates"
        assert not held & acked, f"round {rnd}: acked events came back: {sorted(held & acked)[:10]}"
        missing = committed - intent - held
        assert not missing, f"round {rnd}: committed events lost: {sorted(missing)[:10]}"
        assert set(range(1, offset + 1)) <= held | intent, f"round {rnd}: offset {offset} ahead of the events"
        assert not stored or stored[-1] <= offset, f"round {rnd}: events stored beyond the offset {offset}"
    # the test must have exercised something: plenty of commits and acks across the kills
    assert len(committed) > 1000 and len(acked) > 500
