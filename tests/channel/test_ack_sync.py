"""Acks synced once a second: which commits wait for their fdatasync, counted for real.

A child process runs a real channel on a real SQLite file with an LD_PRELOAD shim that logs every
fsync/fdatasync the process makes (SQLite's and ours) with the path of the file, between markers
the child writes before each step (tests/channel/ack_sync_child.py). So these tests fail if a put
ever commits without syncing the WAL, if ``ack_sync_interval = 0`` lets an ack commit unsynced, if
the timer never syncs a drain's last acks, or if a clean stop leaves an ack unsynced.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from shipper.channel import Channel
from tests.shims import compile_shim
from tests.support import ROOT

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void note(const char *what, int fd) {
    const char *log = getenv("ACK_SYNC_LOG");
    char link[64], path[4096], line[4200];
    if (!log) return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    path[n < 0 ? 0 : n] = 0;
    int len = snprintf(line, sizeof line, "%s %s\n", what, path);
    int out = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (out >= 0) { if (write(out, line, len) < 0) {} close(out); }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    note("fsync", fd);
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    note("fdatasync", fd);
    return real(fd);
}
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    return compile_shim(tmp_path_factory.mktemp("shim"), "shim", SHIM)


def run(shim, tmp_path, interval: float, script: str) -> list[tuple[str, list[str]]]:
    """Run the child; the synced files (their names) after each step's mark, in step order."""
    log = tmp_path / "sync.log"
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(shim), "ACK_SYNC_LOG": str(log)}
    out = subprocess.run([sys.executable, "-m", "tests.channel.ack_sync_child", str(tmp_path / "state"),
                          str(interval), str(log), script], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert out.returncode == 0 and out.stdout.endswith(b"done\n"), out.stderr.decode()
    steps: list[tuple[str, list[str]]] = []
    for line in log.read_text().splitlines():
        what, _, rest = line.partition(" ")
        if what == "mark":
            steps.append((rest.split()[0], []))
        elif steps:
            steps[-1][1].append(rest.rsplit("/", 1)[-1])
    return steps


def wal_synced(files: list[str]) -> bool:
    return any(f.endswith("-wal") for f in files)


def test_with_interval_zero_every_ack_and_every_put_syncs_the_wal(shim, tmp_path):
    steps = run(shim, tmp_path, 0, "put,put,put,ack,ack,put,ack,close")
    for step, files in steps:
        if step in ("put", "ack"):
            assert wal_synced(files), (step, steps)


def test_by_default_acks_commit_unsynced_but_every_put_still_syncs(shim, tmp_path):
    steps = run(shim, tmp_path, 60, "put,put,put,ack,ack,put,ack,ack,close")
    for step, files in steps:
        if step == "put":
            assert wal_synced(files), ("a put must sync its WAL frames before it returns", steps)
        elif step == "ack":
            assert not wal_synced(files), ("an ack waited for its fdatasync", steps)


def test_a_clean_stop_syncs_the_acks_committed_since_the_last_put(shim, tmp_path):
    steps = run(shim, tmp_path, 60, "put,put,ack,ack,close")
    assert [s for s, _ in steps][-1] == "close"
    assert wal_synced(steps[-1][1]), steps


def test_a_drain_without_puts_has_its_acks_synced_by_the_timer(shim, tmp_path):
    steps = run(shim, tmp_path, 0.2, "put,put,put,ack,ack,wait,ack,wait")
    assert not wal_synced(steps[3][1]) and not wal_synced(steps[4][1])  # the acks themselves
    assert wal_synced(steps[5][1]) and wal_synced(steps[7][1]), steps   # then the timer's fdatasync


def test_sigkill_right_after_unsynced_acks_repeats_nothing(tmp_path):
    state, log = tmp_path / "state", tmp_path / "log"
    child = subprocess.Popen([sys.executable, "-m", "tests.channel.ack_sync_child", str(state), "60", str(log),
                              "put,put,put,ack,ack,kill"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = child.stdout.readline()
        assert line == b"acked\n", child.stderr.read().decode()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    with Channel.open(state, min_free_bytes=0) as ch:
        lease = ch.take(100, 1 << 20)
        assert lease is not None and lease.events == [b"event %d" % i for i in range(20, 30)]
        assert ch.take(100, 1 << 20) is None
        assert ch.offsets() == {"file": b"30"}
