"""collect's malloc settings (shipper.collector.limits): call-sized buffers are reused, big ones
mapped and unmapped, and free pages go back to the OS; measured in a fresh process by its minor
page-fault count and resident size."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = r"""
import json, resource, sys
from shipper.collector.limits import return_freed_memory, trim_freed_memory
if sys.argv[1] == "set":
    assert return_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024
x = bytes(1 << 20); del x  # warm up
before = faults()
for i in range(200):  # a call's buffers: a 1 MiB message, then its 1 MiB of text
    a = b"".join([bytes([i % 251]) * 8192] * 128)
    b = bytes(a)
    del a, b
reused = faults() - before
held = [bytes([i % 251]) * (1 << 20) for i in range(64)]  # 64 MiB alive at once (under 8 MiB each)
rss_busy = rss()
del held
trim_freed_memory()
print(json.dumps({"faults": reused, "rss_busy": rss_busy, "rss_after": rss()}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_call_sized_buffers_are_reused_not_mapped_afresh_and_freed_pages_go_back():
    got = probe("set")
    # 400 MiB allocated and freed: as fresh mappings that is ~100,000 page faults (256 per MiB).
    assert got["faults"] < 5_000, got
    assert got["rss_busy"] - got["rss_after"] > 48 * 2**20, got  # the 64 MiB left after the trim


GC_PROBE = r"""
import gc, sys
from shipper.avroipc import ClientConnection, ProtocolCache, ServerConnection
from shipper.avroipc.flume_event import encode_event
from shipper.collector.limits import fewer_gc_passes
if sys.argv[1] == "set":
    fewer_gc_passes()
client, server = ClientConnection(), ServerConnection(ProtocolCache())
payload = b"".join(encode_event({"host": "h"}, b"x" * 1000) for _ in range(1000))
passes = []
gc.callbacks.append(lambda phase, info: phase == "start" and passes.append(info["generation"]))
for _ in range(50):  # fifty calls of 1,000 events, decoded and dropped as collect does
    client.send_append_batch_payload(1000, payload)
    server.receive_data(client.data_to_send())
    call = server.next_event()
    assert len(call.events) == 1000
    server.respond(call.serial, 0)
    client.receive_data(server.data_to_send())
    while client.next_event() is not None:
        pass
    del call
print(len(passes))
"""


def test_decoding_calls_runs_no_cycle_collection_once_collect_set_the_threshold():
    def passes(mode: str) -> int:
        return int(subprocess.run([sys.executable, "-c", GC_PROBE, mode], capture_output=True, text=True,
                                  check=True).stdout)

    assert passes("default") > 50  # (Python's 700: several passes in every call)
    assert passes("set") == 0
