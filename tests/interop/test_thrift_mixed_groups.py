"""Mixed groups against a real Flume collector tier: one ThriftSource agent and one AvroSource agent.

Each collector is its own Flume JVM, configured as a collector tier is in production
(docs/deployment.md): source -> **file channel** (durable: what the source acknowledged survives a
SIGKILL) -> file_roll. A collector is killed with SIGKILL mid-run; it is started again on the same
channel directories before the end so what it had acknowledged drains to its output. Nothing may be
lost: every line written must be in the union of the two outputs (duplicates are allowed).

* failover: one ``tail`` with ``--to thrift://T,A --balance failover``; the Thrift collector, which
  takes everything while healthy, dies midway and the rest must go to the Avro one.
* fan-in: ten ``tail`` agents balancing (round_robin) over the same two collectors; the Thrift one
  dies midway and comes back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.interop import flume
from tests.support import Proc, free_port

pytestmark = pytest.mark.interop


def collector_tier(kind: str, port: int, base: Path) -> dict[str, object]:
    """The collector-side Flume configuration the tests (and docs/deployment.md) use."""
    return {
        "sources.in.type": kind,  # thrift (compact by default) or avro
        "sources.in.bind": "127.0.0.1",
        "sources.in.port": port,
        "sources.in.channels": "durable",
        "channels.durable.type": "file",
        "channels.durable.checkpointDir": base / "checkpoint",
        "channels.durable.dataDirs": base / "data",
        "channels.durable.capacity": 1000000,
        "channels.durable.transactionCapacity": 10000,
        "sinks.out.type": "file_roll",
        "sinks.out.channel": "durable",
        "sinks.out.sink.directory": base / "out",
        "sinks.out.sink.rollInterval": 0,
        "sinks.out.sink.batchSize": 1000,
    }


class Tier:
    """One collector JVM that can be SIGKILLed and started again on the same channel."""

    def __init__(self, kind: str, classpath: str, base: Path, version: str):
        self.kind, self.classpath, self.base, self.version = kind, classpath, base, version
        self.port = free_port()
        (base / "out").mkdir(parents=True, exist_ok=True)
        self.agent = None
        self.start()

    def start(self):
        self.agent = flume.Agent(self.classpath, self.base / "agent", collector_tier(self.kind, self.port, self.base),
                                 name=self.kind, version=self.version)
        self.agent.wait_listening(self.port, timeout=90)

    def kill(self):
        self.agent.stop(graceful=False)

    def lines(self) -> list[bytes]:
        return flume.read_dir(self.base / "out").splitlines()

    @property
    def url(self) -> str:
        return f"thrift://127.0.0.1:{self.port}" if self.kind == "thrift" else f"127.0.0.1:{self.port}"


@pytest.fixture(params=flume.VERSIONS)
def tiers(request, flume_classpath, tmp_path):
    version = request.param
    made = [Tier("thrift", flume_classpath(version), tmp_path / "tier-thrift", version),
            Tier("avro", flume_classpath(version), tmp_path / "tier-avro", version)]
    yield made
    for t in made:
        t.kill()


def append(path: Path, tag: str, start: int, count: int) -> list[bytes]:
    lines = [f"{tag} {i:06d} {'x' * 40}".encode() for i in range(start, start + count)]
    with open(path, "ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))
    return lines


def wait_all(tiers, expected: set[bytes], procs, timeout: float = 180.0) -> set[bytes]:
    """Poll until the tiers' outputs together hold every expected line (a failure guard, not a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        got = {line for t in tiers for line in t.lines()}
        if expected <= got or time.monotonic() > deadline:
            return got
        for p in procs:
            if p.popen.poll() is not None:
                raise AssertionError(f"{p.argv} exited {p.popen.returncode}:\n{p.stderr}")
        time.sleep(0.3)


def tail_args(log: Path, state: Path, tiers, balance: str) -> list[str]:
    return ["tail", str(log), "--to", ",".join(t.url for t in tiers), "--balance", balance,
            "--state-dir", str(state), "--batch-size", "200", "--max-penalty", "2", "--backoff-max", "2",
            "--connect-timeout", "2", "--request-timeout", "10"]


def test_failover_from_a_killed_thrift_collector_to_an_avro_one_loses_nothing(tiers, tmp_path):
    thrift, avro = tiers
    log = tmp_path / "app.log"
    expected = append(log, "failover", 0, 3000)
    tail = Proc(*tail_args(log, tmp_path / "state", tiers, "failover"))
    try:
        got = wait_all([thrift], set(expected), [tail])
        assert set(expected) <= got, f"{len(set(expected) - got)} lines missing before the kill"
        assert not avro.lines(), "failover: the first healthy collector takes everything"

        thrift.kill()
        second = append(log, "failover", 3000, 3000)
        got_avro = wait_all([avro], set(second), [tail])
        assert set(second) <= got_avro, f"{len(set(second) - got_avro)} lines missing after the failover"

        thrift.start()  # its file channel replays what it acknowledged before the kill
        expected += second
        got = wait_all(tiers, set(expected), [tail])
    finally:
        rc = tail.stop()
    missing = set(expected) - got
    assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:3]}"
    assert rc == 0, tail.stderr


def test_ten_agents_balancing_over_thrift_and_avro_lose_nothing_when_one_is_killed(tiers, tmp_path):
    thrift, avro = tiers
    agents, expected = [], []
    for n in range(10):
        log = tmp_path / f"host{n}.log"
        expected += append(log, f"host{n}", 0, 1000)
        agents.append((log, Proc(*tail_args(log, tmp_path / f"state{n}", tiers, "round_robin"))))
    procs = [p for _, p in agents]
    try:
        # Both collectors are in use before the kill.
        deadline = time.monotonic() + 120
        while not (thrift.lines() and avro.lines()) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert thrift.lines() and avro.lines(), (len(thrift.lines()), len(avro.lines()))

        thrift.kill()
        for n, (log, _) in enumerate(agents):
            expected += append(log, f"host{n}", 1000, 1000)
        while len(avro.lines()) < 12000 and time.monotonic() < deadline + 120:  # the survivor carries on
            time.sleep(0.3)
        thrift.start()
        # Lines keep coming after the restart, a little each second, until the restarted collector
        # has taken some of them: an agent that met it dead waits out its penalty (at most
        # --max-penalty, 30 s) before trying it again, and a single burst could all be shipped to
        # the survivor before then. Two minutes is four times the longest penalty.
        seq, came_back = 2000, time.monotonic() + 120
        while not took_lines_from(thrift, 2000) and time.monotonic() < came_back:
            for n, (log, _) in enumerate(agents):
                expected += append(log, f"host{n}", seq, 20)
            seq += 20
            time.sleep(1.0)
        got = wait_all(tiers, set(expected), procs, timeout=240)
    finally:
        codes = [p.stop() for p in procs]
    missing = set(expected) - got
    assert not missing, f"{len(missing)} of {len(expected)} lines lost, e.g. {sorted(missing)[:3]}"
    assert codes == [0] * 10, [p.stderr for p in procs if p.popen.returncode]
    assert took_lines_from(thrift, 2000), "the restarted Thrift collector took a share again"


def took_lines_from(tier, first: int) -> bool:
    """Whether ``tier`` has received any line numbered ``first`` or later (written after its restart)."""
    return any(int(line.split()[1]) >= first for line in tier.lines() if len(line.split()) > 1)
