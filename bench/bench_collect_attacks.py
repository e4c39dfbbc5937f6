"""``flume-ship collect`` under the attacks of issue 15, side by side with no attack: what each one
costs the collector (peak and remaining resident memory, threads) and what a well-behaved client
sees (the time for one 20-event batch right after the attack). Default limits; loopback only.

    python3 bench/bench_collect_attacks.py

Prints one table and the load average. Figures, not assertions (docs/benchmarks.md).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import loadavg  # noqa: E402
from shipper.avroipc import encode_frame, protocol_hash  # noqa: E402
from shipper.avroipc.avro import encode_long  # noqa: E402
from shipper.avroipc.framing import chunks  # noqa: E402
from tests.security.support import (  # noqa: E402
    MiB,
    Target,
    call_head,
    connect,
    handshake,
    header_flood_call,
    protocol_text,
    read_until_closed,
    send_quietly,
    zero_bomb,
)


def parallel(fns) -> None:
    threads = [threading.Thread(target=f) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)


def none(t: Target) -> None:
    pass


def header_flood(t: Target) -> None:
    def one(serial):
        s = connect(t.address)
        send_quietly(s, header_flood_call(serial, 10_000_000)[0])
        s.close()

    parallel([lambda i=i: one(i) for i in range(3)])


def deflate_bombs(t: Target) -> None:
    raw = zero_bomb(1024 * MiB)
    framed = zero_bomb(1024 * MiB, prefix=(1).to_bytes(4, "big") * 2 + (30 * MiB).to_bytes(4, "big"))

    def one(data):
        s = connect(t.address)
        send_quietly(s, [data[i : i + 65536] for i in range(0, len(data), 65536)])
        read_until_closed(s, 30)
        s.close()

    parallel([lambda: one(raw)] * 3 + [lambda: one(framed)] * 3)


def zero_bodies(t: Target) -> None:
    import zlib

    for _ in range(8):
        s = connect(t.address)
        size = 60 * MiB
        params = b"\x02\x00" + encode_long(size)
        c = zlib.compressobj(9)
        head = (1).to_bytes(4, "big") * 2 + (len(call_head()) + len(params) + size + 1).to_bytes(4, "big")
        wire = [c.compress(head + call_head() + params)] + [c.compress(bytes(MiB)) for _ in range(60)]
        wire.append(c.compress(b"\x00") + c.flush(zlib.Z_SYNC_FLUSH))
        send_quietly(s, [b"".join(wire)])
        read_until_closed(s, 20)
        s.close()


def protocol_texts(t: Target) -> None:
    def one(n):
        s = connect(t.address)
        for i in range(16):
            text = protocol_text(16 * MiB, f"{n}-{i}")
            if not send_quietly(s, [encode_frame(i, [*chunks(handshake(protocol_hash(text), text) + b"\x00\x00"), b"\x00"])]):
                break
        s.close()

    parallel([lambda n=n: one(n) for n in range(4)])


def partial_frames(t: Target) -> None:
    t.socks = []
    for _ in range(3):
        s = connect(t.address)
        send_quietly(s, [(1).to_bytes(4, "big") * 2 + (30 * MiB).to_bytes(4, "big"), bytes(25 * MiB)])
        t.socks.append(s)


def idle_flood(t: Target) -> None:
    t.socks = []
    for _ in range(2000):
        try:
            t.socks.append(connect(t.address, timeout=5))
        except OSError:
            pass
    time.sleep(1.5)


ATTACKS = [
    ("no attack", none, ()),
    ("3 calls of 10 M header keys (57 MiB each)", header_flood, ()),
    ("6 deflate bombs (1 GiB each, ~6 MiB sent)", deflate_bombs, ("--compress", "deflate")),
    ("8 deflated calls with a 60 MiB zero body", zero_bodies, ("--compress", "deflate")),
    ("64 handshakes with a 16 MiB protocol text", protocol_texts, ()),
    ("3 partial frames of 25 MiB, then silence", partial_frames, ()),
    ("2,000 idle connections", idle_flood, ()),
]


def main() -> None:
    print(f"load average at start: {loadavg()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, attack, flags) in enumerate(ATTACKS):
            t = Target(Path(tmp), *flags, name=f"out{i}")
            base = t.rss()
            started = time.monotonic()
            attack(t)
            took = time.monotonic() - started
            threads = t.threads()
            started = time.monotonic()
            t.serve_good_client(compress="deflate" if "--compress" in flags else None)
            good_ms = (time.monotonic() - started) * 1000
            rows.append((name, took, base / MiB, t.peak_rss() / MiB, t.rss() / MiB, threads, good_ms,
                         t.alive()))
            for s in getattr(t, "socks", []):
                s.close()
            t.proc.kill()
    print(f"{'attack':<45} {'took s':>7} {'base MB':>8} {'peak MB':>8} {'after MB':>9} {'threads':>8} "
          f"{'good batch ms':>14} {'alive':>6}")
    for name, took, base, peak, after, threads, good_ms, alive in rows:
        print(f"{name:<45} {took:7.1f} {base:8.0f} {peak:8.0f} {after:9.0f} {threads:8d} {good_ms:14.1f} "
              f"{'yes' if alive else 'NO':>6}")
    print(f"load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
