"""An idle agent leaves an unchanged status.json alone, and `status` still calls it current.

A real agent with a short ``--status-interval`` (0.3 s) ships a few lines to a real collector
and goes quiet. From then on the file's bytes stay the same (the agent only touches it) while its mtime
keeps moving, and `flume-ship status` reports a running agent reading from the status file, even
once ``written_at`` is older than the staleness bound. A new line rewrites the document at the
next tick, with the new counters.
"""

from __future__ import annotations

import json
import os
import time

from tests.ops.common import start_collector, status, wait_until, write_lines
from tests.ops.test_status_and_metrics import start_agent  # --status-interval 0.3: stale after 10 s


def test_a_quiet_agent_touches_its_unchanged_status_file_and_rewrites_it_on_news(tmp_path):
    log = tmp_path / "logs" / "app.log"
    write_lines(log, "a", 0, 20)
    col, addr = start_collector(tmp_path / "out")
    agent = start_agent(tmp_path, addr)
    path = tmp_path / "state" / "status.json"
    try:
        wait_until(lambda: status(tmp_path / "state")["totals"].get("events_acked") == 20, "20 events acknowledged",
                   procs=[agent])
        # Once quiet, the same bytes stay in the file over many ticks; only its mtime moves on.
        def quiet_document():
            before = path.read_bytes()
            looks = []
            for _ in range(10):  # ten looks, each after the next touch
                looks.append(os.stat(path).st_mtime_ns)
                wait_until(lambda: os.stat(path).st_mtime_ns != looks[-1], "the next touch", procs=[agent])
                if path.read_bytes() != before:
                    return None  # still settling (the one more write that shows zero rates): look again
            return before

        settled = wait_until(quiet_document, "ten touches of an unchanged document", timeout=60, procs=[agent])
        doc = json.loads(settled)
        assert doc["totals"]["events_acked"] == 20 and doc["state"] == "running"

        # Past the staleness bound (10 s) from written_at, the mtime alone keeps the document current.
        wait_until(lambda: time.time() - doc["written_at"] > 11, "written_at older than 11 s", timeout=30,
                   interval=0.5, procs=[agent])
        assert path.read_bytes() == settled
        live = status(tmp_path / "state")
        assert live["agent"]["running"] and live["agent"]["source"] == "status file"
        assert live["agent"]["status_age"] < 10

        # News: the next tick writes a new document with the new counters.
        write_lines(log, "a", 20, 5)
        wait_until(lambda: json.loads(path.read_bytes())["totals"]["events_acked"] == 25, "25 events in status.json",
                   procs=[agent])
        assert agent.stop() == 0
        assert json.loads(path.read_bytes())["state"] == "stopped"
    finally:
        agent.stop()
        col.stop()
