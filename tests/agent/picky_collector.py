"""A collector that answers FAILED, for ever, to any batch holding a marked event; OK otherwise.

Run as its own process: ``python -m tests.agent.picky_collector OUT MARKER``. It prints
``listening on HOST:PORT``, then serves the real Avro RPC core (shipper.avroipc's responder) over
real sockets, one thread per connection; the bodies of accepted batches are appended to OUT,
one a line, before the OK goes back. Rejected batches are counted on stdout (``rejected N``).
"""

from __future__ import annotations

import socket
import sys
import threading

from shipper.avroipc.events import CallReceived, ConnectionClosed
from shipper.avroipc.protocol import Status
from shipper.avroipc.responder import ProtocolCache, ServerConnection


def serve(out_path: str, marker: bytes) -> None:
    cache = ProtocolCache()
    lock = threading.Lock()
    rejected = [0]
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)

    def handle(sock: socket.socket) -> None:
        conn = ServerConnection(cache)
        with sock:
            while True:
                data = sock.recv(65536)
                conn.receive_data(data)
                while (event := conn.next_event()) is not None:
                    if isinstance(event, ConnectionClosed):
                        return
                    if isinstance(event, CallReceived):
                        bodies = [body for _, body in event.events]
                        if any(marker in b for b in bodies):
                            with lock:
                                rejected[0] += 1
                                print(f"rejected {rejected[0]}", flush=True)
                            conn.respond(event.serial, Status.FAILED)
                        else:
                            with lock, open(out_path, "ab") as fh:
                                fh.write(b"".join(b + b"\n" for b in bodies))
                            conn.respond(event.serial, Status.OK)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
                if not data:
                    return

    while True:
        client, _ = listener.accept()
        threading.Thread(target=handle, args=(client,), daemon=True).start()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2].encode())
