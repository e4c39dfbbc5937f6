"""Configuration: TOML parsing, flags over the file, and errors that name the file, the key and why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shipper.agent.config import Config, Overlay, load, parse_size
from shipper.errors import ConfigFileError
from shipper.errors import EXIT_USAGE
from tests.support import cli_argv

FULL = """
[agent]
drain_timeout = 3
metrics_listen = "127.0.0.1:9464"
stall_timeout = 60

[channel]
state_dir = "{state}"
capacity = "256M"
min_free = 1048576

[delivery]
collectors = ["flume1.example:4141", "[::1]:4141"]
balance = "round_robin"
batch_size = 500
batch_bytes = "1MiB"
compress = "deflate"
tls = true
tls_ca = "/etc/ssl/ca.pem"

[sources.app]
paths = ["{logs}/app/*.log"]
headers = {{ service = "app", env = "prod" }}
from_end = true

[sources.nginx]
paths = ["{logs}/nginx/access.log", "{logs}/nginx/error.log"]
event_id = true
timestamp_header = false
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "flume-ship.toml"
    path.write_text(text)
    return str(path)


def problems(tmp_path: Path, text: str, overlay: Overlay | None = None) -> list[str]:
    with pytest.raises(ConfigFileError) as info:
        load(write(tmp_path, text), overlay)
    return [str(p) for p in info.value.problems]


def test_a_full_file_becomes_typed_settings(tmp_path):
    path = write(tmp_path, FULL.format(state=tmp_path / "state", logs=tmp_path / "logs"))
    cfg = load(path)
    assert isinstance(cfg, Config) and cfg.file == path
    assert cfg.agent.drain_timeout == 3.0 and cfg.agent.metrics_listen == "127.0.0.1:9464"
    assert cfg.channel.capacity == 256 << 20 and cfg.channel.min_free == 1 << 20
    assert cfg.delivery.collectors == ("flume1.example:4141", "[::1]:4141")
    assert cfg.delivery.batch_bytes == 1 << 20 and cfg.delivery.balance == "round_robin"
    assert [str(a) for a in cfg.addresses()] == ["flume1.example:4141", "[::1]:4141"]
    client = cfg.client_options()
    assert client.compress == "deflate" and client.tls.ca_file == "/etc/ssl/ca.pem"
    app, nginx = cfg.sources
    assert app.name == "app" and dict(app.headers) == {"service": "app", "env": "prod"} and app.from_end
    tail = nginx.tail_options()
    assert tail.add_event_id and not tail.add_timestamp and len(tail.paths) == 2
    assert cfg.state_path() == tmp_path / "state"


def test_flags_override_the_file_and_paths_replace_its_sources(tmp_path):
    path = write(tmp_path, FULL.format(state=tmp_path / "state", logs=tmp_path / "logs"))
    overlay = Overlay()
    overlay.set("delivery", "collectors", ["127.0.0.1:5000"], "--to")
    overlay.set("delivery", "batch_size", 7, "--batch-size")
    overlay.set_source("from_end", False, "--from-end")
    overlay.extra_headers = {"dc": "eu1"}
    cfg = load(path, overlay)
    assert cfg.delivery.collectors == ("127.0.0.1:5000",) and cfg.delivery.batch_size == 7
    assert cfg.delivery.compress == "deflate"  # not given on the command line: the file's value stays
    assert all(not s.from_end and dict(s.headers)["dc"] == "eu1" for s in cfg.sources)
    overlay.paths = ["/var/log/x.log"]
    cfg = load(path, overlay)
    assert [(s.name, s.paths) for s in cfg.sources] == [("default", ("/var/log/x.log",))]


def test_flags_alone_make_a_config_without_a_file():
    overlay = Overlay(paths=["/var/log/a.log"])
    overlay.set("delivery", "collectors", ["h:1"], "--to")
    cfg = load(None, overlay)
    assert cfg.sources[0].name == "default" and cfg.file is None


def test_every_problem_is_reported_with_file_key_and_why(tmp_path):
    text = """
[delivery]
collectors = ["nohost", "ok.example:70000"]
batch_size = "lots"
balance = "fastest"
linger = -1
retries = 3

[channel]
capacity = "12 parsecs"

[sources.app]
paths = []
headers = { host = "me" }

[sources.web]
from_end = "yes"

[telemetry]
x = 1
"""
    got = problems(tmp_path, text)
    f = str(tmp_path / "flume-ship.toml")
    expect = [
        f"{f}: telemetry: unknown section",
        f"{f}: delivery.batch_size: must be a whole number, not 'lots'",
        f"{f}: delivery.balance: 'fastest' is not one of failover, round_robin, random",
        f"{f}: delivery.linger: must be at least 0",
        f"{f}: delivery.retries: unknown key",
        f"{f}: channel.capacity: '12 parsecs' is not a size",
        f"{f}: sources.app.paths: must be a non-empty list of strings",
        f"{f}: sources.app.headers: header 'host' is set by the source itself",
        f"{f}: sources.web.from_end: must be true or false",
        f"{f}: sources.web.paths: required",
        f"{f}: delivery.collectors: bad address 'nohost': expected host:port",
        f"{f}: delivery.collectors: bad address 'ok.example:70000': the port must be a number from 0 to 65535",
    ]
    for e in expect:
        assert any(p.startswith(e) for p in got), f"missing {e!r} in:\n" + "\n".join(got)


def test_a_bad_flag_value_is_blamed_on_the_flag(tmp_path):
    overlay = Overlay(paths=["/x.log"])
    overlay.set("delivery", "collectors", ["h:1"], "--to")
    overlay.set("delivery", "batch_bytes", "4 potatoes", "--batch-bytes")
    got = problems(tmp_path, "", overlay)
    assert got == ["command line: --batch-bytes: '4 potatoes' is not a size (examples: 4096, 64K, 500M, 1G)"]


def test_missing_collectors_and_sources_say_how_to_fix_it(tmp_path):
    got = problems(tmp_path, "[agent]\ndrain_timeout = 1\n")
    assert any("delivery.collectors: no collector given" in p for p in got)
    assert any("sources: nothing to tail" in p for p in got)


def test_malformed_toml_names_the_file_and_line(tmp_path):
    got = problems(tmp_path, "[delivery\ncollectors = 1\n")
    assert len(got) == 1 and got[0].startswith(str(tmp_path / "flume-ship.toml") + ": not valid TOML")
    assert "line 1" in got[0]


def test_two_sources_with_the_same_glob_are_refused(tmp_path):
    text = f"""
[delivery]
collectors = ["h:1"]
[sources.a]
paths = ["{tmp_path}/logs/*.log"]
[sources.b]
paths = ["{tmp_path}/logs/*.log"]
"""
    got = problems(tmp_path, text)
    assert any(p.endswith("is also in sources.a: a file tailed by two sources is shipped twice") for p in got), got


def test_two_globs_matching_the_same_file_are_refused(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text("x\n")
    (tmp_path / "logs" / "other.txt").write_text("x\n")
    text = f"""
[delivery]
collectors = ["h:1"]
[sources.a]
paths = ["{tmp_path}/logs/*.log"]
[sources.b]
paths = ["{tmp_path}/logs/app.*"]
[sources.c]
paths = ["{tmp_path}/logs/*.txt"]
"""
    got = problems(tmp_path, text)
    assert got == [f"{tmp_path}/flume-ship.toml: sources.b.paths: {tmp_path}/logs/app.log is matched by "
                   "sources.a too: a file tailed by two sources is shipped twice; narrow one of the globs"]


@pytest.mark.parametrize("text,value", [(4096, 4096), ("64K", 65536), ("500M", 500 << 20), ("1GiB", 1 << 30),
                                        ("2MB", 2 << 20), ("1.5K", 1536)])
def test_sizes(text, value):
    assert parse_size(text) == value


def test_validate_command_prints_every_problem_and_exits_2(tmp_path):
    path = write(tmp_path, '[delivery]\ncollectors = ["x"]\nbatch_size = 0\n[sources.a]\npaths = ["/l/*.log"]\n')
    r = subprocess.run(cli_argv("validate", path), capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_USAGE
    lines = r.stderr.strip().splitlines()
    assert f"flume-ship: error: {path}: delivery.batch_size: must be at least 1" in lines
    assert f"flume-ship: error: {path}: delivery.collectors: bad address 'x': expected host:port" in lines
    assert "Traceback" not in r.stderr


def test_validate_command_summarises_a_good_file(tmp_path):
    path = write(tmp_path, FULL.format(state=tmp_path / "state", logs=tmp_path / "logs"))
    r = subprocess.run(cli_argv("validate", "--config", path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"{path}: OK" in r.stdout and "source app:" in r.stdout and "round_robin" in r.stdout


def test_tail_with_a_bad_config_exits_2_with_each_problem(tmp_path):
    path = write(tmp_path, '[delivery]\ncollectors = ["h:1"]\nsinks = 0\n[sources.a]\npaths = ["/l/*.log"]\nx = 1\n')
    r = subprocess.run(cli_argv("tail", "--config", path, "--state-dir", str(tmp_path / "s")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_USAGE
    assert f"{path}: delivery.sinks: must be at least 1" in r.stderr
    assert f"{path}: sources.a.x: unknown key" in r.stderr
