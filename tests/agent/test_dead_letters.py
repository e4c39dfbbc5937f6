"""Poison batches end to end: a collector rejects one batch for ever; it is dead-lettered after
``max_rejects``, everything else is delivered, and the batch is exported and re-queued to a
healthy collector. Real processes: the agent, a scripted rejecting collector, ``collect``."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.ops.common import collected, start_collector, status, wait_until, write_lines
from tests.support import ROOT, Proc, cli_argv

CONFIG = """
[channel]
state_dir = "{state}"

[delivery]
collectors = ["{addr}"]
batch_size = 10
linger = 0.05
connect_timeout = 1.0
request_timeout = 2.0
backoff_max = 0.2
max_penalty = 0.2
max_rejects = 3

[agent]
drain_timeout = 5
status_interval = 0.3

[sources.app]
paths = ["{log}"]
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, timeout=60)


def test_a_batch_rejected_for_ever_is_dead_lettered_exported_and_requeued(tmp_path):
    picky = subprocess.Popen([sys.executable, "-m", "tests.agent.picky_collector", str(tmp_path / "picky.out"),
                              "POISON"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        addr = picky.stdout.readline().split()[-1]
        log, state = tmp_path / "logs" / "app.log", tmp_path / "state"
        cfg = tmp_path / "ship.toml"
        cfg.write_text(CONFIG.format(state=state, addr=addr, log=log))
        write_lines(log, "a", 0, 200)
        agent = Proc("tail", "--config", str(cfg))
        try:
            agent.wait_for("shipping")
            wait_until(lambda: (tmp_path / "picky.out").exists()
                       and len((tmp_path / "picky.out").read_bytes().splitlines()) == 200, "the first lines",
                       procs=[agent])
            with open(log, "ab") as fh:
                fh.write(b"POISON pill\n")
            agent.wait_for(r"rejected a batch 3 times .*1 events moved to the dead letters")
            write_lines(log, "b", 0, 200)
            expected = [f"a {i:06d}".encode() for i in range(200)] + [f"b {i:06d}".encode() for i in range(200)]
            wait_until(lambda: (tmp_path / "picky.out").read_bytes().splitlines() == expected,
                       "everything else delivered, in order", procs=[agent])
            assert status(state)["channel"]["events"] == 0
            listed = run("channel", "dead-letters", "list", "--state-dir", str(state), "--json")
            assert listed.returncode == 0, listed.stderr
            (dead,) = [json.loads(line) for line in listed.stdout.splitlines()]
            assert dead["events"] == 1 and "FAILED" in dead["reason"]
            locked = run("channel", "dead-letters", "requeue", str(dead["id"]), "--state-dir", str(state))
            assert locked.returncode == 4 and "stop the agent first" in locked.stderr
        finally:
            assert agent.stop() == 0, agent.stderr
    finally:
        picky.kill()
        picky.wait()

    out = tmp_path / "dead.jsonl"
    exported = run("channel", "dead-letters", "export", "--all", "--format", "jsonl", "--out", str(out),
                   "--state-dir", str(state))
    assert exported.returncode == 0, exported.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["body"] == "POISON pill" and record["headers"]["file"] == str(log)
    lines = run("channel", "dead-letters", "export", "--all", "--out", "-", "--state-dir", str(state))
    assert lines.stdout == "POISON pill\n"

    requeued = run("channel", "dead-letters", "requeue", "--all", "--state-dir", str(state))
    assert requeued.returncode == 0 and "re-queued 1 batches (1 events)" in requeued.stdout, requeued.stderr
    assert run("channel", "dead-letters", "list", "--state-dir", str(state)).stdout == "no dead letters\n"
    healthy, healthy_addr = start_collector(tmp_path / "healthy")
    cfg.write_text(CONFIG.format(state=state, addr=healthy_addr, log=log))
    agent = Proc("tail", "--config", str(cfg))
    try:
        wait_until(lambda: collected(tmp_path / "healthy") == [b"POISON pill"], "the re-queued batch delivered",
                   procs=[agent, healthy])
    finally:
        assert agent.stop() == 0, agent.stderr
        healthy.stop()


def test_purge_and_export_say_what_they_need(tmp_path):
    state = tmp_path / "state"
    from shipper.channel import Channel

    Channel.open(state, min_free_bytes=0).close()
    r = run("channel", "dead-letters", "purge", "--state-dir", str(state))
    assert r.returncode == 2 and "give dead-letter IDs" in r.stderr and "Traceback" not in r.stderr
    r = run("channel", "dead-letters", "purge", "7", "--state-dir", str(state))
    assert r.returncode == 5 and "no dead letter with id 7" in r.stderr
