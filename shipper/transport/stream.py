"""Blocking client streams: resolve, connect, TLS handshake, and send/receive with deadlines.

The client's bytes go through a :class:`~shipper.transport.layers.LayerStack` (TLS, deflate) on
their way to the socket. Timeouts are absolute deadlines (``time.monotonic()``): TCP connect and
the TLS handshake share one and raise :class:`ConnectTimeout`; reads and writes of a call raise
:class:`RequestTimeout`. This is the client side's boundary: every ``OSError``/``ssl.SSLError``
becomes a :class:`TransportError` here, once, with the original as ``__cause__`` (a collector
refusing our client certificate, mutual TLS, as :class:`ClientCertificateRefused`).

On a plain connection a frame given as pieces (``ClientConnection.parts_to_send``) is written with
``sendmsg`` as it is, so a batch's payload reaches the kernel without a copy in between; the
layers transform one buffer, so with TLS or deflate the pieces are joined first.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shipper.avroipc import RemoteProtocolError
from shipper.errors import (
    CertificateError, ClientCertificateRefused, ConfigError, ConnectTimeout, PeerClosed, PeerProtocolError,
    RequestTimeout, TransportError,
)
from shipper.transport.address import Address
from shipper.transport.layers import RECV_SIZE, LayerStack, build_layer_stack, check_layering
from shipper.transport.tls import CLIENT_CERT_REFUSED, TLSOptions, client_tls_context, reason, ssl_errors

if TYPE_CHECKING:
    import ssl

IOV_MAX = max(16, os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024)


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
            last = TransportError(f"cannot connect to {address}: {reason(err)}")
            last.__cause__ = err
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            return sock
    if last is None:
        last = ConnectTimeout(f"connect to {address} timed out")
    raise last


class Stream:
    """A connected client socket with its layer stack; blocking I/O bounded by deadlines."""

    def __init__(self, sock: socket.socket, layers: LayerStack, address: Address) -> None:
        self.sock = sock
        self.layers = layers
        self.address = address
        self._eof = False  # EOF or a TLS close_notify seen: the stream has ended

    def tls_handshake(self, deadline: float) -> None:
        """Complete the TLS handshake before ``deadline`` (ConnectTimeout otherwise)."""
        tls = self.layers.tls
        if tls is None or tls.handshake_done:
            return
        import ssl  # loaded already: the TLS layer made it

        try:
            self._send_raw(self.layers.start_tls(), deadline, ConnectTimeout)
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
            raise TransportError(f"TLS with {self.address} failed: {reason(err)}") from err

    def send(self, frame_bytes: bytes | list, deadline: float) -> None:
        """Send frame bytes, or a list of pieces (``ClientConnection.parts_to_send``): with no
        layer those go to the socket as they are, in one scatter write (``sendmsg``); TLS and
        deflate transform one buffer, so for them the pieces are joined first."""
        if isinstance(frame_bytes, list):
            if not self.layers.layers:
                self._send_parts(frame_bytes, deadline)
                return
            frame_bytes = b"".join(frame_bytes)
        try:
            data = self.layers.down(frame_bytes)
        except ssl_errors() as err:
            raise TransportError(f"TLS with {self.address} failed: {reason(err)}") from err
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
            return self.layers.up(raw)
        except RemoteProtocolError as err:
            raise PeerProtocolError(f"{self.address} sent bytes that are not a valid zlib stream: {err}") from err
        except ssl_errors("SSLCertVerificationError"):
            raise
        except ssl_errors() as err:
            kind = ClientCertificateRefused if err.reason in CLIENT_CERT_REFUSED else TransportError
            raise kind(f"TLS with {self.address} failed: {reason(err)}") from err

    def _send_raw(self, data: bytes, deadline: float, timeout_error: type[TransportError]) -> None:
        if not data:
            return
        try:
            self.sock.settimeout(_left(deadline, timeout_error, self.address))
            self.sock.sendall(data)
        except TimeoutError as err:
            raise timeout_error(_timeout_text(timeout_error, self.address)) from err
        except OSError as err:
            raise TransportError(f"send to {self.address} failed: {reason(err)}") from err

    def _send_parts(self, parts: list, deadline: float) -> None:
        """``sendall`` of the pieces' concatenation, without making it: ``sendmsg`` of up to
        ``IOV_MAX`` pieces at a time, resumed where a partial write stopped."""
        sock, i, n = self.sock, 0, len(parts)
        whole = sum(map(len, parts)) if n <= IOV_MAX else -1  # a frame one sendmsg may write whole
        try:
            while True:
                while i < n and not len(parts[i]):
                    i += 1
                if i == n:
                    return
                sock.settimeout(_left(deadline, RequestTimeout, self.address))
                sent = sock.sendmsg(parts[i : i + IOV_MAX])
                if sent == whole:  # all of it in one write (the usual case): no piece to step over
                    return
                whole = -1
                while sent:
                    size = len(parts[i])
                    if sent < size:
                        parts[i] = memoryview(parts[i])[sent:]
                        break
                    sent -= size
                    i += 1
        except TimeoutError as err:
            raise RequestTimeout(_timeout_text(RequestTimeout, self.address)) from err
        except OSError as err:
            raise TransportError(f"send to {self.address} failed: {reason(err)}") from err

    def _recv_raw(self, deadline: float, timeout_error: type[TransportError]) -> bytes:
        try:
            self.sock.settimeout(_left(deadline, timeout_error, self.address))
            return self.sock.recv(RECV_SIZE)
        except TimeoutError as err:
            raise timeout_error(_timeout_text(timeout_error, self.address)) from err
        except OSError as err:
            raise TransportError(f"receive from {self.address} failed: {reason(err)}") from err


def _timeout_text(kind: type[TransportError], address: Address) -> str:
    if kind is ConnectTimeout:
        return f"connect to {address} timed out (TCP or TLS handshake)"
    return f"no reply from {address} within the request timeout"


def _left(deadline: float, timeout_error: type[TransportError], address: Address) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise timeout_error(_timeout_text(timeout_error, address))
    return left


def client_layer_stack(address: Address, options: ClientOptions, ctx: ssl.SSLContext | None = None) -> LayerStack:
    tls = options.tls
    if tls is not None and ctx is None:
        ctx = client_tls_context(tls)
    return build_layer_stack(
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
    layers = client_layer_stack(address, options, ctx)  # config errors before any I/O
    deadline = time.monotonic() + options.connect_timeout
    sock = connect_tcp(address, resolve(address), deadline)
    stream = Stream(sock, layers, address)
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
