"""Routes against a real Flume collector: one source replicated to two collector groups, a real
Flume AvroSource (memory channel, ``file_roll`` with the body-only ``text`` serializer) as one and
``flume-ship collect`` as the other. The same bytes must arrive at both, in the same order.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.interop import flume
from tests.ops.common import collected, start_collector
from tests.support import cli_argv, free_port

pytestmark = pytest.mark.interop

CONFIG = """
[channel]
state_dir = "{state}"
min_free = "1K"

[delivery]
batch_size = 100

[groups.flume]
collectors = ["127.0.0.1:{flume_port}"]

[groups.ours]
collectors = ["{ours}"]
batch_size = 37

[sources.app]
paths = ["{log}"]
groups = ["flume", "ours"]
"""


@pytest.mark.parametrize("version", flume.VERSIONS)
def test_replicating_to_flume_and_collect_delivers_the_same_bytes_to_both(version, start_agent, tmp_path):
    port = free_port()
    roll = tmp_path / "roll"
    roll.mkdir()
    agent = start_agent(version, {
        "sources.r1.type": "avro", "sources.r1.bind": "127.0.0.1", "sources.r1.port": port,
        "sources.r1.channels": "c1", "channels.c1.type": "memory", "channels.c1.capacity": 100000,
        "channels.c1.transactionCapacity": 1000,
        "sinks.k1.type": "file_roll", "sinks.k1.channel": "c1", "sinks.k1.sink.directory": roll,
        "sinks.k1.sink.rollInterval": 0, "sinks.k1.sink.serializer": "text",
    })
    agent.wait_listening(port)
    ours, ours_addr = start_collector(tmp_path / "ours")
    try:
        log = tmp_path / "app.log"
        lines = [f"line {i:05d} " + "x" * (i % 50) + " é" for i in range(3000)]
        log.write_text("\n".join(lines) + "\n", encoding="utf-8")
        conf = tmp_path / "ship.toml"
        conf.write_text(CONFIG.format(state=tmp_path / "state", flume_port=port, ours=ours_addr, log=log))
        tail = subprocess.run(cli_argv("tail", "--config", str(conf), "--once"), capture_output=True, text=True,
                              timeout=300)
        assert tail.returncode == 0, tail.stderr
        expected = "".join(line + "\n" for line in lines).encode("utf-8")
        flume_bytes = flume.wait_for_bytes(roll, len(expected), who=agent)
        assert flume_bytes == expected
        assert b"".join(line + b"\n" for line in collected(tmp_path / "ours")) == expected
    finally:
        ours.stop()
