"""``collect --format avro`` files read by Apache Avro's Java reader (DataFileReader, as Spark, Hive
and avro-tools read the files of Flume's HDFS and file-roll sinks), from Flume 1.11.0's classpath."""

from __future__ import annotations

import subprocess

import pytest

from tests.interop import flume
from tests.support import Proc, cli_argv

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_java_datafilereader_reads_every_event_with_its_headers_across_a_roll(codec, flume_classpath, tmp_path):
    out = tmp_path / "out"
    proc = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(out), "--format", "avro", "--codec", codec,
                "--roll-size", "2K")
    addr = proc.wait_for(r"listening on (127\.0\.0\.1:\d+)").group(1)
    lines = [f"line {i:04d} é".encode() for i in range(600)]
    cp = subprocess.run(cli_argv("send", "-", "--to", addr, "--batch-size", "50", "--header", "host=web-01",
                                 "--header", "env=prod eu"), input=b"".join(x + b"\n" for x in lines),
                        capture_output=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert proc.stop() == 0
    files = sorted(out.glob("events-*.avro"))
    assert len(files) > 1  # rolled
    java = subprocess.run([flume.require_tool("java"), "-cp", flume_classpath("1.11.0"),
                           str(flume.JAVA_DIR / "AvroCat.java"), *map(str, files)],
                          capture_output=True, text=True, timeout=180)
    assert java.returncode == 0, java.stderr
    printed = java.stdout.splitlines()
    assert [p for p in printed if p.startswith("schema ")] == [f"schema Event codec {codec}"] * len(files)
    records = [p for p in printed if not p.startswith("schema ")]
    assert records == [f"{{env=prod eu, host=web-01}}\t{x.hex()}" for x in lines]
