"""`flume-ship status` against a live and a stopped agent; /metrics and /health over real HTTP.

The stall is real: a FaultProxy in ``silent`` mode accepts the connection and never answers, so
events queue and no acknowledgement comes; /health must turn 503, and 200 again once the proxy
passes traffic and the backlog is acknowledged.
"""

from __future__ import annotations

import subprocess

from prometheus_client.parser import text_string_to_metric_families

from tests.faultproxy import FaultProxy
from tests.ops.common import collected, http_get, start_collector, status, wait_until, write_lines
from tests.support import Proc, cli_argv


def metrics(url: str) -> dict[tuple[str, tuple], float]:
    code, body = http_get(url + "/metrics")
    assert code == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def start_agent(tmp_path, to: str, *extra: str) -> Proc:
    p = Proc("tail", str(tmp_path / "logs" / "*.log"), "--to", to, "--state-dir", str(tmp_path / "state"),
             "--batch-size", "100", "--linger", "0.05", "--connect-timeout", "1", "--request-timeout", "1",
             "--backoff-max", "0.5", "--max-penalty", "1", "--drain-timeout", "1", "--status-interval", "0.3",
             *extra)
    p.wait_for("shipping")
    return p


def test_status_of_a_live_agent_then_of_the_stopped_one(tmp_path):
    log = tmp_path / "logs" / "app.log"
    write_lines(log, "a", 0, 300)
    col, addr = start_collector(tmp_path / "out")
    host, port = addr.rsplit(":", 1)
    proxy = FaultProxy((host, int(port)))
    agent = start_agent(tmp_path, proxy.address)
    try:
        doc = wait_until(lambda: (d := status(tmp_path / "state"))["totals"].get("events_acked") == 300 and d,
                         "300 events acknowledged", procs=[agent])
        assert doc["agent"]["running"] and doc["agent"]["pid"] == agent.popen.pid
        (src,) = doc["sources"]
        (f,) = src["files"]
        size = log.stat().st_size
        assert (f["path"], f["offset"], f["size"], f["behind"]) == (str(log), size, size, 0)
        assert f["identity"] == f"file:{log.stat().st_dev}:{log.stat().st_ino}"
        (c,) = doc["collectors"]
        assert c["address"] == proxy.address and c["state"] == "up" and c["last_success"] is not None
        assert doc["channel"]["events"] == 0 and doc["health"]["healthy"]

        # The collector refuses: events queue, the collector is in the penalty box.
        proxy.set_mode("refuse")
        write_lines(log, "a", 300, 100)
        doc = wait_until(lambda: (d := status(tmp_path / "state"))["channel"]["events"] == 100
                         and d["collectors"][0]["consecutive_failures"] > 0 and d, "queued events and failures",
                         procs=[agent])
        c = doc["collectors"][0]
        assert c["state"] in ("down", "retrying") and c["last_error"]
        assert doc["channel"]["oldest_event_age"] is not None
        table = subprocess.run(cli_argv("status", "--state-dir", str(tmp_path / "state")), capture_output=True,
                               text=True, timeout=60).stdout
        assert str(log) in table and "agent: running" in table and "channel: 100 events" in table
        assert agent.stop() == 0
    finally:
        agent.stop()
        proxy.close()
        col.stop()

    # Stopped: figures come from the channel and the file, and bytes behind counts what was appended since.
    write_lines(log, "a", 400, 10)
    doc = status(tmp_path / "state")
    assert not doc["agent"]["running"] and doc["agent"]["source"] == "channel"
    assert doc["channel"]["events"] == 100
    (f,) = doc["sources"][0]["files"]
    appended = 10 * len(b"a 000400\n")
    assert f["size"] == log.stat().st_size and f["behind"] == appended and f["offset"] == f["size"] - appended
    assert doc["collectors"][0]["address"] == proxy.address  # the last status the agent wrote
    table = subprocess.run(cli_argv("status", "--state-dir", str(tmp_path / "state")), capture_output=True,
                           text=True, timeout=60).stdout
    assert "agent: not running" in table and f"bytes behind in total: {appended} " in table


def test_status_without_a_state_dir_exits_5(tmp_path):
    r = subprocess.run(cli_argv("status", "--state-dir", str(tmp_path / "nothing")), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 5 and "no state directory" in r.stderr and "Traceback" not in r.stderr


def test_metrics_and_health_follow_a_silent_stall_and_the_recovery(tmp_path):
    log = tmp_path / "logs" / "app.log"
    write_lines(log, "m", 0, 250)
    col, addr = start_collector(tmp_path / "out")
    host, port = addr.rsplit(":", 1)
    proxy = FaultProxy((host, int(port)))
    agent = start_agent(tmp_path, proxy.address, "--metrics-listen", "127.0.0.1:0", "--stall-timeout", "1.5")
    try:
        url = "http://" + agent.wait_for(r"metrics on http://(\S+)/metrics").group(1)
        m = wait_until(lambda: (x := metrics(url)).get(("flume_ship_events_acked_total", ())) == 250 and x,
                       "250 acknowledged in /metrics", procs=[agent])
        src = (("source", "default"),)
        col_label = (("collector", proxy.address),)
        assert m[("flume_ship_events_read_total", src)] == 250
        assert m[("flume_ship_events_put_total", src)] == 250
        assert m[("flume_ship_events_sent_total", col_label)] == 250
        assert m[("flume_ship_bytes_behind", src)] == 0
        assert m[("flume_ship_channel_events", ())] == 0
        assert m[("flume_ship_collector_up", col_label)] == 1
        assert m[("flume_ship_collector_latency_seconds_count", col_label)] >= 1
        assert m[("flume_ship_healthy", ())] == 1
        code, body = http_get(url + "/health")
        assert code == 200 and b'"healthy": true' in body

        proxy.set_mode("silent")
        proxy.drop_all()  # the open connection would go on passing traffic
        write_lines(log, "m", 250, 50)
        code, body = wait_until(lambda: (r := http_get(url + "/health"))[0] == 503 and r, "/health 503",
                                procs=[agent])
        assert b"stalled" in body and b'"queued": 50' in body
        m = metrics(url)
        assert m[("flume_ship_healthy", ())] == 0 and m[("flume_ship_channel_events", ())] == 50
        assert m[("flume_ship_channel_oldest_event_age_seconds", ())] >= 1.5
        wait_until(lambda: metrics(url)[("flume_ship_send_failures_total", col_label)] >= 1, "a failed attempt",
                   procs=[agent])
        assert metrics(url)[("flume_ship_retries_total", ())] >= 1

        proxy.set_mode("pass")
        wait_until(lambda: http_get(url + "/health")[0] == 200, "/health 200 again", procs=[agent])
        m = metrics(url)
        assert m[("flume_ship_events_acked_total", ())] == 300 and m[("flume_ship_collector_up", col_label)] == 1
        assert http_get(url + "/nope")[0] == 404
        assert agent.stop() == 0
    finally:
        agent.stop()
        proxy.close()
        col.stop()
    assert sorted(set(collected(tmp_path / "out"))) == sorted({f"m {i:06d}".encode() for i in range(300)})
