"""Progress you can see: the line's figures, a progress log line from a real agent, and a live line
on a real terminal (a pty) that updates and ends cleanly."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess

from shipper.ops.progress import Progress, Reading
from tests.reliability.harness import Collector
from tests.support import Proc, cli_argv


def test_line_says_rate_queue_lag_and_time_left():
    p = Progress(Reading(0.0, 0, 0, 0, 0, 10_000, 1, 2))
    line = p.line(Reading(10.0, 1000, 100_000, 500, 50_000, 50_000, 1, 2), eta=True)
    assert line == ("shipped 1000 events (97.7 KiB with headers), 100 events/s (9.8 KiB/s); queued 500 events "
                    "(48.8 KiB); files behind by 48.8 KiB; collectors up 1/2; about 10s left")
    assert p.line(Reading(20.0, 1000, 100_000, 500, 50_000, 50_000, 0, 2), eta=True).endswith(
        "no progress: time left unknown")
    assert p.line(Reading(30.0, 1500, 150_000, 0, 0, 0, 2, 2), eta=True).endswith("; done")
    assert "left" not in p.line(Reading(40.0, 1500, 150_000, 0, 0, 0, 2, 2), eta=False)


def test_line_counts_one_event_in_the_singular():
    p = Progress(Reading(0.0, 0, 0, 0, 0, 0, 1, 1))
    line = p.line(Reading(1.0, 1, 100, 1, 100, 0, 1, 1), eta=False)
    assert line.startswith("shipped 1 event (100 B with headers), 1 events/s (100 B/s); queued 1 event (100 B)"), line


def test_service_logs_progress_while_all_is_well(tmp_path):
    f = tmp_path / "a.log"
    f.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    col = Collector(tmp_path / "out")
    p = Proc("tail", str(f), "--to", col.addr, "--state-dir", str(tmp_path / "st"), "--progress-interval", "1")
    try:
        p.wait_for(r"progress: shipped 100 events \(.* with headers\), \d+ events/s .*; queued 0 events "
                   r"\(0 B\); files behind by 0 B; collectors up 1/1")
    finally:
        p.stop(signal.SIGTERM)
        col.stop()


def test_once_on_a_terminal_redraws_a_progress_line_and_ends_cleanly(tmp_path):
    f = tmp_path / "a.log"
    f.write_bytes(b"".join(b"line %06d\n" % i for i in range(2000)))
    with __import__("socket").socket() as s:  # nobody listens: the line shows the backlog for a while
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    master, slave = pty.openpty()
    proc = subprocess.Popen(cli_argv("tail", "--once", str(f), "--to", dead, "--state-dir", str(tmp_path / "st"),
                                     "--deadline", "4"), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], 30)
        if not r:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the pty closes when the process ends
            break
        if not chunk:
            break
        out += chunk
    rc = proc.wait(30)
    os.close(master)
    text = out.decode("utf-8", "replace")
    redraws = re.findall(r"\r\x1b\[Kshipped 0 events .*?files behind by [^;]+; collectors up 0/1; "
                         r"(no progress: time left unknown)", text)
    assert rc == 6, text
    assert len(redraws) >= 2, text  # updated in place, about once a second
    # Ends cleanly: the line is cleared before the final log lines, which start at column 0.
    last = text.rstrip().splitlines()[-1]
    assert "shipped 0 events (0 bytes, headers included) in 0 batches" in last, repr(last)
    assert re.search(r"\r\x1b\[K(\r\x1b\[K)?\d{4}-\d\d-\d\dT.*ERROR.*--deadline of 4s passed", text), text
