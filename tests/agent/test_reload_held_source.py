"""A reload whose source does not stop in time: nothing it read may be committed after its successor
started (real agent, real channel file, a read held by an LD_PRELOAD shim as a hung disk would).

A reload that changes the groups stops the source and waits ``drain_timeout + 5`` s for it to
commit what it read. A source stuck in a read (a hung disk or NFS server) or in a slow commit
outlives that wait; the reload then reopens the channel's queues for the new groups and starts a
new source, which reads on from the committed offsets. If the old source could still commit when
its read returns, its lines would be stored twice (its copy routed to the OLD groups), and its
offset record would move the file's committed offset back over what the new source committed, so
the next start would send those lines once more. These tests hold the old source's read until the
new source has shipped past it, then let it go.
"""

from __future__ import annotations

from tests.agent.test_routes import write_config as write_routes_config
from tests.ops.common import collected, start_collector, wait_until, write_lines
from tests.shims import HELD, compile_shim
from tests.support import Proc


def lines(start: int, count: int) -> list[bytes]:
    return [f"app {i:06d}".encode() for i in range(start, start + count)]


def write_config(path, state, log, groups: dict[str, str]) -> None:
    write_routes_config(path, state, groups, f'[sources.app]\npaths = ["{log}"]\n')
    # A reload waits drain_timeout + 5 s for a source to stop: the least is 5 s.
    path.write_text(path.read_text().replace("drain_timeout = 5", "drain_timeout = 0"))


def held_across_reload(tmp_path, before: list[str], after: list[str]) -> None:
    """Group ``one`` is in both configurations; ``two`` only in ``before`` or only in ``after``.
    Lines 0-499 are shipped before the hold, 500-899 while the old source is held, 900-949 after
    a restart; every group must have the lines of the phases it was configured in, each once."""
    shim = compile_shim(tmp_path, "held", HELD)
    log, state, cfg, gate = tmp_path / "logs" / "app.log", tmp_path / "state", tmp_path / "ship.toml", tmp_path / "gate"
    collectors = {name: start_collector(tmp_path / name) for name in ("one", "two")}
    addr = {name: a for name, (_, a) in collectors.items()}
    write_config(cfg, state, log, {g: addr[g] for g in before})
    write_lines(log, "app", 0, 500)
    env = {"LD_PRELOAD": str(shim), "HELD_READ_PATH": str(log), "HELD_READ_GATE": str(gate)}
    agent = Proc("tail", "--config", str(cfg), env=env)
    try:
        wait_until(lambda: collected(tmp_path / "one") == lines(0, 500), "group one has the first lines",
                   procs=[agent])
        gate.touch()
        write_lines(log, "app", 500, 300)  # the source's next read of them hangs
        wait_until(lambda: (tmp_path / "gate.held").exists(), "the source's read is held", procs=[agent])
        write_config(cfg, state, log, {g: addr[g] for g in after})
        agent.popen.send_signal(1)
        agent.wait_for(f"reloaded configuration: 1 source, {len(after)} collector", timeout=60)
        # The new source reads what the held one had not committed, then more, past it.
        wait_until(lambda: collected(tmp_path / "one") == lines(0, 800), "the new source ships the held lines",
                   procs=[agent])
        write_lines(log, "app", 800, 100)
        wait_until(lambda: collected(tmp_path / "one") == lines(0, 900), "the new source reads on", procs=[agent])
        (tmp_path / "gate.held").unlink()  # the old source's read returns
        wait_until(lambda: any("not committed at shutdown" in x or "unexpected error" in x for x in agent.lines)
                   or len(collected(tmp_path / "one")) > 900, "the old source ends", procs=[agent])
    finally:
        assert agent.stop() == 0, agent.stderr
    assert collected(tmp_path / "one") == lines(0, 900), "group one got a line twice, or lost one"
    assert collected(tmp_path / "two") == (lines(500, 400) if "two" in after else lines(0, 500))
    assert "Traceback" not in agent.stderr, agent.stderr
    # The offsets committed last are the new source's: a new start sends nothing again.
    agent = Proc("tail", "--config", str(cfg))
    try:
        agent.wait_for("shipping")
        write_lines(log, "app", 900, 50)
        wait_until(lambda: len(collected(tmp_path / "one")) >= 950, "the lines written after the restart",
                   procs=[agent])
    finally:
        assert agent.stop() == 0, agent.stderr
        for proc, _ in collectors.values():
            proc.stop()
    assert collected(tmp_path / "one") == lines(0, 950)
    assert collected(tmp_path / "two") == (lines(500, 450) if "two" in after else lines(0, 500))


def test_a_source_held_in_a_read_past_a_reload_that_adds_a_group_commits_nothing_late(tmp_path):
    held_across_reload(tmp_path, ["one"], ["one", "two"])


def test_a_source_held_in_a_read_past_a_reload_that_removes_its_other_group_commits_nothing_late(tmp_path):
    held_across_reload(tmp_path, ["one", "two"], ["one"])
