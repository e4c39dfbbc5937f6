#!/usr/bin/env python3
"""Thrift beside Avro, in one run: ``send`` -> ``collect`` end to end, and the codec's hot paths.

End to end: one ``flume-ship collect`` per protocol (``--protocol thrift`` for Thrift; fsync per
batch, the default) and one ``flume-ship send`` of the same N ~100-byte lines, as separate
processes, for Avro, Thrift compact and Thrift binary. Prints events/s for the send process's wall
time (start-up included), the collector's and the sender's CPU seconds, and Thrift's rate as a
share of Avro's. Every case checks that the collector wrote every byte.

Codec: per 1,000 stored events (Avro-encoded, as the channel keeps them), microseconds for

* client: Avro's ``send_append_batch_payload`` (frames the stored bytes as they are) beside
  Thrift's (re-encodes them: ``transcode_payload``), compact and binary;
* server: receive + decode of that call into (headers, body) tuples, Avro beside Thrift;
* the library alternative: Apache Thrift's Python ``TCompactProtocol`` / ``TBinaryProtocol``
  writing and reading the same batch over a ``TMemoryBuffer`` (the ``thrift`` package, a test
  dependency here, driven by the tests' reference codec).

Usage: python3 bench/bench_thrift.py [--lines N] [--batch-size B] [--in-flight W] [--repeat R]
The machine is shared: figures are noisy, compare the columns of one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # shipper, and tests for the reference codec

from bench.benchlib import ROOT, Meter, cli, dir_bytes, loadavg, make_lines, start_collect, stop  # noqa: E402

from shipper import avroipc, thriftrpc  # noqa: E402
from shipper.avroipc.flume_event import encode_event  # noqa: E402


# --------------------------------------------------------------------------- end to end


def run_case(src: Path, size: int, lines: int, batch: int, in_flight: int, rpc: str, proto: str = "") -> float:
    with tempfile.TemporaryDirectory(prefix="bench-thrift-out-") as out:
        extra = ["--protocol", "thrift"] if rpc == "thrift" else []
        collector, addr = start_collect(Path(out), *extra)
        meter = Meter(collector.pid)
        to = f"thrift://{addr}" + ("?protocol=binary" if proto == "binary" else "") if rpc == "thrift" else addr
        try:
            t0 = time.perf_counter()
            sender = subprocess.Popen(cli("send", str(src), "--to", to, "--batch-size", str(batch),
                                          "--in-flight", str(in_flight)),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
            send_meter = Meter(sender.pid)
            send_cpu = 0.0
            while sender.poll() is None:
                send_cpu = max(send_cpu, send_meter.cpu_since_start())
                time.sleep(0.05)
            took = time.perf_counter() - t0
            err = sender.stderr.read()
            collect_cpu = meter.cpu_since_start()
        finally:
            stop(collector)
        if sender.returncode:
            raise SystemExit(f"send failed: {err.decode()}")
        written = dir_bytes(Path(out))
        assert written == size, (written, size)
    label = f"{rpc} {proto}".strip()
    rate = lines / took
    print(f"  {label:15s} {rate:>10,.0f} events/s  {took:6.2f} s   send CPU {send_cpu:5.2f} s"
          f"   collect CPU {collect_cpu:5.2f} s")
    return rate


# --------------------------------------------------------------------------- codec


def make_payload(n: int) -> tuple[list[tuple[dict, bytes]], bytes]:
    events = [({"host": "web-01", "path": "/var/log/app.log"},
               b"2024-05-01T12:00:00.000Z INFO app[%07d]: request served in %3d ms abcdefghijklmno" % (i, i % 997))
              for i in range(n)]
    return events, b"".join(encode_event(headers, body) for headers, body in events)


def best_us(fn, repeat: int) -> float:
    return min(timeit.repeat(fn, number=1, repeat=repeat)) * 1e6


def library_cases(events, proto: str, repeat: int) -> list[tuple[str, float]]:
    """Apache Thrift's Python protocol writing and reading the same call, field by field (the
    test suite's reference codec, tests/thriftrpc/reference.py). Its ``...Accelerated`` classes
    speed up only generated struct code (``thrift_spec``), so they are not a separate case."""
    try:
        from tests.thriftrpc import reference
    except ImportError:  # the thrift package (a test dependency) is not installed
        return [("library: thrift package not installed", float("nan"))]
    name = "TCompactProtocol" if proto == "compact" else "TBinaryProtocol"
    data = reference.append_batch_call(proto, 1, events)
    return [(f"library {name} write", best_us(lambda: reference.append_batch_call(proto, 1, events), repeat)),
            (f"library {name} read", best_us(lambda: reference.read_call(proto, data), repeat))]


def codec(n: int, repeat: int) -> dict[str, float]:
    events, payload = make_payload(n)
    figures: dict[str, float] = {}

    def avro_client():
        c = avroipc.ClientConnection()
        c.established = True  # measure the established path: no handshake
        c.send_append_batch_payload(n, payload)
        return c.data_to_send()

    def thrift_client(proto):
        c = thriftrpc.ClientConnection(proto)
        c.send_append_batch_payload(n, payload)
        return c.data_to_send()

    figures["client avro (stored bytes framed)"] = best_us(avro_client, repeat)
    for proto in ("compact", "binary"):
        figures[f"client thrift {proto} (transcoded)"] = best_us(lambda: thrift_client(proto), repeat)

    # Server: decode one call. Avro needs an established connection: handshake first.
    cache = avroipc.ProtocolCache()
    c = avroipc.ClientConnection()
    c.send_append_batch_payload(n, payload)
    first = c.data_to_send()
    s = avroipc.ServerConnection(cache)
    s.receive_data(first)
    call = s.next_event()
    s.respond(call.serial, avroipc.Status.OK)
    c.receive_data(s.data_to_send())
    while c.next_event() is not None:
        pass
    c.send_append_batch_payload(n, payload)
    avro_call = c.data_to_send()

    def avro_server():
        s.receive_data(avro_call)
        ev = s.next_event()
        s.respond(ev.serial, avroipc.Status.OK)
        s.data_to_send()

    figures["server avro decode"] = best_us(avro_server, repeat)
    for proto in ("compact", "binary"):
        wire = thrift_client(proto)
        ts = thriftrpc.ServerConnection(proto)

        def thrift_server():
            ts.receive_data(wire)
            ev = ts.next_event()
            ts.respond(ev.serial, thriftrpc.Status.OK)
            ts.data_to_send()

        figures[f"server thrift {proto} decode"] = best_us(thrift_server, repeat)
        for name, us in library_cases(events, proto, max(5, repeat // 4)):
            figures[f"{name} ({proto})"] = us
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--in-flight", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=40)
    args = ap.parse_args()
    print(f"load average at start: {loadavg()}; {os.cpu_count()} CPUs")
    print(f"codec, per {args.batch_size:,} stored events of ~120 B with 2 headers (best of {args.repeat}):")
    for name, us in codec(args.batch_size, args.repeat).items():
        print(f"  {name:55s} {us:>9,.0f} us  ({us / args.batch_size:5.2f} us/event)")
    with tempfile.TemporaryDirectory(prefix="bench-thrift-in-") as tmp:
        src = Path(tmp) / "in.log"
        size = make_lines(src, args.lines)
        print(f"send -> collect: {args.lines:,} lines, {size / 1e6:.1f} MB, batch {args.batch_size}, "
              f"--in-flight {args.in_flight}, fsync on; separate processes")
        avro = run_case(src, size, args.lines, args.batch_size, args.in_flight, "avro")
        compact = run_case(src, size, args.lines, args.batch_size, args.in_flight, "thrift", "compact")
        binary = run_case(src, size, args.lines, args.batch_size, args.in_flight, "thrift", "binary")
        print(f"  thrift compact / avro: {compact / avro:.0%}   thrift binary / avro: {binary / avro:.0%}")
    print(f"load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
