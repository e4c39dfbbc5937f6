"""The tail source in real processes: killed with SIGKILL mid-stream, run as an unprivileged user,
and driven by watchdog notifications in run()."""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.support import ROOT

from shipper.tail.rules import rules_from

from .helpers import append, bodies, drain, expected, lines, make_source, open_channel


def spawn(state, log_path, opts: dict, stderr_path, preexec=None, exe=None, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [exe or sys.executable, "-m", "tests.tail.tail_child", str(state), json.dumps(opts)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(stderr_path, "ab"), preexec_fn=preexec, env={**os.environ, **(env or {})},
    )


def wait_for_text(path, text: str, proc: subprocess.Popen, timeout: float = 60.0, count: int = 1) -> None:
    deadline = time.monotonic() + timeout  # a failure guard, not a measurement
    while time.monotonic() < deadline:
        content = Path(path).read_text(errors="replace") if Path(path).exists() else ""
        if content.count(text) >= count:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not seen (exit={proc.poll()}):\n{Path(path).read_text(errors='replace')}")


def kill_rounds(tmp_path, opts: dict, rounds: int, seed: int, writer, stop: threading.Event) -> None:
    """While ``writer`` runs, start the source in a child ``rounds`` times and SIGKILL it at a random point."""
    t = threading.Thread(target=writer)
    t.start()
    rng = random.Random(seed)
    try:
        for round_ in range(rounds):
            err = tmp_path / f"child{round_}.err"
            proc = spawn(tmp_path / "state", None, opts, err)
            wait_for_text(err, "ready", proc)
            time.sleep(rng.uniform(0.2, 0.6))  # where the kill lands; not an assertion
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    finally:
        stop.set()
        t.join()


def read_the_rest(tmp_path, log, **options):
    """What a clean --once run after the kills adds to the channel, and everything in it, in order."""
    ch = open_channel(tmp_path / "state")
    try:
        make_source(ch, log, add_event_id=True, **options).run_once()
        return drain(ch)
    finally:
        ch.close()


def test_kill_9_mid_stream_then_restart_every_line_exactly_once(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(lines("k", 0, 50_000, width=30))
    total = [50_000]
    stop = threading.Event()

    def writer():
        while not stop.is_set() and total[0] < 150_000:
            n = total[0]
            append(log, lines("k", n, n + 500, width=30))
            total[0] = n + 500
            time.sleep(0.005)

    opts = {"paths": [str(log)], "batch_max_events": 300, "add_event_id": True, "rescan_interval": 0.5}
    kill_rounds(tmp_path, opts, 3, 7, writer, stop)
    events = read_the_rest(tmp_path, log)
    assert bodies(events) == expected("k", 0, total[0], width=30)
    ids = [e.headers["id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert len({i.split(":")[0] for i in ids}) == 1  # one generation across all restarts


def _nobody():
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


@pytest.mark.skipif(os.geteuid() != 0 or _nobody() is None,
                    reason="needs root and a 'nobody' user to run the source unprivileged")
def test_permission_denied_is_logged_once_and_retried_while_the_other_files_carry_on():
    nobody = _nobody()

    def drop():
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    # The interpreter may live where 'nobody' cannot reach it (/root/.pyenv): find one it can run.
    exe, why = None, []
    for cand in dict.fromkeys([sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]):
        try:
            probe = subprocess.run([cand, "-c", "import shipper.tail, shipper.channel"], cwd=ROOT,
                                   preexec_fn=drop, capture_output=True, timeout=60)
        except OSError as exc:
            why.append(f"{cand}: {exc.strerror}")
            continue
        if probe.returncode == 0:
            exe = cand
            break
        why.append(f"{cand}: " + probe.stderr.decode(errors="replace").strip().splitlines()[-1])
    if exe is None:
        pytest.skip("no python the 'nobody' user can run imports the project: " + "; ".join(why))
    base = Path(tempfile.mkdtemp(prefix="tail-perm-", dir="/tmp"))
    try:
        os.chmod(base, 0o777)
        logs = base / "logs"
        logs.mkdir(mode=0o755)
        os.chmod(logs, 0o755)
        (logs / "ok.log").write_bytes(lines("ok", 0, 100))
        os.chmod(logs / "ok.log", 0o644)
        secret = logs / "secret.log"
        secret.write_bytes(lines("secret", 0, 50))
        os.chmod(secret, 0o600)
        err = base / "child.err"
        opts = {"paths": [str(logs / "*.log")], "rescan_interval": 0.1, "watch": False}
        proc = spawn(base / "state", None, opts, err, preexec=drop, exe=exe)
        try:
            wait_for_text(err, "cannot read", proc)
            time.sleep(0.5)  # several rescans, each retrying the open
            os.chmod(secret, 0o644)
            wait_for_text(err, "readable again", proc)
            append(logs / "ok.log", lines("ok", 100, 110))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        log_text = err.read_text()
        assert log_text.count("cannot read") == 1, log_text
        for p in [base / "state", *(base / "state").iterdir()]:  # (a state directory must be its user's)
            os.chown(p, os.geteuid(), os.getegid())
        ch = open_channel(base / "state")
        try:
            got = bodies(drain(ch))
        finally:
            ch.close()
        assert sorted(got) == sorted(expected("ok", 0, 110) + expected("secret", 0, 50)) or \
            sorted(got) == sorted(expected("ok", 0, 100) + expected("secret", 0, 50))
        assert expected("ok", 0, 100) == [b for b in got if b.startswith(b"ok")][:100]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_run_wakes_on_notifications_and_picks_up_new_files(tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    (d / "a.log").write_bytes(b"a1\n")
    ch = open_channel(tmp_path / "state")
    src = make_source(ch, d / "*.log", watch=True, rescan_interval=3600)
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(stop,))
    t.start()
    try:
        got = []

        def wait_for(n):
            deadline = time.monotonic() + 30  # failure guard only
            while len(got) < n and time.monotonic() < deadline:
                ch.wait_for_events(0.5)
                got.extend(bodies(drain(ch)))
            return got

        assert wait_for(1) == [b"a1"]
        append(d / "a.log", b"a2\n")
        assert wait_for(2) == [b"a1", b"a2"]
        (d / "b.log").write_bytes(b"b1\n")  # only a notification can find it: the rescan is an hour away
        assert wait_for(3) == [b"a1", b"a2", b"b1"]
        os.rename(d / "a.log", d / "a.log.1")
        (d / "a.log").write_bytes(b"a3\n")
        append(d / "a.log.1", b"a-late\n")
        wait_for(5)
        assert sorted(got) == sorted([b"a1", b"a2", b"b1", b"a3", b"a-late"])
    finally:
        stop.set()
        src.wakeup()
        t.join(timeout=30)
        ch.close()
    assert not t.is_alive()


def _java_event(n: int) -> bytes:
    return (b"2024-05-01 12:00:00,000 ERROR request %d failed\n" % n
            + b"java.lang.IllegalStateException: attempt %d\n" % n
            + b"".join(b"\tat com.example.Frame%d.call(Frame.java:%d)\n" % (i, i) for i in range(12))
            + b"Caused by: java.io.IOException: closed\n\t... 7 more\n")


def test_kill_9_in_the_middle_of_multiline_events_never_splits_or_repeats_one(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(_java_event(n) for n in range(200)))
    total = [200]
    stop = threading.Event()

    def writer():
        # Each event in two writes with a pause between, so kills land inside held events.
        while not stop.is_set() and total[0] < 3000:
            data = _java_event(total[0])
            cut = len(data) // 2
            append(log, data[:cut])
            time.sleep(0.002)
            append(log, data[cut:])
            total[0] += 1

    opts = {"paths": [str(log)], "batch_max_events": 50, "add_event_id": True, "rescan_interval": 0.5,
            "rules": {"multiline": {"preset": "java", "timeout": 3600}}}
    kill_rounds(tmp_path, opts, 4, 13, writer, stop)
    events = read_the_rest(tmp_path, log, rules=rules_from(multiline="java"))
    assert bodies(events) == [_java_event(n)[:-1] for n in range(total[0])]
    ids = [e.headers["id"] for e in events]
    assert len(set(ids)) == len(ids)
