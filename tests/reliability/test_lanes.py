"""Lanes: several sinks in parallel, every file (and its rotated predecessors) in order.

Many files, ``--sinks 4``: each file family takes one lane (shipper/channel/groups.py), and one lane
is one worker whose calls collect applies in order (ordered pipelining), so the collector must see
every file's lines in rising order, across rename rotations too (``cross_file_reorders`` is
asserted here, not only reported). SIGKILL at random points: nothing lost, and each kill may
repeat what every lane had in flight: in_flight + 1 batches per lane (the leases being sent and
the delivered one whose ack commits meanwhile).
"""

from __future__ import annotations

import os
import random
import time

from shipper.channel import Channel
from shipper.sink.worker import SinkOptions
from tests.reliability.harness import (
    BATCH, Collector, SteadyWriter, Stream, check, record, start_tail, wait_delivered,
)

SINKS = 4
IN_FLIGHT = (SinkOptions().in_flight + 1) * BATCH * SINKS  # per kill and lane (worker.py, "Ordered pipelining")


def rotate(s: Stream) -> None:
    """Rename rotation of a stream's file (app.log -> app.log.1 ...), between two of its writes."""
    with s.lock:
        for k in range(8, 0, -1):
            older = s.path.with_name(f"{s.path.name}.{k}")
            if older.exists():
                os.rename(older, s.path.with_name(f"{s.path.name}.{k + 1}"))
        if s.path.exists():
            os.rename(s.path, s.path.with_name(f"{s.path.name}.1"))
            if not s.breaks or s.breaks[-1] != s.n:
                s.breaks.append(s.n)


def test_many_files_several_lanes_kill_9_keeps_every_file_in_order(tmp_path, cleanup, scale):
    logs = tmp_path / "logs"
    logs.mkdir()
    streams = [Stream(f"f{i:02d}", logs / f"f{i:02d}.log") for i in range(12)]
    col = Collector(tmp_path / "out")
    cleanup.append(col.stop)
    rng = random.Random(20261130)
    kills = 4 * scale
    sinks = ("--sinks", str(SINKS))
    with SteadyWriter(streams, chunk=40, interval=0.02):
        for k in range(kills):
            tail = start_tail(str(logs / "*.log"), col.addr, tmp_path / "state", *sinks)
            time.sleep(rng.uniform(0.3, 1.2))  # reading, putting, sending or acknowledging
            rotate(streams[k % 3])
            time.sleep(rng.uniform(0.0, 0.4))
            tail.kill()
        tail = start_tail(str(logs / "*.log"), col.addr, tmp_path / "state", *sinks)
        cleanup.append(tail.kill)
        time.sleep(0.5)
        rotate(streams[0])
        restarted = time.monotonic()
    t = wait_delivered([col], streams, [tail])
    bound = kills * IN_FLIGHT
    record(f"{len(streams)} files, --sinks {SINKS}, kill -9 x{kills} with rotations", t, bound,
           time.monotonic() - restarted, "order per file asserted across rotations")
    check(t, bound)
    assert t.cross_file_reorders == 0, f"a rotated file's lines overtaken: {t.order_examples}"


def test_lanes_are_used_in_parallel_and_a_lane_change_keeps_order(tmp_path, cleanup):
    """A backlog written with 2 lanes, shipped after a restart with 4: the old lines drain
    through lane 0 first, then every lane works; each file stays in order throughout."""
    logs = tmp_path / "logs"
    logs.mkdir()
    streams = [Stream(f"g{i:02d}", logs / f"g{i:02d}.log") for i in range(8)]
    for s in streams:
        s.write(2000)
    # Nobody listens yet: the first agent reads everything into its lanes and cannot deliver.
    dead = Collector(tmp_path / "nowhere")
    addr = dead.addr
    dead.stop()
    tail = start_tail(str(logs / "*.log"), addr, tmp_path / "state", "--sinks", "2")
    state = tmp_path / "state"
    deadline = time.monotonic() + 60
    while Channel.peek(state).events < 16000 and time.monotonic() < deadline:  # a failure guard only
        time.sleep(0.2)
    tail.kill()
    for s in streams:  # new lines, read at once by the next agent, into other lanes than before
        s.write(500)
    col = Collector(tmp_path / "out", port=int(addr.rsplit(":", 1)[1]))
    cleanup.append(col.stop)
    tail = start_tail(str(logs / "*.log"), col.addr, state, "--sinks", str(SINKS))
    cleanup.append(tail.kill)
    t = wait_delivered([col], streams, [tail])
    record("backlog of 2 lanes shipped with 4", t, IN_FLIGHT, None, "order per file asserted")
    check(t, IN_FLIGHT)
