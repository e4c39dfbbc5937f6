"""``collect``'s output files protect what they hold, an unusable ``--out`` stops it at start, and
a full disk is one an operator can fix by moving files away."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from tests.support import Proc, cli_argv, mount_tmpfs, umount


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def start(out, *extra) -> tuple[Proc, str]:
    proc = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(out), *extra)
    return proc, proc.wait_for(r"listening on (127\.0\.0\.1:\d+)").group(1)


def send(addr: str, data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv("send", "-", "--to", addr, "--batch-size", "100"), input=data,
                          capture_output=True, timeout=60)


def test_output_directory_and_files_are_private_by_default_whatever_the_umask(tmp_path):
    out = tmp_path / "out"
    old = os.umask(0)
    try:
        proc, addr = start(out)
    finally:
        os.umask(old)
    assert send(addr, b"secret\n").returncode == 0
    assert proc.stop() == 0
    assert mode(out) == 0o750
    assert [mode(p) for p in out.glob("events-*")] == [0o640]


def test_file_mode_widens_on_request(tmp_path):
    out = tmp_path / "out"
    proc, addr = start(out, "--file-mode", "0644")
    assert send(addr, b"public\n").returncode == 0
    assert proc.stop() == 0
    assert mode(out) & 0o755 == 0o755
    assert [mode(p) for p in out.glob("events-*")] == [0o644]


@pytest.mark.parametrize("bad", ["0777", "rw", "0400"])
def test_a_bad_file_mode_is_a_usage_error(tmp_path, bad):
    cp = subprocess.run(cli_argv("collect", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "o"), "--file-mode",
                                 bad), capture_output=True, timeout=60)
    assert cp.returncode == 2 and b"--file-mode" in cp.stderr


def test_an_out_directory_that_cannot_be_written_stops_collect_at_start(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    mount_ro = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True)
    if mount_ro.returncode != 0:
        pytest.skip("needs a read-only mount (root) to make a directory unwritable even for root")
    try:
        cp = subprocess.run(cli_argv("collect", "--listen", "127.0.0.1:0", "--out", str(ro)), capture_output=True,
                            timeout=60)
    finally:
        umount(ro)
    assert cp.returncode == 2
    err = [line for line in cp.stderr.decode().splitlines() if line.strip()]
    assert len(err) == 1 and "cannot write in --out" in err[0] and "Read-only file system" in err[0], err


def test_after_a_full_disk_moving_the_files_away_lets_collect_recover(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mount_tmpfs(out, "1m", "a real ENOSPC in --out")
    aside = tmp_path / "aside"
    aside.mkdir()
    try:
        proc, addr = start(out)
        acked = []
        failed = None
        for n in range(40):  # ~40 KiB a batch: the 1 MiB filesystem fills after ~25
            data = b"".join(b"b%02d-%04d " % (n, i) + b"x" * 390 + b"\n" for i in range(100))
            cp = send(addr, data)
            if cp.returncode == 0:
                acked.append(data)
            else:
                failed = data
                assert cp.returncode == 3 and b"FAILED" in cp.stderr
                break
        assert failed is not None, "the filesystem never filled"
        proc.wait_for(r"closing .* after a failed write; the next batch starts a new file|dropped .* after a failed")
        ping = subprocess.run(cli_argv("ping", addr), capture_output=True, timeout=60)
        assert ping.returncode == 3 and b"refuses even an empty batch" in ping.stdout  # not "healthy"
        for f in out.glob("events-*"):  # the operator frees space by moving the files away
            shutil.move(str(f), aside / f.name)
        assert subprocess.run(cli_argv("ping", addr), capture_output=True, timeout=60).returncode == 0
        assert send(addr, failed).returncode == 0  # a new file, in the space really freed
        assert proc.stop() == 0
        files = sorted(aside.glob("events-*")) + sorted(out.glob("events-*"))
        assert b"".join(f.read_bytes() for f in files) == b"".join(acked) + failed
    finally:
        umount(out)
