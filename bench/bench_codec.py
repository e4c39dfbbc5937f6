"""Micro-benchmark of the protocol core's hot paths (prints figures; not a test).

* client: ``send_append_batch`` + ``data_to_send`` of 1,000 stored ~100-byte events (the
  events are already Avro-encoded, as the channel stores them; only the array and the frame
  are built), and ``shipper.avroipc.flume_event.encode_batch`` alone;
* server: ``receive_data`` + ``next_event`` of that same appendBatch request on an established
  connection, i.e. framing + call header + decoding the 1,000 events into (headers, body);
* the candidate batch decoders side by side: our tight loop (records.read_event_array), fastavro's
  schemaless_reader (+ conversion to tuples), and the generic avro.Reader loop.

Run with: python3 bench/bench_codec.py [--events 1000] [--repeat 200]
The machine is shared: treat the figures as rough; compare runs made back to back.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import sys
import timeit

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import fastavro  # noqa: E402

from shipper.avroipc import ClientConnection, ProtocolCache, ServerConnection, Status  # noqa: E402
from shipper.avroipc.avro import Reader  # noqa: E402
from shipper.avroipc.flume_event import encode_batch, encode_event, read_event_array  # noqa: E402

SCHEMA = fastavro.parse_schema(
    {
        "type": "array",
        "items": {
            "type": "record",
            "name": "AvroFlumeEvent",
            "fields": [
                {"name": "headers", "type": {"type": "map", "values": "string"}},
                {"name": "body", "type": "bytes"},
            ],
        },
    }
)


def make_events(n: int, headers: dict[str, str], distinct: bool = False) -> list[bytes]:
    body = b"2024-05-01T12:00:00Z host-17 app[4242]: request served in 12 ms, status 200, bytes 5123 "
    return [
        encode_event(
            {**headers, "seq": str(i)} if distinct else headers, body[: 100 - len(str(i))] + str(i).encode()
        )
        for i in range(n)
    ]


def best(fn, repeat: int) -> float:
    return min(timeit.repeat(fn, number=1, repeat=repeat))


def reader_loop(params: bytes):
    r = Reader(params)
    out = []
    for count in r.block_counts(2):
        for _ in range(count):
            h = r.read_string_map()
            out.append((h, r.read_bytes()))
    return out


def fastavro_decode(params: bytes):
    return [(e["headers"], e["body"]) for e in fastavro.schemaless_reader(io.BytesIO(params), SCHEMA)]


def run(n: int, repeat: int, headers: dict[str, str], distinct: bool = False) -> None:
    label = f"{len(headers) + distinct} header(s)" + (", different in every event" if distinct else "")
    stored = make_events(n, headers, distinct)
    size = sum(map(len, stored)) / n

    client = ClientConnection()
    client.established = True  # measure the steady state (no handshake prefix)

    def encode():
        client.send_append_batch(stored)
        client._pending.clear()
        return client.data_to_send()

    request = encode()
    server = ServerConnection(ProtocolCache())
    server.established = True

    def decode():
        server.receive_data(request)
        call = server.next_event()
        server.respond(call.serial, Status.OK)
        server.data_to_send()
        return call

    assert len(decode().events) == n
    params = encode_batch(stored)
    assert read_event_array(params)[0] == fastavro_decode(params) == reader_loop(params)

    print(f"-- {n} events of ~{size:.0f} encoded bytes, {label}")
    for name, fn in [
        ("client send_append_batch + data_to_send", encode),
        ("flume_event.encode_batch", lambda: encode_batch(stored)),
        ("server receive_data + next_event (full call)", decode),
        ("decode: records.read_event_array (chosen)", lambda: read_event_array(params)),
        ("decode: fastavro.schemaless_reader + tuples", lambda: fastavro_decode(params)),
        ("decode: avro.Reader generic loop", lambda: reader_loop(params)),
    ]:
        t = best(fn, repeat)
        print(f"  {name:46s} {t * 1e3:8.3f} ms/batch  {n / t:12,.0f} events/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    print(f"Python {sys.version.split()[0]}, fastavro {fastavro.__version__}; best of {args.repeat} runs")
    run(args.events, args.repeat, {})
    run(args.events, args.repeat, {"host": "web-17", "file": "/var/log/app/access.log"})
    run(args.events, args.repeat, {"host": "web-17", "file": "/var/log/app/access.log"}, distinct=True)


if __name__ == "__main__":
    main()
