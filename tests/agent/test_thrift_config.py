"""Thrift collectors in the config file: a mixed group parses to typed addresses; a bad URL is one
clear line naming the file, the key and what to write instead."""

from __future__ import annotations

import subprocess

from shipper.agent.config import load
from shipper.errors import EXIT_USAGE
from shipper.transport import Address
from tests.support import cli_argv

MIXED = """
[delivery]
collectors = ["flume1.example:4141", "thrift://flume2.example:4353", "thrift://[::1]:4353?protocol=binary", "avro://flume3.example:4141"]
balance = "round_robin"

[sources.app]
paths = ["/var/log/app/*.log"]
"""


def test_a_mixed_group_in_the_config_file(tmp_path):
    path = tmp_path / "flume-ship.toml"
    path.write_text(MIXED)
    cfg = load(str(path))
    assert cfg.addresses() == [
        Address("flume1.example", 4141),
        Address("flume2.example", 4353, "thrift", "compact"),
        Address("::1", 4353, "thrift", "binary"),
        Address("flume3.example", 4141),
    ]
    r = subprocess.run(cli_argv("validate", "--config", str(path)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "thrift://flume2.example:4353" in r.stdout


def test_a_bad_collector_url_is_one_line_naming_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[delivery]\ncollectors = ["thrift://h:1?protocol=json", "http://h:2"]\n'
                    '[sources.a]\npaths = ["/l/*.log"]\n')
    r = subprocess.run(cli_argv("validate", str(path)), capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_USAGE
    lines = r.stderr.strip().splitlines()
    assert any(f"{path}: delivery.collectors: bad collector 'thrift://h:1?protocol=json'" in l
               and "?protocol=compact or ?protocol=binary" in l for l in lines), lines
    assert any("unknown scheme http://, use avro:// or thrift://" in l for l in lines), lines
    assert "Traceback" not in r.stderr


def test_collect_refuses_compression_with_thrift(tmp_path):
    r = subprocess.run(cli_argv("collect", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "o"),
                                "--protocol", "thrift", "--compress", "deflate"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_USAGE
    assert "no compression" in r.stderr and "Traceback" not in r.stderr
