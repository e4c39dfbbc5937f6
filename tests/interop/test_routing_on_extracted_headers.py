"""flume-ship's event rules against a real Flume collector: routing on an extracted header, event time.

``flume-ship tail --once`` cuts a Java log into multiline events, extracts ``level`` and the event's
own time, and ships to a Flume AvroSource whose **multiplexing channel selector** routes on
``level``: ERROR events to one ``file_roll`` sink, everything else to another. The sinks write with
Flume's ``header_and_text`` serializer, so each record shows the headers Flume saw: the
``timestamp`` Flume's HDFS path escapes (``%Y%m%d``) would use must be the event's own time (a day
in 2021), not the time it was read.
"""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timezone

import pytest

from tests.interop import flume
from tests.support import cli_argv, free_port

pytestmark = pytest.mark.interop

LOG = (
    "2021-03-04 05:06:07,100 INFO  service started\n"
    "2021-03-04 05:06:08,200 ERROR request 1 failed\n"
    "java.lang.IllegalStateException: pool exhausted\n"
    "\tat com.example.Pool.take(Pool.java:42)\n"
    "Caused by: java.net.SocketTimeoutException: Read timed out\n"
    "\t... 12 more\n"
    "2021-03-05 23:59:59,999 WARN  slow request\n"
    "2021-03-06 00:00:00,001 ERROR request 2 failed\n"
    "java.lang.NullPointerException\n"
    "\tat com.example.Handler.run(Handler.java:7)\n"
    "2021-03-06 00:00:01,000 DEBUG noise\n"
)

CONFIG = """
[delivery]
collectors = ["127.0.0.1:{port}"]

[sources.app]
paths = ["{log}"]
multiline = "java"
exclude_lines = ["DEBUG"]
extract = {{ regex = '^(?P<time>\\S+ \\S+) (?P<level>[A-Z]+)' }}
event_time = {{ format = "%Y-%m-%d %H:%M:%S,%f", timezone = "UTC" }}
"""


def records(data: bytes) -> list[tuple[dict[str, str], str]]:
    """header_and_text output: ``{k=v, ...} body`` per event; a body's own lines never start with '{'."""
    out = []
    for chunk in re.split(r"\n(?=\{)", data.decode().rstrip("\n")):
        m = re.match(r"\{(.*?)\} (.*)", chunk, re.S)
        assert m, chunk
        headers = dict(kv.split("=", 1) for kv in m.group(1).split(", ")) if m.group(1) else {}
        out.append((headers, m.group(2)))
    return out


def ms(stamp: str) -> str:
    dt = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=timezone.utc)
    return str(int(dt.timestamp() * 1000))


@pytest.mark.parametrize("version", flume.VERSIONS)
def test_multiplexing_selector_routes_on_an_extracted_header_and_sees_the_events_own_time(
        version, flume_classpath, start_agent, tmp_path):
    port = free_port()
    err_dir, other_dir = tmp_path / "errors", tmp_path / "other"
    err_dir.mkdir()
    other_dir.mkdir()
    props = {
        "sources.r1.type": "avro", "sources.r1.bind": "127.0.0.1", "sources.r1.port": port,
        "sources.r1.channels": "c_err c_other",
        "sources.r1.selector.type": "multiplexing",
        "sources.r1.selector.header": "level",
        "sources.r1.selector.mapping.ERROR": "c_err",
        "sources.r1.selector.default": "c_other",
        "channels.c_err.type": "memory", "channels.c_other.type": "memory",
        "sinks.k_err.type": "file_roll", "sinks.k_err.channel": "c_err",
        "sinks.k_err.sink.directory": err_dir, "sinks.k_err.sink.rollInterval": 0,
        "sinks.k_err.sink.serializer": "header_and_text",
        "sinks.k_other.type": "file_roll", "sinks.k_other.channel": "c_other",
        "sinks.k_other.sink.directory": other_dir, "sinks.k_other.sink.rollInterval": 0,
        "sinks.k_other.sink.serializer": "header_and_text",
    }
    agent = start_agent(version, props)
    agent.wait_listening(port)

    log = tmp_path / "app.log"
    log.write_text(LOG)
    conf = tmp_path / "flume-ship.toml"
    conf.write_text(CONFIG.format(port=port, log=log))
    tail = subprocess.run(cli_argv("tail", "--config", str(conf), "--state-dir", str(tmp_path / "state"), "--once",
                                   "--min-free", "1K"), capture_output=True, text=True, timeout=180)
    assert tail.returncode == 0, tail.stderr

    errors = records(flume.wait_for_bytes(err_dir, 300, who=agent))
    other = records(flume.wait_for_bytes(other_dir, 100, who=agent))
    assert [body.split("\n")[0] for _, body in errors] == [
        "2021-03-04 05:06:08,200 ERROR request 1 failed", "2021-03-06 00:00:00,001 ERROR request 2 failed"]
    assert errors[0][1].endswith("Caused by: java.net.SocketTimeoutException: Read timed out\n\t... 12 more")
    assert errors[1][1].count("\n") == 2
    assert [body for _, body in other] == ["2021-03-04 05:06:07,100 INFO  service started",
                                           "2021-03-05 23:59:59,999 WARN  slow request"]
    for headers, body in errors + other:
        stamp = body[:23]
        assert headers["timestamp"] == ms(stamp)  # what %Y%m%d in an HDFS path would be cut by
        assert headers["time"] == stamp and headers["file"] == str(log)
    # The day Flume's escapes would file each event under: the event's own day, across midnight.
    days = [datetime.fromtimestamp(int(h["timestamp"]) / 1000, timezone.utc).strftime("%Y%m%d")
            for h, _ in errors + other]
    assert days == ["20210304", "20210306", "20210304", "20210305"]
