"""Routes end to end, real processes: two collector groups, one of them dead; a multiplexing rule.

Replicating with a dead group: one source sends to groups ``live`` and ``late``; the collector of
``late`` is not running at first. ``live`` must receive every line, in order, while ``late`` is
dead, and ``late`` must receive every line, in order, once its collector comes up.

Multiplexing: the value of a header the source extracts from each line (``level``) picks the
group: ERROR lines to ``alerts``, the rest to ``main`` (the default).
"""

from __future__ import annotations

import subprocess

from tests.ops.common import collected, http_get, start_collector, status, wait_until, write_lines
from tests.support import Proc, cli_argv, free_port

COMMON = """
[channel]
state_dir = "{state}"

[delivery]
batch_size = 100
linger = 0.05
connect_timeout = 1.0
request_timeout = 2.0
backoff_max = 0.5
max_penalty = 0.5

[agent]
drain_timeout = 5
status_interval = 0.3
"""


def write_config(path, state, groups: dict[str, str], source: str):
    """COMMON, one [groups.NAME] per (name, collector address), then the source table's text."""
    text = COMMON.format(state=state)
    for name, addr in groups.items():
        text += f'\n[groups.{name}]\ncollectors = ["{addr}"]\n'
    path.write_text(text + "\n" + source)
    return path


def test_a_dead_group_holds_up_nothing_and_gets_everything_once_back(tmp_path):
    log = tmp_path / "logs" / "app.log"
    live, live_addr = start_collector(tmp_path / "live")
    late_port = free_port()
    cfg = write_config(tmp_path / "ship.toml", tmp_path / "state",
                       {"live": live_addr, "late": f"127.0.0.1:{late_port}"},
                       f'[sources.app]\npaths = ["{log}"]\ngroups = ["live", "late"]\n')
    write_lines(log, "app", 0, 1500)
    agent = Proc("tail", "--config", str(cfg), "--metrics-listen", "127.0.0.1:0")
    late = None
    try:
        metrics = agent.wait_for(r"metrics on http://(\S+)/metrics").group(1)
        agent.wait_for("shipping")
        write_lines(log, "app", 1500, 1500)
        expected = [f"app {i:06d}".encode() for i in range(3000)]
        wait_until(lambda: collected(tmp_path / "live") == expected, "the live group has every line in order",
                   procs=[agent, live])
        # status.json is the agent's snapshot (every 2 s): wait for one taken after the last ack
        doc = wait_until(lambda: (d := status(tmp_path / "state")) and not any(
            g["queued_events"] for g in d["groups"] if g["name"] == "live") and d, "the live group's queue empties",
            procs=[agent])
        groups = {g["name"]: g for g in doc["groups"]}
        assert groups["live"]["queued_events"] == 0
        assert groups["late"]["queued_events"] == 3000
        code, body = http_get(f"http://{metrics}/metrics")
        assert code == 200
        assert 'flume_ship_group_queued_events{group="late"} 3000.0' in body.decode()
        assert 'flume_ship_group_queued_events{group="live"} 0.0' in body.decode()
        text = subprocess.run(cli_argv("status", "--state-dir", str(tmp_path / "state")), capture_output=True,
                              text=True, timeout=60).stdout
        assert any(line.split()[:4] == ["late", "down", "0/1", "3000"] for line in text.splitlines()), text
        late = Proc("collect", "--listen", f"127.0.0.1:{late_port}", "--out", str(tmp_path / "late"))
        late.wait_for("listening on")
        wait_until(lambda: collected(tmp_path / "late") == expected, "the late group has every line in order",
                   procs=[agent, late])
        wait_until(lambda: status(tmp_path / "state")["channel"]["events"] == 0, "the channel empties",
                   procs=[agent])
    finally:
        assert agent.stop() == 0, agent.stderr
        live.stop()
        if late is not None:
            late.stop()
    assert collected(tmp_path / "live") == expected  # nothing more after the other group came back


def test_a_header_the_source_extracts_chooses_the_group(tmp_path):
    log = tmp_path / "logs" / "app.log"
    main, main_addr = start_collector(tmp_path / "main")
    alerts, alerts_addr = start_collector(tmp_path / "alerts")
    cfg = write_config(tmp_path / "ship.toml", tmp_path / "state", {"main": main_addr, "alerts": alerts_addr}, f"""
[sources.app]
paths = ["{log}"]
extract = {{ regex = "^(?P<level>[A-Z]+) " }}
route = {{ header = "level", mapping = {{ ERROR = ["alerts"] }}, default = ["main"] }}
""")
    lines = [f"{'ERROR' if i % 7 == 0 else 'INFO'} {i:05d}" for i in range(1000)]
    log.parent.mkdir(parents=True)
    log.write_text("\n".join(lines) + "\n")
    agent = Proc("tail", "--config", str(cfg))
    try:
        errors = [line.encode() for line in lines if line.startswith("ERROR")]
        rest = [line.encode() for line in lines if not line.startswith("ERROR")]
        wait_until(lambda: collected(tmp_path / "alerts") == errors and collected(tmp_path / "main") == rest,
                   "each line in its group, in order", procs=[agent, main, alerts])
    finally:
        assert agent.stop() == 0, agent.stderr
        main.stop()
        alerts.stop()


def test_validate_says_which_route_names_no_group_and_which_group_no_source_reaches(tmp_path):
    cfg = write_config(tmp_path / "ship.toml", tmp_path / "state",
                       {"main": "127.0.0.1:4141", "spare": "127.0.0.1:4142"},
                       f'[sources.app]\npaths = ["{tmp_path}/*.log"]\ngroups = ["main", "typo"]\n')
    r = subprocess.run(cli_argv("validate", "--config", str(cfg)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "sources.app.groups" in r.stderr and "no group named 'typo'" in r.stderr
    assert "groups.spare" in r.stderr and "no source sends to this group" in r.stderr
    assert "Traceback" not in r.stderr


def test_sighup_adds_a_group_then_removes_it_with_nothing_lost(tmp_path):
    log = tmp_path / "logs" / "app.log"
    one, one_addr = start_collector(tmp_path / "one")
    two, two_addr = start_collector(tmp_path / "two")
    cfg = tmp_path / "ship.toml"
    source = f'[sources.app]\npaths = ["{log}"]\n'
    write_config(cfg, tmp_path / "state", {"one": one_addr}, source)
    write_lines(log, "app", 0, 500)
    agent = Proc("tail", "--config", str(cfg))
    try:
        first = [f"app {i:06d}".encode() for i in range(500)]
        wait_until(lambda: collected(tmp_path / "one") == first, "group one has the first lines", procs=[agent])
        write_config(cfg, tmp_path / "state", {"one": one_addr, "two": two_addr}, source)
        agent.popen.send_signal(1)
        agent.wait_for("reloaded configuration: 1 source, 2 collectors")
        write_lines(log, "app", 500, 500)
        every = [f"app {i:06d}".encode() for i in range(1000)]
        wait_until(lambda: collected(tmp_path / "one") == every and collected(tmp_path / "two") == every[500:],
                   "both groups have the lines written after the reload", procs=[agent])
        two.stop()  # group two goes dark, then is removed while it still owes lines
        write_lines(log, "app", 1000, 100)
        wait_until(lambda: len(collected(tmp_path / "one")) == 1100, "group one goes on", procs=[agent])
        write_config(cfg, tmp_path / "state", {"one": one_addr}, source)
        agent.popen.send_signal(1)
        agent.wait_for("reloaded configuration: 1 source, 1 collector")
        agent.wait_for(r"holds 100 events for group 'two', which is not configured")
        assert status(tmp_path / "state")["channel"]["events"] == 100  # kept, not dropped
    finally:
        assert agent.stop() == 0, agent.stderr
        one.stop()
