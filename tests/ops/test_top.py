"""`flume-ship top` on a real running agent: per collector and per file rows, with rates."""

from __future__ import annotations

import re
import signal
import subprocess
import threading

from tests.reliability.harness import Collector
from tests.support import Proc, cli_argv


def test_top_shows_collectors_files_and_rates_of_a_running_agent(tmp_path):
    f = tmp_path / "app.log"
    f.write_bytes(b"".join(b"line %06d\n" % i for i in range(5000)))
    col = Collector(tmp_path / "out")
    state = tmp_path / "st"
    agent = Proc("tail", str(f), "--to", col.addr, "--state-dir", str(state), "--status-interval", "0.5")
    try:
        agent.wait_for("shipping ")
        stop = threading.Event()

        def grow():  # keep the file growing while top watches
            with open(f, "ab") as fh:
                i = 0
                while not stop.wait(0.05):
                    fh.write(b"more %06d\n" % i * 50)
                    fh.flush()
                    i += 1

        writer = threading.Thread(target=grow, daemon=True)
        writer.start()
        try:
            r = subprocess.run(cli_argv("top", "--state-dir", str(state), "--frames", "4", "--interval", "1"),
                               capture_output=True, text=True, timeout=60)
        finally:
            stop.set()
            writer.join(5)
    finally:
        agent.stop(signal.SIGTERM)
        col.stop()
    assert r.returncode == 0, r.stderr
    frames = r.stdout.split("flume-ship top  ")[1:]
    assert len(frames) == 4
    last = frames[-1]
    assert re.search(r"agent pid \d+ running", last), last
    assert re.search(rf"{re.escape(col.addr)}\s+up\s+[1-9]\d*\s+\d+ms\s+0", last), last  # events/s > 0
    assert re.search(r"default\s+\S*app\.log\s+[1-9]\d*\s+[\d.]+ \S*B\s+(reading|idle)", last), last
    assert re.search(r"shipped \d+ events \([1-9]\d* events/s, [\d.]+ \S+/s\)", last), last
