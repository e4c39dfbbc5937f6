"""The collector's rolling output files, driven directly (real files, real threads)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from shipper.collector.writer import RollingWriter


def read_all(directory) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.glob("events-*")))


def test_concurrent_batches_stay_whole_and_none_is_lost(tmp_path):
    writer = RollingWriter(str(tmp_path), fsync=True, roll_bytes=64 * 1024)
    errors = []

    def worker(w: int) -> None:
        try:
            for b in range(40):
                writer.write([[({}, b"w%d b%02d e%02d" % (w, b, e)) for e in range(25)]])
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    writer.close()
    assert not errors
    lines = read_all(tmp_path).splitlines()
    assert len(lines) == 6 * 40 * 25 == writer.events_written
    # Each batch is one contiguous run, in order within its writer.
    runs = [lines[i : i + 25] for i in range(0, len(lines), 25)]
    for run in runs:
        assert len({line.split(b" e")[0] for line in run}) == 1
        assert [line.split(b" e")[1] for line in run] == [b"%02d" % e for e in range(25)]
    for w in range(6):
        mine = [run[0].split(b" e")[0] for run in runs if run[0].startswith(b"w%d " % w)]
        assert mine == [b"w%d b%02d" % (w, b) for b in range(40)]
    assert len(list(tmp_path.glob("events-*.log"))) > 1  # it rolled by size


def test_roll_by_time_and_no_empty_files(tmp_path):
    writer = RollingWriter(str(tmp_path), roll_seconds=0.05)
    writer.roll_if_due()
    assert list(tmp_path.iterdir()) == []  # opened lazily: an idle collector leaves nothing
    writer.write([[({}, b"first")]])
    time.sleep(0.1)
    writer.roll_if_due()
    assert writer.current_path is None
    writer.write([[({}, b"second")]])
    writer.close()
    files = sorted(tmp_path.glob("events-*.log"))
    assert [f.read_bytes() for f in files] == [b"first\n", b"second\n"]


def test_jsonl_keeps_headers_and_marks_binary_bodies(tmp_path):
    writer = RollingWriter(str(tmp_path), fmt="jsonl")
    writer.write([[({"a": "1"}, b"text"), ({}, b"\x00\xff")]])
    writer.close()
    (path,) = tmp_path.glob("events-*.jsonl")
    assert [json.loads(l) for l in path.read_text().splitlines()] == [
        {"headers": {"a": "1"}, "body": "text"},
        {"headers": {}, "body_base64": "AP8="},
    ]


def test_unopenable_directory_raises_and_a_later_write_recovers(tmp_path):
    out = tmp_path / "out"
    writer = RollingWriter(str(out))
    with pytest.raises(OSError):
        writer.write([[({}, b"nowhere")]])
    out.mkdir()
    writer.write([[({}, b"here")]])
    writer.close()
    assert read_all(out) == b"here\n"
    assert writer.events_written == 1
