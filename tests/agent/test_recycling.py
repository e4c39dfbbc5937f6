"""Connection recycling (Flume's reset-connection-interval) under load: every 2 s the sink closes
its connection between two batches and opens a new one; nothing is lost and nothing repeated.

Real processes: the agent, ``flume-ship collect``, and the fault proxy between them only to count
the connections made (it passes bytes unchanged).
"""

from __future__ import annotations

import time

from tests.ops.common import collected, start_collector, wait_until, write_lines
from tests.reliability.harness import ProxyProc
from tests.support import Proc


def test_reconnecting_every_two_seconds_under_load_loses_and_repeats_nothing(tmp_path):
    log = tmp_path / "logs" / "app.log"
    col, addr = start_collector(tmp_path / "out")
    proxy = ProxyProc(addr)
    cfg = tmp_path / "ship.toml"
    cfg.write_text(f"""
[channel]
state_dir = "{tmp_path / 'state'}"

[delivery]
collectors = ["{proxy.address}"]
batch_size = 50
linger = 0.02
reset_connection_interval = 2

[sources.app]
paths = ["{log}"]
""")
    agent = Proc("tail", "--config", str(cfg))
    try:
        agent.wait_for("shipping")
        written = 0
        started = time.monotonic()
        while time.monotonic() - started < 7.0:  # a steady stream across several switches
            write_lines(log, "app", written, 40)
            written += 40
            time.sleep(0.01)
        expected = [f"app {i:06d}".encode() for i in range(written)]
        wait_until(lambda: len(collected(tmp_path / "out")) >= written, "every line delivered",
                   procs=[agent, col])
        assert collected(tmp_path / "out") == expected  # in order, once each
        assert proxy.connections >= 3, "the connection was not recycled"
    finally:
        assert agent.stop() == 0, agent.stderr
        proxy.close()
        col.stop()
