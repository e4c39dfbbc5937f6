"""More files than descriptors: every line exactly once, in order per file, with a real low RLIMIT_NOFILE.

The reproduction of the bug this guards against: 3,000 files under a soft limit of 1,024. Opening
failed with EMFILE, discovery's directory listing failed with it too and was taken for "these files
are gone", their offsets were forgotten, and the next scan read them again from 0 (lines shipped up
to four times), while files that never got a descriptor were never read. The agent now keeps a
budget of open tailed files below the limit and serves the rest in turns.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support import Proc, cli_argv, limit_open_files

from .helpers import drain, make_source, open_channel, open_fds_to

FILES = 3000
LINES = 20


def write_files(logs: Path, count: int, lines: int) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    for f in range(count):
        with open(logs / f"app-{f:05d}.log", "wb") as fh:
            fh.write(b"".join(f"f{f:05d} n{n:06d} {'x' * 50}\n".encode() for n in range(lines)))


def append_lines(path: Path, f: int, start: int, count: int) -> None:
    with open(path, "ab") as fh:
        fh.write(b"".join(f"f{f:05d} n{n:06d} {'x' * 50}\n".encode() for n in range(start, start + count)))


def collected(out: Path) -> list[bytes]:
    got: list[bytes] = []
    for p in sorted(out.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            got.extend(p.read_bytes().splitlines())
    return got


def check_exactly_once(got: list[bytes], written: dict[int, int]) -> None:
    """Every written line once, and per file in the order written."""
    per_file: dict[int, list[int]] = defaultdict(list)
    for line in got:
        f, n = line.split(b" ", 2)[:2]
        per_file[int(f[1:])].append(int(n[1:]))
    missing = [f for f, n in written.items() if len(per_file.get(f, ())) < n]
    dups = sum(len(v) - len(set(v)) for v in per_file.values())
    assert not dups, f"{dups} lines shipped more than once"
    assert not missing, f"{len(missing)} files short of lines, e.g. file {missing[0]}: " \
                        f"{len(per_file.get(missing[0], ()))} of {written[missing[0]]}"
    for f, n in written.items():
        assert per_file[f] == list(range(n)), f"file {f}: lines out of order"
    assert sum(len(v) for v in per_file.values()) == sum(written.values())


def start_collect(tmp_path: Path) -> tuple[Proc, str, Path]:
    out = tmp_path / "out"
    p = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(out))
    return p, p.wait_for(r"listening on (\S+)").group(1), out


@pytest.mark.parametrize("limit", [256, 1024])
def test_once_with_more_files_than_descriptors_ships_every_line_once(tmp_path, limit):
    write_files(tmp_path / "logs", FILES, LINES)
    collect, addr, out = start_collect(tmp_path)
    try:
        tail = Proc("tail", str(tmp_path / "logs" / "*.log"), "--to", addr, "--once",
                    "--state-dir", str(tmp_path / "state"), preexec_fn=limit_open_files(limit))
        rc = tail.popen.wait(300)
        tail.stop()
        assert rc == 0, tail.stderr
        assert "Too many open files" not in tail.stderr, tail.stderr
        check_exactly_once(collected(out), {f: LINES for f in range(FILES)})
        assert "at most" in tail.stderr and "open files" in tail.stderr  # the start gives the budget
    finally:
        collect.stop()


def wait_for_lines(out: Path, total: int, procs, timeout: float = 240.0) -> list[bytes]:
    deadline = time.monotonic() + timeout  # a failure guard, not a measurement
    while True:
        got = collected(out)
        if len(got) >= total:
            return got
        for p in procs:
            assert p.popen.poll() is None, f"{p.argv} exited {p.popen.returncode}:\n{p.stderr}"
        assert time.monotonic() < deadline, f"{len(got)} of {total} lines arrived:\n{procs[0].stderr[-3000:]}"
        time.sleep(0.5)


@pytest.mark.parametrize("limit", [256, 1024])
def test_service_with_more_files_than_descriptors_writers_and_rotations(tmp_path, limit):
    logs = tmp_path / "logs"
    write_files(logs, FILES, LINES)
    written = {f: LINES for f in range(FILES)}
    collect, addr, out = start_collect(tmp_path)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[agent]\nmetrics_listen = "127.0.0.1:0"\nstatus_interval = 0.5\n'
                   f'[channel]\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[delivery]\ncollectors = ["{addr}"]\nlinger = 0.05\n'
                   f'[sources.app]\npaths = ["{logs}/*.log"]\nrescan_interval = 1.0\nrotate_wait = 1.0\n')
    tail = Proc("tail", "--config", str(cfg), preexec_fn=limit_open_files(limit))
    try:
        metrics = tail.wait_for(r"metrics on http://(\S+)/metrics").group(1)
        wait_for_lines(out, sum(written.values()), [tail, collect])
        # The budget and the open files are visible to operators.
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        budget = int(float(re.search(r"^flume_ship_open_files_budget (\S+)", text, re.M).group(1)))
        assert 0 < budget < limit
        assert re.search(r'^flume_ship_open_files\{source="app"\} ', text, re.M)
        assert re.search(r'^flume_ship_files_waiting\{source="app"\} ', text, re.M)
        time.sleep(1.0)  # a fresh status.json
        shown = subprocess.run(cli_argv("status", "--state-dir", str(tmp_path / "state")),
                               capture_output=True, text=True, timeout=60)
        assert f"of {budget}" in shown.stdout and "more files not listed" in shown.stdout, shown.stdout
        growing = list(range(0, FILES, 10))  # 300 files written to while the agent runs
        rotated = growing[:6]
        for round_ in range(5):
            for f in growing:
                append_lines(logs / f"app-{f:05d}.log", f, written[f], 5)
                written[f] += 5
            if round_ == 2:
                for f in rotated:  # rename rotation: the old file keeps its last lines, a new one starts
                    path = logs / f"app-{f:05d}.log"
                    os.rename(path, logs / f"app-{f:05d}.log.1")
                    append_lines(path, f, written[f], 5)
                    written[f] += 5
            time.sleep(0.5)
        got = wait_for_lines(out, sum(written.values()), [tail, collect])
        time.sleep(4)  # several rescans: the re-reads of the bug came with them
        got = collected(out)
        check_exactly_once(got, written)
        assert "Too many open files" not in tail.stderr, tail.stderr[-3000:]
    finally:
        assert tail.stop() == 0, tail.stderr[-3000:]
        collect.stop()


def test_budget_bounds_open_files_and_every_file_advances(tmp_path):
    logs = tmp_path / "logs"
    write_files(logs, 200, 5)
    ch = open_channel(tmp_path / "state")
    try:
        src = make_source(ch, logs / "*.log", max_open_files=16)
        peak = 0
        for _ in range(200):
            n = src.poll()
            peak = max(peak, sum(open_fds_to(p) for p in logs.iterdir()))
            if n == 0 and not src._hot and not src._waiting:
                break
        assert peak <= 16
        got = drain(ch)
        assert len(got) == 200 * 5
        assert len({e.body for e in got}) == 200 * 5
        # Growth after the first pass reaches files whichever of them still hold a descriptor.
        for f in range(0, 200, 7):
            append_lines(logs / f"app-{f:05d}.log", f, 5, 3)
        for _ in range(200):
            if src.poll() == 0 and not src._hot and not src._waiting:
                break
        more = drain(ch)
        assert sorted(e.body for e in more) == sorted(
            f"f{f:05d} n{n:06d} {'x' * 50}".encode() for f in range(0, 200, 7) for n in range(5, 8))
        st = src.descriptor_status()
        assert st.budget == 16 and st.open <= 16
    finally:
        src.close()
        ch.close()


def test_kill_9_with_more_files_than_descriptors_then_restart(tmp_path):
    """SIGKILL while files are being read in turns: the restart resumes every file at its offset."""
    logs = tmp_path / "logs"
    write_files(logs, FILES, LINES)
    collect, addr, out = start_collect(tmp_path)
    argv = ("tail", str(logs / "*.log"), "--to", addr, "--state-dir", str(tmp_path / "state"),
            "--batch-size", "200", "--linger", "0.05")
    try:
        first = Proc(*argv, preexec_fn=limit_open_files(256))
        deadline = time.monotonic() + 120  # a failure guard, not a measurement
        while len(collected(out)) < FILES * LINES // 3:
            assert first.popen.poll() is None and time.monotonic() < deadline, first.stderr[-3000:]
            time.sleep(0.05)
        first.kill()
        second = Proc(*argv, "--once", preexec_fn=limit_open_files(256))
        assert second.popen.wait(300) == 0, second.stderr[-3000:]
        second.stop()
        got = collected(out)
        # Duplicates: only the batches in flight at the kill (sent, not yet acknowledged): into
        # `collect` (ordered pipelining) at most in_flight + 1 = 3 leases (docs/channel.md).
        per_line = defaultdict(int)
        for line in got:
            per_line[line] += 1
        dups = sum(n - 1 for n in per_line.values())
        assert dups <= (2 + 1) * 200, f"{dups} duplicates"
        check_exactly_once(list(per_line), {f: LINES for f in range(FILES)})
    finally:
        collect.stop()


def test_status_summary_lists_the_files_behind_and_counts_the_rest(tmp_path):
    logs = tmp_path / "logs"
    write_files(logs, 300, 2)
    ch = open_channel(tmp_path / "state")
    try:
        src = make_source(ch, logs / "*.log", max_open_files=16)
        for _ in range(100):
            if src.poll() == 0 and not src._hot and not src._waiting:
                break
        first = src.summary(20)
        assert first.total == 300 and first.bytes_behind == 0 and len(first.rows) == 20
        assert sum(first.by_state.values()) == 300
        assert src.summary(20) is first  # nothing changed: the last summary is reused
        append_lines(logs / "app-00123.log", 123, 2, 3)
        assert src.poll() == 3
        after = src.summary(20)
        assert after is not first and after.bytes_behind == 0
        grown = [r for r in after.rows if r.path.endswith("app-00123.log")]  # the most recently grown
        assert grown and grown[0].offset == grown[0].size > 0
    finally:
        src.close()
        ch.close()
