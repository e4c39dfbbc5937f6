"""The byte transport under the Avro RPC core: addresses, sockets, timeouts, TLS and deflate.

Theory of operation
-------------------
Frame bytes from :mod:`shipper.avroipc` pass through a :class:`Pipeline` of layers on their
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
Reading can make TLS want to write (handshake messages, key updates): :meth:`Pipeline.up`
returns those bytes, already pushed through the layers below TLS, for the caller to send.

Deflate is one zlib stream per connection and direction with a sync flush per write (wire doc
§5.1); the codec itself lives in the protocol core (``ZlibEncoder``/``ZlibDecoder``).

Timeouts: the client works with absolute deadlines (``time.monotonic()``). TCP connect and the
TLS handshake share one deadline and raise :class:`ConnectTimeout`; reads and writes of a call
raise :class:`RequestTimeout`. Every ``OSError``/``ssl.SSLError`` becomes a
:class:`TransportError` here, once, with the original as ``__cause__``.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Protocol

from shipper.avroipc import DEFAULT_MAX_DECODED_BYTES, RemoteProtocolError, ZlibDecoder, ZlibEncoder
from shipper.errors import ConfigError, ConnectTimeout, PeerProtocolError, RequestTimeout, TransportError

log = logging.getLogger("flume-ship.tls")

LAYERINGS = ("zlib-outside", "tls-outside")
COMPRESSIONS = (None, "deflate")
RECV_SIZE = 256 * 1024
INFLATE_SLICE = 64 * 1024


class PeerClosed(TransportError):
    """The peer ended the connection (EOF or TLS close) before it answered."""


class CertificateError(TransportError):
    """TLS: the server's certificate did not verify."""


class ClientCertificateRefused(TransportError):
    """TLS: the collector requires a client certificate (mutual TLS) and we sent none, or one it
    does not accept."""


# OpenSSL reasons for a collector refusing our client certificate (or its absence).
_CLIENT_CERT_REFUSED = {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_ALERT_UNKNOWN_CA",
                        "SSLV3_ALERT_CERTIFICATE_UNKNOWN"}


# --------------------------------------------------------------------------- addresses


RPCS = ("avro", "thrift")
THRIFT_PROTOCOLS = ("compact", "binary")


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int
    rpc: str = "avro"  # which of Flume's RPCs the collector speaks: "avro" or "thrift"
    thrift_protocol: str = "compact"  # Thrift's wire protocol: "compact" (Flume's default) or "binary"

    @classmethod
    def parse_collector(cls, text: str) -> "Address":
        """A collector: ``host:port`` or ``avro://host:port`` (Avro), ``thrift://host:port`` (Thrift,
        compact) or ``thrift://host:port?protocol=binary``; ConfigError with the reason otherwise."""
        raw = text.strip()
        scheme, sep, rest = raw.partition("://")
        if not sep:
            return cls.parse(raw)
        scheme = scheme.lower()
        if scheme not in RPCS:
            raise ConfigError(f"bad collector {text!r}: unknown scheme {scheme}://, use avro:// or thrift://")
        rest, _, query = rest.partition("?")
        base = cls.parse(rest)
        protocol = "compact"
        for item in filter(None, query.split("&")):
            key, _, value = item.partition("=")
            if scheme != "thrift" or key != "protocol" or value not in THRIFT_PROTOCOLS:
                raise ConfigError(f"bad collector {text!r}: {item!r} is not an option here "
                                  "(thrift:// takes ?protocol=compact or ?protocol=binary)")
            protocol = value
        return cls(base.host, base.port, scheme, protocol)

    @classmethod
    def parse(cls, text: str) -> "Address":
        """``host:port`` or ``[v6addr]:port``; ConfigError with the reason otherwise."""
        raw = text.strip()
        if raw.startswith("["):
            host, sep, rest = raw[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ConfigError(f"bad address {text!r}: write an IPv6 address as [addr]:port")
            port_text = rest[1:]
        else:
            host, sep, port_text = raw.rpartition(":")
            if not sep:
                raise ConfigError(f"bad address {text!r}: expected host:port")
            if ":" in host:
                raise ConfigError(f"bad address {text!r}: write an IPv6 address as [addr]:port")
        if not host:
            raise ConfigError(f"bad address {text!r}: the host is empty")
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ConfigError(f"bad address {text!r}: the port must be a number from 0 to 65535")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        hostport = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self.rpc == "avro":
            return hostport  # the plain form: what Avro-only configurations and logs always showed
        return f"thrift://{hostport}" + ("?protocol=binary" if self.thrift_protocol == "binary" else "")


def parse_addresses(text: str) -> list[Address]:
    """``h1:p1,thrift://h2:p2`` (spaces allowed around the commas)."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    if not parts:
        raise ConfigError("no collector address given: expected host:port[,host:port...]")
    return [Address.parse_collector(p) for p in parts]


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class TLSOptions:
    ca_file: str | None = None  # verify the server against this CA bundle (default: system store)
    insecure: bool = False  # skip verification: only by an explicit flag
    server_name: str | None = None  # name to verify / SNI (default: the host of the address)
    cert_file: str | None = None  # our certificate chain (the collector's; a client's for mutual TLS)
    key_file: str | None = None  # its private key
    client_ca_file: str | None = None  # server role: require client certificates signed by this CA


@dataclass(frozen=True, slots=True)
class ClientOptions:
    connect_timeout: float = 5.0  # TCP + TLS connect
    request_timeout: float = 20.0  # each RPC; on a fresh connection it includes the handshake
    compress: str | None = None  # None or "deflate"
    compression_level: int = 6
    tls: TLSOptions | None = None
    tls_layering: str = "zlib-outside"  # Flume >= 1.10; "tls-outside" = Flume <= 1.9

    def __post_init__(self) -> None:
        check_layering(self.compress, self.tls_layering)
        if not 0 <= self.compression_level <= 9:
            raise ConfigError(f"compression level {self.compression_level} is out of range: use 0 to 9")
        if self.connect_timeout <= 0 or self.request_timeout <= 0:
            raise ConfigError("timeouts must be greater than 0 seconds")


def check_layering(compress: str | None, layering: str) -> None:
    if compress not in COMPRESSIONS:
        raise ConfigError(f"unknown compression {compress!r}: use none or deflate")
    if layering not in LAYERINGS:
        raise ConfigError(f"unknown TLS layering {layering!r}: use zlib-outside (Flume >= 1.10) or tls-outside (Flume <= 1.9)")


# --------------------------------------------------------------------------- TLS contexts


def client_tls_context(tls: TLSOptions) -> ssl.SSLContext:
    """Verify the server (CA file or the system store) unless ``insecure`` says otherwise;
    present ``cert_file``/``key_file`` to a collector that asks for a client certificate."""
    if tls.insecure and tls.ca_file:
        raise ConfigError("--tls-insecure and --tls-ca contradict each other: give one of them")
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("a client certificate needs both --tls-cert and --tls-key")
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"cannot load the TLS CA file {tls.ca_file}: {_reason(err)}") from err
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning("TLS certificate verification is OFF (--tls-insecure): anyone on the path can read and "
                    "change the events; give the collector's CA with --tls-ca instead")
    if tls.cert_file:
        _load_cert(ctx, tls)
    return ctx


def server_tls_context(tls: TLSOptions) -> ssl.SSLContext:
    """The collector's context: its certificate and key. With ``client_ca_file``, every client
    must present a certificate that CA signed (mutual TLS); without it none is asked for (like
    Flume's AvroSource)."""
    if not tls.cert_file or not tls.key_file:
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_cert(ctx, tls)
    if tls.client_ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"cannot load the client CA file {tls.client_ca_file}: {_reason(err)}") from err
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _load_cert(ctx: ssl.SSLContext, tls: TLSOptions) -> None:
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"cannot load the TLS certificate {tls.cert_file} / key {tls.key_file}: {_reason(err)}") from err


# OpenSSL's reasons for the TLS failures a user can fix, in words that say how.
_TLS_HINTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the collector requires a client certificate: give --tls-cert and --tls-key",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate, and --tls-client-ca requires one",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer did not accept our certificate (not signed by the CA it trusts?)",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the CA that signed our certificate",
    "CERTIFICATE_VERIFY_FAILED": "certificate verify failed",
}


def _reason(err: BaseException) -> str:
    if isinstance(err, ssl.SSLError):
        reason = err.reason or err.strerror or str(err)
        hint = _TLS_HINTS.get(err.reason or "")
        return f"{hint} ({reason})" if hint else reason
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


# --------------------------------------------------------------------------- layers


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
            except ssl.SSLWantReadError:
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
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify: the peer ended the TLS session
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


class Pipeline:
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


def build_pipeline(
    compress: str | None,
    layering: str,
    tls_ctx: ssl.SSLContext | None,
    *,
    server_side: bool,
    server_hostname: str | None = None,
    compression_level: int = 6,
) -> Pipeline:
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
    return Pipeline(layers)


# --------------------------------------------------------------------------- client sockets


def resolve(address: Address) -> list[tuple]:
    """getaddrinfo for a TCP connection; TransportError when the name does not resolve."""
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise TransportError(f"cannot resolve {address.host}: {err.strerror}") from err
    except UnicodeError as err:
        raise TransportError(f"cannot resolve {address.host}: not a valid host name") from err
    if not infos:
        raise TransportError(f"cannot resolve {address.host}: no addresses")
    return infos


def connect_tcp(address: Address, infos: list[tuple], deadline: float) -> socket.socket:
    """Try each resolved address until one connects; all attempts share one deadline."""
    last: TransportError | None = None
    for family, type_, proto, _name, sockaddr in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(left)
            sock.connect(sockaddr)
        except TimeoutError as err:
            sock.close()
            last = ConnectTimeout(f"connect to {address} timed out")
            last.__cause__ = err
        except OSError as err:
            sock.close()
            last = TransportError(f"cannot connect to {address}: {_reason(err)}")
            last.__cause__ = err
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            return sock
    if last is None:
        last = ConnectTimeout(f"connect to {address} timed out")
    raise last


class Stream:
    """A connected client socket with its pipeline; blocking I/O bounded by deadlines."""

    def __init__(self, sock: socket.socket, pipeline: Pipeline, address: Address) -> None:
        self.sock = sock
        self.pipeline = pipeline
        self.address = address
        self._eof = False  # EOF or a TLS close_notify seen: the stream has ended

    def tls_handshake(self, deadline: float) -> None:
        """Complete the TLS handshake before ``deadline`` (ConnectTimeout otherwise)."""
        tls = self.pipeline.tls
        if tls is None or tls.handshake_done:
            return
        try:
            self._send_raw(self.pipeline.start_tls(), deadline, ConnectTimeout)
            while not tls.handshake_done:
                raw = self._recv_raw(deadline, ConnectTimeout)
                if not raw:
                    raise PeerClosed(f"{self.address} closed the connection during the TLS handshake")
                _, reply, _ = self._up(raw)
                if reply:
                    self._send_raw(reply, deadline, ConnectTimeout)
        except ssl.SSLCertVerificationError as err:
            raise CertificateError(
                f"TLS with {self.address}: certificate verify failed: {err.verify_message}"
                " (give the CA with --tls-ca, or skip verification with --tls-insecure)"
            ) from err
        except ssl.SSLError as err:
            raise TransportError(f"TLS with {self.address} failed: {_reason(err)}") from err

    def send(self, frame_bytes: bytes, deadline: float) -> None:
        try:
            data = self.pipeline.down(frame_bytes)
        except ssl.SSLError as err:
            raise TransportError(f"TLS with {self.address} failed: {_reason(err)}") from err
        self._send_raw(data, deadline, RequestTimeout)

    def recv(self, deadline: float) -> bytes:
        """Frame bytes as they arrive; ``b""`` once the collector ended the stream."""
        while not self._eof:
            raw = self._recv_raw(deadline, RequestTimeout)
            data, reply, self._eof = self._up(raw)
            if reply:
                self._send_raw(reply, deadline, RequestTimeout)
            if data:
                return data
        return b""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _up(self, raw: bytes) -> tuple[bytes, bytes, bool]:
        try:
            return self.pipeline.up(raw)
        except RemoteProtocolError as err:
            raise PeerProtocolError(f"{self.address} sent bytes that are not a valid zlib stream: {err}") from err
        except ssl.SSLCertVerificationError:
            raise
        except ssl.SSLError as err:
            kind = ClientCertificateRefused if err.reason in _CLIENT_CERT_REFUSED else TransportError
            raise kind(f"TLS with {self.address} failed: {_reason(err)}") from err

    def _send_raw(self, data: bytes, deadline: float, timeout_error: type[TransportError]) -> None:
        if not data:
            return
        try:
            self.sock.settimeout(_left(deadline, timeout_error, self.address))
            self.sock.sendall(data)
        except TimeoutError as err:
            raise timeout_error(_timeout_text(timeout_error, self.address)) from err
        except OSError as err:
            raise TransportError(f"send to {self.address} failed: {_reason(err)}") from err

    def _recv_raw(self, deadline: float, timeout_error: type[TransportError]) -> bytes:
        try:
            self.sock.settimeout(_left(deadline, timeout_error, self.address))
            return self.sock.recv(RECV_SIZE)
        except TimeoutError as err:
            raise timeout_error(_timeout_text(timeout_error, self.address)) from err
        except OSError as err:
            raise TransportError(f"receive from {self.address} failed: {_reason(err)}") from err


def _timeout_text(kind: type[TransportError], address: Address) -> str:
    if kind is ConnectTimeout:
        return f"connect to {address} timed out (TCP or TLS handshake)"
    return f"no reply from {address} within the request timeout"


def _left(deadline: float, timeout_error: type[TransportError], address: Address) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise timeout_error(_timeout_text(timeout_error, address))
    return left


def client_pipeline(address: Address, options: ClientOptions, ctx: ssl.SSLContext | None = None) -> Pipeline:
    tls = options.tls
    if tls is not None and ctx is None:
        ctx = client_tls_context(tls)
    return build_pipeline(
        options.compress,
        options.tls_layering,
        ctx,
        server_side=False,
        server_hostname=(tls.server_name or address.host) if tls is not None else None,
        compression_level=options.compression_level,
    )


def open_stream(address: Address, options: ClientOptions, ctx: ssl.SSLContext | None = None) -> Stream:
    """Resolve, connect and (with TLS) handshake, all within ``options.connect_timeout``.

    ``ctx`` is a ready client TLS context (built from ``options.tls`` when not given).
    """
    pipeline = client_pipeline(address, options, ctx)  # config errors before any I/O
    deadline = time.monotonic() + options.connect_timeout
    sock = connect_tcp(address, resolve(address), deadline)
    stream = Stream(sock, pipeline, address)
    try:
        stream.tls_handshake(deadline)
    except BaseException:
        stream.close()
        raise
    return stream


def local_address() -> str:
    """This machine's IP address, as Flume's host interceptor gives it (``useIP``, its default).

    The address the host name resolves to; when it does not resolve, the address of the interface
    a UDP socket would leave by (nothing is sent), else the name itself."""
    name = socket.gethostname()
    try:
        addr = socket.gethostbyname(name)
        if not addr.startswith("127."):
            return addr
    except OSError:
        addr = None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only, no packet leaves
            return s.getsockname()[0]
    except OSError:
        return addr or name
