"""File identity verdicts and the stored record, alone."""

import pytest

from shipper.tail.identity import Record, Verdict, fingerprint, is_rotation_of, judge


def test_same_file_grown():
    head = b"first line\n"
    assert judge(offset=11, last_size=11, fp=fingerprint(head), fp_len=11, size=500, head=head) is Verdict.SAME


def test_shorter_than_the_offset_is_truncated():
    assert judge(offset=100, last_size=100, fp=fingerprint(b""), fp_len=0, size=10, head=b"") is Verdict.TRUNCATED


def test_shrunk_then_regrown_is_truncated_even_with_the_same_head():
    head = b"HEADER\n"
    assert judge(offset=50, last_size=300, fp=fingerprint(head), fp_len=7, size=200, head=head) is Verdict.TRUNCATED


def test_other_first_bytes_are_a_rewrite_or_reuse():
    assert judge(offset=5, last_size=5, fp=fingerprint(b"aaaa\n"), fp_len=5, size=50, head=b"bbbb\n") is Verdict.REWRITTEN


def test_record_round_trip_and_rejects_other_versions():
    rec = Record(1, 2, "g", "/a.log.1", "/a.log", 10, fingerprint(b"x"), 1, 20, 1.5)
    assert Record.decode(rec.encode()) == rec
    assert rec.key == "file:1:2"
    with pytest.raises(ValueError):
        Record.decode(b'{"v": 99}')
    with pytest.raises(ValueError):
        Record.decode(b'{"v": 1, "dev": 1}')


@pytest.mark.parametrize("name,ok", [
    ("app.log.1", True), ("app.log-20240101", True), ("app.log_old", True),
    ("app.log.1.gz", False), ("app.log", False), ("app.logger", False), ("other.log.1", False),
])
def test_rotation_names(name, ok):
    assert is_rotation_of(name, "app.log") is ok


def test_a_record_encodes_every_field_in_order_behind_its_version():
    import json
    from dataclasses import asdict

    from shipper.tail.identity import RECORD_VERSION, Record

    rec = Record(dev=5, ino=7, gen="g1", path="/var/log/é.log", origin="/var/log/app.log", offset=42,
                 fp="abc", fp_len=3, size=99, mtime=1.25)
    want = json.dumps({"v": RECORD_VERSION, **asdict(rec)}, separators=(",", ":"), ensure_ascii=False)
    assert rec.encode() == want.encode("utf-8")
    assert Record.decode(rec.encode()) == rec
