"""SIGHUP reload mid-stream, several sources sharing one channel, and systemd notifications.

Reload: two collectors in round robin and one source; while lines are being written, the config
file is rewritten to drop the first collector and add a second source, and the agent gets SIGHUP.
Every line of both sources must arrive exactly once (a drained reload neither loses nor repeats),
and the dropped collector must receive nothing after the reload.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
import time

from shipper.ops.notify import Notifier
from tests.ops.common import collected, start_collector, toml_config, wait_until, write_lines
from tests.support import Proc


def test_sighup_adds_a_source_and_removes_a_collector_mid_stream(tmp_path):
    app, web = tmp_path / "logs" / "app" / "app.log", tmp_path / "logs" / "web" / "web.log"
    col1, addr1 = start_collector(tmp_path / "out1")
    col2, addr2 = start_collector(tmp_path / "out2")
    cfg = toml_config(tmp_path / "ship.toml", state_dir=tmp_path / "state", collectors=[addr1, addr2],
                      sources={"app": [str(tmp_path / "logs" / "app" / "*.log")]}, delivery='balance = "round_robin"')
    agent = Proc("tail", "--config", str(cfg))
    stop_writing = threading.Event()
    written = {"app": 0, "web": 0}

    def writer():
        while not stop_writing.is_set():
            write_lines(app, "app", written["app"], 20)
            written["app"] += 20
            if written["web"] or web.exists():
                write_lines(web, "web", written["web"], 20)
                written["web"] += 20
            time.sleep(0.02)

    thread = threading.Thread(target=writer)
    try:
        agent.wait_for("shipping")
        thread.start()
        wait_until(lambda: len(collected(tmp_path / "out1")) >= 200 and len(collected(tmp_path / "out2")) >= 200,
                   "both collectors receiving", procs=[agent])
        write_lines(web, "web", 0, 500)  # written before the source exists: read from its start
        written["web"] = 500
        toml_config(cfg, state_dir=tmp_path / "state", collectors=[addr2], delivery='balance = "round_robin"',
                    sources={"app": [str(tmp_path / "logs" / "app" / "*.log")],
                             "web": [str(tmp_path / "logs" / "web" / "*.log")]})
        agent.popen.send_signal(signal.SIGHUP)
        agent.wait_for("reloaded configuration: 2 sources, 1 collector")
        at_reload = len(collected(tmp_path / "out1"))
        time.sleep(1.0)  # keep writing across and after the reload
        stop_writing.set()
        thread.join()
        total = written["app"] + written["web"]
        wait_until(lambda: len(collected(tmp_path / "out1", tmp_path / "out2")) >= total,
                   f"{total} lines", procs=[agent])
        time.sleep(0.5)  # a duplicate would show up now
        assert agent.stop() == 0
    finally:
        stop_writing.set()
        if thread.is_alive():
            thread.join()
        agent.stop()
        col1.stop()
        col2.stop()
    lines = collected(tmp_path / "out1", tmp_path / "out2")
    expected = {f"app {i:06d}".encode() for i in range(written["app"])}
    expected |= {f"web {i:06d}".encode() for i in range(written["web"])}
    assert len(lines) == len(set(lines)), f"{len(lines) - len(set(lines))} lines repeated"
    assert set(lines) == expected
    assert len(collected(tmp_path / "out1")) == at_reload, "the removed collector got events after the reload"
    assert "source web tails" in agent.stderr and "collectors now" in agent.stderr


def test_a_broken_config_on_sighup_keeps_the_running_one(tmp_path):
    col, addr = start_collector(tmp_path / "out")
    cfg = toml_config(tmp_path / "ship.toml", state_dir=tmp_path / "state", collectors=[addr],
                      sources={"app": [str(tmp_path / "logs" / "*.log")]})
    agent = Proc("tail", "--config", str(cfg))
    try:
        agent.wait_for("shipping")
        cfg.write_text(cfg.read_text().replace("batch_size = 100", "batch_size = -5"))
        agent.popen.send_signal(signal.SIGHUP)
        agent.wait_for(r"reload refused: .*ship.toml: delivery.batch_size: must be at least 1")
        agent.wait_for("still running the previous configuration")
        write_lines(tmp_path / "logs" / "a.log", "x", 0, 50)
        wait_until(lambda: len(collected(tmp_path / "out")) == 50, "50 lines after the refused reload", procs=[agent])
        assert agent.stop() == 0
    finally:
        agent.stop()
        col.stop()


def test_sources_in_one_directory_keep_their_own_offsets_across_runs(tmp_path):
    """Each source only knows its own offset records; sharing them, each would adopt the other's files."""
    logs = tmp_path / "logs"
    col, addr = start_collector(tmp_path / "out")
    cfg = toml_config(tmp_path / "ship.toml", state_dir=tmp_path / "state", collectors=[addr],
                      sources={"a": [str(logs / "a*.log")], "b": [str(logs / "b*.log")]})
    try:
        write_lines(logs / "a.log", "a", 0, 100)
        write_lines(logs / "b.log", "b", 0, 100)
        first = Proc("tail", "--config", str(cfg), "--once")
        assert first.popen.wait(60) == 0, first.stderr
        second = Proc("tail", "--config", str(cfg))
        second.wait_for("shipping")
        write_lines(logs / "a.log", "a", 100, 20)
        write_lines(logs / "b.log", "b", 100, 20)
        wait_until(lambda: len(set(collected(tmp_path / "out"))) == 240, "240 lines", procs=[second])
        time.sleep(0.5)  # a duplicate would show up now
        assert second.stop() == 0
    finally:
        col.stop()
    lines = collected(tmp_path / "out")
    assert len(lines) == len(set(lines)), "lines shipped twice"
    assert set(lines) == {f"{t} {i:06d}".encode() for t in "ab" for i in range(120)}


def _receiver(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + address[1:] if address.startswith("@") else address)
    s.settimeout(30)
    return s


def _until(sock: socket.socket, want: str, seen: list[str]) -> None:
    while not any(want in m.split("\n") for m in seen):
        seen.append(sock.recv(4096).decode())


def test_systemd_notifications_on_an_abstract_socket(tmp_path):
    address = "@flume-ship-test-" + secrets.token_hex(6)
    sock = _receiver(address)
    col, addr = start_collector(tmp_path / "out")
    cfg = toml_config(tmp_path / "ship.toml", state_dir=tmp_path / "state", collectors=[addr],
                      sources={"app": [str(tmp_path / "logs" / "*.log")]})
    agent = Proc("tail", "--config", str(cfg), env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
    seen: list[str] = []
    try:
        _until(sock, "READY=1", seen)
        ready = next(m for m in seen if "READY=1" in m.split("\n"))
        assert any(line.startswith("STATUS=") for line in ready.split("\n"))
        for _ in range(3):  # pings keep coming at half the watchdog interval
            _until(sock, "WATCHDOG=1", seen)
            seen.clear()
        agent.popen.send_signal(signal.SIGHUP)
        _until(sock, "RELOADING=1", seen)
        reloading = next(m for m in seen if "RELOADING=1" in m.split("\n"))
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.split("\n"))
        seen.clear()
        _until(sock, "READY=1", seen)
        agent.popen.send_signal(signal.SIGTERM)
        _until(sock, "STOPPING=1", seen)
        assert agent.popen.wait(30) == 0
    finally:
        agent.stop()
        col.stop()
        sock.close()


def test_notifier_on_a_socket_path_and_watchdog_pid(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = _receiver(path)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
        assert n.watchdog_interval == 1.0
        n.ready("hello")
        assert sock.recv(100) == b"READY=1\nSTATUS=hello"
        n.watchdog(now=100.0)
        n.watchdog(now=100.5)  # too soon: no second ping
        n.watchdog(now=101.0)
        n.stopping()
        assert [sock.recv(100) for _ in range(3)] == [b"WATCHDOG=1", b"WATCHDOG=1", b"STOPPING=1"]
        n.close()
    finally:
        sock.close()
    other = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None  # the watchdog is meant for another process
    assert not Notifier.from_env({}).enabled and not Notifier.from_env({}).send("READY=1")
