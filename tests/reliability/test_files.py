"""What happens to the tailed files: rotations, copytruncate, inode reuse, identical heads, rewrites,
many files, a long unterminated line, deletion before the end was read.

The shipper runs as a process against a real collector; rotations are done the way logrotate does
them (rename and create, or copy and truncate), some while the shipper runs and some while it is
dead (SIGKILL, so nothing is flushed on the way out).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

from tests.reliability.harness import (
    BATCH, IN_FLIGHT, Collector, ProxyProc, Stream, check, failed_sends, record, start_tail, wait_delivered,
)


def rotate(path, keep: int) -> None:
    """Rename rotation: app.log.(k) -> app.log.(k+1) ..., app.log -> app.log.1 (logrotate `create`)."""
    for k in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{k}")
        if older.exists():
            os.rename(older, path.with_name(f"{path.name}.{k + 1}"))
    os.rename(path, path.with_name(f"{path.name}.1"))


def test_rotations_while_stopped(tmp_path, cleanup, scale):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    s = Stream("app", log)
    col = Collector(tmp_path / "out")
    cleanup.append(col.stop)
    s.write(1000)
    tail = start_tail(str(log), col.addr, tmp_path / "state")
    wait_delivered([col], [s], [tail])
    rotations = 3 * scale
    for _ in range(3):
        s.write(500)
        tail.kill()
        # While it is dead: the rest of the old file, then N rotations, each new file written.
        for _ in range(rotations):
            s.write(300)
            rotate(log, keep=rotations + 1)
            s.new_file()
            s.write(200)
        tail = start_tail(str(log), col.addr, tmp_path / "state")
        cleanup.append(tail.kill)
        started = time.monotonic()
        t = wait_delivered([col], [s], [tail])
        if t.lost:
            break
    recover = time.monotonic() - started
    bound = 3 * IN_FLIGHT
    record(f"{rotations} rename rotations while stopped (x3)", t, bound, recover, "recover = restart to last line")
    check(t, bound)


def test_rename_rotation_with_the_rotated_name_still_matched(tmp_path, cleanup, scale):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    s = Stream("app", log)
    col = Collector(tmp_path / "out")
    cleanup.append(col.stop)
    # The glob matches app.log.1, app.log.2 ... too: identity, not the name, must decide.
    tail = start_tail(str(logs / "app.log*"), col.addr, tmp_path / "state")
    cleanup.append(tail.kill)
    rotations = 6 * scale
    for r in range(rotations):
        for _ in range(5):
            s.write(100)
            time.sleep(0.04)
        rotate(log, keep=rotations + 1)
        s.new_file()
    s.write(100)
    done = time.monotonic()
    t = wait_delivered([col], [s], [tail])
    record(f"rename rotation x{rotations}, rotated names matched by the glob", t, 0,
           time.monotonic() - done, "recover = last write to last line")
    check(t, 0)


def test_copytruncate_under_heavy_writes(tmp_path, cleanup, scale):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    s = Stream("app", log)
    col = Collector(tmp_path / "out")
    cleanup.append(col.stop)
    tail = start_tail(str(log), col.addr, tmp_path / "state")
    cleanup.append(tail.kill)
    stop = threading.Event()

    def writer():
        # One descriptor held open with O_APPEND, as a program that never reopens its log does
        # (the reason copytruncate exists): after the truncation it writes at the new end.
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            while not stop.is_set():
                with s.lock:
                    os.write(fd, s.chunk(50))
                time.sleep(0.005)
        finally:
            os.close(fd)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    windows: set[int] = set()
    rotations = 4 * scale
    try:
        for r in range(rotations):
            time.sleep(0.7)
            before = s.n  # lines numbered from here on may be in neither file ...
            for k in range(rotations, 0, -1):
                older = log.with_name(f"app.log.{k}")
                if older.exists():
                    os.rename(older, log.with_name(f"app.log.{k + 1}"))
            shutil.copyfile(log, log.with_name("app.log.1"))
            os.truncate(log, 0)
            windows.update(range(before, s.n))  # ... up to the truncation
        time.sleep(0.5)
    finally:
        stop.set()
        th.join()
    done = time.monotonic()
    t = wait_delivered([col], [s], [tail], allowed_loss={"app": windows})
    # Reading copytruncated files never ships a line twice (the tail scenario tests assert it in
    # process); what can repeat a line here is the sink re-sending a batch whose call failed (a
    # 2 s request timeout on a loaded machine): at-least-once, at most one batch per failed call.
    # A duplicate with no failed call still fails the test.
    failures = failed_sends(tmp_path / "state")
    bound = BATCH * failures
    t.logs = t.logs or "\n".join(line for line in tail.lines if "WARNING" in line or "ERROR" in line)
    record(f"copytruncate x{rotations} under ~10k lines/s", t, bound, time.monotonic() - done,
           f"{len(windows)} lines written between copy start and truncate; {failures} failed calls")
    check(t, bound)


def test_inode_reuse_with_a_different_first_line(tmp_path, cleanup, scale):
    logs = tmp_path / "logs"
    logs.mkdir()
    col = Collector(tmp_path / "out")
    cleanup.append(col.stop)
    streams = []
    reused = 0
    tail = None
    for r in range(3 * scale):
        old = Stream(f"old{r}", logs / "app.log")
        old.write(1500)
        streams.append(old)
        tail = start_tail(str(logs / "*.log"), col.addr, tmp_path / "state")
        wait_delivered([col], streams, [tail])
        ino = (logs / "app.log").stat().st_ino
        tail.kill()
        # Stopped: delete it and create files until one gets the freed inode, under another name
        # too; the new content is longer than the old offset, so only the head tells them apart.
        os.unlink(logs / "app.log")
        new = Stream(f"new{r}", logs / "app.log")
        new.write(2000)
        streams.append(new)
        reused += (logs / "app.log").stat().st_ino == ino
        os.rename(logs / "app.log", logs / f"moved{r}.log")
    tail = start_tail(str(logs / "*.log"), col.addr, tmp_path / "state")
    cleanup.append(tail.kill)
    started = time.monotonic()
    t = wait_delivered([col], streams, [tail])
    bound = 3 * scale * IN_FLIGHT
    record("inode reuse, a different first line", t, bound, time.monotonic() - started,
           f"inode reused {reused} of {3 * scale} times")
    check(t, bound)


def test_two_files_with_an_identical_first_line(tmp_path, cleanup):
    logs = tmp_path / "logs"
    logs.mkdir()
    col = Collector(tmp_path / "out")
    cleanup.append(col.stop)
    header = b"# service log v1 (identical header line)\n"
    names = ["a", "b", "c", "d"]
    streams = []
    tail = start_tail(str(logs / "*.log"), col.addr, tmp_path / "state")
    for i, n in enumerate(names):
        (logs / f"{n}.log").write_bytes(header)
        s = Stream(n, logs / f"{n}.log")
        s.write(1000)
        streams.append(s)
        if i == 1:
            tail.kill()  # the later files appear while it is down: same head, new identity
            tail = start_tail(str(logs / "*.log"), col.addr, tmp_path / "state")
    cleanup.append(tail.kill)
    done = time.monotonic()
    t = wait_delivered([col], streams, [tail])
    headers = sum(1 for b in col.bodies() if b + b"\n" == header)
    record("identical first line in 4 files", t, BATCH, time.monotonic() - done,
           f"header line arrived {headers} times for 4 files")
    check(t, BATCH)
    assert headers >= len(names), f"only {headers} of {len(names)} header lines arrived"


def test_truncate_and_rewrite_in_place(tmp_path, cleanup):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    col = Collector(tmp_path / "out")
    cleanup.append(col.stop)
    g1 = Stream("g1", log)
    g1.write(2000)
    tail = start_tail(str(log), col.addr, tmp_path / "state")
    wait_delivered([col], [g1], [tail])
    # Running: truncate and rewrite, growing past the old size at once (vector#23619).
    g2 = Stream("g2", log)
    with open(log, "wb") as f:
        f.write(g2.chunk(3000))
    wait_delivered([col], [g1, g2], [tail])
    # Stopped: the same again, while nobody watches.
    tail.kill()
    g3 = Stream("g3", log)
    with open(log, "wb") as f:
        f.write(g3.chunk(4000))
    tail = start_tail(str(log), col.addr, tmp_path / "state")
    cleanup.append(tail.kill)
    started = time.monotonic()
    t = wait_delivered([col], [g1, g2, g3], [tail])
    record("in-place truncate and rewrite (running, stopped)", t, BATCH, time.monotonic() - started,
           "recover = restart to last line")
    check(t, BATCH)


def test_many_files(tmp_path, cleanup, scale):
    logs = tmp_path / "logs"
    logs.mkdir()
    col = Collector(tmp_path / "out")
    cleanup.append(col.stop)
    nfiles = 1000 * scale
    streams = [Stream(f"f{i:05d}", logs / f"f{i:05d}.log") for i in range(nfiles)]
    for s in streams:
        s.write(10)
    tail = start_tail(str(logs / "*.log"), col.addr, tmp_path / "state")
    time.sleep(1.5)
    tail.kill()  # mid-way through the first pass over the files
    for s in streams[::2]:
        s.write(10)
    tail = start_tail(str(logs / "*.log"), col.addr, tmp_path / "state")
    cleanup.append(tail.kill)
    started = time.monotonic()
    t = wait_delivered([col], streams, [tail], timeout=240)
    record(f"{nfiles} files, SIGKILL mid first pass", t, IN_FLIGHT, time.monotonic() - started,
           "recover = restart to last line")
    check(t, IN_FLIGHT)


def test_long_line_with_no_newline_at_eof(tmp_path, cleanup):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    col = Collector(tmp_path / "out", fmt="jsonl")
    cleanup.append(col.stop)
    s = Stream("app", log)
    s.write(500)
    long = b"LONG:" + bytes(range(65, 91)) * 40_000  # ~1 MB, no newline
    with open(log, "ab") as f:
        f.write(long[:300_000])
    tail = start_tail(str(log), col.addr, tmp_path / "state", "--max-line-bytes", "128K")
    time.sleep(1.0)
    tail.kill()  # in the middle of the long line: its stored offset is at a piece boundary
    with open(log, "ab") as f:
        f.write(long[300_000:])
    tail = start_tail(str(log), col.addr, tmp_path / "state", "--max-line-bytes", "128K")
    cleanup.append(tail.kill)
    started = time.monotonic()
    # The unterminated end is shipped once the file has been idle past the partial-line timeout.
    deadline = time.monotonic() + 90
    while True:
        recs = [json.loads(l) for p in col.files() for l in p.read_bytes().splitlines() if l.strip()]
        pieces = [r for r in recs if r.get("body", "").startswith(("LONG:", "ABCDEF")) or "split" in r["headers"]]
        got = "".join(r["body"] for r in pieces)
        if len(got) >= len(long) or time.monotonic() > deadline or tail.popen.poll() is not None:
            break
        time.sleep(0.3)
    recover = time.monotonic() - started
    s.write(100)  # the next lines still come after it
    others = [r for r in recs if r["body"].startswith("app ")]
    # A piece re-sent after the kill appears twice; join the distinct pieces in arrival order.
    seen, joined = set(), []
    for r in pieces:
        key = (r["headers"].get("id"), r["headers"].get("split"), r["body"])
        if key not in seen:
            seen.add(key)
            joined.append(r["body"])
    text = "".join(joined)
    dups = len(pieces) - len(joined)
    record("1 MB line, no newline at EOF, SIGKILL inside it", None, BATCH, recover,
           f"{len(joined)} pieces of <=128K, {dups} re-sent; joined {'==' if text.encode() == long else '!='} written")
    assert text.encode() == long, f"joined pieces: {len(text)} bytes of {len(long)}"
    assert all(r["headers"].get("split") for r in pieces[:-1])
    assert len(others) >= 500


def test_file_deleted_while_unread(tmp_path, cleanup):
    logs = tmp_path / "logs"
    logs.mkdir()
    col = Collector(tmp_path / "out")
    cleanup.append(col.stop)
    proxy = ProxyProc(col.addr, mode="refuse")
    cleanup.append(proxy.close)
    s = Stream("del", logs / "app.log")
    s.write(40_000)  # ~4 MB, four times the channel's capacity
    tail = start_tail(str(logs / "*.log"), proxy.address, tmp_path / "state", "--capacity", "1M")
    cleanup.append(tail.kill)
    tail.wait_for("channel full", timeout=60)  # reading paused with most of the file unread
    os.unlink(logs / "app.log")
    time.sleep(1.0)
    proxy.set_mode("pass")
    repaired = time.monotonic()
    t = wait_delivered([col], [s], [tail])
    record("file deleted while unread (channel full)", t, 0, time.monotonic() - repaired,
           "read to its end through the open descriptor")
    check(t, 0)
