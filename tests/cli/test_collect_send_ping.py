"""`collect`, `send` and `ping` as real processes over loopback."""

from __future__ import annotations

import json
import resource
import signal
import socket
import subprocess

import pytest

from tests.support import Proc, cli_argv


def run(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), input=stdin, capture_output=True, timeout=timeout)


def start_collect(tmp_path, *extra: str, out: str = "out") -> tuple[Proc, str]:
    proc = Proc("collect", "--listen", "127.0.0.1:0", "--out", str(tmp_path / out), *extra)
    m = proc.wait_for(r"listening on (127\.0\.0\.1:\d+)")
    return proc, m.group(1)


def output(tmp_path, out: str = "out", pattern: str = "events-*") -> bytes:
    return b"".join(p.read_bytes() for p in sorted((tmp_path / out).glob(pattern)))


def error_lines(cp: subprocess.CompletedProcess) -> list[str]:
    return [line for line in cp.stderr.decode().splitlines() if line.strip()]


@pytest.fixture
def collect(tmp_path):
    procs = []

    def start(*extra, out="out"):
        proc, addr = start_collect(tmp_path, *extra, out=out)
        procs.append(proc)
        return proc, addr

    yield start
    for p in procs:
        p.kill()


@pytest.mark.parametrize("compress", ["none", "deflate"])
def test_send_to_collect_delivers_every_line_byte_for_byte(tmp_path, collect, compress):
    lines = [b"plain", b"", b"crlf line", b"\xff\xfe not utf-8 \x00\x01", b"tab\there", b"last no newline"]
    lines += [b"n%06d " % i + b"x" * (i % 150) for i in range(5000)]
    raw = b"plain\n\ncrlf line\r\n\xff\xfe not utf-8 \x00\x01\ntab\there\nlast no newline\n"
    raw += b"".join(line + b"\n" for line in lines[6:-1]) + lines[-1]  # the file's last line has no newline
    src = tmp_path / "in.log"
    src.write_bytes(raw)
    proc, addr = collect("--compress", compress)
    cp = run("send", str(src), "--to", addr, "--batch-size", "333", "--compress", compress)
    assert cp.returncode == 0, cp.stderr
    assert b"\r" not in cp.stderr  # no progress bar when stderr is not a terminal
    assert proc.stop(signal.SIGTERM) == 0
    assert output(tmp_path) == b"".join(line + b"\n" for line in lines)
    assert "stopped; 5006 events written" in proc.stderr


def test_send_from_stdin_with_headers_in_jsonl(tmp_path, collect):
    proc, addr = collect("--format", "jsonl")
    cp = run("send", "-", "--to", addr, "--header", "host=web1", "--header", "topic=a=b", stdin=b"one\n\xc3\xa9t\xc3\xa9\n\xff\n")
    assert cp.returncode == 0, cp.stderr
    assert proc.stop(signal.SIGINT) == 0
    records = [json.loads(line) for line in output(tmp_path, pattern="*.jsonl").splitlines()]
    hdr = {"host": "web1", "topic": "a=b"}
    assert records == [
        {"headers": hdr, "body": "one"},
        {"headers": hdr, "body": "été"},
        {"headers": hdr, "body_base64": "/w=="},
    ]


def test_collect_rolls_files_by_size(tmp_path, collect):
    proc, addr = collect("--roll-size", "10K")
    src = tmp_path / "in.log"
    src.write_bytes(b"".join(b"%099d\n" % i for i in range(1000)))  # 100 kB
    assert run("send", str(src), "--to", addr, "--batch-size", "50").returncode == 0
    assert proc.stop() == 0
    files = sorted((tmp_path / "out").glob("events-*.log"))
    assert len(files) >= 10
    assert all(f.stat().st_size <= 10 * 1024 for f in files)
    assert b"".join(f.read_bytes() for f in files) == src.read_bytes()


def test_collector_that_cannot_write_answers_failed_and_send_exits_3(tmp_path, collect):
    """A file-size limit on the collector process makes its writes fail (EFBIG), like a full disk."""
    proc, addr = collect()
    first = tmp_path / "first.log"
    first.write_bytes(b"a" * 99 + b"\n")
    assert run("send", str(first), "--to", addr).returncode == 0
    soft, hard = resource.prlimit(proc.popen.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(proc.popen.pid, resource.RLIMIT_FSIZE, (1000, hard))  # a soft limit: it can be lifted
    big = tmp_path / "big.log"
    big.write_bytes(b"b" * 99 + b"\n" + b"c" * 5000 + b"\n")
    cp = run("send", str(big), "--to", addr)
    assert cp.returncode == 3
    lines = error_lines(cp)
    assert len(lines) == 1 and "FAILED" in lines[0], lines
    proc.wait_for(r"cannot write events .* answering FAILED")
    assert output(tmp_path) == first.read_bytes()  # the failed batch left nothing behind
    resource.prlimit(proc.popen.pid, resource.RLIMIT_FSIZE, (soft, hard))
    assert run("send", str(big), "--to", addr).returncode == 0
    assert proc.stop() == 0
    assert output(tmp_path) == first.read_bytes() + big.read_bytes()


def test_send_with_collector_down_prints_one_line_and_exits_3(tmp_path):
    src = tmp_path / "in.log"
    src.write_bytes(b"x\n")
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    cp = run("send", str(src), "--to", f"127.0.0.1:{port}")
    assert cp.returncode == 3
    lines = error_lines(cp)
    assert len(lines) == 1 and "refused" in lines[0], lines


def test_send_unreadable_file_exits_7(tmp_path):
    cp = run("send", str(tmp_path / "missing.log"), "--to", "127.0.0.1:9")
    assert cp.returncode == 7
    lines = error_lines(cp)
    assert len(lines) == 1 and "cannot read" in lines[0], lines
    cp = run("send", str(tmp_path), "--to", "127.0.0.1:9")  # a directory
    assert cp.returncode == 7, cp.stderr


def test_bad_address_is_a_usage_error(tmp_path):
    cp = run("send", "-", "--to", "nohostport", stdin=b"")
    assert cp.returncode == 2
    assert len(error_lines(cp)) == 1


def test_tls_send_to_collect_verifies_by_default(tmp_path, collect, tls_files):
    proc, addr = collect("--tls-cert", tls_files["cert"], "--tls-key", tls_files["key"], "--compress", "deflate")
    src = tmp_path / "in.log"
    src.write_bytes(b"secret 1\nsecret 2\n")
    cp = run("send", str(src), "--to", addr, "--tls", "--compress", "deflate")
    assert cp.returncode == 3
    lines = error_lines(cp)
    assert len(lines) == 1 and "certificate verify failed" in lines[0], lines
    assert run("send", str(src), "--to", addr, "--tls-ca", tls_files["ca"], "--compress", "deflate").returncode == 0
    assert run("send", str(src), "--to", addr, "--tls-insecure", "--compress", "deflate").returncode == 0
    assert proc.stop() == 0
    assert output(tmp_path) == src.read_bytes() * 2


def test_ping_healthy(collect):
    _proc, addr = collect()
    cp = run("ping", addr)
    assert cp.returncode == 0, cp.stdout
    out = cp.stdout.decode()
    assert "match BOTH" in out and "86aadae2c45474c0fe93ffd0f2350a65" in out
    assert "verdict: healthy" in out


def test_ping_healthy_over_tls(collect, tls_files):
    _proc, addr = collect("--tls-cert", tls_files["cert"], "--tls-key", tls_files["key"])
    cp = run("ping", addr, "--tls-ca", tls_files["ca"])
    assert cp.returncode == 0, cp.stdout
    assert "TLSv1" in cp.stdout.decode()


def test_ping_refused():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    cp = run("ping", f"127.0.0.1:{port}")
    assert cp.returncode == 3
    assert "verdict: connection refused" in cp.stdout.decode()


def test_ping_silent_listener_reports_no_handshake_reply(silent_server):
    cp = run("ping", str(silent_server), "--request-timeout", "1")
    assert cp.returncode == 3
    out = cp.stdout.decode()
    assert "tcp          ok" in out
    assert "no Avro handshake reply" in out and "deflate" in out and "middlebox" in out


@pytest.mark.parametrize("server,client", [("deflate", "none"), ("none", "deflate")])
def test_ping_names_a_deflate_mismatch(collect, server, client):
    _proc, addr = collect("--compress", server)
    cp = run("ping", addr, "--compress", client, "--request-timeout", "5")
    assert cp.returncode == 3
    assert "verdict: compression mismatch" in cp.stdout.decode(), cp.stdout


def test_collect_refuses_an_out_path_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_bytes(b"")
    cp = run("collect", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "afile" / "sub"))
    assert cp.returncode == 2
    assert len(error_lines(cp)) == 1


@pytest.mark.parametrize("command", ["collect", "send", "ping"])
def test_help_is_complete(command):
    cp = run(command, "--help")
    assert cp.returncode == 0
    text = cp.stdout.decode()
    for flag in {
        "collect": ["--listen", "--out", "--format", "--roll-size", "--roll-interval", "--no-fsync", "--compress",
                    "--tls-cert", "--tls-key", "--tls-layering"],
        "send": ["--to", "--batch-size", "--header", "--compress", "--tls", "--tls-ca", "--tls-insecure",
                 "--tls-layering", "--connect-timeout", "--request-timeout"],
        "ping": ["--compress", "--tls-ca", "--tls-insecure", "--tls-layering", "--connect-timeout",
                 "--request-timeout"],
    }[command]:
        assert flag in text, flag
