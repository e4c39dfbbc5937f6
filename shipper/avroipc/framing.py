"""Netty framing of Avro RPC (Avro's ``NettyTransportCodec`` "data packs"); see avro-rpc-wire.md §2.

Byte layout of one frame, every integer a signed 32-bit big-endian::

    serial:int32  count:int32  ( len:int32  bytes[len] ) * count

There is no total length and no terminator. Buffer boundaries carry no meaning: a receiver joins
the buffers and decodes the result as one message. Java never sends ``count = 0`` (a Java reader
would then take the next frame's serial as a buffer length and lose sync), so neither do we: an
empty message is sent as one empty buffer. Zero-length buffers are legal and Java servers send
them in every response once a connection is established.

Java puts no limit on ``count`` or ``len`` and simply waits for the bytes. We do impose limits
(``max_buffers``, ``max_frame_bytes``), checked as soon as the header or a length arrives and
before anything is reserved for it: a hostile header claiming 2 GiB is refused after 12 bytes.
The decoder only ever holds bytes that actually arrived.

Java's split of a message into buffers (Avro's ``ByteBufferOutputStream`` fills 8192-byte
chunks) is reproduced by :func:`chunks` so that frames are byte-identical to Java's:

* request  = chunks(handshake + metadata + message name) + chunks(parameters)
* response = chunks(handshake response, or nothing) + chunks(metadata) + chunks(flag + value)

where ``chunks(b"")`` is one empty buffer.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Sequence

from shipper.avroipc.errors import LocalProtocolError, RemoteProtocolError

DEFAULT_MAX_BUFFERS = 65536
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
JAVA_CHUNK = 8192

_INT = struct.Struct(">i")
_HEADER = struct.Struct(">ii")
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: the serial and its buffers (join them to get the message)."""

    serial: int
    buffers: tuple[bytes, ...]

    def payload(self) -> bytes:
        bufs = self.buffers
        return bufs[0] if len(bufs) == 1 else b"".join(bufs)


def chunks(segment: bytes | bytearray | memoryview) -> list:
    """Cut a segment the way Java's ByteBufferOutputStream does: 8192-byte pieces + the rest.

    Memoryview slices are returned for long segments to avoid copying before the final join.
    """
    n = len(segment)
    if n <= JAVA_CHUNK:
        return [segment]
    view = memoryview(segment)
    return [view[i : i + JAVA_CHUNK] for i in range(0, n, JAVA_CHUNK)]


def chunks_of(parts: Sequence[bytes]) -> list:
    """:func:`chunks` of the parts' concatenation, without making it: a piece inside one part is a
    memoryview of it; only a piece across parts is joined (at most two per part boundary)."""
    if sum(map(len, parts)) <= JAVA_CHUNK:
        return [b"".join(parts)]
    out: list = []
    carry: list = []  # the start of a piece that crosses into the next part
    room = JAVA_CHUNK
    for part in parts:
        view = memoryview(part)
        pos, left = 0, len(view)
        while left:
            take = room if room < left else left
            if take == JAVA_CHUNK:
                out.append(view[pos:pos + take])
            else:
                carry.append(view[pos:pos + take])
            pos += take
            left -= take
            room -= take
            if not room:
                if carry:
                    out.append(b"".join(carry))
                    carry = []
                room = JAVA_CHUNK
    if carry:
        out.append(b"".join(carry))
    return out


def frame_parts(serial: int, buffers: Sequence[bytes | bytearray | memoryview]) -> list:
    """One frame as pieces, for a scatter write: the header, then each buffer's length and the
    buffer itself, not copied. Their concatenation is :func:`encode_frame`'s bytes. An empty
    buffer list is sent as one empty buffer (never count 0)."""
    if not _INT32_MIN <= serial <= _INT32_MAX:
        raise LocalProtocolError(f"serial {serial} does not fit in a signed 32-bit int")
    if not buffers:
        buffers = (b"",)
    pack = _INT.pack
    parts: list = [_HEADER.pack(serial, len(buffers))]
    for buf in buffers:
        parts.append(pack(len(buf)))
        parts.append(buf)
    return parts


def encode_frame(serial: int, buffers: Sequence[bytes | bytearray | memoryview]) -> bytes:
    """The bytes of one frame (:func:`frame_parts`, joined)."""
    return b"".join(frame_parts(serial, buffers))


class FrameDecoder:
    """Incremental frame parser: feed it bytes as they come, get complete frames back.

    State survives between calls, so feeding one byte at a time costs no re-parsing. Once it has
    raised, the stream is out of sync and the decoder refuses any further input.

    Copies: a buffer's bytes are not copied as they arrive; the decoder keeps memoryviews of the
    ``bytes`` it was fed (input of another type is copied once, since its owner may change it)
    and joins them once, when the frame is complete. With ``whole=True`` that join is the
    frame's message, returned as its only buffer: one copy of each byte between the socket's
    read and the message, where a join per buffer and then one of the buffers made two. Only a
    header or length cut across two reads is gathered in a small carry. :attr:`buffered` counts
    every byte of every input the partial frame holds a view into, not just the views.
    """

    __slots__ = (
        "max_buffers",
        "max_frame_bytes",
        "whole",
        "_part",
        "_serial",
        "_count",
        "_seen",
        "_pieces",
        "_ends",
        "_need",
        "_frame_bytes",
        "_held",
        "_overlap",
        "_failed",
    )

    def __init__(
        self,
        max_buffers: int = DEFAULT_MAX_BUFFERS,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        *,
        whole: bool = False,
    ) -> None:
        if max_buffers < 1 or max_frame_bytes < 0:
            raise ValueError("max_buffers must be >= 1 and max_frame_bytes >= 0")
        self.max_buffers = max_buffers
        self.max_frame_bytes = max_frame_bytes
        self.whole = whole
        self._part = bytearray()  # a frame header or buffer length cut across two inputs
        self._serial = 0
        self._count = -1  # -1: waiting for a frame header
        self._seen = 0  # buffers of the current frame whose length has been read
        self._pieces: list = []  # the current frame's bytes so far: views into the inputs
        self._ends: list[int] = []  # per buffer read, len(_pieces) at its end (whole=False)
        self._need = 0  # bytes still to come of the current buffer
        self._frame_bytes = 0
        self._held = 0  # bytes of the inputs the pieces keep alive
        self._overlap = 0  # bytes of _part that are also in an input counted in _held
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame: every input the partial frame
        holds a view into, whole, and the carry (less what of it is in such an input already)."""
        return self._held + len(self._part) - self._overlap

    @property
    def in_frame(self) -> bool:
        """True when a frame has started but is not complete (EOF now would truncate it)."""
        return self._count >= 0 or bool(self._part)

    def _fail(self, message: str) -> RemoteProtocolError:
        self._failed = True
        self._part = bytearray()
        self._pieces = []
        self._held = self._overlap = 0
        return RemoteProtocolError(message)

    def _field(self, data: bytes, pos: int, size: int) -> tuple[bytes | bytearray | None, int, int]:
        """A ``size``-byte header field at ``pos``, perhaps begun in an earlier input: (the bytes
        holding it, where in them, next position), or (None, _, end) when it is not all here."""
        part = self._part
        if not part and len(data) - pos >= size:
            return data, pos, pos + size
        take = min(size - len(part), len(data) - pos)
        part += data[pos : pos + take]
        pos += take
        if len(part) < size:
            return None, 0, pos
        field, self._part = part, bytearray()
        return field, 0, pos

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if self._failed:
            raise RemoteProtocolError("the frame stream is already out of sync")
        if type(data) is not bytes:
            data = bytes(data)  # (views into it are kept: it must not change under them)
        frames: list[Frame] = []
        pos, end = 0, len(data)
        view: memoryview | None = None
        counted = False  # this input is counted in _held for the current frame
        while pos < end or (self._count >= 0 and self._seen == self._count and not self._need):
            if self._count < 0:
                buf, at, pos = self._field(data, pos, 8)
                if buf is None:
                    break
                serial, count = _HEADER.unpack_from(buf, at)
                if count <= 0:
                    raise self._fail(f"frame with buffer count {count}")
                if count > self.max_buffers:
                    raise self._fail(f"frame with {count} buffers, over the cap of {self.max_buffers}")
                self._serial, self._count, self._seen, self._frame_bytes = serial, count, 0, 0
                continue
            need = self._need
            if need:
                take = need if need <= end - pos else end - pos
                if view is None:
                    view = memoryview(data)
                self._pieces.append(data if take == end else view[pos : pos + take])
                if not counted:
                    self._held += end
                    counted = True
                pos += take
                self._need = need = need - take
                if need:
                    break
                if not self.whole:
                    self._ends.append(len(self._pieces))
            if self._seen < self._count:
                start = pos
                buf, at, pos = self._field(data, pos, 4)
                if buf is None:
                    if counted:  # the length's first bytes are carried and held in this input too
                        self._overlap += pos - start
                    break
                self._overlap = 0
                (need,) = _INT.unpack_from(buf, at)
                if need < 0:
                    raise self._fail(f"buffer with negative length {need}")
                if self._frame_bytes + need > self.max_frame_bytes:
                    raise self._fail(
                        f"frame of more than {self.max_frame_bytes} bytes"
                        f" (a buffer of {need} after {self._frame_bytes})"
                    )
                self._seen += 1
                self._frame_bytes += need
                self._need = need
                if not need and not self.whole:
                    self._ends.append(len(self._pieces))
                continue
            frames.append(Frame(self._serial, self._take()))
            counted = False
        return frames

    def _take(self) -> tuple[bytes, ...]:
        """The finished frame's buffers (one, the message, with ``whole``); the state reset."""
        pieces, self._pieces, self._held, self._count = self._pieces, [], 0, -1
        if self.whole:
            return (b"".join(pieces),)
        ends, self._ends = self._ends, []
        out, start = [], 0
        for stop in ends:
            out.append(b"".join(pieces[start:stop]))
            start = stop
        return tuple(out)


class Inbox:
    """The receiving half both connection roles share: frames decoded so far, and how the stream
    ended. ``receive_data(b"")`` marks EOF; a framing error is kept and raised by :meth:`end` once
    every frame decoded before it has been handled, so a peer's last good answers are not lost."""

    __slots__ = ("_decoder", "frames", "error", "eof")

    def __init__(self, max_buffers: int, max_frame_bytes: int) -> None:
        self._decoder = FrameDecoder(max_buffers, max_frame_bytes, whole=True)
        self.frames: deque[Frame] = deque()
        self.error: RemoteProtocolError | None = None
        self.eof = False

    @property
    def buffered(self) -> int:
        """Bytes held: the decoder's partial frame and the frames not yet handled."""
        return self._decoder.buffered + sum(sum(map(len, f.buffers)) for f in self.frames)

    @property
    def in_frame(self) -> bool:
        return self._decoder.in_frame

    def receive_data(self, data: bytes) -> None:
        if not data:
            self.eof = True
            return
        if self.eof:
            raise LocalProtocolError("data received after EOF")
        if self.error is not None:
            return
        try:
            self.frames.extend(self._decoder.feed(data))
        except RemoteProtocolError as exc:
            # Kept without its traceback: the traceback's frames hold the input buffers, and
            # the cycle (inbox -> error -> frames -> inbox) would keep them until a full GC.
            self.error = exc.with_traceback(None)

    def fail(self, message: str) -> RemoteProtocolError:
        """Break the connection: frames not yet handled are dropped, the error raised from now on."""
        self.error = RemoteProtocolError(message)
        self.frames.clear()
        return self.error

    def end(self) -> bool:
        """With no frame left: raise the kept error, or return True at EOF (False: wait for data)."""
        if self.error is not None:
            raise self.error
        return self.eof
