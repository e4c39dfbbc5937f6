"""Shared pieces of the tail tests: a real channel, a source over it, and reading the channel back."""

from __future__ import annotations

import os
from pathlib import Path

from shipper.channel import Channel
from shipper.avroipc.flume_event import FlumeEvent, decode_event
from shipper.tail import TailOptions, TailSource


def open_channel(state: Path) -> Channel:
    return Channel.open(state, min_free_bytes=0)


def make_source(channel, *patterns, **options) -> TailSource:
    options.setdefault("watch", False)
    return TailSource(TailOptions(paths=[str(p) for p in patterns], **options), channel)


def drain(channel) -> list[FlumeEvent]:
    """Take and ack everything in the channel, decoded, in order."""
    out: list[FlumeEvent] = []
    while True:
        lease = channel.take(100_000, 1 << 30)
        if lease is None:
            return out
        out.extend(decode_event(e) for e in lease.events)
        channel.ack(lease)


def bodies(events) -> list[bytes]:
    return [e.body for e in events]


def poll_until_quiet(source, limit: int = 1000) -> int:
    """poll() until a pass puts nothing and no file has bytes left; the events put."""
    total = 0
    for _ in range(limit):
        n = source.poll()
        total += n
        if n == 0 and not source._hot:
            return total
    raise AssertionError("the source never went quiet")


def lines(prefix: str, start: int, stop: int, width: int = 0) -> bytes:
    pad = "x" * width
    return b"".join(f"{prefix}{i:06d}{pad}\n".encode() for i in range(start, stop))


def expected(prefix: str, start: int, stop: int, width: int = 0) -> list[bytes]:
    return lines(prefix, start, stop, width).split(b"\n")[:-1]


def append(path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def open_fds_to(path) -> int:
    """How many of this process's descriptors point at ``path`` (or its deleted inode)."""
    target = os.path.realpath(path)
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link == target or link == target + " (deleted)":
            n += 1
    return n
