"""Event rules in the configuration file and on the command line: loading, every problem named, and
``flume-ship test-source`` printing what a source's rules make of a sample."""

from __future__ import annotations

import ipaddress
import os
import subprocess

import pytest

from shipper.agent.config import Overlay, load
from shipper.errors import ConfigFileError
from shipper.errors import EXIT_INPUT, EXIT_USAGE
from tests.support import cli_argv

RULES = r"""
[delivery]
collectors = ["127.0.0.1:4141"]

[sources.app]
paths = ["{logs}/*.log"]
exclude_lines = ["DEBUG", "healthcheck"]
file_header_key = "basename"
host_header_value = "ip"
byte_offset_header = true
uuid_header = "eventId"

[sources.app.multiline]
preset = "java"
max_lines = 200
timeout = 2

[sources.app.extract]
regex = '^(?P<time>\S+ \S+) (?P<level>[A-Z]+)'

[sources.app.event_time]
format = "%Y-%m-%d %H:%M:%S,%f"
timezone = "Europe/Berlin"
"""

SAMPLE = (b"2024-05-01 12:00:00,001 INFO a\n"
          b"2024-05-01 12:00:01,002 ERROR b\n"
          b"java.lang.IllegalStateException: x\n"
          b"\tat a.b(C.java:1)\n"
          b"2024-05-01 12:00:02,000 DEBUG z\n")


def write(tmp_path, text: str) -> str:
    path = tmp_path / "flume-ship.toml"
    path.write_text(text)
    return str(path)


def test_rules_and_header_keys_from_the_file_reach_the_tail_source(tmp_path):
    cfg = load(write(tmp_path, RULES.format(logs=tmp_path)))
    opts = cfg.sources[0].tail_options()
    r = opts.rules
    assert r.multiline.preset == "java" and r.multiline.max_lines == 200 and r.multiline.timeout == 2
    assert r.exclude.search(b"x healthcheck") and not r.exclude.search(b"INFO ok")
    assert r.extract is not None and r.event_time is not None
    assert (opts.file_key, opts.byte_offset_header, opts.uuid_header) == ("basename", True, "eventId")
    ipaddress.ip_address(opts.host)  # host_header_value = "ip"


def test_flags_set_rules_on_the_command_line():
    overlay = Overlay(paths=["/var/log/app.log"])
    overlay.set("delivery", "collectors", ["h:1"], "--to")
    overlay.set_source("multiline", "python", "--multiline")
    overlay.set_source("include_lines", ["ERROR"], "--include-lines")
    r = load(None, overlay).sources[0].tail_options().rules
    assert r.multiline.preset == "python" and r.include.search(b"an ERROR")


def test_every_bad_rule_is_reported_with_its_key(tmp_path):
    text = RULES.format(logs=tmp_path).replace('preset = "java"', 'start = "(unclosed"').replace(
        '"DEBUG", "healthcheck"', '"DEBUG", "[bad"').replace('timezone = "Europe/Berlin"', 'timezone = "Mars/Base"')
    with pytest.raises(ConfigFileError) as info:
        load(write(tmp_path, text))
    keys = sorted(p.key for p in info.value.problems)
    assert keys == ["sources.app.event_time.timezone", "sources.app.exclude_lines[1]",
                    "sources.app.multiline.start"]


def test_a_bad_rule_flag_is_blamed_on_the_flag():
    overlay = Overlay(paths=["/var/log/app.log"])
    overlay.set("delivery", "collectors", ["h:1"], "--to")
    overlay.set_source("exclude_lines", ["(x"], "--exclude-lines")
    with pytest.raises(ConfigFileError) as info:
        load(None, overlay)
    assert [(p.where, p.key) for p in info.value.problems] == [("command line", "--exclude-lines")]


def test_validate_reports_a_bad_regex_and_exits_2(tmp_path):
    path = write(tmp_path, RULES.format(logs=tmp_path).replace("(?P<level>[A-Z]+)", "(?P<level>[A-Z+)"))
    r = subprocess.run(cli_argv("validate", path), capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_USAGE
    assert f"{path}: sources.app.extract.regex: not a valid regular expression" in r.stderr
    assert "Traceback" not in r.stderr


def test_test_source_prints_events_headers_and_drops_of_a_sample(tmp_path):
    path = write(tmp_path, RULES.format(logs=tmp_path))
    r = subprocess.run(cli_argv("test-source", "app", "--config", path), input=SAMPLE, capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().splitlines()
    assert out[0].startswith("event 1 (byte 0, 1 line): basename=<stdin> byteoffset=0 eventId=")
    assert "level=INFO" in out[0] and "timestamp=1714557600001" in out[0]  # 12:00 in Berlin is 10:00 UTC
    assert out[2].startswith("event 2 (byte 31, 3 lines):") and "level=ERROR" in out[2]
    assert out[3:6] == ["  | 2024-05-01 12:00:01,002 ERROR b", "  | java.lang.IllegalStateException: x",
                        "  | \tat a.b(C.java:1)"]
    assert out[6] == "DROPPED (byte 116, 1 line) by include_lines/exclude_lines"
    assert out[-1] == "5 lines -> 2 events shipped, 1 dropped, 2 lines joined, 0 times not parsed (read time kept)"


def test_test_source_tries_a_preset_from_the_command_line_without_a_config(tmp_path):
    sample = tmp_path / "sample.log"
    sample.write_bytes(SAMPLE)
    r = subprocess.run(cli_argv("test-source", "default", str(sample), "--multiline", "java"),
                       capture_output=True, text=True, timeout=60, env={**os.environ, "FLUME_SHIP_CONFIG": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith("5 lines -> 3 events shipped, 0 dropped, 2 lines joined")


def test_test_source_with_an_unreadable_file_or_unknown_source_says_what_to_do(tmp_path):
    path = write(tmp_path, RULES.format(logs=tmp_path))
    r = subprocess.run(cli_argv("test-source", "app", str(tmp_path / "missing.log"), "--config", path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_INPUT and "cannot read" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(cli_argv("test-source", "web", "--config", path), capture_output=True, text=True,
                       timeout=60, input="")
    assert r.returncode == EXIT_USAGE
    assert "sources.web: no such source (sources in the file: app)" in r.stderr
