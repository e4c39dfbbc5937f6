"""Flume's Thrift IDL in the two wire protocols Flume offers, compact and binary.

The IDL (flume-ng-sdk ``flume.thrift``)::

    struct ThriftFlumeEvent { 1: required map<string, string> headers, 2: required binary body }
    enum Status { OK, FAILED, ERROR, UNKNOWN }
    service ThriftSourceProtocol {
        Status append(1: ThriftFlumeEvent event),
        Status appendBatch(1: list<ThriftFlumeEvent> events),
    }

A call is a message: header (name, type CALL=1 / REPLY=2 / EXCEPTION=3, sequence id), then the
arguments struct (``appendBatch_args``: field 1, a list of event structs). The answer is a REPLY
whose struct holds field 0, the ``Status`` as an i32, or an EXCEPTION carrying Thrift's
``TApplicationException`` struct (1: message string, 2: type i32).

Compact protocol (Flume's default in ThriftSource, ThriftSink and ThriftRpcClient)::

    message   82 | (version 1 | type << 5) | varint seqid | varint len, name
    field     (id delta << 4 | type) when the delta is 1..15, else  type, zigzag-varint id
    i32       zigzag varint
    binary    varint length, bytes
    list      (size << 4 | elem type) when size < 15, else  (F0 | elem type), varint size
    map       00 when empty, else  varint size, (key type << 4 | value type)
    types     BINARY 8, I32 5, LIST 9, MAP 11, STRUCT 12; a struct ends with 00

Binary protocol (``protocol = binary`` in Flume)::

    message   80 01 00 type | i32 len, name | i32 seqid   (strict; Java writes this)
              i32 len, name | type | i32 seqid            (old, non-strict; accepted)
    field     type | i16 id        i32 4 bytes big-endian   binary: i32 length, bytes
    list      elem type | i32 size     map: key type | value type | i32 size
    types     I32 8, STRING 11, STRUCT 12, MAP 13, LIST 15; a struct ends with 00

Decoding works on one whole frame (the framed transport delivers them), so a reader is a
``bytes`` object and a position: every length and count is checked against the bytes left in
the frame before anything is sliced or allocated, unknown fields are skipped with a depth limit,
and a bad byte raises :class:`RemoteProtocolError` with what was wrong.
"""

from __future__ import annotations

import enum
import struct

from shipper.thriftrpc.errors import RemoteProtocolError

COMPACT = "compact"
BINARY = "binary"
PROTOCOLS = (COMPACT, BINARY)

CALL, REPLY, EXCEPTION, ONEWAY = 1, 2, 3, 4
MAX_SKIP_DEPTH = 16

# Binary protocol type ids
B_STOP, B_BOOL, B_BYTE, B_DOUBLE, B_I16, B_I32, B_I64, B_STRING, B_STRUCT, B_MAP, B_SET, B_LIST = (
    0, 2, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15)
# Compact protocol type ids
C_STOP, C_TRUE, C_FALSE, C_BYTE, C_I16, C_I32, C_I64, C_DOUBLE, C_BINARY, C_LIST, C_SET, C_MAP, C_STRUCT = range(13)

_STRICT_VERSION = 0x80010000
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I16 = struct.Struct(">h")


class Status(enum.IntEnum):
    """Flume's Thrift ``Status``; on the wire an i32."""

    OK = 0
    FAILED = 1
    ERROR = 2
    UNKNOWN = 3


# --------------------------------------------------------------------------- varints


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def zigzag32(n: int) -> bytes:
    return varint(((n << 1) ^ (n >> 31)) & 0xFFFFFFFF)


def read_varint(buf: bytes, pos: int, end: int, limit_bytes: int = 5) -> tuple[int, int]:
    """An unsigned varint of at most ``limit_bytes`` bytes (5 for 32-bit, 10 for 64-bit)."""
    result = shift = 0
    for i in range(limit_bytes):
        if pos >= end:
            raise RemoteProtocolError("frame ends inside a varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
    raise RemoteProtocolError("varint longer than its type allows")


def unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


# --------------------------------------------------------------------------- writing


def message_header(proto: str, name: bytes, mtype: int, seqid: int) -> bytes:
    if proto == COMPACT:
        return bytes((0x82, 0x01 | (mtype << 5))) + varint(seqid & 0xFFFFFFFF) + varint(len(name)) + name
    return _U32.pack(_STRICT_VERSION | mtype) + _I32.pack(len(name)) + name + _U32.pack(seqid & 0xFFFFFFFF)


def encode_event(proto: str, headers: dict[str, str] | None, body: bytes) -> bytes:
    """One ``ThriftFlumeEvent`` struct."""
    items = [(k.encode("utf-8"), v.encode("utf-8")) for k, v in (headers or {}).items()]
    if proto == COMPACT:
        out = [b"\x1b", varint(len(items)) + b"\x88" if items else b"\x00"]
        for k, v in items:
            out += (varint(len(k)), k, varint(len(v)), v)
        out += (b"\x18", varint(len(body)), body, b"\x00")
    else:
        out = [b"\x0d\x00\x01\x0b\x0b", _I32.pack(len(items))]
        for k, v in items:
            out += (_I32.pack(len(k)), k, _I32.pack(len(v)), v)
        out += (b"\x0b\x00\x02", _I32.pack(len(body)), body, b"\x00")
    return b"".join(out)


def list_header(proto: str, count: int) -> bytes:
    """Field 1 of ``appendBatch_args``, a list of structs, up to its first element."""
    if proto == COMPACT:
        return b"\x19" + (bytes(((count << 4) | C_STRUCT,)) if count < 15 else b"\xfc" + varint(count))
    return b"\x0f\x00\x01\x0c" + _I32.pack(count)


def append_batch_call(proto: str, seqid: int, count: int, encoded_events: bytes) -> bytes:
    """A whole ``appendBatch`` call message around ``count`` already-encoded event structs."""
    return b"".join((message_header(proto, b"appendBatch", CALL, seqid), list_header(proto, count),
                     encoded_events, b"\x00"))


def append_call(proto: str, seqid: int, encoded_event: bytes) -> bytes:
    """An ``append`` call (one event); ``encoded_event`` is one struct as :func:`encode_event` makes it."""
    field = b"\x1c" if proto == COMPACT else b"\x0c\x00\x01"
    return message_header(proto, b"append", CALL, seqid) + field + encoded_event + b"\x00"


def status_reply(proto: str, name: bytes, seqid: int, status: int) -> bytes:
    """The REPLY to append/appendBatch: field 0, the Status as i32."""
    if proto == COMPACT:
        result = b"\x05\x00" + zigzag32(int(status)) + b"\x00"
    else:
        result = b"\x08\x00\x00" + _I32.pack(int(status)) + b"\x00"
    return message_header(proto, name, REPLY, seqid) + result


def exception_reply(proto: str, name: bytes, seqid: int, message: str, kind: int) -> bytes:
    """A ``TApplicationException`` (kind: 1 unknown method, 7 protocol error, 6 internal error)."""
    text = message.encode("utf-8")
    if proto == COMPACT:
        body = b"\x18" + varint(len(text)) + text + b"\x15" + zigzag32(kind) + b"\x00"
    else:
        body = b"\x0b\x00\x01" + _I32.pack(len(text)) + text + b"\x08\x00\x02" + _I32.pack(kind) + b"\x00"
    return message_header(proto, name, EXCEPTION, seqid) + body


# --------------------------------------------------------------------------- reading


def detect(frame: bytes) -> str:
    """Which protocol a frame speaks, from its first bytes (RemoteProtocolError if neither)."""
    if frame[:1] == b"\x82":
        return COMPACT
    if frame[:2] == b"\x80\x01" or frame[:1] == b"\x00":
        return BINARY
    raise RemoteProtocolError(f"not a Thrift message (first bytes {frame[:4].hex()})")


class Reader:
    """One frame and a position; the protocol-specific reads are in the two subclasses."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf, self.pos, self.end = buf, pos, len(buf)

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.end - self.pos:
            raise RemoteProtocolError(f"a length of {n} does not fit the {self.end - self.pos} bytes left in the frame")
        start = self.pos
        self.pos += n
        return self.buf[start : self.pos]

    def check_count(self, count: int, min_size: int) -> int:
        if count < 0 or count * min_size > self.end - self.pos:
            raise RemoteProtocolError(f"a count of {count} does not fit the {self.end - self.pos} bytes left in the frame")
        return count

    def skip(self, ttype: int, depth: int = 0) -> None:
        """Skip a value of a field we do not know (depth-limited: nesting is the peer's to choose)."""
        if depth > MAX_SKIP_DEPTH:
            raise RemoteProtocolError("values nested too deep")
        self._skip(ttype, depth)

    def _skip(self, ttype: int, depth: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class CompactReader(Reader):
    __slots__ = ("last_field",)

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        super().__init__(buf, pos)
        self.last_field = [0]

    def message_begin(self) -> tuple[bytes, int, int]:
        b = self.take(2)
        if b[0] != 0x82:
            raise RemoteProtocolError(f"not a compact-protocol message (first byte {b[0]:02x})")
        if b[1] & 0x1F != 1:
            raise RemoteProtocolError(f"unknown compact-protocol version {b[1] & 0x1F}")
        seqid, self.pos = read_varint(self.buf, self.pos, self.end)
        return self.binary(), b[1] >> 5, seqid

    def struct_begin(self) -> None:
        self.last_field.append(0)

    def struct_end(self) -> None:
        self.last_field.pop()

    def field_begin(self) -> tuple[int, int]:
        """(type, id); type 0 is the struct's end. Booleans come back as C_TRUE/C_FALSE."""
        byte = self.take(1)[0]
        ctype = byte & 0x0F
        if ctype == C_STOP:
            return C_STOP, 0
        delta = byte >> 4
        if delta:
            fid = self.last_field[-1] + delta
        else:
            raw, self.pos = read_varint(self.buf, self.pos, self.end, 3)
            fid = unzigzag(raw)
        self.last_field[-1] = fid
        return ctype, fid

    def i32(self) -> int:
        raw, self.pos = read_varint(self.buf, self.pos, self.end)
        return unzigzag(raw)

    def binary(self) -> bytes:
        n, self.pos = read_varint(self.buf, self.pos, self.end)
        return self.take(n)

    def list_begin(self) -> tuple[int, int]:
        byte = self.take(1)[0]
        size = byte >> 4
        if size == 15:
            size, self.pos = read_varint(self.buf, self.pos, self.end)
        return byte & 0x0F, self.check_count(size, 1)

    def map_begin(self) -> tuple[int, int, int]:
        size, self.pos = read_varint(self.buf, self.pos, self.end)
        if size == 0:
            return C_BINARY, C_BINARY, 0
        kv = self.take(1)[0]
        return kv >> 4, kv & 0x0F, self.check_count(size, 2)

    def _skip(self, ttype: int, depth: int) -> None:
        if ttype in (C_TRUE, C_FALSE):
            return
        if ttype == C_BYTE:
            self.take(1)
        elif ttype in (C_I16, C_I32, C_I64):
            _, self.pos = read_varint(self.buf, self.pos, self.end, 10)
        elif ttype == C_DOUBLE:
            self.take(8)
        elif ttype == C_BINARY:
            self.binary()
        elif ttype in (C_LIST, C_SET):
            etype, size = self.list_begin()
            for _ in range(size):
                self._skip_element(etype, depth)
        elif ttype == C_MAP:
            ktype, vtype, size = self.map_begin()
            for _ in range(size):
                self._skip_element(ktype, depth)
                self._skip_element(vtype, depth)
        elif ttype == C_STRUCT:
            self.struct_begin()
            while (field := self.field_begin())[0] != C_STOP:
                self.skip(field[0], depth + 1)
            self.struct_end()
        else:
            raise RemoteProtocolError(f"unknown compact-protocol type {ttype}")

    def _skip_element(self, etype: int, depth: int) -> None:
        if etype in (C_TRUE, C_FALSE):  # in containers a bool is one byte
            self.take(1)
        else:
            self.skip(etype, depth + 1)


class BinaryReader(Reader):
    __slots__ = ()

    def message_begin(self) -> tuple[bytes, int, int]:
        first = self._u32()
        if first & 0x80000000:
            if first & 0xFFFF0000 != _STRICT_VERSION:
                raise RemoteProtocolError(f"bad binary-protocol version {first:08x}")
            name = self.binary()
            return name, first & 0xFF, self._u32()
        self.pos -= 4
        name = self.binary()
        return name, self.take(1)[0], self._u32()

    def struct_begin(self) -> None:
        pass

    def struct_end(self) -> None:
        pass

    def field_begin(self) -> tuple[int, int]:
        ttype = self.take(1)[0]
        if ttype == B_STOP:
            return B_STOP, 0
        return ttype, _I16.unpack(self.take(2))[0]

    def i32(self) -> int:
        return _I32.unpack(self.take(4))[0]

    def _u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def binary(self) -> bytes:
        return self.take(self.i32())

    def list_begin(self) -> tuple[int, int]:
        etype = self.take(1)[0]
        return etype, self.check_count(self.i32(), 1)

    def map_begin(self) -> tuple[int, int, int]:
        kv = self.take(2)
        return kv[0], kv[1], self.check_count(self.i32(), 2)

    _FIXED = {B_BOOL: 1, B_BYTE: 1, B_I16: 2, B_I32: 4, B_I64: 8, B_DOUBLE: 8}

    def _skip(self, ttype: int, depth: int) -> None:
        size = self._FIXED.get(ttype)
        if size is not None:
            self.take(size)
        elif ttype == B_STRING:
            self.binary()
        elif ttype in (B_LIST, B_SET):
            etype, n = self.list_begin()
            for _ in range(n):
                self.skip(etype, depth + 1)
        elif ttype == B_MAP:
            ktype, vtype, n = self.map_begin()
            for _ in range(n):
                self.skip(ktype, depth + 1)
                self.skip(vtype, depth + 1)
        elif ttype == B_STRUCT:
            while (field := self.field_begin())[0] != B_STOP:
                self.skip(field[0], depth + 1)
        else:
            raise RemoteProtocolError(f"unknown binary-protocol type {ttype}")


def reader_for(proto: str, frame: bytes) -> Reader:
    return CompactReader(frame) if proto == COMPACT else BinaryReader(frame)


# The type ids each protocol uses for the fields of Flume's structs.
TYPES = {
    COMPACT: {"i32": C_I32, "binary": C_BINARY, "list": C_LIST, "map": C_MAP, "struct": C_STRUCT, "stop": C_STOP},
    BINARY: {"i32": B_I32, "binary": B_STRING, "list": B_LIST, "map": B_MAP, "struct": B_STRUCT, "stop": B_STOP},
}


def read_event(r: Reader, types: dict[str, int]) -> tuple[dict[str, str], bytes]:
    """One ``ThriftFlumeEvent``; both fields are required, unknown fields are skipped."""
    headers: dict[str, str] | None = None
    body: bytes | None = None
    r.struct_begin()
    while True:
        ttype, fid = r.field_begin()
        if ttype == types["stop"]:
            break
        if fid == 1 and ttype == types["map"]:
            ktype, vtype, n = r.map_begin()
            if n and (ktype != types["binary"] or vtype != types["binary"]):
                raise RemoteProtocolError("event headers are not a map of strings")
            headers = {}
            for _ in range(n):
                k = r.binary()
                headers[_text(k)] = _text(r.binary())
        elif fid == 2 and ttype == types["binary"]:
            body = r.binary()
        else:
            r.skip(ttype)
    r.struct_end()
    if headers is None or body is None:
        raise RemoteProtocolError("a ThriftFlumeEvent lacks its required headers or body")
    return headers, body


class _Unusual(Exception):
    """The fast path met a layout it does not handle; the generic reader takes that event."""


def read_events(r: Reader, proto: str, n: int) -> list[tuple[dict[str, str], bytes]]:
    """``n`` events of appendBatch's list: a tight loop for the layout Java and we write (fields 1
    then 2, one-byte header counts and string lengths), falling back to :func:`read_event` for any
    event laid out otherwise (or broken, which the generic reader then names).

    Events of one batch mostly share their headers, and both protocols' maps are prefix-free: when
    the bytes of this event's map start with the previous event's map, it is that map, and its dict
    is copied instead of parsed (as the Avro core does)."""
    fast = _fast_compact if proto == COMPACT else _fast_binary
    buf, end = r.buf, r.end
    types = TYPES[proto]
    out = []
    pos = r.pos
    cache = [b"\xff", {}]  # the previous map's bytes and dict; never matches first
    for _ in range(n):
        try:
            event, pos = fast(buf, pos, end, cache)
        except (_Unusual, IndexError, UnicodeDecodeError, struct.error):
            r.pos = pos
            event = read_event(r, types)
            pos = r.pos
        out.append(event)
    r.pos = pos
    return out


def _fast_compact(buf: bytes, pos: int, end: int, cache: list) -> tuple[tuple[dict[str, str], bytes], int]:
    if buf[pos] != 0x1B:  # field 1, map
        raise _Unusual
    pos += 1
    if buf.startswith(cache[0], pos):
        headers = cache[1].copy()
        pos += len(cache[0])
    else:
        start = pos
        count = buf[pos]
        pos += 1
        headers = {}
        if count:
            if count >= 0x80 or buf[pos] != 0x88:
                raise _Unusual
            pos += 1
            for _ in range(count):
                n = buf[pos]
                if n >= 0x80 or pos + 1 + n > end:
                    raise _Unusual
                k = buf[pos + 1 : pos + 1 + n].decode("utf-8")
                pos += 1 + n
                n = buf[pos]
                if n >= 0x80 or pos + 1 + n > end:
                    raise _Unusual
                headers[k] = buf[pos + 1 : pos + 1 + n].decode("utf-8")
                pos += 1 + n
        cache[0], cache[1] = buf[start:pos], headers
        headers = headers.copy()
    if buf[pos] != 0x18:  # field 2, binary
        raise _Unusual
    length, shift = 0, 0
    while True:
        pos += 1
        b = buf[pos]
        length |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 28:
            raise _Unusual
    pos += 1
    if pos + length >= end or buf[pos + length] != 0:  # the body, then the struct's end
        raise _Unusual
    return (headers, buf[pos : pos + length]), pos + length + 1


def _fast_binary(buf: bytes, pos: int, end: int, cache: list) -> tuple[tuple[dict[str, str], bytes], int]:
    if buf[pos : pos + 5] != b"\x0d\x00\x01\x0b\x0b":  # field 1: map<string, string>
        raise _Unusual
    pos += 5
    if buf.startswith(cache[0], pos):
        headers = cache[1].copy()
        pos += len(cache[0])
    else:
        start = pos
        (count,) = _I32.unpack_from(buf, pos)
        pos += 4
        if count < 0 or count * 8 > end - pos:
            raise _Unusual
        headers = {}
        for _ in range(count):
            (n,) = _I32.unpack_from(buf, pos)
            if n < 0 or pos + 4 + n > end:
                raise _Unusual
            k = buf[pos + 4 : pos + 4 + n].decode("utf-8")
            pos += 4 + n
            (n,) = _I32.unpack_from(buf, pos)
            if n < 0 or pos + 4 + n > end:
                raise _Unusual
            headers[k] = buf[pos + 4 : pos + 4 + n].decode("utf-8")
            pos += 4 + n
        cache[0], cache[1] = buf[start:pos], headers
        headers = headers.copy()
    if buf[pos : pos + 3] != b"\x0b\x00\x02":  # field 2: binary
        raise _Unusual
    (length,) = _I32.unpack_from(buf, pos + 3)
    pos += 7
    if length < 0 or pos + length >= end or buf[pos + length] != 0:
        raise _Unusual
    return (headers, buf[pos : pos + length]), pos + length + 1


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RemoteProtocolError(f"a header is not UTF-8: {err.reason} at byte {err.start}") from None
