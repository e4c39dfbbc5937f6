"""The harness proves itself with Flume alone: ``flume-ng avro-client`` -> Flume AvroSource -> file_roll.

If these fail, nothing in flume-ship is to blame: resolution, JVM start, config rendering or output
reading is broken.
"""

from __future__ import annotations

import pytest

from tests.interop import flume
from tests.support import free_port

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("version", flume.VERSIONS)
def test_flume_avro_client_lines_reach_flume_file_roll_in_order(version, flume_classpath, start_agent, tmp_path):
    port, out = free_port(), tmp_path / "out"
    agent = start_agent(version, flume.avro_to_file_roll("plain", port, out))
    agent.wait_listening(port)
    lines = [f"line {i:05d} of the harness sanity check" for i in range(1, 1001)]
    src = tmp_path / "lines.txt"
    src.write_text("".join(f"{line}\n" for line in lines))

    cli = flume.AvroCli(flume_classpath(version), tmp_path / "avro-client.log",
                        ["-H", "127.0.0.1", "-p", str(port), "-F", str(src)], version=version)
    cli.finish()

    expected = src.read_bytes()
    assert flume.wait_for_bytes(out, len(expected), who=agent) == expected


def test_resolution_failure_carries_mavens_own_error(tmp_path):
    # Offline, a version that does not exist cannot come from ~/.m2: the error must be Maven's text,
    # not a skip and not a bare "exit 1".
    with pytest.raises(flume.ResolutionError) as err:
        flume.resolve("0.0.0-does-not-exist", extra_args=["-o"])
    text = str(err.value)
    assert "0.0.0-does-not-exist" in text and "flume-ng-node" in text
