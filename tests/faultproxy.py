"""A fault-injecting TCP proxy for the end-to-end tests: it sits between the shipper and a collector.

Modes (switchable at any time with :meth:`FaultProxy.set_mode`; a mode applies to connections made
after the switch, and ``blackhole`` also freezes connections already open):

* ``pass``      forward both directions untouched.
* ``refuse``    nobody listens on the port: connects are refused.
* ``silent``    accept and read, never answer (a collector that hangs mid-handshake).
* ``failed``    answer every request itself with Status FAILED (and BOTH on a handshake): a collector
                whose channel is full.
* ``syserror``  answer every request itself with an Avro system error.
* ``reset``     forward the request, then send the first few bytes of the response and reset the
                connection (RST) in the middle of it.
* ``garbage``   answer with bytes that are not a frame.
* ``blackhole`` stop forwarding in both directions without closing anything (the peer is gone
                without a FIN: a half-open connection).
* ``delay``     forward, but hold each response for ``delay`` seconds.

Run it as a process too: ``python -m tests.faultproxy LISTEN_PORT UPSTREAM_HOST:PORT MODE``. It prints
``proxy on HOST:PORT -> UPSTREAM mode MODE`` and then reads one command a line on stdin, answering each
on stdout: a mode name (answer ``mode MODE``), ``drop`` (reset every open connection; ``dropped``),
``delay SECONDS`` (``delay SECONDS``), ``stats`` (``connections N``: connections accepted so far).
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time

from shipper.avroipc import ProtocolCache, ServerConnection, Status
from shipper.avroipc import CallReceived

MODES = ("pass", "refuse", "silent", "failed", "syserror", "reset", "garbage", "blackhole", "delay")


def _rst_close(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], mode: str = "pass", host: str = "127.0.0.1", port: int = 0,
                 delay: float = 1.0, failed_budget: int | None = None):
        self.upstream = upstream
        self.failed_budget = failed_budget  # mode failed: after this many FAILED answers, switch to pass
        self.failed_answers = 0
        self.host = host
        self.delay = delay
        self.mode = mode
        self.connections = 0
        self._lock = threading.Lock()
        self._closing = False
        self._socks: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = port
        self._listen()
        if mode == "refuse":
            self._close_listener()

    # --- control ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def set_mode(self, mode: str) -> None:
        assert mode in MODES, mode
        with self._lock:
            old, self.mode = self.mode, mode
        if mode == "refuse" and old != "refuse":
            self._close_listener()
            self.drop_all()
        elif old == "refuse" and mode != "refuse":
            self._listen()

    def drop_all(self) -> None:
        """Reset every open connection (a collector restart, seen from the client)."""
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            _rst_close(s)

    def close(self) -> None:
        self._closing = True
        self._close_listener()
        self.drop_all()

    # --- plumbing --------------------------------------------------------------------------

    def _listen(self) -> None:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(100):
            try:
                ls.bind((self.host, self.port))
                break
            except OSError:
                time.sleep(0.05)
        ls.listen(64)
        self.port = ls.getsockname()[1]
        self._listener = ls
        threading.Thread(target=self._accept_loop, args=(ls,), daemon=True).start()

    def _close_listener(self) -> None:
        ls, self._listener = self._listener, None
        if ls is not None:
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.append(s)

    def _accept_loop(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            self.connections += 1
            self._track(client)
            mode = self.mode
            if mode in ("silent", "failed", "syserror", "garbage"):
                threading.Thread(target=self._answer_self, args=(client, mode), daemon=True).start()
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=5)
                up.settimeout(None)
            except OSError:
                _rst_close(client)
                continue
            self._track(up)
            threading.Thread(target=self._pump, args=(client, up, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, is_response: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                mode = self.mode
                if mode == "blackhole":
                    while self.mode == "blackhole" and not self._closing:
                        time.sleep(0.05)
                    return  # the frozen connection is never resumed; the client must give up on it
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                if is_response and mode == "reset":
                    dst.sendall(data[: max(1, len(data) // 2)])
                    _rst_close(dst)
                    _rst_close(src)
                    return
                if is_response and mode == "delay":
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def _answer_self(self, client: socket.socket, mode: str) -> None:
        conn = ServerConnection(ProtocolCache())
        try:
            while True:
                data = client.recv(65536)
                if mode == "silent":
                    if not data:
                        return
                    continue
                if mode == "garbage":
                    client.sendall(b"\xde\xad\xbe\xef" * 8 + b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    if not data:
                        return
                    continue
                if not data:
                    return  # the client is gone (after EOF the connection would only report it, for ever)
                conn.receive_data(data)
                while True:
                    ev = conn.next_event()
                    if ev is None:
                        break
                    if isinstance(ev, CallReceived):
                        if mode == "failed":
                            conn.respond(ev.serial, Status.FAILED)
                            self.failed_answers += 1
                            if self.failed_budget is not None and self.failed_answers >= self.failed_budget:
                                self.set_mode("pass")
                        else:
                            conn.respond_error(ev.serial, "java.lang.RuntimeException: injected")
                out = conn.data_to_send()
                if out:
                    client.sendall(out)
                if not data:
                    return
        except Exception:
            try:
                client.close()
            except OSError:
                pass


def main(argv: list[str]) -> None:
    port, upstream, mode = int(argv[0]), argv[1], argv[2]
    host, _, up_port = upstream.rpartition(":")
    proxy = FaultProxy((host, int(up_port)), mode, port=port)
    print(f"proxy on {proxy.address} -> {upstream} mode {mode}", flush=True)
    for line in sys.stdin:
        word = line.strip()
        if word in MODES:
            proxy.set_mode(word)
            print(f"mode {word}", flush=True)
        elif word == "drop":
            proxy.drop_all()
            print("dropped", flush=True)
        elif word.startswith("delay "):
            proxy.delay = float(word.split()[1])
            print(f"delay {proxy.delay}", flush=True)
        elif word == "stats":
            print(f"connections {proxy.connections}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
