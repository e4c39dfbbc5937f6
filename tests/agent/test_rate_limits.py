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
import threading
import time

import pytest

from shipper.agent.runners import SourceChannel
from shipper.channel import Channel
from shipper.errors import ChannelIOError
from shipper.sink.ratelimit import RateLimit
from tests.ops.common import collected, start_collector, status, wait_until, write_lines
from tests.support import Proc, cli_argv
from tests.tail.helpers import bodies, drain, expected, lines, make_source, open_channel

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


# ----- in process: a source's limit is charged once per batch -----

class CountingLimit(RateLimit):
    """The real limiter, with the events it was charged counted. Its rate is so high that no
    charge here waits; what is asserted is what it was charged, not how long anything took."""

    def __init__(self) -> None:
        super().__init__(per_second=1e9)
        self.charged = 0

    def reserve(self, events: int, nbytes: int) -> float:
        self.charged += events
        return super().reserve(events, nbytes)


class FlakyChannel:
    """The real channel; its first puts fail as a full disk makes them fail (nothing committed)."""

    def __init__(self, channel, failures: int) -> None:
        self.channel = channel
        self.failures = failures
        self.attempts = 0

    def put_packed(self, packed, offsets=None, timeout=None, fence=None):
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise ChannelIOError("channel put failed: the disk is full; nothing committed was lost, retry later")
        return self.channel.put_packed(packed, offsets, timeout=timeout, fence=fence)

    def __getattr__(self, name):
        return getattr(self.channel, name)


@pytest.mark.parametrize("trouble", ["write errors", "a full channel"])
def test_a_limited_source_behind_a_flaky_channel_is_charged_once_per_batch_however_often_a_put_is_retried(
        tmp_path, trouble):
    log = tmp_path / "app.log"
    log.write_bytes(lines("r", 0, 3_000))
    if trouble == "write errors":
        ch = open_channel(tmp_path / "state")
        flaky = FlakyChannel(ch, failures=4)  # the first batch's put fails four times, then commits
    else:
        # Room for one batch: the second batch's put times out (False) and is retried until the
        # first is taken; the test takes it only after three attempts.
        ch = Channel.open(tmp_path / "state", min_free_bytes=0, capacity_events=1_000)
        flaky = FlakyChannel(ch, failures=0)
    limit = CountingLimit()
    view = SourceChannel(flaky, prefix="", limit=limit, stop=threading.Event())
    source = make_source(view, log, batch_max_events=1_000, put_timeout=0.05)
    try:
        done: list = []
        t = threading.Thread(target=lambda: done.append(source.run_once()))
        t.start()
        taken: list[bytes] = []
        if trouble == "a full channel":
            wait_until(lambda: flaky.attempts >= 4, "the second batch's put retried on the full channel",
                       timeout=60, interval=0.01)
        while t.is_alive() or ch.stats().events:
            taken += bodies(drain(ch))
            t.join(0.05)
        assert done == [True]
        assert taken + bodies(drain(ch)) == expected("r", 0, 3_000)  # in order, once each
        assert flaky.attempts > 3 + 1  # retries happened: the scenario is the one named
        assert limit.charged == 3_000, f"{limit.charged} events charged for 3000 put"
        assert view.events_put == 3_000
    finally:
        ch.close()
