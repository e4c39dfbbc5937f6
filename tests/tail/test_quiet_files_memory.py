"""Quiet files keep only their offset; files with unfinished lines keep everything.

Over a real channel: files read to their end and closed (descriptors given up to other files, or
idle for ``close_inactive``) hold no cursor, and reopen at the right byte when they grow. Files
whose last line is still incomplete when their descriptor is taken for another file keep the
incomplete line, so it is shipped whole once its end arrives.
"""

from __future__ import annotations

import pytest

from tests.tail.helpers import append, bodies, drain, make_source, open_channel, poll_until_quiet


@pytest.fixture
def channel(tmp_path):
    ch = open_channel(tmp_path / "state")
    yield ch
    ch.close()


def files(tmp_path, n: int, content: bytes):
    """``n`` files under tmp_path/logs, each holding ``content % (i, i)``."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(n):
        (logs / f"f{i:02d}.log").write_bytes(content % (i, i))
    return logs


def test_closed_quiet_files_keep_only_their_offset_and_resume_from_it(tmp_path, channel):
    logs = files(tmp_path, 30, b"f%02d a\nf%02d b\n")
    src = make_source(channel, logs / "*.log", max_open_files=4, close_inactive=0)
    poll_until_quiet(src)
    assert len(drain(channel)) == 60
    src.poll()  # a full pass closes the idle ones
    parked = [f for f in src._files.values() if f.fd is None]
    assert len(parked) >= 26 and all(f._cur is None for f in parked)
    for i in range(0, 30, 7):
        append(logs / f"f{i:02d}.log", b"f%02d c\n" % i)
    poll_until_quiet(src)
    assert sorted(bodies(drain(channel))) == [b"f%02d c" % i for i in range(0, 30, 7)]


def test_an_incomplete_line_survives_its_file_losing_the_descriptor(tmp_path, channel):
    logs = files(tmp_path, 12, b"f%02d whole\nf%02d half-")
    src = make_source(channel, logs / "*.log", max_open_files=2, partial_line_timeout=3600)
    poll_until_quiet(src)
    assert sorted(bodies(drain(channel))) == sorted(b"f%02d whole" % i for i in range(12))
    held = [f for f in src._files.values() if f.fd is None and f._cur is not None]
    assert held and all(f._cur.pending for f in held)  # closed, but the half line is still there
    for i in range(12):
        append(logs / f"f{i:02d}.log", b"done\n")
    poll_until_quiet(src)
    assert sorted(bodies(drain(channel))) == sorted(b"f%02d half-done" % i for i in range(12))
