"""Poison batches end to end: a collector rejects one batch for ever; it is dead-lettered after
``max_rejects``, everything else is delivered, and the batch is exported and re-queued to a
healthy collector, with the agent stopped and while it runs. A lease bigger than a batch is sent
as several calls: exactly the rejected call's events are dead-lettered, never an accepted one.
Real processes: the agent, a scripted rejecting collector, ``collect``."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.ops.common import collected, http_get, start_collector, status, wait_until, write_lines
from tests.support import ROOT, Proc, cli_argv, free_port

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
            # status.json is the agent's snapshot (every 2 s): the last ack may land after it
            wait_until(lambda: status(state)["channel"]["events"] == 0, "an empty queue in status", procs=[agent])
            listed = run("channel", "dead-letters", "list", "--state-dir", str(state), "--json")
            assert listed.returncode == 0, listed.stderr
            (dead,) = [json.loads(line) for line in listed.stdout.splitlines()]
            assert dead["events"] == 1 and "FAILED" in dead["reason"]
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
    assert requeued.returncode == 0 and "re-queued 1 batch (1 event)" in requeued.stdout, requeued.stderr
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
    assert r.returncode == 2 and "no dead letter with id 7" in r.stderr  # a bad argument, not a broken state dir


GROUPS = """
[channel]
state_dir = "{state}"

[delivery]
batch_size = 100
connect_timeout = 1.0
request_timeout = 2.0
backoff_max = 0.2
max_penalty = 0.2
busy_penalty = 0.2

[agent]
drain_timeout = 5
status_interval = 0.3

[groups.main]
collectors = ["{picky}"]
batch_size = {batch}
max_rejects = 3
{secondary}
[groups.spare]
collectors = ["{spare}"]

[sources.app]
paths = ["{log}"]
groups = ["main"]
{other}
"""

OTHER = """
[sources.other]
paths = ["{other_log}"]
groups = ["spare"]
"""


def start_picky(out):
    picky = subprocess.Popen([sys.executable, "-m", "tests.agent.picky_collector", str(out), "POISON"],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return picky, picky.stdout.readline().split()[-1]


def poisoned_lines(n: int, poison: int) -> list[bytes]:
    """n lines; the one at index ``poison`` carries the marker the picky collector rejects."""
    return [(f"POISON a {i:06d}" if i == poison else f"a {i:06d}").encode() for i in range(n)]


def lines_of(path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def queue_as_one_chunk(cfg, n: int, **fields) -> None:
    """Run the agent once with batches of 100 and group main's collector down, so the channel
    holds the n lines as one chunk; the next run's batches of 10 then lease it whole and send it
    as several calls (the case of a restart or reload that shrank the batch)."""
    cfg.write_text(GROUPS.format(picky=f"127.0.0.1:{free_port()}", batch=100, **fields))
    agent = Proc("tail", "--config", str(cfg))
    try:
        agent.wait_for("shipping")
        wait_until(lambda: status(fields["state"])["channel"]["events"] == n, "the lines queued", procs=[agent])
    finally:
        assert agent.stop() == 0, agent.stderr


def test_only_the_rejected_call_of_a_big_lease_is_dead_lettered_and_requeued_while_the_agent_runs(tmp_path):
    """95 lines in one stored chunk (queued by a run with batches of 100), then group main's
    batches of 10: the lease goes out as 10 calls and the 5th
    (lines 40-49) is rejected for ever. Exactly those 10 events are dead-lettered, the other 85
    delivered; with the agent running, a re-queue to group spare delivers them there, so every
    line arrives once; a purge while it runs deletes a later dead letter."""
    picky, picky_addr = start_picky(tmp_path / "picky.out")
    spare, spare_addr = start_collector(tmp_path / "spare")
    log, other_log, state = tmp_path / "logs" / "app.log", tmp_path / "logs" / "other.log", tmp_path / "state"
    log.parent.mkdir()
    lines = poisoned_lines(95, 42)
    log.write_bytes(b"".join(line + b"\n" for line in lines))  # one read, one put: one chunk of 95
    other_log.write_bytes(b"")
    cfg = tmp_path / "ship.toml"
    fields = dict(state=state, spare=spare_addr, log=log, secondary="", other=OTHER.format(other_log=other_log))
    queue_as_one_chunk(cfg, 95, **fields)
    cfg.write_text(GROUPS.format(picky=picky_addr, batch=10, **fields))
    agent = Proc("tail", "--config", str(cfg), "--metrics-listen", "127.0.0.1:0")
    try:
        metrics = agent.wait_for(r"metrics on http://(\S+)/metrics").group(1)
        agent.wait_for(r"rejected a batch 3 times .*; 10 events moved to the dead letters .*the other 85 of the "
                       r"batch delivered")
        accepted = lines[:40] + lines[50:]
        wait_until(lambda: lines_of(tmp_path / "picky.out") == accepted, "the 85 accepted lines, in order",
                   procs=[agent])
        listed = run("channel", "dead-letters", "list", "--state-dir", str(state), "--json")
        (dead,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert (dead["group"], dead["events"]) == ("main", 10), dead
        out = tmp_path / "dead.txt"
        exported = run("channel", "dead-letters", "export", "--all", "--out", str(out), "--state-dir", str(state))
        assert exported.returncode == 0, exported.stderr
        assert out.read_bytes().splitlines() == lines[40:50]

        # Figures: status (JSON and text) and /metrics show the group's dead letters.
        def counted():
            doc = status(state)
            return doc if any(g["dead_events"] for g in doc["groups"]) else None

        doc = wait_until(counted, "status shows the dead letters", procs=[agent])
        main = next(g for g in doc["groups"] if g["name"] == "main")
        assert (main["dead_batches"], main["dead_events"], main["events_acked"]) == (1, 10, 85)
        assert [(d["group"], d["events"]) for d in doc["dead_letters"]] == [("main", 10)]
        text = run("status", "--state-dir", str(state)).stdout
        assert "dead letters of group main: 1 batch, 10 events" in text, text
        body = http_get(f"http://{metrics}/metrics")[1].decode()
        assert 'flume_ship_dead_letter_events{group="main"} 10.0' in body
        assert 'flume_ship_group_events_acked_total{group="main"} 85.0' in body

        # While the agent runs: a re-queue to a group it does not run is refused, and changes nothing.
        bad = run("channel", "dead-letters", "requeue", "--all", "--group", "nope", "--state-dir", str(state))
        assert bad.returncode == 2 and "no group named 'nope'" in bad.stderr and "Traceback" not in bad.stderr
        assert len(run("channel", "dead-letters", "list", "--state-dir", str(state)).stdout.splitlines()) == 1
        requeued = run("channel", "dead-letters", "requeue", "--all", "--group", "spare", "--state-dir", str(state))
        assert requeued.returncode == 0, requeued.stderr
        assert "re-queued 1 batch (10 events) for group spare" in requeued.stdout
        agent.wait_for("re-queued 1 dead-lettered batches")
        wait_until(lambda: collected(tmp_path / "spare") == lines[40:50], "the re-queued batch at spare",
                   procs=[agent, spare])
        assert sorted(lines_of(tmp_path / "picky.out") + collected(tmp_path / "spare")) == sorted(lines)
        assert run("channel", "dead-letters", "list", "--state-dir", str(state)).stdout == "no dead letters\n"

        with open(log, "ab") as fh:  # a second poison line, dead-lettered alone, then purged while running
            fh.write(b"POISON again\n")
        agent.wait_for(r"1 events moved to the dead letters")
        purged = run("channel", "dead-letters", "purge", "--all", "--state-dir", str(state))
        assert purged.returncode == 0 and "purged 1 batch (1 event)" in purged.stdout, purged.stderr
        assert run("channel", "dead-letters", "list", "--state-dir", str(state)).stdout == "no dead letters\n"
        wait_until(lambda: status(state)["channel"]["events"] == 0, "the channel empties", procs=[agent])
    finally:
        assert agent.stop() == 0, agent.stderr
        picky.kill()
        picky.wait()
        spare.stop()
    assert collected(tmp_path / "spare") == lines[40:50]  # once: nothing sent twice


def test_a_secondary_group_takes_exactly_the_rejected_batch_and_nothing_is_dead_lettered(tmp_path):
    """Fluentd's <secondary>: group main gives up on the rejected call of a lease of 95 (batches of
    10) after max_rejects and hands exactly its events to group spare's collector, at the end of
    spare's queue; the rest of the lease goes to main. Nothing is dead-lettered, nothing lost."""
    picky, picky_addr = start_picky(tmp_path / "picky.out")
    spare, spare_addr = start_collector(tmp_path / "spare")
    log, state = tmp_path / "logs" / "app.log", tmp_path / "state"
    log.parent.mkdir()
    lines = poisoned_lines(95, 77)
    log.write_bytes(b"".join(line + b"\n" for line in lines))
    cfg = tmp_path / "ship.toml"
    fields = dict(state=state, spare=spare_addr, log=log, secondary='secondary = "spare"', other="")
    queue_as_one_chunk(cfg, 95, **fields)
    cfg.write_text(GROUPS.format(picky=picky_addr, batch=10, **fields))
    agent = Proc("tail", "--config", str(cfg))
    try:
        agent.wait_for(r"rejected a batch 3 times .*; 10 events moved to group spare")
        wait_until(lambda: collected(tmp_path / "spare") == lines[70:80], "the rejected batch at the secondary",
                   procs=[agent, spare])
        wait_until(lambda: lines_of(tmp_path / "picky.out") == lines[:70] + lines[80:], "the rest at main",
                   procs=[agent])
        wait_until(lambda: status(state)["channel"]["events"] == 0, "the channel empties", procs=[agent])
        assert run("channel", "dead-letters", "list", "--state-dir", str(state)).stdout == "no dead letters\n"
        doc = status(state)
        assert {g["name"]: g["secondary"] for g in doc["groups"]} == {"main": "spare", "spare": None}
    finally:
        assert agent.stop() == 0, agent.stderr
        picky.kill()
        picky.wait()
        spare.stop()
    assert sorted(lines_of(tmp_path / "picky.out") + collected(tmp_path / "spare")) == sorted(lines)


def test_a_requeue_an_agent_does_not_serve_is_withdrawn_and_says_so(tmp_path):
    """The state directory is held by a process that never serves requests (as an agent running
    --once, or an older flume-ship): requeue waits --wait seconds, takes its request back and exits
    4 naming what is still dead-lettered; purge still works beside it."""
    from shipper.channel import Channel

    state = tmp_path / "state"
    ch = Channel.open(state, min_free_bytes=0)  # holds the lock, like an agent
    try:
        ch.put([b"bad"])
        ch.dead_letter(ch.take(10, 1 << 20), "rejected")
        r = run("channel", "dead-letters", "requeue", "--all", "--wait", "0.5", "--state-dir", str(state))
        assert r.returncode == 4 and "did not take the re-queue within 0.5s" in r.stderr, r.stderr
        assert "0 of 1 batches re-queued" in r.stderr and "Traceback" not in r.stderr
        assert ch.stats().events == 0
        assert len(run("channel", "dead-letters", "list", "--state-dir", str(state)).stdout.splitlines()) == 1
        r = run("channel", "dead-letters", "purge", "--all", "--state-dir", str(state))
        assert r.returncode == 0 and "purged 1 batch (1 event)" in r.stdout, r.stderr
    finally:
        ch.close()
    assert run("channel", "dead-letters", "list", "--state-dir", str(state)).stdout == "no dead letters\n"
