"""Every attack of issue 15's table, replayed against a running ``flume-ship collect``.

What each test holds the collector to, as a user relies on it: the process lives; its peak
resident memory stays under RSS_BOUND (300 MB, with the default limits); a well-behaved client
is served during the attack and after it; nothing reaches ``--out`` but the events of calls that
were valid and acknowledged. Loopback only; each attack is bounded in count and bytes.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from pathlib import Path

import pytest

from shipper.avroipc import encode_frame, protocol_hash
from shipper.avroipc.avro import encode_long
from shipper.avroipc.framing import chunks
from tests.security.support import (
    MiB,
    RSS_BOUND,
    Target,
    batch_frame,
    call_head,
    closed_by_peer,
    connect,
    handshake,
    header_flood_call,
    protocol_text,
    read_until_closed,
    rejects,
    scrape,
    send_quietly,
    zero_bomb,
)


@pytest.fixture
def targets(tmp_path):
    started: list[Target] = []

    def start(*extra: str, **kw) -> Target:
        t = Target(tmp_path, *extra, name=f"out{len(started)}", **kw)
        started.append(t)
        return t

    yield start
    for t in started:
        t.proc.kill()


def finish(t: Target, compress: str | None = None) -> None:
    """The end of every attack: alive, bounded, still serving, and only good events on disk."""
    assert t.alive(), t.proc.stderr
    t.serve_good_client(compress=compress)
    assert t.peak_rss() < RSS_BOUND, f"peak RSS {t.peak_rss() / MiB:.0f} MiB"
    assert t.stop() == 0, t.proc.stderr
    assert sorted(t.output_bodies()) == sorted(t.sent)


def in_parallel(*fns) -> None:
    threads = [threading.Thread(target=fn) for fn in fns]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)


# --------------------------------------------------------------------------- headers


def test_calls_of_ten_million_unique_header_keys_are_refused_without_the_memory(targets):
    t = targets()

    def flood(serial):
        s = connect(t.address)
        pieces, total = header_flood_call(serial, 10_000_000)  # 57 MiB on the wire
        assert total > 57 * MiB
        sent_all = send_quietly(s, pieces)
        s.close()
        assert not sent_all  # the collector hung up: a call over --max-call-bytes

    in_parallel(*(lambda i=i: flood(i) for i in range(3)))
    t.serve_good_client()
    assert t.log_count(r"protocol error, disconnected: frame of more than 33554432 bytes") >= 1


def test_a_call_of_four_million_header_keys_under_the_call_cap_is_refused_at_the_count(targets):
    t = targets("--metrics-listen", "127.0.0.1:0")
    metrics = t.proc.wait_for(r"metrics on http://(\S+)/metrics").group(1)
    s = connect(t.address)
    pieces, total = header_flood_call(1, 4_000_000)  # 24 MiB: under --max-call-bytes
    assert total < 32 * MiB
    assert send_quietly(s, pieces)
    t.serve_good_client()  # during: the attacker's connection is still open
    s.settimeout(30)
    answer = s.recv(65536)
    assert b"more than 1024 headers" in answer  # an Avro error, the connection lives
    s.close()
    assert rejects(scrape(metrics)).get("headers") == 1
    assert t.log_count(r"call refused \(headers\)") == 1
    finish(t)


# --------------------------------------------------------------------------- deflate


def test_deflate_bombs_cost_at_most_the_memory_budget_and_are_let_go(targets):
    t = targets("--compress", "deflate")
    raw = zero_bomb(1024 * MiB)  # ~1 MiB on the wire, 1 GiB inflated
    framed = zero_bomb(1024 * MiB, prefix=encode_frame(1, [b""])[:8] + (30 * MiB).to_bytes(4, "big"))
    assert len(raw) + len(framed) < 4 * MiB

    def bomb(data):
        s = connect(t.address)
        send_quietly(s, [data[i : i + 65536] for i in range(0, len(data), 65536)])
        read_until_closed(s, 30)
        s.close()

    # 3 x 2 connections: 6 GiB of zeros asked for, ~12 MiB on the wire
    in_parallel(*([lambda: bomb(raw)] * 3 + [lambda: bomb(framed)] * 3))
    t.serve_good_client(compress="deflate")
    assert t.rss() < RSS_BOUND  # nothing stays resident afterwards
    assert t.peak_rss() < RSS_BOUND
    finish(t, compress="deflate")


def test_deflated_valid_calls_with_huge_zero_bodies_write_nothing(targets):
    t = targets("--compress", "deflate", "--metrics-listen", "127.0.0.1:0")
    metrics = t.proc.wait_for(r"metrics on http://(\S+)/metrics").group(1)

    def zero_body_call(size: int) -> bytes:
        """One valid appendBatch of one event with a body of ``size`` zeros, deflated."""
        params = b"\x02" + b"\x00" + encode_long(size)  # one event, no headers, then the body
        c = zlib.compressobj(9)
        wire = [c.compress(struct_frame_head(len(call_head()) + len(params) + size + 1) + call_head() + params)]
        wire += [c.compress(bytes(MiB)) for _ in range(size // MiB)]
        wire.append(c.compress(b"\x00") + c.flush(zlib.Z_SYNC_FLUSH))
        return b"".join(wire)

    over_call, over_body = zero_body_call(60 * MiB), zero_body_call(20 * MiB)
    assert 8 * len(over_call) < 600 * 1024  # the table's 478 KiB for 480 MiB
    for payload in [over_call] * 8 + [over_body]:  # over --max-call-bytes; under it, over --max-body-bytes
        s = connect(t.address)
        send_quietly(s, [payload])
        read_until_closed(s, 20)
        s.close()
    counts = rejects(scrape(metrics))
    assert counts.get("protocol") == 8 and counts.get("body") == 1
    assert t.log_count(r"frame of more than") >= 1 and t.log_count(r"call refused \(body\)") == 1
    finish(t, compress="deflate")  # (and --out holds the good client's events only)


def struct_frame_head(size: int) -> bytes:
    """A frame header of one buffer of ``size`` bytes (a client may send any split)."""
    return (1).to_bytes(4, "big") + (1).to_bytes(4, "big") + size.to_bytes(4, "big")


# --------------------------------------------------------------------------- handshakes


def test_handshakes_with_huge_client_protocol_texts_pin_nothing(targets):
    t = targets()

    def handshakes(conn_no):
        s = connect(t.address)
        for i in range(16):
            text = protocol_text(16 * MiB, f"{conn_no}-{i}")
            frame = encode_frame(i, [*chunks(handshake(protocol_hash(text), text) + b"\x00\x00"), b"\x00"])
            if not send_quietly(s, [frame]):
                break
        s.close()

    in_parallel(*(lambda n=n: handshakes(n) for n in range(4)))  # 64 handshakes of 16 MiB
    t.serve_good_client()
    assert t.rss() < RSS_BOUND
    assert t.log_count(r"call refused \(protocol\).*over the cap of 65536") >= 1
    finish(t)


# --------------------------------------------------------------------------- slow and idle


def test_a_partial_frame_over_the_call_cap_is_refused_at_its_header(targets):
    t = targets("--metrics-listen", "127.0.0.1:0")
    metrics = t.proc.wait_for(r"metrics on http://(\S+)/metrics").group(1)
    socks = [connect(t.address) for _ in range(3)]  # the table's case: 60 MiB announced, then silence
    for s in socks:
        send_quietly(s, [struct_frame_head(60 * MiB), bytes(MiB)])
    assert all(closed_by_peer(s, 20) for s in socks)
    for s in socks:
        s.close()
    assert rejects(scrape(metrics))["protocol"] == 3
    assert t.log_count(r"frame of more than 33554432 bytes \(a buffer of 62914560") >= 1  # (rate-limited)
    finish(t)


def test_partial_frames_are_held_within_the_budget_and_dropped_at_the_frame_timeout(targets):
    t = targets("--frame-timeout", "3", "--metrics-listen", "127.0.0.1:0")
    metrics = t.proc.wait_for(r"metrics on http://(\S+)/metrics").group(1)
    socks = []
    for i in range(3):  # each a call of 30 MiB announced, 25 MiB sent, then silence
        s = connect(t.address)
        if send_quietly(s, [struct_frame_head(30 * MiB), bytes(25 * MiB)]):
            socks.append(s)
        else:  # the memory budget (128 MiB, counted twice) cannot hold a third
            s.close()
    assert len(socks) == 2
    t.serve_good_client()  # during
    assert all(closed_by_peer(s, 30) for s in socks)
    for s in socks:
        s.close()
    counts = rejects(scrape(metrics))
    assert counts["frame-timeout"] == 2 and counts["memory"] == 1
    assert t.log_count(r"did not arrive whole within 3 s") >= 1
    assert t.log_count(r"memory budget \(128 MiB, --memory-budget\) is spent") == 1
    assert t.rss() < 150 * MiB  # let go, not held for ever
    finish(t)


def test_two_thousand_idle_connections_hold_no_more_than_max_connections_threads(targets):
    t = targets("--idle-timeout", "5", "--max-connections", "200")
    socks = []
    for _ in range(2000):
        try:
            socks.append(connect(t.address, timeout=5))
        except OSError:
            pass
    assert t.threads() <= 200 + 3
    time.sleep(1.5)  # (a connection counts as idle to evict after 1 s)
    t.serve_good_client()  # during: the connection idle the longest made room
    assert t.threads() <= 200 + 3
    fresh = [connect(t.address) for _ in range(5)]  # admitted (each in place of the longest idle)
    assert all(closed_by_peer(s, 30) for s in fresh)  # and timed out when idle too long
    for s in socks + fresh:
        s.close()
    assert t.log_count(r"idle for 5 s") >= 1
    finish(t)


def test_a_silent_tls_client_is_timed_out(targets, tls_files):
    from shipper.transport import TLSOptions

    t = targets("--tls-handshake-timeout", "1", "--tls-cert", tls_files["cert"], "--tls-key", tls_files["key"])
    silent = connect(t.address)
    assert closed_by_peer(silent, 20)
    silent.close()
    assert t.log_count(r"no TLS handshake within 1 s") == 1
    assert t.alive()
    t.serve_good_client(tls=TLSOptions(ca_file=tls_files["ca"]))
    assert t.stop() == 0
    assert sorted(t.output_bodies()) == sorted(t.sent)


def test_a_client_sending_a_call_byte_by_byte_is_timed_out(targets):
    t = targets("--frame-timeout", "2")
    slow = connect(t.address)
    frame = batch_frame(1, [({}, b"slow")])
    closed = False
    for i in range(len(frame) - 1):  # a byte every 0.2 s, never the last one
        if not send_quietly(slow, [frame[i : i + 1]]) or closed_by_peer(slow, 0.2):
            closed = True
            break
    assert closed
    slow.close()
    assert t.log_count(r"did not arrive whole within 2 s") == 1
    finish(t)


# --------------------------------------------------------------------------- garbage


def test_garbage_and_random_payloads_are_refused_counted_and_logged(targets):
    import random

    rnd = random.Random(15)
    t = targets("--metrics-listen", "127.0.0.1:0")
    metrics = t.proc.wait_for(r"metrics on http://(\S+)/metrics").group(1)
    s = connect(t.address)
    for i in range(50):  # valid frames, random payloads
        s.sendall(encode_frame(i, [rnd.randbytes(rnd.randrange(1, 4000))]))
    s.close()
    g = connect(t.address)
    send_quietly(g, [rnd.randbytes(100_000)])  # not even frames
    read_until_closed(g, 20)
    g.close()
    t.serve_good_client()
    counts = rejects(scrape(metrics))
    assert sum(counts.values()) >= 2 and counts.get("protocol", 0) >= 1
    assert t.log_count(r"call refused|protocol error") >= 2
    assert t.log_count(r"call refused") <= 2  # rate-limited: not one line per refusal
    finish(t)


# --------------------------------------------------------------------------- descriptors and threads


def test_out_of_descriptors_the_collector_refuses_backs_off_and_recovers(targets):
    from tests.support import limit_open_files

    t = targets(preexec_fn=limit_open_files(48))
    socks = []
    for _ in range(120):
        try:
            socks.append(connect(t.address, timeout=5))
        except OSError:
            pass
    for s in socks[-20:]:
        closed_by_peer(s, 0.5)
    assert t.alive()
    assert t.log_count(r"cannot accept a connection") <= 3  # a back-off, not 70,000 lines a second
    for s in socks:
        s.close()
    t.serve_good_client()
    finish(t)


@pytest.fixture
def pids_cgroup():
    base = Path("/sys/fs/cgroup/pids")
    if os.geteuid() != 0 or not (base / "cgroup.procs").exists():
        pytest.skip("needs root and the cgroup v1 pids controller, for a real thread limit")
    group = base / f"flume-ship-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as err:
        pytest.skip(f"cannot create a pids cgroup here: {err}")
    yield group
    for pid in (group / "cgroup.procs").read_text().split():
        (base / "cgroup.procs").write_text(pid)  # (the child is dead by now; belt and braces)
    group.rmdir()


def test_when_no_thread_can_be_started_clients_are_refused_and_the_collector_lives(targets, pids_cgroup):
    (pids_cgroup / "pids.max").write_text("6")

    def join():
        (pids_cgroup / "cgroup.procs").write_text(str(os.getpid()))

    t = targets(preexec_fn=join)
    socks = [connect(t.address) for _ in range(12)]
    for s in socks:
        s.sendall(b"")
    refused = sum(closed_by_peer(s, 1) for s in socks)
    assert refused >= 1
    assert t.log_count(r"no thread can be started") >= 1
    assert t.alive()
    for s in socks:
        s.close()
    deadline = time.monotonic() + 30  # (a guard: the connection threads leave as their peers close)
    while t.threads() > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    finish(t)  # a thread can be had again: served


def test_a_client_outside_the_allow_list_is_refused_at_once(targets):
    t = targets("--allow", "10.0.0.0/8,192.168.0.0/16")
    s = connect(t.address)
    assert closed_by_peer(s, 10)
    s.close()
    assert t.log_count(r"refused: its address is not in --allow") == 1
    assert t.stop() == 0
    t2 = targets("--allow", "127.0.0.0/8")
    finish(t2)





# --------------------------------------------------------------------------- the Thrift collector


def test_the_thrift_collector_has_the_same_connection_limits(targets):
    from shipper.transport import Address

    t = targets("--protocol", "thrift", "--frame-timeout", "2", "--idle-timeout", "3", "--max-call-bytes", "16M",
                "--memory-budget", "32M")
    slow = connect(t.address)
    slow.sendall(b"\x00\x00\x10")  # three bytes of a frame length, then nothing
    idle = connect(t.address)
    held, refused = connect(t.address), connect(t.address)
    assert send_quietly(held, [(15 * MiB).to_bytes(4, "big"), bytes(12 * MiB)])  # 24 MiB charged of 32
    assert not send_quietly(refused, [(15 * MiB).to_bytes(4, "big"), bytes(12 * MiB)])  # the budget is spent
    assert all(closed_by_peer(s, 20) for s in (slow, idle, held, refused))
    for s in (slow, idle, held, refused):
        s.close()
    assert t.log_count(r"memory budget \(32 MiB, --memory-budget\) is spent") == 1
    assert t.log_count(r"did not arrive whole within 2 s") >= 1 and t.log_count(r"idle for 3 s") >= 1
    t.address = Address(t.address.host, t.address.port, "thrift")
    finish(t)
