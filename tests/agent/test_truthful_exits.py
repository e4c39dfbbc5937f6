"""`tail --once` tells cron the truth, on real processes: what each exit code means (README, "Exit
codes"), deadlines that bound the whole run, stops that do not wait on a dead collector, and a busy
collector retried soon while an unreachable one waits."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from shipper.errors import EXIT_DEADLINE, EXIT_INPUT, EXIT_OK, EXIT_QUEUED, EXIT_USAGE
from tests.faultproxy import FaultProxy
from tests.reliability.harness import Collector
from tests.support import Proc, cli_argv
from tests.unprivileged import unprivileged


def once(*args: str, timeout: float = 120, preexec_fn=None) -> tuple[int, str, float]:
    """Run `tail --once ...`; returns (exit code, stderr, wall seconds)."""
    p = Proc("tail", "--once", *args, preexec_fn=preexec_fn)
    started = time.monotonic()
    rc = p.popen.wait(timeout)
    took = time.monotonic() - started
    p.stop()
    return rc, p.stderr, took


@pytest.fixture
def collector(tmp_path):
    c = Collector(tmp_path / "out")
    yield c
    c.stop()


@pytest.fixture
def blackhole(silent_server):
    """A collector that accepts connections and never answers, as HOST:PORT."""
    return str(silent_server)


def write_lines(path: Path, n: int, tag: str = "line") -> None:
    path.write_bytes(b"".join(f"{tag} {i:06d}\n".encode() for i in range(n)))


def test_once_ships_everything_exit_0(tmp_path, collector):
    write_lines(tmp_path / "a.log", 500)
    rc, err, _ = once(str(tmp_path / "a.log"), "--to", collector.addr, "--state-dir", str(tmp_path / "st"))
    assert rc == EXIT_OK, err
    assert len(collector.bodies()) == 500


@pytest.mark.parametrize("what", ["missing", "glob", "directory", "fifo", "device"])
def test_once_input_missing_or_not_a_file_exits_7(tmp_path, collector, what):
    good = tmp_path / "good.log"
    write_lines(good, 10)
    bad = {"missing": str(tmp_path / "no-such.log"), "glob": str(tmp_path / "nothing-*.log"),
           "directory": str(tmp_path), "device": "/dev/zero"}.get(what)
    if what == "fifo":
        bad = str(tmp_path / "pipe")
        os.mkfifo(bad)
    rc, err, _ = once(str(good), bad, "--to", collector.addr, "--state-dir", str(tmp_path / "st"), timeout=60)
    assert rc == EXIT_INPUT, err
    assert f"flume-ship: error: 1 input missing or unreadable (first: {bad}" in err
    assert "Traceback" not in err
    assert len(collector.bodies()) == 10  # what could be read was still shipped


def test_once_unreadable_file_exits_7_with_the_bytes_left(tmp_path, collector):
    """Run as root too: the agent then runs without root's permission bypass (tests.unprivileged)."""
    f = tmp_path / "secret.log"
    write_lines(f, 5)
    f.chmod(0)
    rc, err, _ = once(str(f), "--to", collector.addr, "--state-dir", str(tmp_path / "st"),
                      preexec_fn=unprivileged())
    assert rc == EXIT_INPUT, err
    assert "cannot read (Permission denied); 60 bytes not shipped" in err


def test_service_warns_about_a_path_that_matches_nothing_and_keeps_running(tmp_path, collector):
    p = Proc("tail", str(tmp_path / "later.log"), "--to", collector.addr, "--state-dir", str(tmp_path / "st"))
    try:
        p.wait_for(r"WARNING .*later\.log: matches no file; still looking for it")
        write_lines(tmp_path / "later.log", 3)
        p.wait_for(r"later\.log now matches a file")
    finally:
        assert p.stop(signal.SIGTERM) == EXIT_OK, p.stderr


def test_deadline_bounds_the_run_against_a_silent_collector(tmp_path, blackhole):
    write_lines(tmp_path / "a.log", 100)
    rc, err, took = once(str(tmp_path / "a.log"), "--to", blackhole, "--state-dir", str(tmp_path / "st"),
                         "--deadline", "3", "--request-timeout", "30", "--drain-timeout", "30")
    assert rc == EXIT_DEADLINE, err
    assert "--deadline of 3s passed with 100 events still queued" in err
    # Bounded by the deadline, not by the request or drain timeout (30 s each); the rest of the
    # wall time is interpreter start and exit, which vary with the machine's load.
    assert took < 30, took
    rc, err, _ = once(str(tmp_path / "a.log"), "--to", blackhole, "--state-dir", str(tmp_path / "st"),
                      "--deadline", "1")
    assert "100 events still queued" in err  # kept for the next run, not read twice


def test_sigint_during_once_with_collector_down_exits_8_and_keeps_the_events(tmp_path, blackhole, collector):
    write_lines(tmp_path / "a.log", 200)
    state = str(tmp_path / "st")
    p = Proc("tail", "--once", str(tmp_path / "a.log"), "--to", blackhole, "--state-dir", state,
             "--request-timeout", "60", "--drain-timeout", "1")
    p.wait_for("shipping .* once")
    time.sleep(1)  # let a call be on the wire, blocked on the silent collector
    assert p.stop(signal.SIGINT) == EXIT_QUEUED, p.stderr
    assert "interrupted with 200 events queued" in p.stderr
    rc, err, _ = once(str(tmp_path / "a.log"), "--to", collector.addr, "--state-dir", state)
    assert rc == EXIT_OK, err
    assert sorted(collector.bodies()) == [f"line {i:06d}".encode() for i in range(200)]


def test_stop_with_every_collector_down_is_prompt(tmp_path):
    write_lines(tmp_path / "a.log", 50)
    with socket.socket() as s:  # a port nobody listens on: refused at once, then backoff
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    p = Proc("tail", str(tmp_path / "a.log"), "--to", dead, "--state-dir", str(tmp_path / "st"),
             "--drain-timeout", "120")
    p.wait_for("collector .* failed")
    started = time.monotonic()
    rc = p.stop(signal.SIGTERM, timeout=150)
    assert rc == EXIT_OK, p.stderr
    assert "drain timeout" not in p.stderr  # nothing on the wire: no wait for the 120 s drain
    assert time.monotonic() - started < 60


def test_busy_collector_is_retried_soon_while_a_blackholed_one_waits(tmp_path, collector):
    """First collector black-holed, second answers FAILED five times then OK: all 50,000 lines,
    none twice, and the busy collector is only ever skipped for the short busy penalty (how long the
    run takes is measured by bench/bench_busy.py, not asserted here: timings are noise on this machine)."""
    hole = FaultProxy(("127.0.0.1", collector.port), "blackhole")
    busy = FaultProxy(("127.0.0.1", collector.port), "failed", failed_budget=5)
    try:
        write_lines(tmp_path / "a.log", 50_000)
        rc, err, took = once(str(tmp_path / "a.log"), "--to", f"{hole.address},{busy.address}",
                             "--state-dir", str(tmp_path / "st"), "--connect-timeout", "1",
                             "--request-timeout", "2")
        assert rc == EXIT_OK, err
        assert busy.failed_answers == 5
        bodies = collector.bodies()
        assert len(bodies) == len(set(bodies)) == 50_000
        busy_skips = [float(x) for x in re.findall(
            rf"collector {re.escape(busy.address)} (?:failed|still failing).*?\(skipped for ([0-9.]+)s\)", err)]
        assert busy_skips and max(busy_skips) <= 5, (busy_skips, err)
    finally:
        hole.close()
        busy.close()


@pytest.mark.parametrize("text,why", [
    ("[agent]\nstall_timeout = nan\n", "agent.stall_timeout: must be a finite number of seconds"),
    ("[delivery]\nrequest_timeout = inf\n", "delivery.request_timeout: must be a finite number"),
    ("[delivery]\nbatch_size = 99999999999999999999\n", "delivery.batch_size: must be at most 2147483647"),
    ("[sources.a]\npaths = \"/var/log/x.log\"\n", "sources.a.paths: must be a list of strings"),
    ("# caf\xe9\n", "not UTF-8 text: byte 0xe9"),
])
def test_validate_and_tail_refuse_values_that_would_crash_later(tmp_path, text, why):
    cfg = tmp_path / "c.toml"
    body = text.encode("latin-1")
    if b"collectors" not in body:
        body = b"[delivery]\ncollectors = [\"127.0.0.1:4141\"]\n" + body if b"[delivery]" not in body else \
            body.replace(b"[delivery]\n", b"[delivery]\ncollectors = [\"127.0.0.1:4141\"]\n")
    if b"[sources." not in body:
        body += b"[sources.a]\npaths = [\"/var/log/x.log\"]\n"
    cfg.write_bytes(body)
    for argv in (["validate", str(cfg)], ["tail", "--config", str(cfg), "--state-dir", str(tmp_path / "st")]):
        r = subprocess.run(cli_argv(*argv), capture_output=True, text=True, timeout=60)
        assert r.returncode == EXIT_USAGE, (argv, r.stderr)
        assert why in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("cmd", ["send", "ping", "tail"])
@pytest.mark.parametrize("flag,value", [("--request-timeout", "nan"), ("--connect-timeout", "inf")])
def test_non_finite_timeouts_are_refused(tmp_path, cmd, flag, value):
    args = {"send": ["send", "--to", "127.0.0.1:4141", str(tmp_path / "x")],
            "ping": ["ping", "127.0.0.1:4141"],
            "tail": ["tail", str(tmp_path / "x"), "--to", "127.0.0.1:4141", "--state-dir", str(tmp_path / "st")]}[cmd]
    r = subprocess.run(cli_argv(*args, flag, value), capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_USAGE, r.stderr
    assert flag in r.stderr and "finite" in r.stderr and "Traceback" not in r.stderr


def test_port_zero_is_not_a_collector(tmp_path):
    r = subprocess.run(cli_argv("tail", str(tmp_path / "x"), "--to", "127.0.0.1:0", "--once",
                                "--state-dir", str(tmp_path / "st")), capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_USAGE
    assert "port 0 cannot be connected to" in r.stderr


def test_sighup_with_a_broken_config_keeps_the_old_one_running(tmp_path, collector):
    logs = tmp_path / "a.log"
    write_lines(logs, 10)
    cfg = tmp_path / "c.toml"
    good = f'[delivery]\ncollectors = ["{collector.addr}"]\n[sources.app]\npaths = ["{logs}"]\n'.encode()
    cfg.write_bytes(good)
    p = Proc("tail", "--config", str(cfg), "--state-dir", str(tmp_path / "st"))
    try:
        p.wait_for("shipping source app")
        for bad, why in ((good + b"# caf\xe9\n", "not UTF-8 text"),
                         (good.replace(b"[sources.app]", b"[agent]\nstall_timeout = nan\n[sources.app]"),
                          "agent.stall_timeout: must be a finite number")):
            cfg.write_bytes(bad)
            p.popen.send_signal(signal.SIGHUP)
            p.wait_for(f"reload refused: .*{why}")
            p.wait_for("reload refused: still running the previous configuration")
            assert p.popen.poll() is None
        with open(logs, "ab") as fh:
            fh.write(b"after 000000\n")
        deadline = time.monotonic() + 30
        while b"after 000000" not in collector.bodies() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert b"after 000000" in collector.bodies()
    finally:
        assert p.stop(signal.SIGTERM) == EXIT_OK, p.stderr
    assert "Traceback" not in p.stderr
