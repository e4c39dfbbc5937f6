"""Bytes to complete lines to encoded events: the hot path, and nothing but bytes (no files here).

A file's reading state is a :class:`Cursor`: ``offset`` is the first byte not yet turned into an
event (what the channel stores), ``pending`` the bytes read after it. The source reads a block,
appends it to ``pending`` and calls :meth:`LineCutter.consume`, which splits in bulk
(``bytes.split`` on the whole block, one list comprehension to encode) and leaves the trailing
incomplete line in ``pending``. Per-line Python work is the cost that matters, so the common case
does none beyond one concatenation per line: the headers map is encoded once per block
(:class:`Encoder`) and each event is ``headers + zigzag(len(body)) + body``.

Rules:

* Only complete lines (ending in ``\\n``) become events; ``\\r\\n`` loses its ``\\r``. Bodies are raw
  bytes, never decoded.
* ``room`` bounds the events one call may emit (the batch's free space); what does not fit stays
  in ``pending`` (``leftover`` is then set: consume it again before reading more). The lines
  already split off that rest are kept beside it (``Cursor.ahead``), so the next call does not
  split them again: with 2,000-event batches and 256 KiB reads of ~100 B lines, re-splitting
  made ~0.6 extra line objects per event. The whole buffer is still split at once, never at
  the batch's room (``bytes.split(sep, room)``; see docs/benchmarks.md for why that was taken back).
* A line longer than ``max_line`` bytes is cut at ``max_line``. ``split``: every piece is shipped,
  each with header ``split`` = its 1-based piece number (the last piece, the line's end, included).
  ``truncate``: the first piece is shipped with ``truncated`` = ``true`` and the rest of the line is
  skipped up to its newline. Either way the line is counted and reading goes on.
* :meth:`LineCutter.flush_partial` ships an incomplete last line as it is (idle timeout, rotation,
  deletion, ``--once``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from shipper.avroipc.avro import SMALL_ZIGZAG, encode_string, zigzag
from shipper.avroipc.flume_event import encode_event, encode_headers, encode_headers_open


@dataclass(slots=True)
class Cursor:
    offset: int = 0
    pending: bytes = b""
    split_piece: int = 0  # pieces of the current over-long line already shipped
    skipping: bool = False  # truncate mode: dropping the rest of an over-long line
    leftover: bool = False  # pending may hold complete lines (the batch filled up)
    # Multiline (shipper.tail.events): the held event's complete lines open ``pending``.
    held: int = 0  # their bytes, newlines included
    held_lines: int = 0
    piece: int = 0  # pieces of the held event already shipped (max_lines / max_bytes)
    decode: Any = None  # a file in another encoding: the UTF-8 view's state (shipper.tail.decode)
    # When the batch filled in the middle of a block: (pending, its lines, its incomplete tail),
    # i.e. ``pending.split(b"\n")`` already made, valid while ``pending`` is that very object.
    ahead: Any = None

    @property
    def read_pos(self) -> int:
        return self.offset + len(self.pending)


class Encoder:
    """Encodes bodies as AvroFlumeEvents with one file's headers, precomputed per block."""

    __slots__ = ("event_ids", "_headers", "_h", "_gen", "_prefix", "_leads", "_leads_for")

    def __init__(self, event_ids: bool = False) -> None:
        self.event_ids = event_ids
        self._headers: dict[str, str] = {}
        self._h = b"\x00"
        self._gen = ""
        self._prefix = b""
        self._leads: list[bytes] = []  # headers + zigzag(n) at index n, for self._leads_for
        self._leads_for: bytes | None = None

    def begin(self, headers: Mapping[str, str], gen: str) -> None:
        self._headers = dict(headers)
        self._gen = gen
        self._h = encode_headers(self._headers)
        if self.event_ids:
            # The map with "id" as its last entry, up to the id's value.
            self._prefix = encode_headers_open(self._headers, "id")

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    @property
    def gen(self) -> str:
        return self._gen

    def run(self, lines: list[bytes], offset: int, has_cr: bool) -> list[bytes]:
        """Events for consecutive complete lines (terminators removed, ``\\r`` maybe still on)."""
        if has_cr:
            bodies = [b[:-1] if b[-1:] == b"\r" else b for b in lines]
        else:
            bodies = lines
        if self.event_ids:
            return self._run_with_ids(lines, bodies, offset)
        if not bodies:
            return []
        # One concatenation per event: ``headers + zigzag(n)`` is made once per length n (up to
        # the longest line seen with these headers), not once per line.
        if self._leads_for != self._h:
            self._leads, self._leads_for = [], self._h
        lead = self._leads
        try:
            return [lead[len(b)] + b for b in bodies]
        except IndexError:  # a line longer than any before it
            pass
        h = self._h
        longest = max(map(len, bodies))
        if longest >= len(bodies) or longest >= len(SMALL_ZIGZAG):
            # Few lines for their length (a table would cost more than it saves), or long ones.
            small = SMALL_ZIGZAG
            return [h + small[len(b)] + b if len(b) < 8192 else h + zigzag(len(b)) + b for b in bodies]
        lead += [h + z for z in SMALL_ZIGZAG[len(lead):longest + 1]]
        return [lead[len(b)] + b for b in bodies]

    def _run_with_ids(self, lines: list[bytes], bodies: list[bytes], offset: int) -> list[bytes]:
        prefix, gen, out = self._prefix, self._gen, []
        for raw, body in zip(lines, bodies):
            out.append(prefix + encode_string(f"{gen}:{offset}") + b"\x00" + SMALL_ZIGZAG[len(body)] + body
                       if len(body) < 8192 else
                       prefix + encode_string(f"{gen}:{offset}") + b"\x00" + zigzag(len(body)) + body)
            offset += len(raw) + 1
        return out

    def one(self, body: bytes, offset: int, extra: Mapping[str, str] | None = None) -> bytes:
        headers = dict(self._headers)
        if extra:
            headers.update(extra)
        if self.event_ids:
            headers["id"] = f"{self._gen}:{offset}"
        return encode_event(headers, body)


class LineCutter:
    """Cuts a file's bytes into line events; counts over-long lines. One per source."""

    def __init__(self, max_line: int, long_lines: str = "split") -> None:
        self.max_line = max_line
        self.split = long_lines == "split"
        self.long_lines = 0  # over-long lines seen
        self.dropped_bytes = 0  # bytes skipped in truncate mode

    def consume(self, cur: Cursor, buf: bytes, room: int, enc: Encoder) -> list[bytes]:
        """Emit events for the complete lines at the start of ``buf`` (which begins at ``cur.offset``)."""
        out: list[bytes] = []
        mx = self.max_line
        has_cr = b"\r" in buf
        while room > 0 and buf:
            if cur.skipping or cur.split_piece:
                buf, room, wait = self._rest_of_long_line(cur, buf, room, enc, out)
                if wait:
                    break
                continue
            nl = buf.find(b"\n", 0, mx + 1)
            if nl < 0:
                if len(buf) <= mx:
                    break  # an incomplete line that may still fit: wait for its end
                out.append(self._piece(cur, buf[:mx], enc))
                cur.offset += mx
                buf = buf[mx:]
                room -= 1
                continue
            # The bulk: every complete line up to the first over-long one, at most `room`.
            ahead = cur.ahead
            if ahead is not None and ahead[0] is buf:  # the rest of a block the last batch split
                lines, tail = ahead[1], ahead[2]
            else:
                lines = buf.split(b"\n")
                tail = lines.pop()
            cur.ahead = None
            n = len(lines)
            k = n if n <= room else room
            if len(buf) > mx:
                head = lines if k == n else lines[:k]
                if max(map(len, head)) > mx:
                    k = next(i for i, line in enumerate(head) if len(line) > mx)
            rest = None
            if k == n:
                consumed = len(buf) - len(tail)
            else:
                rest = lines[k:]
                lines = lines[:k]
                consumed = sum(map(len, lines)) + k
            out.extend(enc.run(lines, cur.offset, has_cr))
            room -= k
            cur.offset += consumed
            if rest is None:
                buf = tail
            else:
                buf = buf[consumed:]
                cur.ahead = (buf, rest, tail)  # the next call takes these lines without splitting again
        cur.pending = buf
        cur.leftover = room <= 0 and bool(buf)
        return out

    def _rest_of_long_line(self, cur: Cursor, buf: bytes, room: int, enc: Encoder,
                           out: list[bytes]) -> tuple[bytes, int, bool]:
        """Go on with an over-long line (skipping it, or shipping its pieces). Returns (buf, room, wait)."""
        mx = self.max_line
        if cur.skipping:
            i = buf.find(b"\n")
            if i < 0:
                self.dropped_bytes += len(buf)
                cur.offset += len(buf)
                return b"", room, True
            self.dropped_bytes += i
            cur.offset += i + 1
            cur.skipping = False
            return buf[i + 1 :], room, False
        nl = buf.find(b"\n", 0, mx + 1)
        if nl < 0:
            if len(buf) <= mx:
                return buf, room, True  # wait for the line's end
            out.append(self._piece(cur, buf[:mx], enc))
            cur.offset += mx
            return buf[mx:], room - 1, False
        body = buf[:nl]  # the end of a split line: the last piece
        if body[-1:] == b"\r":
            body = body[:-1]
        cur.split_piece += 1
        out.append(enc.one(body, cur.offset, {"split": str(cur.split_piece)}))
        cur.split_piece = 0
        cur.offset += nl + 1
        return buf[nl + 1 :], room - 1, False

    def _piece(self, cur: Cursor, piece: bytes, enc: Encoder) -> bytes:
        """The first max_line bytes of an over-long line (or the next piece of one)."""
        if self.split:
            if cur.split_piece == 0:
                self.long_lines += 1
            cur.split_piece += 1
            return enc.one(piece, cur.offset, {"split": str(cur.split_piece)})
        self.long_lines += 1
        cur.skipping = True
        return enc.one(piece, cur.offset, {"truncated": "true"})

    def flush_partial(self, cur: Cursor, enc: Encoder) -> list[bytes]:
        """Ship the incomplete last line as it is (call with an empty batch slot free)."""
        if not cur.pending or cur.leftover:
            return []
        body = cur.pending
        if cur.skipping:
            self.dropped_bytes += len(body)
            out = []
        else:
            if body[-1:] == b"\r":
                body = body[:-1]
            if cur.split_piece:
                cur.split_piece += 1
                out = [enc.one(body, cur.offset, {"split": str(cur.split_piece)})]
            else:
                out = [enc.one(body, cur.offset)]
        cur.offset += len(cur.pending)
        cur.pending = b""
        cur.split_piece = 0
        cur.skipping = False
        return out
