"""Files in another encoding: lines split in that encoding, shipped as UTF-8, offsets kept in file bytes.

A source with ``encoding`` set wraps its :class:`~shipper.tail.events.EventCutter` in a
:class:`Transcoder`. The cutter (multiline, filters, extraction: every regex is written for UTF-8)
then runs over a UTF-8 *view* of the file, with a cursor of its own (``shadow``); the file's
:class:`~shipper.tail.reader.Cursor` keeps real byte offsets, which is what the channel stores.

How, per call:

1. The raw bytes not yet converted are split into complete lines *in the file's encoding*: on
   ``0A`` for ASCII-compatible encodings (Latin-1, GBK, Shift-JIS, UTF-8...: none has ``0A`` inside
   a character), on the 16-bit unit ``0A 00`` / ``00 0A`` at an even offset for UTF-16 LE / BE
   (a plain ``0A`` byte is not a line end there: today's splitter broke on it).
2. Each line is decoded (bytes that do not decode become U+FFFD and are counted in
   ``replaced``; nothing is dropped), encoded as UTF-8 and appended to the shadow's pending bytes;
   the (view offset, file offset) of every line end is remembered.
3. The cutter consumes the view; where its offset lands (always a line end, except inside an
   over-long line cut into pieces) is mapped back to a file offset, so the committed offset stays
   at an event boundary of the file. Inside an over-long line the offset is left at the line's
   start: a crash there can repeat that line's pieces, never lose one.

A byte-order mark at offset 0 (UTF-8, UTF-16) is skipped. ``utf-16`` without LE/BE takes the BOM's
order; when it reads a file from the middle (a restart) it guesses the order from the zero bytes.
Event ids and ``byteoffset`` name file offsets, as without an encoding.
"""

from __future__ import annotations

import codecs
from bisect import bisect_right
from dataclasses import dataclass, field

from shipper.tail.events import EventCutter
from shipper.tail.reader import Cursor, Encoder
from shipper.tail.rules import RuleError

_UTF16 = {"utf-16": None, "utf-16-le": "utf-16-le", "utf-16-be": "utf-16-be"}
_BOMS = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE, "utf-8": codecs.BOM_UTF8}


def check_encoding(name: str, key: str = "encoding") -> str:
    """The codec's canonical name, or RuleError: unknown, or lines cannot be split in it."""
    try:
        info = codecs.lookup(name)
    except (LookupError, TypeError, ValueError):  # ValueError: a NUL in the name
        raise RuleError(key, f"unknown encoding {name!r} (examples: utf-16le, utf-16, latin-1, gbk)") from None
    canon = info.name
    if canon in _UTF16:
        return canon
    try:
        ok = "a\nb".encode(canon) == b"a\nb" and b"a\nb".decode(canon) == "a\nb"
    except (UnicodeError, LookupError, TypeError):
        ok = False
    if not ok:
        raise RuleError(key, f"{name!r} is not supported: lines are split on the byte 0A, which it does not use "
                        "for a line end (supported: ASCII-compatible encodings and utf-16le/be)")
    return canon


@dataclass(slots=True)
class _State:
    codec: str
    shadow: Cursor  # the cutter's cursor over the UTF-8 view
    real: int  # the file offset the state was last synced to (cur.offset)
    done: int = 0  # raw bytes after cur.offset already in shadow.pending
    bounds: list[tuple[int, int]] = field(default_factory=list)  # (view, file) offsets of line starts


class Transcoder:
    """A cutter for files in ``encoding``: same interface, offsets in file bytes (module docstring)."""

    def __init__(self, inner: EventCutter, encoding: str) -> None:
        self.inner = inner
        self.encoding = check_encoding(encoding)
        self.replaced = 0  # characters that did not decode (shipped as U+FFFD)
        self._st: _State | None = None
        inner.offset_map = self._to_file

    def __getattr__(self, name: str):
        return getattr(self.inner, name)  # counters, timeout

    # ----- the cutter interface -----

    def consume(self, cur: Cursor, buf: bytes, room: int, enc: Encoder) -> list[bytes]:
        st = self._state(cur, buf)
        self._convert(st, buf, final=False)
        return self._run(cur, st, buf, self.inner.consume(st.shadow, st.shadow.pending, room, enc))

    def flush_partial(self, cur: Cursor, enc: Encoder) -> list[bytes]:
        if not cur.pending or cur.leftover:
            return []
        st = self._state(cur, cur.pending)
        self._convert(st, cur.pending, final=True)
        out = self.inner.flush_partial(st.shadow, enc)
        out_cur = self._run(cur, st, cur.pending, out)
        if not st.shadow.pending:
            cur.offset += len(cur.pending)  # the last line had no end to map
            cur.pending = b""
            cur.decode = None
        return out_cur

    # ----- the view -----

    def _state(self, cur: Cursor, buf: bytes) -> _State:
        st = cur.decode
        if st is None or st.real != cur.offset or (st.real == 0 and len(st.bounds) == 1 and not st.done):
            # New, moved, or at the file's start with no line yet: a BOM may still be arriving.
            codec = self.encoding
            if codec == "utf-16":
                codec = self._utf16_order(buf, cur.offset)
            st = _State(codec, Cursor(offset=cur.offset), cur.offset)
            bom = _BOMS.get(codec)
            if cur.offset == 0 and bom and buf.startswith(bom):
                st.done = len(bom)
            st.bounds = [(cur.offset, cur.offset + st.done)]
            cur.decode = st
        self._st = st
        return st

    @staticmethod
    def _utf16_order(buf: bytes, offset: int) -> str:
        if offset == 0 and buf[:2] == codecs.BOM_UTF16_BE:
            return "utf-16-be"
        if offset == 0 and buf[:2] == codecs.BOM_UTF16_LE:
            return "utf-16-le"
        sample = buf[:4096]
        # Mostly-ASCII text has its zero bytes at odd offsets in LE, at even ones in BE.
        return "utf-16-be" if sample[0::2].count(0) > sample[1::2].count(0) else "utf-16-le"

    def _convert(self, st: _State, buf: bytes, final: bool) -> None:
        """Append the complete lines of buf[st.done:] (all of it if ``final``) to the view."""
        raw = buf[st.done:]
        if not raw:
            return
        if st.real == 0 and not st.done and not final and any(
                len(raw) < len(b) and b.startswith(raw) for b in _BOMS.values()):
            return  # the start of a BOM: wait for the rest before deciding
        lines = self._split(raw, st.codec)
        if final:
            tail = raw[sum(map(len, lines)):]
            if tail:
                lines.append(tail)
        if not lines:
            return
        view, real = st.bounds[-1]
        out = []
        for line in lines:
            text = line.decode(st.codec, "replace")
            self.replaced += text.count("\ufffd")
            u = text.encode("utf-8", "surrogatepass")
            out.append(u)
            view += len(u)
            real += len(line)
            st.bounds.append((view, real))
        st.shadow.pending += b"".join(out)
        st.done += sum(map(len, lines))

    @staticmethod
    def _split(raw: bytes, codec: str) -> list[bytes]:
        """The complete lines at the start of ``raw``, each with its line end."""
        if codec not in ("utf-16-le", "utf-16-be"):
            k = raw.rfind(b"\n") + 1
            if not k:
                return []
            return [line + b"\n" for line in raw[:k - 1].split(b"\n")]
        nl = b"\n\x00" if codec == "utf-16-le" else b"\x00\n"
        parts = raw.split(nl)
        parts.pop()
        if all(len(p) % 2 == 0 for p in parts):
            return [p + nl for p in parts]
        out, start, i = [], 0, 0  # a 0A 00 pair across two characters: find the aligned ones
        while True:
            j = raw.find(nl, i)
            if j < 0:
                return out
            if (j - start) % 2:
                i = j + 1
                continue
            out.append(raw[start:j + 2])
            start = i = j + 2

    def _to_file(self, view: int) -> int:
        """The file offset of a line start in the view (or of the start of the line holding ``view``)."""
        st = self._st
        assert st is not None
        i = bisect_right(st.bounds, view, key=lambda b: b[0])
        return st.bounds[max(i - 1, 0)][1]

    def _run(self, cur: Cursor, st: _State, buf: bytes, events: list[bytes]) -> list[bytes]:
        """After the cutter ran: move the file cursor to where the view's offset maps."""
        i = max(bisect_right(st.bounds, st.shadow.offset, key=lambda b: b[0]) - 1, 0)
        real = st.bounds[i][1]
        del st.bounds[:i]
        advance = real - cur.offset
        if advance:
            cur.offset = real
            cur.pending = buf[advance:]
            st.done -= advance
        else:
            cur.pending = buf
        st.real = cur.offset
        cur.leftover = st.shadow.leftover
        cur.held = st.shadow.held
        return events
