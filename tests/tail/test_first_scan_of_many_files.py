"""The first scan of thousands of files: their offset records reach the channel in bounded slices.

Every newly tracked file has a record to store. With 2,500 files those records are committed at
most 2,000 to a transaction (those of files with events in the batch always with the events), over
a real SQLite channel; every line arrives once, and a restart over the same channel reads nothing
again.
"""

from __future__ import annotations

from tests.tail.helpers import bodies, drain, make_source, open_channel, poll_until_quiet

FILES = 2500


class CountingChannel:
    """The real channel, noting how many events and offset records each put carried."""

    def __init__(self, channel) -> None:
        self.channel = channel
        self.puts: list[tuple[int, int]] = []

    def pack(self, events, **kw):
        return self.channel.pack(events, **kw)

    def put_packed(self, packed, offsets=None, **kw):
        ok = self.channel.put_packed(packed, offsets, **kw)
        if ok:
            self.puts.append((packed.count, len(offsets or {})))
        return ok

    def offsets(self):
        return self.channel.offsets()


def test_records_of_thousands_of_new_files_are_committed_in_slices_and_nothing_is_read_twice(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(FILES):
        (logs / f"f{i:05d}.log").write_bytes(b"line of file %05d\n" % i)
    channel = open_channel(tmp_path / "state")
    sources = []
    try:
        counting = CountingChannel(channel)
        source = make_source(counting, logs / "*.log", batch_max_events=500)
        sources.append(source)
        assert poll_until_quiet(source) == FILES
        assert max(records for _, records in counting.puts) <= 2000
        assert len([p for p in counting.puts if p[0] == 0]) >= 1  # records alone, before the events
        got = bodies(drain(channel))
        assert sorted(got) == [b"line of file %05d" % i for i in range(FILES)]
        assert len(channel.offsets()) == FILES

        # A restart over the same channel: every file is known at its end.
        again = make_source(channel, logs / "*.log")
        sources.append(again)
        assert poll_until_quiet(again) == 0
        assert drain(channel) == []
    finally:
        for s in sources:
            s.close()  # its 5,000 descriptors: later tests select() on small ones
        channel.close()
