"""``collect --workers N``: real worker processes on one port, real senders, real signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from shipper.avroipc.flume_event import encode_event
from shipper.collector.limits import ServerLimits
from shipper.collector.workers import Balance, WorkerStats, check_workers, share, worker_limits
from shipper.errors import EXIT_WORKER, ConfigError
from shipper.sink.client import client_for
from shipper.transport import Address, ClientOptions, TLSOptions
from tests.support import Proc, cli_argv

FAST = ClientOptions(connect_timeout=10.0, request_timeout=30.0)


_started: list[tuple[Proc, list[int]]] = []


@pytest.fixture(autouse=True)
def _stop_what_a_test_left():
    yield
    while _started:
        proc, pids = _started.pop()
        proc.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def start(tmp_path, *extra: str) -> tuple[Proc, str, list[int]]:
    proc = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "out"), *extra)
    m = proc.wait_for(r"listening on (127\.0\.0\.1:\d+) \((\d+) workers, pids ([\d ]+);")
    pids = [int(p) for p in m.group(3).split()]
    _started.append((proc, pids))
    return proc, m.group(1), pids


def files(tmp_path, worker: int | None = None) -> list:
    pattern = f"events-w{worker}-*" if worker else "events-*"
    return sorted((tmp_path / "out").glob(pattern))


def lines_of(paths) -> list[bytes]:
    return [line for p in paths for line in p.read_bytes().splitlines()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead: it only waits for its parent
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_dead(pids, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def batch(tag: str, n: int) -> tuple[list[bytes], list[bytes]]:
    bodies = [f"{tag} {i:06d}".encode() for i in range(n)]
    return [encode_event({}, b) for b in bodies], bodies


# ---- the pieces, without processes


def test_totals_are_divided_and_the_remainder_goes_to_the_first_workers():
    assert [share(10, 3, k) for k in range(3)] == [4, 3, 3]
    limits = ServerLimits(max_connections=5, memory_budget=200 * 1024 * 1024, max_call_bytes=32 * 1024 * 1024)
    mine = [worker_limits(limits, 2, k) for k in range(2)]
    assert [m.max_connections for m in mine] == [3, 2]
    assert sum(m.memory_budget for m in mine) == limits.memory_budget
    assert all(m.max_call_bytes == limits.max_call_bytes and m.call == limits.call for m in mine)


@pytest.mark.parametrize("workers, limits, words", [
    (0, ServerLimits(), "use 1 to"),
    (65, ServerLimits(), "use 1 to"),
    (4, ServerLimits(max_connections=3), "--max-connections 3"),
    (4, ServerLimits(), "share of --memory-budget"),  # 128M / 4 < 2 x 32M
])
def test_workers_that_cannot_share_the_totals_are_refused_with_what_to_do(workers, limits, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        check_workers(limits, workers)


def test_balance_lets_only_the_workers_with_the_fewest_connections_accept():
    balance = Balance(3)
    for k, n in enumerate([2, 1, 1]):
        balance.me = k
        balance.publish(n)
    verdicts = []
    for k in range(3):
        balance.me = k
        verdicts.append(balance.may_accept())
    assert verdicts == [False, True, True]
    balance.me = 1
    balance.leave()  # a stopped worker is never the one with the fewest
    balance.me = 0
    assert not balance.may_accept()
    balance.me = 2
    assert balance.may_accept()


def test_the_parent_sums_the_last_report_of_each_worker():
    stats = WorkerStats()
    stats.running = 2
    stats.update(1, {"events_total": 5, "connections_open": 1, "rejects": {"memory": 1}, "events_written": 5})
    stats.update(2, {"events_total": 7, "connections_open": 2, "rejects": {"memory": 2, "tls": 1}})
    stats.update(1, {"events_total": 9, "connections_open": 0, "rejects": {"memory": 1}, "events_written": 9})
    snap = stats.snapshot()
    assert snap["events_total"] == 16 and snap["connections_open"] == 2 and snap["events_written"] == 9
    assert snap["rejects"] == {"memory": 3, "tls": 1} and snap["workers"] == 2


# ---- real processes


@pytest.mark.parametrize("protocol", ["avro", "thrift"])
def test_two_workers_take_four_long_lived_connections_two_each_and_write_every_event_once(tmp_path, protocol):
    proc, addr, pids = start(tmp_path, "--workers", "2", "--protocol", protocol)
    address = Address.parse_collector(f"{protocol}://{addr}")
    clients, expected = [], []
    try:
        for c in range(4):  # one after the other, each answered before the next connects
            client = client_for(address, FAST)
            events, bodies = batch(f"c{c} first", 100)
            client.append_batch(events)
            clients.append(client)
            expected += bodies
        for rnd in range(3):  # then each connection sends more on its own connection
            for c, client in enumerate(clients):
                events, bodies = batch(f"c{c} round{rnd}", 500)
                client.append_batch(events)
                expected += bodies
    finally:
        for client in clients:
            client.close()
    assert proc.stop(signal.SIGTERM) == 0
    assert not wait_dead(pids)
    per_worker = [lines_of(files(tmp_path, k)) for k in (1, 2)]
    assert sorted(per_worker[0] + per_worker[1]) == sorted(expected)  # every event, exactly once
    # each connection stayed on one worker, and each worker got two of the four
    conns = [{line.split(b" ")[0] for line in lines} for lines in per_worker]
    assert sorted(map(len, conns)) == [2, 2] and not conns[0] & conns[1], conns
    assert "stopped; 6400 events written" in proc.stderr


def test_several_senders_at_once_land_exactly_once_across_the_workers_files(tmp_path):
    proc, addr, pids = start(tmp_path, "--workers", "2")
    srcs = []
    for s in range(4):
        src = tmp_path / f"in{s}.log"
        src.write_bytes(b"".join(b"s%d line %06d %s\n" % (s, i, b"x" * (i % 80)) for i in range(20_000)))
        srcs.append(src)
    senders = [subprocess.Popen(cli_argv("send", str(src), "--to", addr, "--batch-size", "500"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for src in srcs]
    for p in senders:
        assert p.wait(120) == 0, p.stderr.read()
    assert proc.stop(signal.SIGINT) == 0
    assert not wait_dead(pids)
    got = lines_of(files(tmp_path))
    assert sorted(got) == sorted(line for src in srcs for line in src.read_bytes().splitlines())
    assert all(p.name.startswith(("events-w1-", "events-w2-")) for p in files(tmp_path))
    assert "stopped; 80000 events written" in proc.stderr


def test_sigterm_stops_every_worker_after_the_batch_in_progress_and_files_are_complete(tmp_path):
    proc, addr, pids = start(tmp_path, "--workers", "2")
    address = Address.parse(addr)
    acked: list[bytes] = []
    stop = threading.Event()
    errors = []

    def sender(c: int):
        try:
            with client_for(address, FAST) as client:
                for rnd in range(10_000):
                    if stop.is_set():
                        return
                    events, bodies = batch(f"c{c} r{rnd:05d}", 200)
                    client.append_batch(events)
                    acked.extend(bodies)  # answered OK: must be in a file
        except Exception as err:  # the collector stopping under us is expected
            errors.append(err)

    threads = [threading.Thread(target=sender, args=(c,)) for c in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 6000 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.stop(signal.SIGTERM) == 0
    stop.set()
    for t in threads:
        t.join(60)
    assert not wait_dead(pids)
    got = lines_of(files(tmp_path))
    assert len(acked) >= 6000
    assert set(acked) <= set(got)  # nothing acknowledged is missing
    assert len(got) == len(set(got))  # and no partial or doubled line
    assert "closed" in proc.stderr


def test_a_worker_killed_with_sigkill_is_reported_and_collect_exits_9(tmp_path):
    proc, addr, pids = start(tmp_path, "--workers", "2")
    with client_for(Address.parse(addr), FAST) as client:
        events, bodies = batch("before", 300)
        client.append_batch(events)
    os.kill(pids[1], signal.SIGKILL)
    proc.popen.wait(60)
    assert proc.stop() == EXIT_WORKER
    proc.wait_for(rf"worker 2 \(pid {pids[1]}\) died \(killed by SIGKILL\)")
    assert not wait_dead(pids)  # the other worker was stopped, not left behind
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("flume-ship: error: collect worker 2") and "SIGKILL" in last, last
    assert sorted(lines_of(files(tmp_path))) == sorted(bodies)  # what was acknowledged is there


def test_workers_stop_cleanly_when_their_parent_is_killed(tmp_path):
    proc, addr, pids = start(tmp_path, "--workers", "2")
    with client_for(Address.parse(addr), FAST) as client:
        events, bodies = batch("kept", 50)
        client.append_batch(events)
    proc.popen.kill()
    proc.popen.wait(30)
    assert not wait_dead(pids)
    assert lines_of(files(tmp_path)) == bodies


def test_metrics_of_the_workers_are_summed(tmp_path):
    proc, addr, pids = start(tmp_path, "--workers", "2", "--metrics-listen", "127.0.0.1:0")
    metrics = proc.wait_for(r"metrics on (http://\S+)").group(1)
    for c in range(2):
        with client_for(Address.parse(addr), FAST) as client:
            client.append_batch(batch(f"m{c}", 250)[0])
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:  # the workers report about once a second
        text = urllib.request.urlopen(metrics, timeout=10).read().decode()
        if "flume_ship_collect_events_total 500.0" in text:
            break
        time.sleep(0.2)
    assert "flume_ship_collect_events_total 500.0" in text, text
    assert "flume_ship_collect_workers 2.0" in text
    assert "flume_ship_collect_memory_budget_bytes 1.34217728e+08" in text  # the total, shared
    assert proc.stop() == 0


def test_workers_that_cannot_share_the_memory_budget_exit_2_before_creating_anything(tmp_path):
    cp = subprocess.run(cli_argv("collect", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "out"),
                                 "--workers", "4"), capture_output=True, timeout=60)
    assert cp.returncode == 2
    err = [line for line in cp.stderr.decode().splitlines() if line.strip()]
    assert len(err) == 1 and "--memory-budget" in err[0] and "--workers" in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_busy_port_fails_before_out_is_created(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        for extra in ([], ["--workers", "2"]):
            cp = subprocess.run(cli_argv("collect", "--listen", f"127.0.0.1:{port}", "--out", str(tmp_path / "out"),
                                         *extra), capture_output=True, timeout=60)
            assert cp.returncode == 2
            err = [line for line in cp.stderr.decode().splitlines() if line.strip()]
            assert len(err) == 1 and "cannot listen on" in err[0], err
            assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_is_refused_in_one_line_and_left_alone(tmp_path):
    existing = tmp_path / "received.log"
    existing.write_bytes(b"precious\n")
    cp = subprocess.run(cli_argv("collect", "--listen", "127.0.0.1:0", "--out", str(existing)),
                        capture_output=True, timeout=60)
    assert cp.returncode == 2
    err = [line for line in cp.stderr.decode().splitlines() if line.strip()]
    assert len(err) == 1 and "exists and is not a directory" in err[0] and "give" in err[0], err
    assert "File exists" not in err[0]
    assert existing.read_bytes() == b"precious\n"


def test_workers_serve_tls_with_deflate_and_each_builds_its_own_context(tmp_path, tls_files):
    proc, addr, pids = start(tmp_path, "--workers", "2", "--tls-cert", tls_files["cert"], "--tls-key",
                             tls_files["key"], "--compress", "deflate")
    address = Address.parse(addr)
    tls = ClientOptions(connect_timeout=10.0, request_timeout=30.0, compress="deflate",
                        tls=TLSOptions(ca_file=tls_files["ca"]))
    clients, expected = [], []
    try:
        for c in range(4):  # held open, so the four are spread over both workers
            client = client_for(address, tls)
            events, bodies = batch(f"tls{c}", 300)
            client.append_batch(events)
            clients.append(client)
            expected += bodies
    finally:
        for client in clients:
            client.close()
    assert proc.stop() == 0
    assert files(tmp_path, 1) and files(tmp_path, 2)
    assert sorted(lines_of(files(tmp_path))) == sorted(expected)


def test_a_worker_that_cannot_be_forked_stops_the_ones_started(tmp_path, monkeypatch):
    """Out of processes (pids.max, TasksMax) cannot be arranged here without touching the host's
    cgroups, so the second fork is made to fail; the first worker is a real process."""
    import errno

    from shipper.collector.server import Collector, CollectorOptions
    from shipper.collector.workers import start_workers
    from shipper.collector.writer import RollingWriter
    from shipper.errors import WorkerDied

    options = CollectorOptions(listen=Address("127.0.0.1", 0))
    bound = Collector(options, RollingWriter(str(tmp_path)))
    bound.bind()
    listener = bound.release_listener()
    real_fork, forks, children = os.fork, [], []

    def fork():
        forks.append(1)
        if len(forks) == 2:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        pid = real_fork()
        if pid:
            children.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    with pytest.raises(WorkerDied, match="cannot start collect worker 2: Resource temporarily unavailable"):
        start_workers(2, listener, lambda k: Collector(options, RollingWriter(str(tmp_path), prefix=f"events-w{k}")))
    listener.close()
    assert len(children) == 1 and not alive(children[0])  # the first worker was stopped and reaped
    with pytest.raises(ChildProcessError):
        os.waitpid(children[0], os.WNOHANG)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # no handler left behind in this process
