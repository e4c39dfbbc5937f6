"""A running ``flume-ship collect`` to attack, hostile clients, and a well-behaved one.

Everything runs over loopback. Attacks are bounded in count and size; the collector's memory is
read from ``/proc/<pid>/status`` (``VmHWM``: the peak resident set, ``VmRSS``: now).
"""

from __future__ import annotations

import itertools
import re
import socket
import struct
import time
import urllib.request
import uuid
import zlib
from pathlib import Path

from shipper.avroipc import PROTOCOL_HASH, encode_frame
from shipper.avroipc.avro import encode_long, encode_string
from shipper.avroipc.flume_event import encode_event
from shipper.avroipc.framing import chunks
from shipper.avroipc.protocol import HandshakeRequest, encode_handshake_request
from shipper.sink.client import client_for
from shipper.transport import Address, ClientOptions
from tests.support import Proc

MiB = 1024 * 1024
RSS_BOUND = 300 * MiB  # docs/operations.md, "Running collect on a network"


class Target:
    """``flume-ship collect`` as a real process."""

    def __init__(self, tmp_path: Path, *extra: str, preexec_fn=None, name: str = "out") -> None:
        self.out = tmp_path / name
        self.proc = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(self.out), *extra,
                         preexec_fn=preexec_fn)
        m = self.proc.wait_for(r"listening on 127\.0\.0\.1:(\d+)")
        self.address = Address("127.0.0.1", int(m.group(1)))
        self.sent: list[bytes] = []  # bodies a good client had acknowledged OK

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    def alive(self) -> bool:
        return self.proc.popen.poll() is None

    def status(self, key: str) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        value = int(re.search(rf"^{key}:\s+(\d+)", text, re.M).group(1))
        return value * 1024 if text and key.startswith("Vm") else value

    def peak_rss(self) -> int:
        return self.status("VmHWM")

    def rss(self) -> int:
        return self.status("VmRSS")

    def threads(self) -> int:
        return self.status("Threads")

    def serve_good_client(self, n: int = 20, compress: str | None = None, **tls) -> None:
        """A well-behaved client sends ``n`` events and must get OK."""
        tag = uuid.uuid4().hex[:8]
        bodies = [f"good-{tag}-{i}".encode() for i in range(n)]
        client = client_for(self.address, ClientOptions(connect_timeout=10, request_timeout=30,
                                                            compress=compress, **tls))
        try:
            client.append_batch([encode_event({"host": "good"}, b) for b in bodies])
        finally:
            client.close()
        self.sent += bodies

    def output_bodies(self) -> list[bytes]:
        data = b"".join(p.read_bytes() for p in sorted(self.out.glob("events-*")))
        return data.split(b"\n")[:-1] if data else []

    def log_count(self, pattern: str) -> int:
        """Lines matching so far, once at least one has arrived (stderr is read on a thread)."""
        try:
            self.proc.wait_for(pattern, timeout=10)
        except AssertionError:
            return 0
        rx = re.compile(pattern)
        return sum(1 for line in self.proc.lines if rx.search(line))

    def stop(self) -> int:
        return self.proc.stop()


def scrape(metrics_address: str) -> str:
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as r:
        return r.read().decode()


def rejects(metrics_text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r'^flume_ship_collect_rejects_total\{reason="([^"]+)"\} (\S+)', metrics_text, re.M)}


# --------------------------------------------------------------------------- hostile bytes


def connect(address: Address, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection((address.host, address.port), timeout=timeout)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    return s


def handshake(client_hash: bytes = PROTOCOL_HASH, text: str | None = None) -> bytes:
    return encode_handshake_request(HandshakeRequest(client_hash, text, PROTOCOL_HASH, {}))


def call_head(with_handshake: bool = True, name: str = "appendBatch") -> bytes:
    return (handshake() if with_handshake else b"") + b"\x00" + encode_string(name)


def batch_frame(serial: int, events: list[tuple[dict, bytes]], with_handshake: bool = True) -> bytes:
    params = encode_long(len(events)) + b"".join(encode_event(h, b) for h, b in events) + b"\x00"
    return encode_frame(serial, [*chunks(call_head(with_handshake)), *chunks(params)])


def streamed_frame(serial: int, pieces, total: int):
    """A frame cut into Java's 8 KiB buffers, produced piece by piece (never whole in memory)."""
    count = -(-total // 8192)
    yield struct.pack(">ii", serial, count)
    pending = bytearray()
    for piece in pieces:
        pending += piece
        while len(pending) >= 8192:
            yield struct.pack(">i", 8192) + bytes(pending[:8192])
            del pending[:8192]
    if pending:
        yield struct.pack(">i", len(pending)) + bytes(pending)


_ALPHABET = [bytes([c]) for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"]
_TEMPLATE = b"".join(b"\x08\x01\x02" + a + b + b"\x00" for a in _ALPHABET for b in _ALPHABET)


def header_flood_call(serial: int, keys: int):
    """(frame pieces, total frame bytes): one appendBatch of one event with ``keys`` unique
    4-character header keys (6 bytes each on the wire, empty values) in one map block."""
    prefix = call_head() + b"\x02" + encode_long(keys)
    suffix = b"\x00\x00\x00"  # end of the map, empty body, end of the array
    blocks, rest = divmod(keys, 4096)

    def pieces():
        yield prefix
        for a, b in itertools.islice(itertools.product(_ALPHABET, _ALPHABET), blocks):
            yield _TEMPLATE.replace(b"\x01\x02", a + b)
        if rest:
            yield _TEMPLATE[: rest * 6].replace(b"\x01\x02", b"//")  # ("//" is the one prefix not used above)
        yield suffix

    total = len(prefix) + keys * 6 + len(suffix)
    return streamed_frame(serial, pieces(), total), total


def protocol_text(size: int, salt: str) -> str:
    return '{"protocol":"P%s","pad":"%s"}' % (salt, "a" * size)


def zero_bomb(inflated: int, prefix: bytes = b"") -> bytes:
    """A zlib stream (sync-flushed, like Flume's) inflating to ``prefix`` + ``inflated`` zeros."""
    block = bytes(1 << 20)
    c = zlib.compressobj(9)
    out = [c.compress(prefix), c.compress(block), c.flush(zlib.Z_FULL_FLUSH)]
    rep = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    assert rep == again  # after a full flush, the same input gives the same block
    out.append(rep * (inflated // len(block) - 1))
    return b"".join(out)


def send_quietly(sock: socket.socket, pieces) -> bool:
    """Send until the collector hangs up; True when everything went out."""
    try:
        for piece in pieces:
            sock.sendall(piece)
    except OSError:
        return False
    return True


def read_until_closed(sock: socket.socket, timeout: float = 30.0) -> bytes:
    """Everything the collector sends until it closes the connection (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    got = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            got += data
    except (TimeoutError, OSError):
        pass
    return bytes(got)


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the collector closes (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True

