"""SIGKILL at the put stage's boundaries, in a real process on a real channel file.

The put stage holds up to two batches between the reader and the channel: one committing, one
packed (or packing) and waiting. A kill must lose neither: a batch is either committed with its
offset records (one transaction) or read again from the committed offsets. An LD_PRELOAD shim
holds the fdatasync of the channel's WAL (tests/shims.py), as a slow disk would, so the kill lands
exactly while the first batch's commit waits for its sync and the next batches are packed behind it.
"""

from __future__ import annotations

import signal
import time

from tests.shims import HELD, compile_shim

from .helpers import append, bodies, expected, lines, open_channel
from .test_processes import read_the_rest, spawn, wait_for_text

BATCH = 300


def test_kill_9_while_a_commit_waits_for_its_sync_and_packed_batches_wait_behind_it_reads_each_line_once(tmp_path):
    shim = compile_shim(tmp_path, "held", HELD)
    log, state, gate = tmp_path / "app.log", tmp_path / "state", tmp_path / "gate"
    log.write_bytes(b"")
    opts = {"paths": [str(log)], "batch_max_events": BATCH, "add_event_id": True, "rescan_interval": 0.2}
    env = {"LD_PRELOAD": str(shim), "HELD_SYNC_PATH": str(state / "channel.db-wal"), "HELD_SYNC_GATE": str(gate)}
    err = tmp_path / "child.err"
    proc = spawn(state, None, opts, err, env=env)
    try:
        wait_for_text(err, "ready", proc)
        gate.touch()  # the next sync of the WAL (the first batch's commit) hangs
        append(log, lines("k", 0, 10 * BATCH, width=30))
        deadline = time.monotonic() + 60  # a failure guard, not a measurement
        while not (tmp_path / "gate.held").exists():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.02)
        time.sleep(0.3)  # the reader packs the next batches and stops at the stage's bound; not an assertion
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ch = open_channel(state)
    try:
        held = ch.stats().events  # the held commit's frames were written: it is committed, nothing after it
        assert held <= BATCH, held
    finally:
        ch.close()
    events = read_the_rest(tmp_path, log)
    assert bodies(events) == expected("k", 0, 10 * BATCH, width=30)
    ids = [e.headers["id"] for e in events]
    assert len(set(ids)) == len(ids)
