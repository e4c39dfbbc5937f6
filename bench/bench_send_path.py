#!/usr/bin/env python3
"""The client's send path for one appendBatch, joined against scattered, side by side in one run.

Builds batches of ``--events`` encoded events of ~``--size`` bytes (``benchlib.make_lines``
lines), then for ``--rounds`` rounds sends ``--batches`` of them through a plain
``shipper.transport.Stream`` over a loopback TCP connection whose far end a child process reads
and throws away, each way in turn:

* **joined**: ``ClientConnection.data_to_send()`` (the frame's bytes, one copy of the payload)
  and ``Stream.send`` of those bytes (``sendall``);
* **scattered**: ``ClientConnection.parts_to_send()`` (the pieces, the payload's memoryviews)
  and ``Stream.send`` of the list (``sendmsg``).

Reported: the sending thread's CPU time per batch (``time.thread_time``; queuing the call,
building the frame, the system calls) and per million events; the median of the rounds.
Usage: python3 bench/bench_send_path.py [--events 1000] [--size 1024] [--batches 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import loadavg, make_lines  # noqa: E402
from shipper.avroipc import ClientConnection  # noqa: E402
from shipper.avroipc.flume_event import encode_event  # noqa: E402
from shipper.transport import Address, LayerStack, Stream  # noqa: E402

SINK = "import socket,sys\ns=socket.create_connection(('127.0.0.1',int(sys.argv[1])))\nb=bytearray(1<<20)\nwhile s.recv_into(b):pass\n"


def one_way(stream: Stream, payload: bytes, count: int, batches: int, scattered: bool) -> float:
    conn = ClientConnection()
    conn.established = True  # (calls without a handshake: only the send path is measured)
    t0 = time.thread_time()
    for _ in range(batches):
        conn.send_append_batch_payload(count, payload)
        out = conn.parts_to_send() if scattered else conn.data_to_send()
        stream.send(out, time.monotonic() + 60)
    return (time.thread_time() - t0) / batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "lines"
        make_lines(src, args.events, args.size)
        lines = src.read_bytes().splitlines()
    payload = b"".join(encode_event({"host": "web-1"}, line) for line in lines)
    listener = socket.create_server(("127.0.0.1", 0))
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(listener.getsockname()[1])])
    sock, _ = listener.accept()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = Stream(sock, LayerStack([]), Address("127.0.0.1", listener.getsockname()[1]))
    print(f"{args.events} events of ~{args.size} B per batch ({len(payload) / 1e6:.2f} MB), {args.batches} batches "
          f"per round; {os.cpu_count()} CPUs; load {loadavg()}")
    got: dict[str, list[float]] = {"joined": [], "scattered": []}
    for _ in range(args.rounds):
        for name in got:
            got[name].append(one_way(stream, payload, args.events, args.batches, name == "scattered"))
    for name, per_batch in got.items():
        med = statistics.median(per_batch)
        print(f"  {name:<10} {med * 1e6:8.1f} us CPU per batch  {med / args.events * 1e12 / 1e6:6.3f} s per M events"
              f"  (rounds: {', '.join(f'{x * 1e6:.0f}' for x in per_batch)} us)")
    print(f"load average at the end: {loadavg()}")
    sock.close()
    sink.wait(30)


if __name__ == "__main__":
    main()
