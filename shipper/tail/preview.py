"""What a source's rules make of some bytes, without a channel or a collector: ``flume-ship test-source``.

Pure: the bytes of a file (or of stdin) go through the very cutter the source would use
(:class:`~shipper.tail.events.EventCutter`, or the plain line cutter when there are no rules),
with the source's headers, and come out as :class:`Row` values in file order: the events that
would be shipped, with their headers, and the events the filters would drop. The end of the
input is treated as ``--once`` treats it: what is held (an event that could still grow, an
incomplete last line) is shipped, so a multiline rule can be tried on a saved sample.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterator, Mapping

from shipper.avroipc.flume_event import decode_event
from shipper.tail.decode import Transcoder
from shipper.tail.events import EventCutter
from shipper.tail.options import TailOptions
from shipper.tail.reader import Cursor, Encoder

_OFFSET = "\x00offset"  # internal: where each event starts, removed before it is shown


@dataclass(frozen=True, slots=True)
class Row:
    offset: int | None  # the event's first byte (None: a piece of an over-long line)
    body: bytes
    headers: Mapping[str, str] | None  # None: dropped by include_lines / exclude_lines


@dataclass(frozen=True, slots=True)
class Summary:
    lines: int
    events: int
    dropped: int
    joined: int
    time_unparsed: int


def preview(data: bytes, options: TailOptions, file_name: str, block: int = 256 * 1024,
            now_ms: int | None = None) -> tuple[list[Row], Summary]:
    """The rows ``options`` make of ``data`` (read as the file ``file_name``), and a summary."""
    cutter = EventCutter(options.rules, options.max_line_bytes, options.long_lines,
                         timestamp_key=options.timestamp_key, byte_offset_key=_OFFSET,
                         uuid_key=options.uuid_header)
    cutter.drops = []
    if options.encoding:
        cutter = Transcoder(cutter, options.encoding)
    headers = dict(options.headers)
    if options.add_host:
        headers[options.host_key] = options.host or os.uname().nodename
    if options.add_file:
        headers[options.file_key] = file_name
    if options.add_timestamp:
        headers[options.timestamp_key] = str(now_ms if now_ms is not None else time.time_ns() // 1_000_000)
    enc, cur = Encoder(options.add_event_id), Cursor()
    enc.begin(headers, "preview")
    encoded: list[bytes] = []
    for i in range(0, len(data), block):
        encoded += cutter.consume(cur, cur.pending + data[i:i + block], 1 << 30, enc)
        while cur.leftover:
            encoded += cutter.consume(cur, cur.pending, 1 << 30, enc)
    encoded += cutter.flush_partial(cur, enc)
    rows: list[Row] = []
    last = 0
    for raw in encoded:
        ev = decode_event(raw)
        h = dict(ev.headers)
        off = h.pop(_OFFSET, None)
        if options.byte_offset_header and off is not None:
            h["byteoffset"] = off
        last = int(off) if off is not None else last
        rows.append(Row(int(off) if off is not None else None, ev.body, h))
    # Drops go in file order among the events (a piece sorts with the event before it).
    keyed = [(r.offset if r.offset is not None else -1, i, r) for i, r in enumerate(rows)]
    fixed, prev = [], 0
    for off, i, r in keyed:
        prev = off if off >= 0 else prev
        fixed.append((prev, 0, i, r))
    fixed += [(off, 1, 0, Row(off, body, None)) for off, body in cutter.drops]
    fixed.sort(key=lambda t: (t[0], t[1], t[2]))
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    summary = Summary(lines, len(rows), cutter.dropped, cutter.joined, cutter.time_unparsed)
    return [t[3] for t in fixed], summary


def render(rows: list[Row], summary: Summary) -> Iterator[str]:
    """Human-readable lines: one header line per event, its body indented below."""
    n = 0
    for r in rows:
        where = f"byte {r.offset}" if r.offset is not None else "piece"
        nlines = r.body.count(b"\n") + 1
        if r.headers is None:
            yield f"DROPPED ({where}, {nlines} line{'s' * (nlines > 1)}) by include_lines/exclude_lines"
        else:
            n += 1
            shown = " ".join(f"{k}={v}" for k, v in sorted(r.headers.items()))
            yield f"event {n} ({where}, {nlines} line{'s' * (nlines > 1)}): {shown}"
        for line in r.body.split(b"\n"):
            yield "  | " + line.decode("utf-8", "replace")
    yield (f"{summary.lines} lines -> {summary.events} events shipped, {summary.dropped} dropped, "
           f"{summary.joined} lines joined, {summary.time_unparsed} times not parsed (read time kept)")
