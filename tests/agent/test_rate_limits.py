"""Rate limits end to end, real processes: a group's and a source's limit hold a backlog back.

No wall-clock upper bound is asserted (a loaded machine only makes delivery slower). The bound
is structural: the limiter starts with one second of tokens (``burst``) and every event takes one
before it is sent (group) or put (source), so the last of N events cannot go before
``(N - rate) / rate`` seconds after the limiter was made, which is after the test's clock started.
Only a limiter that lets events through without tokens can finish sooner. The 30 s measurement
of the rate itself is ``bench/bench_routes.py`` (docs/benchmarks.md).

The group case also watches the agent with ``flume-ship top``: the group's row shows its state,
collectors up, events/s and its limit.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.ops.common import collected, start_collector, status, wait_until, write_lines
from tests.support import Proc, cli_argv

RATE = 200
LINES = 2000

CONFIG = """
[channel]
state_dir = "{state}"

[delivery]
batch_size = 50
linger = 0.05

[agent]
drain_timeout = 5
status_interval = 0.3

[groups.main]
collectors = ["{addr}"]
{group_limit}

[sources.app]
paths = ["{log}"]
{source_limit}
"""


@pytest.mark.parametrize("where", ["group", "source"])
def test_a_rate_limit_holds_a_backlog_to_its_rate_and_loses_nothing(tmp_path, where):
    log, state = tmp_path / "logs" / "app.log", tmp_path / "state"
    write_lines(log, "app", 0, LINES)
    col, addr = start_collector(tmp_path / "out")
    cfg = tmp_path / "ship.toml"
    cfg.write_text(CONFIG.format(
        state=state, addr=addr, log=log,
        group_limit=f"max_events_per_second = {RATE}" if where == "group" else "",
        source_limit=f"max_lines_per_second = {RATE}" if where == "source" else ""))
    expected = [f"app {i:06d}".encode() for i in range(LINES)]
    started = time.monotonic()
    agent = Proc("tail", "--config", str(cfg))
    try:
        agent.wait_for("shipping")
        if where == "group":
            top = subprocess.run(cli_argv("top", "--state-dir", str(state), "--frames", "3", "--interval", "1"),
                                 capture_output=True, text=True, timeout=120)
            assert top.returncode == 0, top.stderr
            last = top.stdout.split("flume-ship top  ")[-1]
            assert re.search(rf"main\s+up\s+1/1\s+[1-9]\d*\s+{RATE}\s+\d+\s+\S+\s+0\s+{re.escape(addr)}", last), last
        wait_until(lambda: len(collected(tmp_path / "out")) >= LINES, "every line delivered", timeout=120,
                   procs=[agent, col])
        elapsed = time.monotonic() - started
        doc = status(state)
    finally:
        assert agent.stop() == 0, agent.stderr
        col.stop()
    assert collected(tmp_path / "out") == expected  # in order, none lost, none twice
    assert elapsed >= (LINES - RATE) / RATE, f"{LINES} events in {elapsed:.2f}s: the limit of {RATE}/s leaked"
    (main,) = doc["groups"]
    if where == "group":
        assert main["max_events_per_second"] == RATE and main["rate_limited_seconds"] > 0
