"""``collect --format avro``: Avro Object Container Files read back by fastavro and by Apache
Avro's own Python reader (the ``avro`` package), across rolls and after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import zlib

import fastavro
import pytest

from shipper.collector.writer import FLUME_EVENT_SCHEMA, RollingWriter
from tests.support import Proc, cli_argv


def read_fastavro(paths) -> list[dict]:
    out = []
    for p in paths:
        with open(p, "rb") as fh:
            out += list(fastavro.reader(fh))
    return out


def read_apache_avro(paths) -> list[dict]:
    from avro.datafile import DataFileReader
    from avro.io import DatumReader

    out = []
    for p in paths:
        with open(p, "rb") as fh, DataFileReader(fh, DatumReader()) as reader:
            out += list(reader)
    return out


def events(n: int, tag: str = "e") -> list[tuple[dict, bytes]]:
    return [({"host": "web1", "seq": str(i), "ünï": "çødé"}, f"{tag}{i} ".encode() + bytes([i % 256]) * (i % 50))
            for i in range(n)]


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_every_event_with_its_headers_reads_back_with_both_readers_across_rolls(tmp_path, codec):
    writer = RollingWriter(str(tmp_path), fmt="avro", codec=codec, roll_bytes=4 * 1024)
    batches = [events(100, f"b{b}-") for b in range(10)]
    for batch in batches:
        writer.write([batch])
    writer.close()
    files = sorted(tmp_path.glob("events-*.avro"))
    assert len(files) > 2  # rolled by size, each file a whole container
    want = [{"headers": h, "body": b} for batch in batches for h, b in batch]
    assert read_fastavro(files) == want
    assert read_apache_avro(files) == want
    with open(files[0], "rb") as fh:
        r = fastavro.reader(fh)
        assert r.codec == codec and r.writer_schema["name"] == FLUME_EVENT_SCHEMA["name"]
    assert all(f.stat().st_mode & 0o777 == 0o640 for f in files)


def test_a_roll_by_time_between_batches_starts_a_new_container(tmp_path):
    writer = RollingWriter(str(tmp_path), fmt="avro", roll_seconds=0.01)
    writer.write([events(3, "a")])
    import time

    time.sleep(0.05)
    writer.write([events(3, "b")])
    writer.close()
    files = sorted(tmp_path.glob("events-*.avro"))
    assert len(files) == 2
    assert [len(read_fastavro([f])) for f in files] == [3, 3]


def test_collect_avro_survives_sigkill_up_to_the_last_synced_block(tmp_path):
    out = tmp_path / "out"
    proc = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(out), "--format", "avro")
    addr = proc.wait_for(r"listening on (127\.0\.0\.1:\d+)").group(1)
    src = tmp_path / "in.log"
    src.write_bytes(b"".join(b"line %05d\n" % i for i in range(3000)))
    cp = subprocess.run(cli_argv("send", str(src), "--to", addr, "--batch-size", "250", "--header", "k=v"),
                        capture_output=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    proc.kill()  # SIGKILL: no close, no final flush
    files = sorted(out.glob("events-*.avro"))
    want = [{"headers": {"k": "v"}, "body": b"line %05d" % i} for i in range(3000)]
    assert read_fastavro(files) == want  # every acknowledged block is there and valid
    assert read_apache_avro(files) == want


def test_a_torn_last_block_after_a_kill_leaves_the_blocks_before_it_readable(tmp_path):
    writer = RollingWriter(str(tmp_path), fmt="avro", codec="deflate")
    writer.write([events(50, "x")])
    writer.write([events(50, "y")])
    path = writer.current_path
    size = os.path.getsize(path)
    writer.close()
    with open(path, "r+b") as fh:  # as if the process died in the middle of the second block
        fh.truncate(size - 40)
    got = []
    with open(path, "rb") as fh:
        try:
            for record in fastavro.reader(fh):
                got.append(record)
        except (EOFError, ValueError, zlib.error, StopIteration):
            pass
    assert got[:50] == [{"headers": h, "body": b} for h, b in events(50, "x")]


def test_collect_rejects_an_unknown_codec_with_one_line(tmp_path):
    cp = subprocess.run(cli_argv("collect", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "o"), "--format",
                                 "avro", "--codec", "lzma"), capture_output=True, timeout=60)
    assert cp.returncode == 2
    assert b"unknown Avro codec 'lzma'" in cp.stderr


def test_collect_avro_with_sigterm_closes_cleanly(tmp_path):
    out = tmp_path / "out"
    proc = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(out), "--format", "avro", "--codec", "null")
    addr = proc.wait_for(r"listening on (127\.0\.0\.1:\d+)").group(1)
    cp = subprocess.run(cli_argv("send", "-", "--to", addr), input=b"a\nb\n", capture_output=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert proc.stop(signal.SIGTERM) == 0
    assert [r["body"] for r in read_fastavro(sorted(out.glob("*.avro")))] == [b"a", b"b"]
