"""What a new user met trying routes, dead letters and bad values, each replayed with the real CLI
on a real channel: an unknown dead-letter ID is a usage error (2), not a broken state directory
(5); a re-queue to a group nothing knows is refused instead of parking the events where no agent
will ever send them; a rate given as NaN is refused in events (or lines) per second, not
"seconds"; counts read as English ("1 batch")."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.agent.test_dead_letters import GROUPS, OTHER, poisoned_lines, start_picky
from tests.ops.common import status, wait_until
from tests.support import Proc, cli_argv, free_port


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=60)


def dead_lettered_channel(tmp_path):
    """An agent ran with group main's collector rejecting one batch for ever: the channel in
    ``state`` holds one dead-lettered batch of group main; the agent is stopped."""
    picky, addr = start_picky(tmp_path / "picky.out")
    try:
        log, state, cfg = tmp_path / "logs" / "app.log", tmp_path / "state", tmp_path / "ship.toml"
        log.parent.mkdir()
        log.write_bytes(b"".join(line + b"\n" for line in poisoned_lines(30, 12)))
        cfg.write_text(GROUPS.format(state=state, picky=addr, batch=10, secondary="",
                                     spare=f"127.0.0.1:{free_port()}", log=log,
                                     other=OTHER.format(other_log=tmp_path / "logs" / "other.log")))
        agent = Proc("tail", "--config", str(cfg))
        try:
            agent.wait_for("moved to the dead letters")
            wait_until(lambda: status(state)["channel"]["events"] == 0, "the rest delivered", procs=[agent])
        finally:
            assert agent.stop() == 0, agent.stderr
        return state, cfg
    finally:
        picky.kill()
        picky.wait()


def test_an_unknown_dead_letter_id_is_a_usage_error_and_a_typo_group_is_refused(tmp_path):
    state, cfg = dead_lettered_channel(tmp_path)
    for verb in ("show", "purge", "requeue"):
        r = run("channel", "dead-letters", verb, "99", "--state-dir", str(state))
        assert r.returncode == 2, (verb, r.returncode, r.stderr)
        assert "no dead letter with id 99" in r.stderr and "Traceback" not in r.stderr
    r = run("channel", "dead-letters", "export", "99", "--out", str(tmp_path / "x"), "--state-dir", str(state))
    assert r.returncode == 2 and not (tmp_path / "x").exists(), r.stderr

    r = run("channel", "dead-letters", "requeue", "--all", "--group", "mian", "--state-dir", str(state))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "no group named 'mian'" in r.stderr and "main" in r.stderr
    shown = run("status", "--state-dir", str(state)).stdout
    assert "dead letters of group main: 1 batch, 10 events (" in shown, shown
    listed = run("channel", "dead-letters", "list", "--state-dir", str(state))
    assert listed.stdout.startswith("1\tmain\t10 events"), listed.stdout  # still dead-lettered, untouched

    # A group only the config file names (added since the agent last ran) is accepted through --config.
    cfg.write_text(cfg.read_text() + '\n[groups.new]\ncollectors = ["127.0.0.1:9"]\n')
    r = run("channel", "dead-letters", "requeue", "1", "--group", "new", "--config", str(cfg))
    assert r.returncode == 0 and r.stdout.strip() == "re-queued 1 batch (10 events) for group new", r

    empty = run("channel", "dead-letters", "purge", "--all", "--state-dir", str(state))
    assert empty.returncode == 0 and empty.stdout.strip() == "purged 0 batches (0 events): they are gone"


def test_a_rate_that_is_not_a_number_is_refused_as_a_rate(tmp_path):
    cfg = tmp_path / "ship.toml"
    cfg.write_text('[delivery]\ncollectors = ["127.0.0.1:4141"]\nmax_events_per_second = nan\n'
                   '[sources.a]\npaths = ["/tmp/a.log"]\nmax_lines_per_second = 1e400\n')
    r = run("validate", str(cfg))
    assert r.returncode == 2
    assert "delivery.max_events_per_second: must be a finite number of events per second" in r.stderr, r.stderr
    assert "sources.a.max_lines_per_second: must be a finite number of lines per second" in r.stderr, r.stderr
    assert "seconds up to" not in r.stderr and "Traceback" not in r.stderr



@pytest.mark.parametrize("command", [("channel", "dead-letters", "list"), ("channel", "dead-letters", "show"),
                                     ("channel", "dead-letters", "export"), ("channel", "dead-letters", "requeue"),
                                     ("channel", "dead-letters", "purge"), ("import-flume",), ("top",),
                                     ("test-source",), ("channel", "verify")])
def test_the_help_of_the_route_and_dead_letter_commands_says_what_to_type_with_an_example(command):
    r = subprocess.run(cli_argv(*command, "--help"), capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COLUMNS": "160"})
    assert r.returncode == 0, r.stderr
    assert "Example" in r.stdout, r.stdout
    options = {m.group(1): m.group(2) for m in re.finditer(r"│ \*? *(--[a-z-]+)(?: +-\w)? +([A-Z][A-Z:|a-z_,.\[\]]*|[a-z]+\|[a-z|]+)?", r.stdout)}
    assert "TEXT" not in options.values(), options
    if "--out" in options:
        assert options["--out"] == "FILE", options  # a file to write, not a directory
    if command[-1] in ("show", "export", "requeue", "purge"):
        assert f"{command[-1]} [OPTIONS] ID..." in r.stdout or f"{command[-1]} [OPTIONS] [ID]..." in r.stdout, r.stdout


def test_once_that_dead_letters_a_batch_does_not_exit_0(tmp_path):
    """A cron run (``--once``) whose collectors rejected a batch ``max_rejects`` times set it aside:
    every other line is delivered, but the run must not report success (exit 3, naming the dead
    letters); a secondary group that takes the batch instead is a success."""
    from tests.agent.test_dead_letters import CONFIG
    from tests.ops.common import collected, start_collector

    picky, addr = start_picky(tmp_path / "picky.out")
    try:
        log, state, cfg = tmp_path / "logs" / "app.log", tmp_path / "state", tmp_path / "ship.toml"
        log.parent.mkdir()
        lines = poisoned_lines(50, 23)
        log.write_bytes(b"".join(line + b"\n" for line in lines))
        cfg.write_text(CONFIG.format(state=state, addr=addr, log=log))
        r = run("tail", "--config", str(cfg), "--once", "--deadline", "60")
        assert r.returncode == 3, (r.returncode, r.stderr)
        assert "10 events in 1 batch were dead-lettered" in r.stderr and "flume-ship channel dead-letters" in r.stderr
        assert "Traceback" not in r.stderr
        assert (tmp_path / "picky.out").read_bytes().splitlines() == lines[:20] + lines[30:]
        # The next run has nothing new: the old dead letter is no news, exit 0.
        assert run("tail", "--config", str(cfg), "--once", "--deadline", "60").returncode == 0

        spare, spare_addr = start_collector(tmp_path / "spare")
        try:
            log2, state2 = tmp_path / "logs2" / "app.log", tmp_path / "state2"
            log2.parent.mkdir()
            log2.write_bytes(b"".join(line + b"\n" for line in lines))
            (tmp_path / "logs2" / "other.log").write_bytes(b"")
            cfg.write_text(GROUPS.format(state=state2, picky=addr, batch=10, secondary='secondary = "spare"',
                                         spare=spare_addr, log=log2,
                                         other=OTHER.format(other_log=tmp_path / "logs2" / "other.log")))
            r = run("tail", "--config", str(cfg), "--once", "--deadline", "60")
            assert r.returncode == 0, (r.returncode, r.stderr)
            assert collected(tmp_path / "spare") == lines[20:30]
        finally:
            spare.stop()
    finally:
        picky.kill()
        picky.wait()


def test_validate_refuses_a_secondary_loop_and_a_secondary_that_is_never_used(tmp_path):
    """A poison batch both groups of a loop reject would go round for ever and never reach the dead
    letters; a secondary without max_rejects is never used. Both are refused with one line each."""
    cfg = tmp_path / "ship.toml"
    cfg.write_text("""
[groups.a]
collectors = ["127.0.0.1:4141"]
max_rejects = 2
secondary = "b"
[groups.b]
collectors = ["127.0.0.1:4142"]
max_rejects = 2
secondary = "a"
[groups.c]
collectors = ["127.0.0.1:4143"]
secondary = "a"
[sources.x]
paths = ["/tmp/x.log"]
groups = ["a"]
[sources.y]
paths = ["/tmp/y.log"]
groups = ["c"]
""")
    r = run("validate", str(cfg))
    assert r.returncode == 2, r
    assert "groups.a.secondary: a -> b -> a loops" in r.stderr, r.stderr
    assert "groups.c.secondary: has no effect without max_rejects" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    fixed = cfg.read_text().replace('max_rejects = 2\nsecondary = "a"', 'max_rejects = 2').replace(
        '[groups.c]\ncollectors = ["127.0.0.1:4143"]\nsecondary = "a"', '[groups.c]\ncollectors = ["127.0.0.1:4143"]')
    cfg.write_text(fixed)
    r = run("validate", str(cfg))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("columns", ["80", "200"])
def test_help_paragraphs_are_wrapped_to_the_terminal_not_to_the_source_lines(columns):
    """The docstrings are wrapped at ~100 characters in the source; on an 80-column terminal those
    line breaks used to survive inside rich's own wrapping ("... (a  / second signal / exits 130 ...")."""
    r = subprocess.run(cli_argv("tail", "--help"), capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COLUMNS": columns})
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "exits 0 (a second signal exits 130 at once; nothing unacknowledged is lost either way)" in text
    description = r.stdout.split("╭")[0].splitlines()
    words_per_line = [len(line.split()) for line in description if line.strip()]
    # No ragged short lines inside a paragraph (the last line of one may be short; examples are their own).
    short = [line for prev, line in zip([""] + description, description)
             if 0 < len(line.split()) <= 3 and "Example" not in line + prev
             and not line.strip().endswith((".", ":", ")"))]
    assert not short, (short, words_per_line)


def test_status_of_a_stopped_agent_shows_what_each_group_still_owes(tmp_path):
    """With routes, the group a dead collector kept from delivering still owes its events after the
    agent stopped: `status` (table and --json) says so per group, read from the channel."""
    from tests.ops.common import collected, start_collector

    live, live_addr = start_collector(tmp_path / "live")
    try:
        log, state, cfg = tmp_path / "logs" / "app.log", tmp_path / "state", tmp_path / "ship.toml"
        log.parent.mkdir()
        log.write_bytes(b"".join(b"line %d\n" % i for i in range(30)))
        cfg.write_text(f"""
[channel]
state_dir = "{state}"
[agent]
status_interval = 0.3
[delivery]
connect_timeout = 1.0
backoff_max = 0.2
[groups.live]
collectors = ["{live_addr}"]
[groups.dead]
collectors = ["127.0.0.1:{free_port()}"]
[sources.app]
paths = ["{log}"]
""")
        agent = Proc("tail", "--config", str(cfg))
        try:
            wait_until(lambda: len(collected(tmp_path / "live")) == 30, "the live group's delivery", procs=[agent])
        finally:
            assert agent.stop() == 0, agent.stderr
    finally:
        live.stop()
    doc = status(state)
    assert doc["agent"]["running"] is False
    groups = {g["name"]: g for g in doc["groups"] or []}
    assert groups["dead"]["queued_events"] == 30 and groups["live"]["queued_events"] == 0, doc["groups"]
    table = run("status", "--state-dir", str(state)).stdout
    row = next((ln for ln in table.splitlines() if ln.startswith("dead ")), None)
    assert row is not None and row.split()[1:2] == ["stopped"] and " 30 " in row, table


def test_import_flume_of_a_channel_no_selector_reaches_still_validates(tmp_path):
    """The user guide's multiplexing example without ``selector.default`` (or with a channel only
    ``selector.optional`` names): that channel gets nothing in Flume. The import used to make it a
    group no source reaches, and its output failed ``validate``; now the group is written commented
    out, with why."""
    from pathlib import Path

    example = Path(__file__).parent / "flume_examples" / "userguide_multiplexing.properties"
    props = tmp_path / "agent.properties"
    props.write_text("".join(ln for ln in example.read_text().splitlines(keepends=True)
                             if not ln.startswith("a1.sources.r1.selector.default")))
    out = tmp_path / "ship.toml"
    r = run("import-flume", str(props), "--out", str(out))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "# [groups.c4]" in text and "\n[groups.c4]" not in text, text
    assert "no selector sends anything to channel c4" in text, text
    v = run("validate", str(out))
    assert v.returncode == 0, v.stderr


def test_a_reload_that_only_changes_the_groups_does_not_say_the_source_changed(tmp_path):
    import signal

    log, state, cfg = tmp_path / "logs" / "app.log", tmp_path / "state", tmp_path / "ship.toml"
    log.parent.mkdir()
    log.write_bytes(b"")
    body = f"""
[channel]
state_dir = "{state}"
[groups.one]
collectors = ["127.0.0.1:{free_port()}"]
[sources.app]
paths = ["{log}"]
"""
    cfg.write_text(body)
    agent = Proc("tail", "--config", str(cfg))
    try:
        agent.wait_for("shipping")
        cfg.write_text(body + f'[groups.two]\ncollectors = ["127.0.0.1:{free_port()}"]\n')
        agent.popen.send_signal(signal.SIGHUP)
        agent.wait_for(r"reload: source app restarted for the new routes")
        agent.wait_for(r"reload: groups now one: .*; two: ")
        assert "source app changed" not in agent.stderr
    finally:
        assert agent.stop() == 0, agent.stderr


def test_top_counts_failures_in_a_row_as_status_does(tmp_path):
    """A collector that rejected a batch three times and then took everything else is `up` with 0
    failures in a row: `status` said 0, `top` said 3 under the same FAILURES heading."""
    state, _cfg = dead_lettered_channel(tmp_path)
    table = run("status", "--state-dir", str(state)).stdout
    up_status = [ln.split() for ln in table.splitlines() if ln.startswith("127.0.0.1:") and " up " in ln]
    r = run("top", "--state-dir", str(state), "--frames", "1")
    assert r.returncode == 0, r.stderr
    up_top = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("127.0.0.1:") and " up " in ln]
    assert len(up_status) == len(up_top) == 1, (table, r.stdout)
    assert up_status[0][4] == "0", table  # COLLECTOR STATE LAST SUCCESS(2 words) FAILURES
    assert up_top[0][4] == "0", r.stdout  # COLLECTOR STATE EVENTS/S LATENCY FAILURES
