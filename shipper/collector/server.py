"""``flume-ship collect``: an Avro RPC server that Flume's AvroSink can ship to.

Theory of operation
-------------------
One thread accepts; each connection gets its own thread running the protocol core in the
server role (``shipper.avroipc.ServerConnection``) under the same layer stack as the client
(``shipper.transport.layers``: plain, deflate, TLS, TLS+deflate in either layering). Threads keep it simple:
the work per connection is "read, decode, write a file, fsync, answer", the fsync and the socket
calls release the GIL, and a few busy clients are what a collector sees.

Per connection the loop is: read, run it up the layer stack, feed the core, gather every complete
call it yields, hand all of their events to the writer as ONE write (one fsync for all the calls
that arrived together), then answer each call: OK only after that write returned, FAILED when it
raised. Nothing is acknowledged that is not in the file.

Ordered pipelining: one connection's calls are written strictly in the order they arrived (one
thread, the core's calls in frame order), and once a call of a connection was refused (FAILED
after a write error, or an Avro error from the core: a limit, a call it cannot decode) every
later call of that connection is refused too, unwritten, with an error that says why, for as long
as the connection lasts. Calls gathered together with the refused one are split at it: those
before it are written, those after it are not. So a client with several calls in flight never has
a refused call overtaken by one it sent after it; it sends them all again, in order, on a new
connection. The handshake response's ``meta`` says so (``flume-ship.ordered-pipeline``: ``1``,
:data:`shipper.avroipc.ORDERED_PIPELINE`); the sink pipelines only into a collector that said it.

Bounds (``shipper.collector.limits``, every one a flag of ``collect``): the accept loop closes a
client outside the allow-list (``--allow``); at ``--max-connections`` it closes the connection
idle the longest (idle for 1 s or more, between calls) to make room, and refuses the new one when
none is idle; it refuses a client when no thread can be started for it; when accept itself fails for lack of descriptors, one spare
descriptor is given up to accept and close the waiting client (a clean refusal instead of a
hang), and the listener is paused with a growing back-off instead of spinning. Each connection
reads with a timeout chosen by its state (TLS handshake, partial call, idle between calls),
charges its share of the shared memory budget before it keeps bytes (inflation is capped by what
the budget has left), and the core refuses calls past the per-call caps with an Avro error.
Every refusal is counted by reason and logged at a limited rate; peer-provided text is escaped
before it reaches a log line. With ``--tls-client-ca`` clients must present a certificate signed
by that CA; each client's address (and certificate subject) is logged when it connects (at most
once per 10 s per client address and subject, so a client reconnecting in a loop cannot flood
the log).

A peer that breaks the protocol (bad framing, a zlib or TLS error) is logged and disconnected;
other connections carry on. A call the core can decode but does not know is answered with an
Avro system error by the core itself, as Java does.

With ``collect --workers N`` (``shipper.collector.workers``) N processes each run one of these on
one listening socket made by the parent (:meth:`Collector.bind` with ``listener``); a worker takes a
waiting connection only when its ``balance`` says no other worker has fewer open, so a handful of
long-lived sink connections spread evenly.

Stopping (SIGTERM/SIGINT, or :meth:`Collector.stop`): the listener closes, every connection's
read side is shut down (a thread in the middle of a batch finishes writing it and answers, then
sees end-of-stream), the threads are joined, and the writer fsyncs and closes its file.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

from shipper.avroipc import (
    ORDERED_PIPELINE,
    ORDERED_PIPELINE_VERSION,
    CallReceived,
    CallRefused,
    ConnectionClosed,
    InflateLimitExceeded,
    ProtocolCache,
    RemoteProtocolError,
    ServerConnection,
    Status,
)
from shipper.collector.limits import (
    MMAP_THRESHOLD,
    Admission,
    Allowance,
    AllowList,
    CollectorStats,
    MemoryBudget,
    RateLimitedLog,
    ServerLimits,
    trim_freed_memory,
)
from shipper.collector.writer import RollingWriter
from shipper.errors import ConfigError, LimitRefused, printable
from shipper.transport import RECV_SIZE, Address, TLSOptions, build_layer_stack, check_layering, server_tls_context

log = logging.getLogger("flume-ship.collect")

# accept() failures that mean "no descriptor / memory now": back off, do not spin.
_ACCEPT_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_BACKOFF_FIRST, _BACKOFF_MAX = 0.05, 2.0
# With deflate, smaller reads keep what one read can inflate to (at most about 1032:1) small.
_DEFLATE_RECV_SIZE = 16 * 1024
_MAX_INFLATION = 1032
# collect --workers: how long a worker with more connections than another leaves a waiting one to it
_BALANCE_PAUSE = 0.005
# The handshake response's meta: this server keeps the ordered-pipelining promise (module docstring).
_ADVERTISED = {ORDERED_PIPELINE: ORDERED_PIPELINE_VERSION}


class _Conn:
    """What the server knows of a connection: its thread, since when it is idle (between calls;
    None while a call or a TLS handshake is under way), and whether it refused a call already
    (every later call of the connection is refused then: ordered pipelining)."""

    __slots__ = ("thread", "idle_since", "refused")

    def __init__(self, thread: threading.Thread | None) -> None:
        self.thread = thread
        self.idle_since: float | None = None
        self.refused = False


@dataclass(frozen=True, slots=True)
class CollectorOptions:
    listen: Address
    compress: str | None = None
    tls: TLSOptions | None = None
    tls_layering: str = "zlib-outside"
    backlog: int = 1024
    # A client that stops reading our answers fills the socket buffers; past this many seconds
    # of a blocked send it is disconnected, so it cannot hold a thread for ever.
    send_timeout: float = 60.0
    limits: ServerLimits = field(default_factory=ServerLimits)


class Collector:
    def __init__(self, options: CollectorOptions, writer: RollingWriter) -> None:
        check_layering(options.compress, options.tls_layering)
        self.options = options
        self.limits = options.limits
        self.writer = writer
        self.tls_ctx: ssl.SSLContext | None = server_tls_context(options.tls) if options.tls else None
        self.cache = ProtocolCache()
        self.allow = AllowList(self.limits.allow)
        self.admission = Admission(self.limits.max_connections)
        self.budget = MemoryBudget(self.limits.memory_budget)
        self.stats = CollectorStats()
        self.stats.budget = self.budget
        self.rlog = RateLimitedLog(log)
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, _Conn] = {}
        self._spare_fd: int | None = _open_spare()
        self._backoff = 0.0
        self.address: Address | None = None
        # collect --workers: who takes the next connection (``shipper.collector.workers.Balance``)
        self.balance = None

    # ---- lifecycle

    def bind(self, listener: socket.socket | None = None) -> Address:
        """Bind and listen; returns the real address (the port is known even for port 0).
        With ``listener`` (a worker of ``collect --workers``): serve that listening socket instead."""
        host, port = self.options.listen.host, self.options.listen.port
        if listener is not None:
            self._listener = listener
            self.address = Address(host, listener.getsockname()[1])
            return self.address
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, type_, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, type_, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(self.options.backlog)
        except OSError as err:
            raise ConfigError(f"cannot listen on {self.options.listen}: {err.strerror or err}") from err
        sock.setblocking(False)
        self._listener = sock
        self.address = Address(host, sock.getsockname()[1])
        return self.address

    def serve_forever(self) -> None:
        """Accept until :meth:`stop`; then drain the connections and close the writer."""
        assert self._listener is not None, "bind() first"
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        paused_until = 0.0
        trim_at = 0.0
        try:
            while not self._stopping.is_set():
                timeout = 1.0
                if paused_until:
                    left = paused_until - time.monotonic()
                    if left <= 0:
                        sel.register(self._listener, selectors.EVENT_READ)
                        paused_until = 0.0
                    else:
                        timeout = min(timeout, left)
                for key, _ in sel.select(timeout=timeout):
                    if key.fileobj is not self._listener:
                        continue
                    if self.balance is not None and not self.balance.may_accept():
                        sel.unregister(self._listener)  # a worker with fewer connections takes it
                        paused_until = time.monotonic() + _BALANCE_PAUSE
                    elif not self._accept():
                        sel.unregister(self._listener)  # out of descriptors: wait, do not spin
                        paused_until = time.monotonic() + self._backoff
                self._roll_if_due()
                if time.monotonic() >= trim_at:
                    trim_freed_memory()  # (freed call buffers back to the OS: limits.py)
                    trim_at = time.monotonic() + 1.0
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

    def _accept(self) -> bool:
        """Accept one client (or refuse it cleanly); False when accept must pause (no descriptors)."""
        try:
            sock, peer = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as err:
            if err.errno not in _ACCEPT_EXHAUSTED:  # e.g. ECONNABORTED: that client is gone already
                return True
            self._backoff = min(_BACKOFF_MAX, self._backoff * 2 or _BACKOFF_FIRST)
            self._refuse_with_spare()
            self.rlog.log(logging.WARNING, "accept", "cannot accept a connection: %s; refusing clients and "
                          "pausing accept for %.2f s (raise the open-file limit, or lower --max-connections)",
                          err.strerror or err, self._backoff)
            return False
        self._backoff = 0.0
        peer_text = _peer_text(peer)
        host = peer[0] if isinstance(peer, tuple) else ""
        try:
            if not self.allow.allows(host):
                raise LimitRefused("not-allowed", "its address is not in --allow")
            try:
                self.admission.enter()
            except LimitRefused:
                if not self._evict_idle():
                    raise
                self.admission.enter(wait=2.0)  # the evicted connection's thread leaves at once
        except LimitRefused as err:
            self._refuse(sock, peer_text, err)
            return True
        try:
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            thread = threading.Thread(target=self._serve, args=(sock, peer_text), daemon=True)
            with self._lock:
                self._conns[sock] = _Conn(thread)
            thread.start()
        except (RuntimeError, OSError) as err:  # "can't start new thread" (TasksMax, pids.max, memory)
            with self._lock:
                self._conns.pop(sock, None)
            self.admission.leave()
            self._refuse(sock, peer_text, LimitRefused("threads", f"no thread can be started for it ({err})"))
            return True
        self.stats.add(connections_total=1, connections_open=1)
        self._publish_open()
        return True

    def _publish_open(self) -> None:
        if self.balance is not None:
            self.balance.publish(self.stats.connections_open)

    def _evict_idle(self) -> bool:
        """At --max-connections: close the connection idle the longest (at least 1 s) to make
        room, so idle connections cannot lock clients out. True when one was closed."""
        now = time.monotonic()
        with self._lock:
            idle = [(c.idle_since, s) for s, c in self._conns.items() if c.idle_since is not None
                    and now - c.idle_since >= 1.0]
            if not idle:
                return False
            _since, victim = min(idle, key=lambda item: item[0])
            self._conns[victim].idle_since = None  # (not chosen twice)
        try:
            victim.shutdown(socket.SHUT_RDWR)  # its thread sees end-of-stream and leaves
        except OSError:
            pass
        self.stats.reject("evicted-idle")
        self.rlog.log(logging.INFO, "evicted-idle", "at --max-connections: closed the connection idle the "
                      "longest to make room (an idle client reconnects when it next has a batch)")
        return True

    def _refuse(self, sock: socket.socket, peer: str, err: LimitRefused) -> None:
        self.stats.reject(err.reason)
        self.rlog.log(logging.WARNING, err.reason, "client %s refused: %s", peer, err)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        sock.close()  # with linger 0: a reset, the client fails at once instead of waiting

    def _refuse_with_spare(self) -> None:
        """Out of descriptors: free the spare one to accept and close the waiting client."""
        if self._spare_fd is None:
            return
        os.close(self._spare_fd)
        self._spare_fd = None
        try:
            sock, peer = self._listener.accept()
        except OSError:
            pass
        else:
            self._refuse(sock, _peer_text(peer), LimitRefused("descriptors", "out of file descriptors"))
        self._spare_fd = _open_spare()

    def _roll_if_due(self) -> None:
        try:
            self.writer.roll_if_due()
        except OSError as err:
            log.warning("rolling the output file failed: %s", err.strerror or err)

    # ---- one connection

    def _serve(self, sock: socket.socket, peer: str) -> None:
        layers = build_layer_stack(
            self.options.compress, self.options.tls_layering, self.tls_ctx, server_side=True
        )
        recv_size = _DEFLATE_RECV_SIZE if self.options.compress else RECV_SIZE
        conn = self._new_connection()
        allowance = Allowance(self.budget)
        tls = layers.tls
        started = quiet_since = time.monotonic()
        partial_since: float | None = None
        with self._lock:
            state = self._conns.get(sock)
        if state is None:  # (only when stopping raced the start)
            state = _Conn(None)
        state.idle_since = None if tls is not None else started
        if tls is None:
            self.rlog.log(logging.INFO, f"connect {peer.rpartition(':')[0]}", "client %s connected", peer)
        reason = "closed by the client"
        try:
            while True:
                sock.settimeout(self._timeout(tls, started, quiet_since, partial_since))
                try:
                    raw = sock.recv(recv_size)
                except TimeoutError:
                    raise self._timed_out(tls, partial_since) from None
                held = conn.buffered + len(raw)
                if self.options.compress and raw:
                    # Charge what this read could inflate to, before inflating it: deflate's
                    # ratio is at most ~1032:1, and never more than the budget has room for.
                    bound = max(0, min(allowance.room() - held, _MAX_INFLATION * len(raw) + 65536))
                    allowance.charge(held + bound)
                    layers.set_inflate_limit(bound)
                else:
                    allowance.charge(held)
                was_handshaking = tls is not None and not tls.handshake_done
                data, reply, eof = layers.up(raw)
                if reply:
                    self._send(sock, reply)
                if was_handshaking and tls.handshake_done:
                    subject = tls.peer_subject()
                    self.rlog.log(logging.INFO, f"connect {peer.rpartition(':')[0]} {subject}",
                                  "client %s connected (%s%s)", peer, tls.version(),
                                  f", certificate subject: {printable(subject)}" if subject else ", no client certificate")
                allowance.charge(conn.buffered + len(data))
                if data:
                    conn.receive_data(data)
                if eof:
                    conn.receive_data(b"")
                # Whole calls wait, the next has begun and more of it is already here: read it
                # first, so calls that arrived together share one write and one fsync.
                gather = (data and not eof and conn.in_frame and getattr(conn, "calls_waiting", False)
                          and _readable_now(sock))
                closed = False if gather else self._answer(conn, peer, state)
                out = conn.data_to_send()
                if out:
                    self._send(sock, layers.down(out))
                allowance.charge(conn.buffered)
                now = time.monotonic()
                if conn.in_frame or (raw and not data and (tls is None or tls.handshake_done)):
                    partial_since = partial_since or now  # a call (or a TLS/zlib piece of one) has begun
                elif data:
                    partial_since, quiet_since = None, now
                handshaking = tls is not None and not tls.handshake_done
                state.idle_since = None if (partial_since is not None or handshaking) else quiet_since
                if closed or eof:
                    break
        except LimitRefused as err:
            reason = f"disconnected: {err}"
            self.stats.reject(err.reason)
            self.rlog.log(logging.WARNING, err.reason, "client %s: %s", peer, reason)
        except InflateLimitExceeded as err:
            reason = f"disconnected: deflate data would inflate past the memory budget ({err})"
            self.stats.reject("inflate")
            self.rlog.log(logging.WARNING, "inflate", "client %s: %s", peer, reason)
        except RemoteProtocolError as err:
            reason = f"protocol error, disconnected: {printable(str(err))}"
            self.stats.reject("protocol")
            self.rlog.log(logging.WARNING, "protocol", "client %s: %s", peer, reason)
        except ssl.SSLError as err:
            reason = f"TLS error, disconnected: {printable(_tls_reason(err))}"
            self.stats.reject("tls")
            self.rlog.log(logging.WARNING, "tls", "client %s: %s", peer, reason)
            alert = layers.tls_alert()
            if alert:
                try:
                    sock.settimeout(1.0)
                    sock.sendall(alert)
                except OSError:
                    pass
        except TimeoutError as err:
            reason = f"disconnected: {err}"
            self.stats.reject("send-timeout")
            self.rlog.log(logging.WARNING, "send-timeout", "client %s: %s", peer, reason)
        except OSError as err:
            reason = f"connection error: {err.strerror or err}"
            log.info("client %s: %s", peer, reason)
        except Exception:  # a bug: log it, keep the other connections going
            reason = "internal error"
            log.exception("client %s: internal error, disconnected", peer)
        finally:
            allowance.release()
            if allowance.peak >= MMAP_THRESHOLD:
                trim_freed_memory()  # it held big buffers (an attack?): give them back now
            self.admission.leave()
            self.stats.add(connections_open=-1)
            self._publish_open()
            with self._lock:
                self._conns.pop(sock, None)
            sock.close()
            log.debug("client %s: %s", peer, reason)

    def _new_connection(self):
        """The protocol core for one connection (a subclass serves another RPC: collector.thrift_server).

        The loop needs of it: ``receive_data``, ``next_event`` (CallReceived, CallRefused,
        ConnectionClosed), ``respond``, ``data_to_send``, and for the limits ``buffered`` (bytes
        held) and ``in_frame`` (a call has begun)."""
        return ServerConnection(self.cache, max_frame_bytes=self.limits.max_call_bytes, limits=self.limits.call,
                                handshake_meta=_ADVERTISED)

    def _timeout(self, tls, started: float, quiet_since: float, partial_since: float | None) -> float | None:
        limits = self.limits
        if tls is not None and not tls.handshake_done:
            deadline = started + limits.tls_handshake_timeout
        elif partial_since is not None:
            deadline = partial_since + limits.frame_timeout
        elif limits.idle_timeout > 0:
            deadline = quiet_since + limits.idle_timeout
        else:
            return None
        return max(0.001, deadline - time.monotonic())

    def _timed_out(self, tls, partial_since: float | None) -> LimitRefused:
        limits = self.limits
        if tls is not None and not tls.handshake_done:
            return LimitRefused("tls-handshake-timeout", f"no TLS handshake within {limits.tls_handshake_timeout:g} s "
                                "(--tls-handshake-timeout)")
        if partial_since is not None:
            return LimitRefused("frame-timeout", f"a call did not arrive whole within {limits.frame_timeout:g} s "
                                "(--frame-timeout)")
        return LimitRefused("idle-timeout", f"idle for {limits.idle_timeout:g} s (--idle-timeout)")

    def _send(self, sock: socket.socket, data: bytes) -> None:
        """sendall, bounded by send_timeout (TimeoutError, an OSError: the connection is dropped)."""
        sock.settimeout(self.options.send_timeout)
        try:
            sock.sendall(data)
        except TimeoutError:
            raise TimeoutError(f"the client read nothing for {self.options.send_timeout:g} s") from None

    def _answer(self, conn: ServerConnection, peer: str, state: _Conn) -> bool:
        """Write every call that is complete, then answer each; True when the peer closed.

        A refusal splits the calls at it: those before are written and answered, every call after
        it on this connection is refused unwritten (ordered pipelining, see the module docstring)."""
        calls: list[CallReceived] = []
        closed = False
        while True:
            event = conn.next_event()
            if event is None:
                break
            if isinstance(event, CallReceived):
                if state.refused:
                    self._refuse_after_refusal(conn, event.serial)
                else:
                    calls.append(event)
            elif isinstance(event, CallRefused):  # already answered with an Avro error by the core
                self.stats.reject(event.reason)
                self.rlog.log(logging.WARNING, f"call-{event.reason}", "client %s: call refused (%s): %s",
                              peer, event.reason, printable(event.detail))
                if calls and not state.refused:
                    self._write_and_answer(conn, calls, state)
                calls = []
                state.refused = True
            elif isinstance(event, ConnectionClosed):  # the core repeats it: stop asking
                closed = True
                break
        if calls:
            self._write_and_answer(conn, calls, state)
        return closed

    def _write_and_answer(self, conn: ServerConnection, calls: list[CallReceived], state: _Conn) -> None:
        """One write (one fsync) for all of ``calls``; OK to each once it returned, else FAILED."""
        batches = [call.events for call in calls]
        try:
            if not any(batches) and (problem := self.writer.problem()):
                raise OSError(problem)  # an empty call (a health probe) hears that writes would fail
            events, body_bytes = self.writer.write_counted(batches)
            status = Status.OK
            self.stats.add(calls_total=len(calls), events_total=events, bytes_total=body_bytes)
        except OSError as err:
            self.rlog.log(logging.ERROR, "write", "cannot write events to %s: %s; answering FAILED",
                          self.writer.directory, err.strerror or err)
            self.stats.reject("write-failed")
            status = Status.FAILED
            state.refused = True
        for call in calls:
            conn.respond(call.serial, status)

    def _refuse_after_refusal(self, conn: ServerConnection, serial: int) -> None:
        self.stats.reject("after-refusal")
        conn.respond_error(serial, "refused unwritten: an earlier call on this connection was refused, and "
                                   "calls are applied in order; send it again on a new connection")

    # ---- stopping

    def release_listener(self) -> socket.socket:
        """``collect --workers``: give the bound listener away (to the workers) and close the rest."""
        listener, self._listener = self._listener, None
        self._wake_r.close()
        self._wake_w.close()
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None
        return listener

    def _shutdown(self) -> None:
        if self.balance is not None:
            self.balance.leave()  # no more connections for this worker
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns = list(self._conns.items())
        for sock, _state in conns:
            try:
                sock.shutdown(socket.SHUT_RD)  # wakes a blocked recv; an answer being written still goes out
            except OSError:
                pass
        for _sock, state in conns:
            if state.thread is not None:
                state.thread.join(timeout=10)
        self.writer.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None


def _readable_now(sock: socket.socket) -> bool:
    """Bytes (or the end of the stream) wait in the socket's receive buffer. Never blocks: a
    ``recv(MSG_PEEK | MSG_DONTWAIT)`` would, on a socket with a timeout (Python polls first)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _tls_reason(err: ssl.SSLError) -> str:
    if err.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "the client presented no certificate, and --tls-client-ca requires one"
    if err.reason in ("CERTIFICATE_VERIFY_FAILED", "TLSV1_ALERT_UNKNOWN_CA"):
        return f"the client certificate did not verify: {getattr(err, 'verify_message', None) or err.reason}"
    return err.reason or str(err)


def _peer_text(peer) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(Address(peer[0], peer[1]))
    return printable(str(peer))
