"""Helpers shared by the test suites: run the real CLI as a process and wait for what it prints."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (prefer --listen HOST:0 and reading the log where possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "shipper", *args]


class Proc:
    """A real ``flume-ship`` process whose stderr is collected line by line on a thread."""

    def __init__(self, *args: str, env: dict | None = None, cwd: str | None = None, preexec_fn=None):
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        self.argv = cli_argv(*args)
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            preexec_fn=preexec_fn,
        )
        self.lines: list[str] = []
        self.out: list[str] = []
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.out), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream, sink):
        for raw in iter(stream.readline, b""):
            with self._cond:
                sink.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        stream.close()

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """Wait until a stderr line matches ``pattern``; fail with the log if the process exits first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and seen == len(self.lines)):
                    raise AssertionError(
                        f"no line matching {pattern!r} (exit={self.popen.poll()}); stderr:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(min(left, 0.2))

    def stop(self, sig: int = 15, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            rc = self.popen.wait()
        for t in self._threads:
            t.join(5)
        return rc

    def kill(self) -> int:
        return self.stop(9)

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


def limit_open_files(n: int):
    """A ``preexec_fn`` that gives the child a soft and hard RLIMIT_NOFILE of ``n`` (it cannot raise it)."""
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


def mount_tmpfs(path: Path, size: str, why: str) -> None:
    """Mount a small tmpfs on ``path`` for a real ENOSPC, or skip the test saying ``why`` it needs one.

    The caller unmounts it with :func:`umount` (lazily when busy)."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip(f"{why}: mounting a {size} tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"{why}: cannot mount a tmpfs here ({r.stderr.strip()})")


def umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
