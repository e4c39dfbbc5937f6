"""Avro binary encoding: the few primitives Flume's protocol needs, written out by hand.

Layout reminders (Avro specification, "Binary Encoding"):

* ``int`` and ``long`` are zigzag varints: ``(n << 1) ^ (n >> 63)``, 7 bits a byte, low group
  first, the high bit set on every byte but the last.
* ``string`` and ``bytes`` are a ``long`` length followed by that many bytes (UTF-8 for strings).
* ``map`` and ``array`` are a series of blocks, each a ``long`` count followed by the items, ended by
  a count of 0. A negative count ``-n`` means ``n`` items preceded by a ``long`` byte size of the
  block. Java writes one block; readers must accept any number.
* ``enum`` is the zigzag index; ``union`` is the zigzag branch index then the value; ``fixed(n)`` is
  ``n`` raw bytes.

The :class:`Reader` works on one complete, already-framed message; it never waits for more
bytes. Any shortfall or nonsense raises :class:`AvroDecodeError`, and every length is checked
against what is left before anything is allocated, so hostile input cannot ask for gigabytes.
"""

from __future__ import annotations


class AvroDecodeError(ValueError):
    """The bytes are not a valid Avro encoding of the expected schema."""


def zigzag(n: int) -> bytes:
    """Encode a long as a zigzag varint."""
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Small lengths dominate (event bodies of ~100 bytes): precompute their encodings. 0..63 take one
# byte (2n) and 64..8191 two (the low 7 bits of 2n with the high bit set, then 2n >> 7), built
# without calling zigzag 8,192 times: half the cost, paid at every start.
SMALL_ZIGZAG = ([bytes((2 * n,)) for n in range(64)]
                + [bytes(((2 * n) & 0x7F | 0x80, n >> 6)) for n in range(64, 8192)])  # encodings of 0..8191


def encode_long(n: int) -> bytes:
    if 0 <= n < 8192:
        return SMALL_ZIGZAG[n]
    return zigzag(n)


def encode_bytes(b: bytes) -> bytes:
    n = len(b)
    return (SMALL_ZIGZAG[n] if n < 8192 else zigzag(n)) + b


def encode_string(s: str) -> bytes:
    return encode_bytes(s.encode("utf-8"))


def encode_string_map(m: dict[str, str] | None) -> bytes:
    """A ``map<string>`` in one block, as Java writes it (an empty map is ``00``)."""
    if not m:
        return b"\x00"
    parts = [encode_long(len(m))]
    for k, v in m.items():
        parts.append(encode_string(k))
        parts.append(encode_string(v))
    parts.append(b"\x00")
    return b"".join(parts)


def encode_bytes_map(m: dict[str, bytes] | None) -> bytes:
    """A ``map<bytes>`` in one block (request/response metadata, handshake meta)."""
    if not m:
        return b"\x00"
    parts = [encode_long(len(m))]
    for k, v in m.items():
        parts.append(encode_string(k))
        parts.append(encode_bytes(v))
    parts.append(b"\x00")
    return b"".join(parts)


class Reader:
    """Sequential decoder over one complete message."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.buf = bytes(buf) if not isinstance(buf, bytes) else buf
        self.pos = pos
        self.end = len(self.buf)

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self.end

    def read_long(self) -> int:
        buf, pos, end = self.buf, self.pos, self.end
        result = 0
        shift = 0
        while True:
            if pos >= end:
                raise AvroDecodeError("truncated varint")
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 63:
                raise AvroDecodeError("varint longer than 10 bytes")
        self.pos = pos
        return (result >> 1) ^ -(result & 1)

    def read_fixed(self, n: int) -> bytes:
        if n < 0 or n > self.end - self.pos:
            raise AvroDecodeError(f"need {n} bytes, {self.end - self.pos} left")
        start = self.pos
        self.pos = start + n
        return self.buf[start : self.pos]

    def read_bytes(self) -> bytes:
        n = self.read_long()
        if n < 0:
            raise AvroDecodeError(f"negative length {n}")
        return self.read_fixed(n)

    def read_string(self) -> str:
        raw = self.read_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AvroDecodeError("string is not valid UTF-8") from exc

    def read_boolean(self) -> bool:
        b = self.read_fixed(1)[0]
        if b > 1:
            raise AvroDecodeError(f"boolean byte {b:#x}")
        return b == 1

    def read_enum(self, nsymbols: int) -> int:
        i = self.read_long()
        if not 0 <= i < nsymbols:
            raise AvroDecodeError(f"enum index {i} out of range 0..{nsymbols - 1}")
        return i

    def read_union_index(self, nbranches: int) -> int:
        i = self.read_long()
        if not 0 <= i < nbranches:
            raise AvroDecodeError(f"union branch {i} out of range 0..{nbranches - 1}")
        return i

    def block_counts(self, min_item_size: int = 1):
        """Yield the item count of each block of a map or array until the ending 0.

        A count is checked against the bytes left (each item takes at least ``min_item_size``
        bytes), so a hostile count cannot make the caller loop or allocate beyond the input.
        """
        while True:
            count = self.read_long()
            if count == 0:
                return
            if count < 0:
                count = -count
                size = self.read_long()
                if size < 0 or size > self.remaining:
                    raise AvroDecodeError(f"block byte size {size} out of range")
            if count * min_item_size > self.remaining:
                raise AvroDecodeError(f"block count {count} exceeds the {self.remaining} bytes left")
            yield count

    def read_string_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for count in self.block_counts(2):
            for _ in range(count):
                k = self.read_string()
                out[k] = self.read_string()
        return out

    def read_bytes_map(self, max_entries: int | None = None) -> dict[str, bytes]:
        """A ``map<bytes>``; past ``max_entries`` entries (checked per block) AvroDecodeError."""
        out: dict[str, bytes] = {}
        for count in self.block_counts(2):
            if max_entries is not None and len(out) + count > max_entries:
                raise AvroDecodeError(f"a map of more than {max_entries} entries")
            for _ in range(count):
                k = self.read_string()
                out[k] = self.read_bytes()
        return out
