"""The agent's log says what is tailed: each file at start with where reading starts, files that
appear, are truncated, deleted or closed for inactivity, and collectors going down and coming back."""

from __future__ import annotations

import signal

from shipper.errors import EXIT_OK
from tests.reliability.harness import Collector
from tests.support import Proc


def test_log_names_files_at_start_and_as_they_come_and_go(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "old.log").write_bytes(b"a\nb\nc\n")
    col = Collector(tmp_path / "out")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[delivery]\ncollectors = ["{col.addr}"]\n[sources.app]\npaths = ["{logs}/*.log"]\n'
                   'close_inactive = 1\nrescan_interval = 0.5\n')
    p = Proc("tail", "--config", str(cfg), "--state-dir", str(tmp_path / "st"))
    try:
        p.wait_for(r"shipping source app \(.*\*\.log\) to ")
        p.wait_for(r"\*\.log: 1 file matched, 6 bytes to read")
        p.wait_for(r"old\.log: reading from the start \(6 bytes\)")
        (logs / "new.log").write_bytes(b"x\n")
        p.wait_for(r"new\.log: new file \(\d+ bytes\), reading it from the start")
        p.wait_for(r"old\.log: closed after 1s without growth \(read to byte 6\)")
        (logs / "new.log").write_bytes(b"")
        p.wait_for(r"new\.log: truncated")
        (logs / "new.log").unlink()
        p.wait_for(r"new\.log: (deleted; reading it to its end|gone \(deleted or moved out of sight\))")
        col.kill()
        (logs / "old.log").write_bytes(b"a\nb\nc\nd\n")
        p.wait_for(r"collector .* failed")
        col.start()
        p.wait_for(r"collector .* recovered after \d+ failed attempts")
    finally:
        assert p.stop(signal.SIGTERM) == EXIT_OK, p.stderr
        col.stop()
    assert "Traceback" not in p.stderr


def test_restart_logs_the_offset_it_resumes_from(tmp_path):
    f = tmp_path / "a.log"
    f.write_bytes(b"one\ntwo\n")
    col = Collector(tmp_path / "out")
    try:
        args = ("tail", "--once", str(f), "--to", col.addr, "--state-dir", str(tmp_path / "st"))
        first = Proc(*args)
        assert first.popen.wait(60) == EXIT_OK
        first.stop()
        f.write_bytes(b"one\ntwo\nthree\n")
        again = Proc(*args)
        assert again.popen.wait(60) == EXIT_OK
        again.stop()
        assert "a.log: reading at byte 8 of 14" in again.stderr, again.stderr
    finally:
        col.stop()
