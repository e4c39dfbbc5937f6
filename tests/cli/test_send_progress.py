"""`flume-ship send` shows its progress like `tail --once`: on a terminal (a real pty) a live line
of lines and bytes acknowledged, rate, in flight, how far the file is behind and the time left,
redrawn in place and left on screen at the end; off a terminal a progress log line every
--progress-interval seconds. The collector answers slowly (a delaying proxy) so the run lasts."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess

import pytest

from tests.faultproxy import FaultProxy
from tests.reliability.harness import Collector
from tests.support import Proc, cli_argv

LINES = 2000


@pytest.fixture
def slow_collector(tmp_path):
    col = Collector(tmp_path / "out")
    proxy = FaultProxy(("127.0.0.1", col.port), mode="delay", delay=0.25)
    yield col, proxy
    proxy.close()
    col.stop()


def write_file(tmp_path):
    f = tmp_path / "big.log"
    f.write_bytes(b"".join(b"line %06d\n" % i for i in range(LINES)))
    return f


def read_pty(master: int, timeout: float = 60) -> bytes:
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], timeout)
        if not r:
            return out
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the pty closes when the process ends
            return out
        if not chunk:
            return out
        out += chunk


def test_send_on_a_terminal_redraws_a_live_line_and_ends_cleanly(tmp_path, slow_collector):
    col, proxy = slow_collector
    f = write_file(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen(cli_argv("send", str(f), "--to", proxy.address, "--batch-size", "100"),
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    text = read_pty(master).decode("utf-8", "replace")
    rc = proc.wait(30)
    os.close(master)
    assert rc == 0, text
    name = re.escape(str(f))
    redraws = re.findall(rf"\r\x1b\[K{name}: sent (\d+) lines \([^)]*\), \d+ lines/s \([^)]*/s\); \d+ in flight; "
                         rf"file behind by [^;]+; (about \S+ left|no progress: time left unknown)", text)
    assert len(redraws) >= 2, text  # updated in place, about once a second
    counts = [int(n) for n, _ in redraws]
    assert counts == sorted(counts) and counts[-1] < LINES, counts
    final = re.search(rf"\r\x1b\[K{name}: sent {LINES} lines \(23\.4 KiB\), .*; 0 in flight; file behind by 0 B; "
                      rf"done\r?\n", text)
    assert final, repr(text[-400:])
    assert "sent 2000 lines to" in text.splitlines()[-1]  # the log line after it starts at column 0
    assert len(col.bodies()) == LINES


def test_send_off_a_terminal_logs_progress_every_interval(tmp_path, slow_collector):
    col, proxy = slow_collector
    f = write_file(tmp_path)
    p = Proc("send", str(f), "--to", proxy.address, "--batch-size", "100", "--progress-interval", "1")
    p.wait_for(rf"INFO .*progress: {re.escape(str(f))}: sent \d+ lines \(.*\), \d+ lines/s .*; \d+ in flight; "
               r"file behind by .*; (about \S+ left|no progress)")
    assert p.popen.wait(60) == 0, p.stderr
    p.stop()
    assert "\x1b[K" not in p.stderr  # no terminal control off a terminal
    assert len(col.bodies()) == LINES


def test_send_progress_off_by_zero_interval_and_no_terminal(tmp_path, slow_collector):
    col, proxy = slow_collector
    f = tmp_path / "small.log"
    f.write_bytes(b"a\nb\n")
    r = subprocess.run(cli_argv("send", str(f), "--to", proxy.address, "--progress-interval", "0"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "progress:" not in r.stderr and "sent 2 lines to" in r.stderr


def test_send_failing_on_a_terminal_puts_the_error_on_its_own_line(tmp_path):
    import socket

    with socket.socket() as s:  # nobody listens there
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    f = write_file(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen(cli_argv("send", str(f), "--to", dead), stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave)
    os.close(slave)
    text = read_pty(master).decode("utf-8", "replace")
    rc = proc.wait(30)
    os.close(master)
    assert rc == 3, text
    lines = text.replace("\r\n", "\n").split("\n")
    assert lines[-2].startswith("flume-ship: error: cannot connect to"), repr(text)  # at column 0, alone
    assert "sent 0 lines" in lines[-3], repr(text)  # the progress line, ended before it
