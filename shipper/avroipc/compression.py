"""Flume's ``compression-type = deflate``: one zlib stream per connection and direction.

See avro-rpc-wire.md §5.1 and P11. The stream is zlib-wrapped (RFC 1950, ``78 9c`` at level 6),
never reset between frames (later frames refer back to earlier ones), and every write ends with
a sync flush (``00 00 ff ff``) so the peer can decode each frame as soon as it arrives. A graceful
close writes the final block and the Adler-32 trailer; a reader must accept EOF with or without it.

The decoder bounds its output: it inflates in pieces of at most ``_STEP`` bytes and refuses a
single :meth:`ZlibDecoder.decode` call that would yield more than ``max_output`` bytes, so a small
"zip bomb" costs at most ``max_output`` of memory before the connection is dropped
(:class:`InflateLimitExceeded`). ``max_output`` may be changed between calls: a server lowers it
to what its memory budget has left. A legitimate
peer cannot reach that bound when the transport feeds the socket's bytes in reads of 64 KiB or
less (deflate expands at most about 1032:1) unless a single frame exceeds the frame cap anyway.
"""

from __future__ import annotations

import zlib

from shipper.avroipc.errors import RemoteProtocolError

DEFAULT_MAX_DECODED_BYTES = 80 * 1024 * 1024
_STEP = 256 * 1024


class InflateLimitExceeded(RemoteProtocolError):
    """One decode would have produced more than the decoder's ``max_output`` bytes."""


class ZlibEncoder:
    """Compress outgoing bytes; each :meth:`encode` is one sync-flushed write."""

    __slots__ = ("_c",)

    def __init__(self, level: int = 6) -> None:
        self._c = zlib.compressobj(level)

    def encode(self, data: bytes) -> bytes:
        c = self._c
        return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        """The stream's end (final block + Adler-32), for a graceful close."""
        return self._c.flush(zlib.Z_FINISH)


class ZlibDecoder:
    """Inflate incoming bytes incrementally, with a bound on each call's output."""

    __slots__ = ("_d", "max_output")

    def __init__(self, max_output: int = DEFAULT_MAX_DECODED_BYTES) -> None:
        self._d = zlib.decompressobj()
        self.max_output = max_output

    @property
    def eof(self) -> bool:
        """True once the peer's stream end (with its trailer) has been read."""
        return self._d.eof

    def decode(self, data: bytes) -> bytes:
        d = self._d
        if d.eof:
            if data:
                raise RemoteProtocolError("bytes after the end of the deflate stream")
            return b""
        out: list[bytes] = []
        total = 0
        limit = self.max_output
        pending = data
        try:
            while True:
                piece = d.decompress(pending, _STEP)
                total += len(piece)
                if total > limit:
                    raise InflateLimitExceeded(f"deflate data expands beyond {limit} bytes in one read")
                if piece:
                    out.append(piece)
                pending = d.unconsumed_tail
                if d.eof:
                    if pending or d.unused_data:
                        raise RemoteProtocolError("bytes after the end of the deflate stream")
                    break
                # A full piece may leave output inside zlib even when all input was consumed.
                if not pending and len(piece) < _STEP:
                    break
        except zlib.error as exc:
            raise RemoteProtocolError(f"bad deflate data: {exc}") from exc
        return b"".join(out)
