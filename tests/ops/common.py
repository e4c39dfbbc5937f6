"""Helpers for the operations tests: collectors, agents with a config file, status and HTTP probes."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support import Proc, cli_argv


def write_lines(path: Path, tag: str, start: int, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(b"".join(f"{tag} {i:06d}\n".encode() for i in range(start, start + count)))


def collected(*outdirs: Path) -> list[bytes]:
    lines: list[bytes] = []
    for outdir in outdirs:
        for p in sorted(outdir.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                lines.extend(p.read_bytes().splitlines())
    return lines


def wait_until(check, what: str, timeout: float = 60.0, procs=(), interval: float = 0.1):
    """Poll ``check()`` until it returns something truthy; fail with the processes' logs otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for p in procs:
            if p.popen.poll() is not None:
                raise AssertionError(f"{p.argv} exited {p.popen.returncode} while waiting for {what}:\n{p.stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(f"--- {p.argv}\n{p.stderr}" for p in procs))
        time.sleep(interval)


def start_collector(out: Path) -> tuple[Proc, str]:
    p = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(out))
    return p, p.wait_for(r"listening on (\S+)").group(1)


def status(state_dir: Path) -> dict:
    r = subprocess.run(cli_argv("status", "--state-dir", str(state_dir), "--json"), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def toml_config(path: Path, *, state_dir: Path, collectors: list[str], sources: dict[str, list[str]],
                extra: str = "", delivery: str = "") -> Path:
    """Write a config file: fast timeouts so faults show up quickly."""
    lines = [
        "[channel]", f'state_dir = "{state_dir}"', "",
        "[delivery]", f"collectors = {json.dumps(collectors)}",
        "batch_size = 100", "linger = 0.05", "connect_timeout = 1.0", "request_timeout = 2.0",
        "backoff_max = 1.0", "max_penalty = 1.0", delivery, "",
        "[agent]", "drain_timeout = 5", "status_interval = 0.3", extra, "",
    ]
    for name, paths in sources.items():
        lines += [f"[sources.{name}]", f"paths = {json.dumps(paths)}", f'headers = {{ src = "{name}" }}', ""]
    path.write_text("\n".join(lines))
    return path
