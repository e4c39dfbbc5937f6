"""Bytes to *events* under a source's rules: multiline grouping, filters, extraction, event time.

The source uses this :class:`EventCutter` instead of the plain :class:`~shipper.tail.reader.LineCutter`
when a source has rules (``shipper.tail.rules``) or per-event headers (byte offset, UUID); with
none, the line path runs untouched. The interface is the LineCutter's: ``consume(cur, buf, room,
enc)`` and ``flush_partial(cur, enc)``, on the same :class:`~shipper.tail.reader.Cursor`.

Exactly-once
------------
``cur.offset`` (what the channel stores with each put) only ever moves past *whole events*. The
last event of what was read may still grow (its next line could be a continuation), so it stays
*held*: its complete lines remain at the start of ``cur.pending`` (``cur.held`` bytes,
``cur.held_lines`` lines), un-committed, and are not classified again. It is shipped when a line
that starts a new event arrives, when it reaches ``max_lines``/``max_bytes`` (its full pieces go,
each marked ``split`` = 1, 2, ...; ``cur.piece`` counts them), or by ``flush_partial`` (timeout,
rotated or deleted file at its end, ``--once``). A crash loses only memory: the restart reads the
held lines again from the committed offset, so an event is never shipped twice nor cut in two by
a crash. A batch that fills up stops at an event boundary (``cur.leftover``; the rest is cut again
by the next call, the piece count carried over).

Cost: the block's complete lines are split in bulk (``bytes.split``) and classified in C by one
``finditer`` of the line-start pattern over the block; Python work per *event* is the join (for
multi-line events only), the filter search, and the encoding. Without per-event headers the
block's headers are encoded once (as on the line path); with extraction, event time, byte offset
or UUID headers each event's map is encoded on its own.

Over-long lines (over ``max_line_bytes``) close the held event and go out in pieces exactly as on
the line path (``split``/``truncated`` headers); such pieces bypass the rules.
"""

from __future__ import annotations

import uuid
from typing import Callable

from shipper.avroipc.avro import encode_bytes, encode_long, encode_string
from shipper.tail.reader import Cursor, Encoder, LineCutter
from shipper.tail.rules import Rules


class EventCutter(LineCutter):
    """Cuts a file's bytes into events under ``rules``; counts what it drops, joins and cuts."""

    def __init__(self, rules: Rules, max_line: int, long_lines: str = "split", *,
                 timestamp_key: str = "timestamp", byte_offset_key: str | None = None,
                 uuid_key: str | None = None, uuid_factory: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        super().__init__(max_line, long_lines)
        self.rules = rules
        ml = rules.multiline
        self._rx = ml.line_re if ml else None
        self._next_rx = ml.next_line_re if ml else None
        self._negate = ml.negate if ml else False
        self.max_lines = ml.max_lines if ml else 1
        self.max_bytes = ml.max_bytes if ml else float("inf")
        self.timeout = ml.timeout if ml else float("inf")
        self._filter = rules.include is not None or rules.exclude is not None
        self._ts_key = timestamp_key
        self._offset_key = byte_offset_key
        self._uuid_key = uuid_key
        self._uuid = uuid_factory
        self._per_event = bool(rules.extract or rules.event_time or byte_offset_key or uuid_key)
        self.dropped = 0  # events the filters dropped
        self.joined = 0  # lines that joined an event before them
        self.cut_events = 0  # multiline events cut into pieces by max_lines / max_bytes
        self.time_unparsed = 0  # events whose time did not parse (read time kept)
        self.extract_misses = 0  # events the extraction regex did not match
        self.drops: list[tuple[int, bytes]] | None = None  # set to a list to keep (offset, body) of drops
        self.offset_map: Callable[[int], int] | None = None  # cursor offsets -> file offsets (decode.py)
        self._pairs_of: dict[str, str] | None = None
        self._pairs: dict[str, bytes] = {}

    # ----- the cutter interface -----

    def consume(self, cur: Cursor, buf: bytes, room: int, enc: Encoder) -> list[bytes]:
        out: list[bytes] = []
        mx = self.max_line
        if cur.leftover:
            cur.held = cur.held_lines = 0  # cut again from the event boundary at pending's start
        while room > 0 and buf:
            if cur.skipping or cur.split_piece:
                buf, room, wait = self._rest_of_long_line(cur, buf, room, enc, out)
                if wait:
                    break
                continue
            s = cur.held
            end = buf.rfind(b"\n") + 1
            long_at = -1
            more = False
            if end > s:
                lines = buf[s:end - 1].split(b"\n", room)
                if len(lines) > room:
                    # More lines than the batch has room for: cut these, leave the rest for later.
                    del lines[room:]
                    end = s + sum(map(len, lines)) + room
                    more = True
                if end - s > mx and max(map(len, lines)) > mx:
                    k = next(i for i, line in enumerate(lines) if len(line) > mx)
                    lines = lines[:k]
                    end = s + sum(map(len, lines)) + k
                    long_at = end
            elif len(buf) - s > mx:
                lines, long_at = [], s
            else:
                break
            raws, marks = self._group(cur, buf, s, end, lines, close=long_at >= 0)
            if len(raws) > room:
                # The batch is full: stop at the boundary; the rest is cut again next time.
                del raws[room:]
                last = room - 1
                cur.piece = marks[last] if last in marks and marks.get(room, 0) == marks[last] + 1 else 0
                cur.held = cur.held_lines = 0
                consumed = sum(map(len, raws)) + len(raws)
                out += self._emit(cur, raws, marks, enc, b"\r" in buf)
                buf = buf[consumed:]
                room = 0
                break
            consumed = sum(map(len, raws)) + len(raws)
            out += self._emit(cur, raws, marks, enc, b"\r" in buf)
            room -= len(raws)
            buf = buf[consumed:]
            if long_at < 0:
                if more:
                    continue
                break
            # The over-long line now starts buf: ship its first piece (the line path's rules).
            if room > 0:
                out.append(self._piece(cur, buf[:mx], enc))
                cur.offset += mx
                buf = buf[mx:]
                room -= 1
        cur.pending = buf
        cur.leftover = room <= 0 and len(buf) > cur.held and b"\n" in buf[cur.held:]
        if cur.leftover:
            cur.held = cur.held_lines = 0
        return out

    def flush_partial(self, cur: Cursor, enc: Encoder) -> list[bytes]:
        """Ship everything held: the held event, and the incomplete last line (joined if it continues it)."""
        if not cur.pending or cur.leftover:
            return []
        if cur.skipping or cur.split_piece:
            return super().flush_partial(cur, enc)
        pending, s = cur.pending, cur.held
        tail = pending[s:]
        raws: list[bytes] = []
        marks: dict[int, int] = {}
        if s:
            held, n = pending[:s - 1], cur.held_lines
            if tail and self._continues(tail):
                held, n, tail = held + b"\n" + tail, n + 1, b""
                self.joined += 1
            self._add(raws, marks, held, n, cur.piece)
        if tail:
            raws.append(tail)
        start = cur.offset
        out = self._emit(cur, raws, marks, enc, b"\r" in pending)
        cur.offset = start + len(pending)  # the last piece had no newline
        cur.pending = b""
        cur.held = cur.held_lines = cur.piece = 0
        return out

    # ----- grouping -----

    def _continues(self, line: bytes) -> bool:
        rx = self._rx
        if rx is None:
            return False
        return (rx.match(line) is not None) != self._negate

    def _runs(self, buf: bytes, s: int, end: int, n: int, held: bool) -> list[tuple[int, int]]:
        """The multi-line events among the lines of buf[s:end], as line ranges [a, b) with b - a >= 2.

        ``a == -1``: lines 0..b-1 continue the held event. Every line outside a range is an event
        of its own. One ``finditer`` over the block finds the lines the pattern matches."""
        rx = self._rx
        if rx is None or n == 0:
            return []
        idx = [0] if s == 0 and rx.match(buf) is not None else []
        last, i, count = s, 0, buf.count
        # buf[s - 1] is the newline that ends the held event; at s == 0 line 0 was checked above.
        for m in self._next_rx.finditer(buf, s - 1 if s else 0, end):
            p = m.start() + 1
            if p >= end:
                break
            i += count(b"\n", last, p)
            last = p
            idx.append(i)
        runs: list[tuple[int, int]] = []
        if self._negate:  # idx: the lines that start events
            if not held and (not idx or idx[0] != 0):
                idx.insert(0, 0)
            if not idx:
                return [(-1, n)]
            if idx[0] > 0:
                runs.append((-1, idx[0]))
            idx.append(n)
            runs += [(a, b) for a, b in zip(idx, idx[1:]) if b - a > 1]
            return runs
        # idx: the lines that continue the event before them
        if idx and idx[0] == 0 and not held:
            del idx[0]
        if not idx:
            return runs
        a = b = idx[0]
        for c in idx[1:]:
            if c == b + 1:
                b = c
            else:
                runs.append((a - 1, b + 1))
                a = b = c
        runs.append((a - 1, b + 1))
        return runs

    def _group(self, cur: Cursor, buf: bytes, s: int, end: int, lines: list[bytes],
               close: bool) -> tuple[list[bytes], dict[int, int]]:
        """The complete events of buf[:end] (held lines first); the last one stays held unless ``close``.

        Returns the events' raw bytes (lines joined by ``\\n``, no final newline) and ``marks``
        (index -> ``split`` piece number, for the pieces of a bounded event), and sets cur.held*
        to the event left held at the start of what follows them. Python work is per multi-line
        event: runs of one-line events are copied as list slices."""
        n = len(lines)
        runs = self._runs(buf, s, end, n, s > 0)
        keep_last = self._rx is not None and not close
        raws: list[bytes] = []
        marks: dict[int, int] = {}
        last: tuple[bytes, int, int] | None = None
        prev = 0
        first: tuple[bytes, int] | None = None
        if s > 0:  # the held event, maybe continued by the first lines
            raw, cnt = buf[:s - 1], cur.held_lines
            if runs and runs[0][0] == -1:
                b = runs.pop(0)[1]
                raw, cnt = raw + b"\n" + b"\n".join(lines[:b]), cnt + b
                self.joined += b
                prev = b
            first = (raw, cnt)
        elif cur.piece and n:  # the rest of an event cut into pieces, after a full batch
            if runs and runs[0][0] == 0:
                b = runs.pop(0)[1]
                first = (b"\n".join(lines[:b]), b)
                self.joined += b - 1
            else:
                b = 1
                first = (lines[0], 1)
            prev = b
        if first is not None:
            if prev < n or not keep_last:
                self._add(raws, marks, first[0], first[1], cur.piece)
            else:
                last = (first[0], first[1], cur.piece)
        if keep_last and last is None and n > prev:
            if runs and runs[-1][1] == n:
                a = runs.pop()[0]
                last = (b"\n".join(lines[a:]), n - a, 0)
                self.joined += n - a - 1
                n = a
            else:
                n -= 1
                last = (lines[n], 1, 0)
        for a, b in runs:
            if a > prev:
                raws += lines[prev:a]
            self.joined += b - a - 1
            self._add(raws, marks, b"\n".join(lines[a:b]), b - a, 0)
            prev = b
        if prev == 0 and n == len(lines) and not raws:
            raws = lines  # the bulk case: every line an event, nothing held
        elif n > prev:
            raws += lines[prev:n]
        if last is None:
            cur.held = cur.held_lines = cur.piece = 0
            return raws, marks
        raw, cnt, piece = last
        if cnt > self.max_lines or len(raw) > self.max_bytes:
            # Held but already too big: its full pieces go now, the rest stays held.
            parts = self._pieces(raw)
            raw = parts.pop()
            self.cut_events += piece == 0 and bool(parts)
            for p in parts:
                piece += 1
                marks[len(raws)] = piece
                raws.append(p)
            cnt = raw.count(b"\n") + 1
        cur.piece, cur.held, cur.held_lines = piece, len(raw) + 1, cnt
        return raws, marks

    def _pieces(self, raw: bytes) -> list[bytes]:
        """``raw`` cut at line ends into parts of at most max_lines lines and max_bytes bytes.

        A part holds at least one line (a line is bounded by max_line_bytes instead)."""
        parts: list[bytes] = []
        cur: list[bytes] = []
        size = -1  # the joined length of cur
        for line in raw.split(b"\n"):
            if cur and (len(cur) >= self.max_lines or size + 1 + len(line) > self.max_bytes):
                parts.append(b"\n".join(cur))
                cur, size = [], -1
            cur.append(line)
            size += len(line) + 1
        parts.append(b"\n".join(cur))
        return parts

    def _add(self, raws: list[bytes], marks: dict[int, int], raw: bytes, n: int, piece: int) -> None:
        """Append one complete event, in pieces if it is over the bounds (``piece`` already shipped)."""
        if n <= self.max_lines and len(raw) <= self.max_bytes:
            if piece:
                marks[len(raws)] = piece + 1
            raws.append(raw)
            return
        parts = self._pieces(raw)
        if len(parts) == 1:  # one line over max_bytes: lines are bounded by max_line_bytes instead
            if piece:
                marks[len(raws)] = piece + 1
            raws.append(raw)
            return
        if piece == 0:
            self.cut_events += 1
        for p in parts:
            piece += 1
            marks[len(raws)] = piece
            raws.append(p)

    # ----- encoding -----

    def _emit(self, cur: Cursor, raws: list[bytes], marks: dict[int, int], enc: Encoder,
              has_cr: bool) -> list[bytes]:
        """Encode complete events starting at cur.offset (filtered, shaped); advance cur.offset past all."""
        if not raws:
            return []
        if has_cr:
            bodies = [r.replace(b"\r\n", b"\n").removesuffix(b"\r") for r in raws]
        else:
            bodies = raws
        if not self._per_event and not marks and not enc.event_ids and self.drops is None:
            if self._filter:
                kept = self.rules.keep_all(bodies)
                self.dropped += len(bodies) - len(kept)
                bodies = kept
            cur.offset += sum(map(len, raws)) + len(raws)
            return enc.run(bodies, 0, False)
        out = []
        offset = cur.offset
        rules = self.rules
        ex, et = rules.extract, rules.event_time
        base = enc.headers
        pairs = self._base_pairs(base)
        to_file = self.offset_map
        for i, (raw, body) in enumerate(zip(raws, bodies)):
            start = offset if to_file is None else to_file(offset)
            offset += len(raw) + 1
            if self._filter and not rules.keep(body):
                self.dropped += 1
                if self.drops is not None:
                    self.drops.append((start, body))
                continue
            extra: dict[str, str] = {}  # the headers of this event that differ from the block's
            if ex is not None:
                got = ex.headers(body)
                if got is None:
                    self.extract_misses += 1
                elif ex.preserve_existing:
                    extra = {k: v for k, v in got.items() if k not in base}
                else:
                    extra = got
            if et is not None:
                nl = body.find(b"\n")
                ms = et.millis(body if nl < 0 else body[:nl])
                if ms is None:
                    self.time_unparsed += 1
                    if et.unparsed_header:
                        extra[et.unparsed_header] = "true"
                else:
                    extra[self._ts_key] = str(ms)
            if self._offset_key:
                extra[self._offset_key] = str(start)
            if self._uuid_key:
                extra[self._uuid_key] = self._uuid()
            if i in marks:
                extra["split"] = str(marks[i])
            if enc.event_ids:
                extra["id"] = f"{enc.gen}:{start}"
            items = [p for k, p in pairs.items() if k not in extra]
            items += [encode_string(k) + encode_string(v) for k, v in extra.items()]
            out.append(encode_long(len(items)) + b"".join(items) + b"\x00" + encode_bytes(body))
        cur.offset = offset
        return out

    def _base_pairs(self, base: dict[str, str]) -> dict[str, bytes]:
        """The block's headers as encoded map entries, computed once per block (``enc.begin``)."""
        if self._pairs_of is not base:
            self._pairs_of = base
            self._pairs = {k: encode_string(k) + encode_string(v) for k, v in base.items()}
        return self._pairs
