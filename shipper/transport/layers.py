"""The layers between frame bytes and the socket: TLS and deflate, stacked either way.

Frame bytes from :mod:`shipper.avroipc` pass through a :class:`LayerStack` of layers on their
way to the socket, and back through the same layers in reverse on the way in. A layer is a pair
of byte transforms (``encode`` going down, ``decode`` coming up); nothing in a layer touches a
socket, so the client (:class:`Stream`, blocking with deadlines) and the collector (its own loop)
share every layer. The possible stacks, top (frames) to bottom (socket)::

    plain                     frames -> socket
    deflate                   frames -> zlib -> socket
    TLS                       frames -> TLS -> socket
    TLS + deflate, "zlib-outside" (Flume >= 1.10, Netty 4; our default)
                              frames -> TLS -> zlib -> socket   (zlib carries even the TLS handshake)
    TLS + deflate, "tls-outside"  (Flume <= 1.9, Netty 3)
                              frames -> zlib -> TLS -> socket   (TLS records carry the zlib stream)

TLS is an ``ssl.SSLObject`` over two ``MemoryBIO``s, so it can sit under or over zlib alike.
Reading can make TLS want to write (handshake messages, key updates): :meth:`LayerStack.up`
returns those bytes, already pushed through the layers below TLS, for the caller to send.

Deflate is one zlib stream per connection and direction with a sync flush per write (wire doc
§5.1); the codec itself lives in the protocol core (``ZlibEncoder``/``ZlibDecoder``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from shipper.avroipc import DEFAULT_MAX_DECODED_BYTES, ZlibDecoder, ZlibEncoder
from shipper.errors import ConfigError

if TYPE_CHECKING:
    import ssl

LAYERINGS = ("zlib-outside", "tls-outside")
COMPRESSIONS = (None, "deflate")
RECV_SIZE = 256 * 1024
INFLATE_SLICE = 64 * 1024


def check_layering(compress: str | None, layering: str) -> None:
    if compress not in COMPRESSIONS:
        raise ConfigError(f"unknown compression {compress!r}: use none or deflate")
    if layering not in LAYERINGS:
        raise ConfigError(f"unknown TLS layering {layering!r}: use zlib-outside (Flume >= 1.10) or tls-outside (Flume <= 1.9)")


class Layer(Protocol):
    eof: bool

    def encode(self, data: bytes) -> bytes: ...  # toward the socket

    def decode(self, data: bytes) -> bytes: ...  # toward the frames

    def pending(self) -> bytes: ...  # bytes the layer itself wants to send (TLS)


class DeflateLayer:
    """One zlib stream per direction (the core's codec); a sync flush per write.

    ``limit`` (None: only the codec's own cap per 64 KiB slice) bounds what one :meth:`decode`
    may inflate in all; a server sets it from its memory budget before each read, so inflation
    can never take more memory than the budget has left (``InflateLimitExceeded`` otherwise).
    """

    eof = False

    def __init__(self, level: int = 6) -> None:
        self._enc = ZlibEncoder(level)
        self._dec = ZlibDecoder()
        self.limit: int | None = None

    def encode(self, data: bytes) -> bytes:
        return self._enc.encode(data) if data else b""

    def decode(self, data: bytes) -> bytes:
        if not data:
            return b""
        limit = self.limit
        if limit is None and len(data) <= INFLATE_SLICE:
            return self._dec.decode(data)
        # The decoder refuses one call that would inflate past its cap (a zip bomb); feeding it at
        # most 64 KiB at a time keeps honest, highly repetitive data (up to ~1032:1) under that cap.
        out: list[bytes] = []
        total = 0
        for i in range(0, len(data), INFLATE_SLICE):
            if limit is not None:
                self._dec.max_output = min(DEFAULT_MAX_DECODED_BYTES, limit - total)
            piece = self._dec.decode(data[i : i + INFLATE_SLICE])
            total += len(piece)
            out.append(piece)
        return b"".join(out)

    def pending(self) -> bytes:
        return b""


class TLSLayer:
    """TLS over memory buffers, so that it can run over a socket or over a zlib stream."""

    def __init__(self, ctx: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None) -> None:
        import ssl  # here, not at the top: a plain connection never loads OpenSSL

        self._ssl = ssl
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=server_side, server_hostname=server_hostname)
        self.handshake_done = False
        self.eof = False

    def handshake(self) -> bool:
        """Advance the handshake; True once it is complete. Output is left in :meth:`pending`."""
        if not self.handshake_done:
            try:
                self._obj.do_handshake()
            except self._ssl.SSLWantReadError:
                return False
            self.handshake_done = True
        return True

    def encode(self, data: bytes) -> bytes:
        if data:
            self._obj.write(data)
        return self._out.read()

    def decode(self, data: bytes) -> bytes:
        self._in.write(data)
        if not self.handshake():
            return b""
        chunks = []
        while True:
            try:
                chunk = self._obj.read(RECV_SIZE)
            except self._ssl.SSLWantReadError:
                break
            except self._ssl.SSLZeroReturnError:  # close_notify: the peer ended the TLS session
                self.eof = True
                break
            if not chunk:
                self.eof = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def pending(self) -> bytes:
        return self._out.read()

    def version(self) -> str | None:
        return self._obj.version()

    def peer_subject(self) -> str | None:
        cert = self._obj.getpeercert()
        if not cert:
            return None
        return ", ".join("=".join(kv) for rdn in cert.get("subject", ()) for kv in rdn)


class LayerStack:
    """The layers between frame bytes and the socket, top (frames) first."""

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers
        self.tls: TLSLayer | None = next((l for l in layers if isinstance(l, TLSLayer)), None)

    def down(self, data: bytes, start: int = 0) -> bytes:
        for layer in self.layers[start:]:
            data = layer.encode(data)
        return data

    def up(self, raw: bytes) -> tuple[bytes, bytes, bool]:
        """Feed bytes read from the socket (``b""`` at EOF).

        Returns (frame bytes, bytes to send back now, end of stream).
        """
        if not raw:
            return b"", b"", True
        data, reply = raw, b""
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            data = layer.decode(data)
            own = layer.pending()
            if own:
                reply += self.down(own, i + 1)
            if layer.eof:
                return data, reply, True
        return data, reply, False

    def set_inflate_limit(self, limit: int | None) -> None:
        """Bound the bytes the next :meth:`up` may inflate (see :class:`DeflateLayer`)."""
        for layer in self.layers:
            if isinstance(layer, DeflateLayer):
                layer.limit = limit

    def tls_alert(self) -> bytes:
        """After a TLS failure: the alert TLS queued for the peer (encoded by the layers below),
        so it learns why (e.g. "certificate required") instead of seeing a bare close."""
        if self.tls is None:
            return b""
        try:
            return self.down(self.tls.pending(), self.layers.index(self.tls) + 1)
        except Exception:  # a broken stream below TLS: there is nothing useful to send
            return b""

    def start_tls(self) -> bytes:
        """Begin a client handshake; returns the first bytes to send (ClientHello, encoded)."""
        assert self.tls is not None
        self.tls.handshake()
        i = self.layers.index(self.tls)
        return self.down(self.tls.pending(), i + 1)


def build_layer_stack(
    compress: str | None,
    layering: str,
    tls_ctx: ssl.SSLContext | None,
    *,
    server_side: bool,
    server_hostname: str | None = None,
    compression_level: int = 6,
) -> LayerStack:
    check_layering(compress, layering)
    layers: list[Layer] = []
    if tls_ctx is not None:
        layers.append(TLSLayer(tls_ctx, server_side=server_side, server_hostname=server_hostname))
    if compress == "deflate":
        zlib_layer = DeflateLayer(compression_level)
        if layering == "tls-outside":
            layers.insert(0, zlib_layer)  # frames -> zlib -> TLS
        else:
            layers.append(zlib_layer)  # frames -> TLS -> zlib
    return LayerStack(layers)
