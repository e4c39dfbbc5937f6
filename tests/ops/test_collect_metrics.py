"""``collect --metrics-listen``: its counters on /metrics and a /health answer, from a real process."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request

from tests.support import Proc, cli_argv


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def value(text: str, name: str) -> float:
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))


def collect_with_metrics(tmp_path, *flags: str) -> tuple[Proc, str, str]:
    """A collect process with --metrics-listen: (process, its address, its metrics address)."""
    proc = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "out"), "--metrics-listen",
                "127.0.0.1:0", *flags)
    addr = proc.wait_for(r"listening on (127\.0\.0\.1:\d+)").group(1)
    return proc, addr, proc.wait_for(r"metrics on http://(\S+)/metrics").group(1)


def test_collect_counts_connections_calls_events_bytes_and_rejects(tmp_path):
    proc, addr, metrics = collect_with_metrics(tmp_path, "--max-body-bytes", "10")
    try:
        cp = subprocess.run(cli_argv("send", "-", "--to", addr), input=b"one\ntwo\nthree\n", capture_output=True,
                            timeout=60)
        assert cp.returncode == 0, cp.stderr
        cp = subprocess.run(cli_argv("send", "-", "--to", addr), input=b"far too long a body\n", capture_output=True,
                            timeout=60)
        assert cp.returncode == 3
        status, text = get(f"http://{metrics}/metrics")
        assert status == 200
        assert value(text, "flume_ship_collect_connections_total") == 2
        assert value(text, "flume_ship_collect_calls_total") == 1
        assert value(text, "flume_ship_collect_events_total") == 3
        assert value(text, "flume_ship_collect_bytes_total") == len(b"onetwothree")
        assert value(text, 'flume_ship_collect_rejects_total{reason="body"}') == 1
        assert value(text, "flume_ship_collect_memory_budget_bytes") == 128 * 1024 * 1024
        status, body = get(f"http://{metrics}/health")
        assert status == 200 and json.loads(body)["healthy"] is True
    finally:
        assert proc.stop() == 0


def test_max_call_events_refuses_a_larger_call_and_counts_it(tmp_path):
    proc, addr, metrics = collect_with_metrics(tmp_path, "--max-call-events", "3")
    try:
        ok = subprocess.run(cli_argv("send", "-", "--to", addr, "--batch-size", "3"), input=b"a\nb\nc\n",
                            capture_output=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        big = subprocess.run(cli_argv("send", "-", "--to", addr, "--batch-size", "4"), input=b"a\nb\nc\nd\n",
                             capture_output=True, timeout=60)
        assert big.returncode == 3 and b"more than 3 events in one call" in big.stderr
        _, text = get(f"http://{metrics}/metrics")
        assert value(text, 'flume_ship_collect_rejects_total{reason="events"}') == 1
    finally:
        assert proc.stop() == 0
