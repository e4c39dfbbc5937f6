"""``flume-ship collect``: an Avro RPC server that Flume's AvroSink can ship to.

Theory of operation
-------------------
One thread accepts; each connection gets its own thread running the protocol core in the
server role (``shipper.avroipc.ServerConnection``) under the same layer stack as the client
(``shipper.transport.layers``: plain, deflate, TLS, TLS+deflate in either layering). Threads keep it simple:
the work per connection is "read, decode, write a file, fsync, answer", the fsync and the socket
calls release the GIL, and a few busy clients are what a collector sees.

Per connection the loop is: read up to 256 KiB, run it up the layer stack, feed the core, gather
every complete call it yields, hand all of their events to the :class:`RollingWriter` as ONE
write (one fsync for all the calls that arrived together), then answer each call: OK only after
that write returned, FAILED when it raised. Nothing is acknowledged that is not in the file.

Memory per connection is bounded by the read size plus the core's frame caps
(``max_frame_bytes``); a frame larger than that is garbage by definition.

A peer that breaks the protocol (bad framing, a zlib or TLS error) is logged and disconnected;
other connections carry on. A call the core can decode but does not know is answered with an
Avro system error by the core itself, as Java does.

Stopping (SIGTERM/SIGINT, or :meth:`Collector.stop`): the listener closes, every connection's
read side is shut down (a thread in the middle of a batch finishes writing it and answers, then
sees end-of-stream), the threads are joined, and the writer fsyncs and closes its file.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
from dataclasses import dataclass

from shipper.avroipc import (
    CallReceived,
    ConnectionClosed,
    ProtocolCache,
    RemoteProtocolError,
    ServerConnection,
    Status,
)
from shipper.collector.writer import RollingWriter
from shipper.errors import ConfigError
from shipper.transport import RECV_SIZE, Address, TLSOptions, build_layer_stack, check_layering, server_tls_context

log = logging.getLogger("flume-ship.collect")


@dataclass(frozen=True, slots=True)
class CollectorOptions:
    listen: Address
    compress: str | None = None
    tls: TLSOptions | None = None
    tls_layering: str = "zlib-outside"
    backlog: int = 1024
    # A client that stops reading our answers fills the socket buffers; past this many seconds
    # of a blocked send it is disconnected, so it cannot hold a thread for ever. Reads have no
    # timeout: an idle connection is normal (Flume keeps its connections open).
    send_timeout: float = 60.0


class Collector:
    def __init__(self, options: CollectorOptions, writer: RollingWriter) -> None:
        check_layering(options.compress, options.tls_layering)
        self.options = options
        self.writer = writer
        self.tls_ctx: ssl.SSLContext | None = server_tls_context(options.tls) if options.tls else None
        self.cache = ProtocolCache()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self.address: Address | None = None

    # ---- lifecycle

    def bind(self) -> Address:
        """Bind and listen; returns the real address (the port is known even for port 0)."""
        host, port = self.options.listen.host, self.options.listen.port
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, type_, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, type_, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(self.options.backlog)
        except OSError as err:
            raise ConfigError(f"cannot listen on {self.options.listen}: {err.strerror or err}") from err
        self._listener = sock
        self.address = Address(host, sock.getsockname()[1])
        return self.address

    def serve_forever(self) -> None:
        """Accept until :meth:`stop`; then drain the connections and close the writer."""
        assert self._listener is not None, "bind() first"
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                for key, _ in sel.select(timeout=1.0):
                    if key.fileobj is self._listener:
                        self._accept()
                self._roll_if_due()
        finally:
            sel.close()
            self._shutdown()

    def stop(self) -> None:
        """Ask the server to stop (safe from a signal handler or another thread)."""
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # ---- accepting

    def _accept(self) -> None:
        try:
            sock, peer = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:  # e.g. EMFILE: keep serving the connections we have
            log.warning("accept failed: %s", err.strerror or err)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        thread = threading.Thread(target=self._serve, args=(sock, _peer_text(peer)), daemon=True)
        with self._lock:
            self._conns[sock] = thread
        thread.start()

    def _roll_if_due(self) -> None:
        try:
            self.writer.roll_if_due()
        except OSError as err:
            log.warning("rolling the output file failed: %s", err.strerror or err)

    # ---- one connection

    def _serve(self, sock: socket.socket, peer: str) -> None:
        log.debug("connection from %s", peer)
        layers = build_layer_stack(
            self.options.compress, self.options.tls_layering, self.tls_ctx, server_side=True
        )
        conn = self._new_connection()
        reason = "closed by the client"
        try:
            while True:
                raw = sock.recv(RECV_SIZE)
                data, reply, eof = layers.up(raw)
                if reply:
                    self._send(sock, reply)
                if data:
                    conn.receive_data(data)
                if eof:
                    conn.receive_data(b"")
                closed = self._answer(conn)
                out = conn.data_to_send()
                if out:
                    self._send(sock, layers.down(out))
                if closed or eof:
                    break
        except RemoteProtocolError as err:
            reason = f"protocol error, disconnected: {err}"
            log.warning("client %s: %s", peer, reason)
        except ssl.SSLError as err:
            reason = f"TLS error, disconnected: {err.reason or err}"
            log.warning("client %s: %s", peer, reason)
        except TimeoutError as err:
            reason = f"disconnected: {err}"
            log.warning("client %s: %s", peer, reason)
        except OSError as err:
            reason = f"connection error: {err.strerror or err}"
            log.info("client %s: %s", peer, reason)
        except Exception:  # a bug: log it, keep the other connections going
            reason = "internal error"
            log.exception("client %s: internal error, disconnected", peer)
        finally:
            with self._lock:
                self._conns.pop(sock, None)
            sock.close()
            log.debug("client %s: %s", peer, reason)

    def _new_connection(self):
        """The protocol core for one connection (a subclass serves another RPC: collector.thrift_server)."""
        return ServerConnection(self.cache)

    def _send(self, sock: socket.socket, data: bytes) -> None:
        """sendall, bounded by send_timeout (TimeoutError, an OSError: the connection is dropped)."""
        sock.settimeout(self.options.send_timeout)
        try:
            sock.sendall(data)
        except TimeoutError:
            raise TimeoutError(f"the client read nothing for {self.options.send_timeout:g} s") from None
        finally:
            sock.settimeout(None)

    def _answer(self, conn: ServerConnection) -> bool:
        """Write every call that is complete, then answer each; True when the peer closed."""
        calls: list[CallReceived] = []
        closed = False
        while True:
            event = conn.next_event()
            if event is None:
                break
            if isinstance(event, CallReceived):
                calls.append(event)
            elif isinstance(event, ConnectionClosed):  # the core repeats it: stop asking
                closed = True
                break
        if calls:
            try:
                self.writer.write([call.events for call in calls])
                status = Status.OK
            except OSError as err:
                log.error("cannot write events to %s: %s; answering FAILED", self.writer.directory, err.strerror or err)
                status = Status.FAILED
            for call in calls:
                conn.respond(call.serial, status)
        return closed

    # ---- stopping

    def _shutdown(self) -> None:
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns = list(self._conns.items())
        for sock, _thread in conns:
            try:
                sock.shutdown(socket.SHUT_RD)  # wakes a blocked recv; an answer being written still goes out
            except OSError:
                pass
        for _sock, thread in conns:
            thread.join(timeout=10)
        self.writer.close()
        self._wake_r.close()
        self._wake_w.close()


def _peer_text(peer) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(Address(peer[0], peer[1]))
    return str(peer)
