"""The ``flume-ship`` command line (typer).

Commands stay thin: parse flags into typed options, call into the layer that does the work, and
turn a :class:`shipper.errors.ShipperError` into one line on stderr and its documented exit code
(README, "Exit codes"). A traceback is printed only for a bug (exit 1).
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer

from shipper import __version__
from shipper.errors import EXIT_INPUT, ShipperError
from shipper.ops.logs import setup_logging

log = logging.getLogger("flume-ship")

app = typer.Typer(
    name="flume-ship",
    help="Tail log files into a durable on-disk channel and ship them to Apache Flume Avro or Thrift collectors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flume-ship {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    log_level: str = typer.Option(
        "info", "--log-level", help="Least severe log level to print: debug, info, warning, error."
    ),
    log_format: str = typer.Option("text", "--log-format", help="Log line format on stderr: text or json."),
) -> None:
    """Tail log files into a durable on-disk channel and ship them to Apache Flume Avro collectors.

    Exit codes: 0 success, 1 internal error, 2 usage or configuration error, 3 collector
    unavailable or rejected the events, 4 state directory locked by another flume-ship,
    5 state directory unusable, 6 --once deadline exceeded, 7 input file unreadable,
    130 interrupted before draining finished.
    """
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise typer.BadParameter("use debug, info, warning or error", param_hint="--log-level")
    if log_format not in ("text", "json"):
        raise typer.BadParameter("use text or json", param_hint="--log-format")
    setup_logging(log_level, log_format)


def fail(err: ShipperError) -> "typer.Exit":
    """Print one line for a user-facing error and return the exit to raise."""
    typer.echo(f"flume-ship: error: {err}", err=True)
    return typer.Exit(err.exit_code)


# --- `flume-ship channel ...`: inspect the durable channel (shipper.channel) ---------------------

channel_app = typer.Typer(help="Inspect the durable channel in the state directory.", no_args_is_help=True)
app.add_typer(channel_app, name="channel")


@channel_app.command("verify")
def channel_verify(
    state_dir: Optional[str] = typer.Option(
        None, "--state-dir", envvar="FLUME_SHIP_STATE_DIR", help="State directory (default: the config "
        "file's channel.state_dir, else /var/lib/flume-ship for root, else $XDG_STATE_HOME/flume-ship or "
        "~/.local/state/flume-ship)."
    ),
    config: Optional[str] = typer.Option(None, "--config", envvar="FLUME_SHIP_CONFIG",
                                         help="Config file to take the state directory from."),
) -> None:
    """Run the full integrity check on the channel, read-only (safe while an agent runs).

    Exit 0 when healthy, 5 when the database is corrupt or unusable.
    """
    from shipper.channel import verify
    from shipper.errors import EXIT_STATE

    report = verify(state_dir or _state_dir_from_config(config))
    for line in report.lines():
        typer.echo(line)
    if not report.healthy:
        raise typer.Exit(EXIT_STATE)


# --- `flume-ship collect`, `send`, `ping`: the Avro RPC transport (shipper.collector.server, shipper.sink.client) --

_TRANSPORT_HELP = "Transport"
_OPT_COMPRESS = typer.Option(
    "none", "--compress", help="Compression on the wire: none or deflate (Flume's compression-type). "
    "Both ends must agree: nothing on the wire negotiates it.", rich_help_panel=_TRANSPORT_HELP
)
_OPT_LAYERING = typer.Option(
    "zlib-outside", "--tls-layering", help="With TLS and deflate together: zlib-outside (zlib carries TLS, "
    "Flume >= 1.10) or tls-outside (TLS carries zlib, Flume <= 1.9).", rich_help_panel=_TRANSPORT_HELP
)
_OPT_TLS = typer.Option(False, "--tls", help="Use TLS and verify the collector's certificate (system CA store "
                        "unless --tls-ca).", rich_help_panel=_TRANSPORT_HELP)
_OPT_TLS_CA = typer.Option(None, "--tls-ca", help="CA bundle (PEM) to verify the collector's certificate "
                           "with; implies --tls.", rich_help_panel=_TRANSPORT_HELP)
_OPT_TLS_INSECURE = typer.Option(False, "--tls-insecure", help="Use TLS WITHOUT verifying the certificate "
                                 "(like Flume's trust-all-certs); implies --tls. For tests only.",
                                 rich_help_panel=_TRANSPORT_HELP)
_OPT_TLS_NAME = typer.Option(None, "--tls-server-name", help="Name to verify in the certificate and send as "
                             "SNI (default: the host of the address).", rich_help_panel=_TRANSPORT_HELP)
_OPT_CONNECT_TIMEOUT = typer.Option(5.0, "--connect-timeout", help="Seconds for the TCP connect and the TLS "
                                    "handshake.", rich_help_panel=_TRANSPORT_HELP)
_OPT_REQUEST_TIMEOUT = typer.Option(20.0, "--request-timeout", help="Seconds for each call's reply; the first "
                                    "call of a connection includes the Avro handshake.",
                                    rich_help_panel=_TRANSPORT_HELP)
_OPT_LEVEL = typer.Option(6, "--compression-level", help="zlib level 0-9 for --compress deflate.",
                          rich_help_panel=_TRANSPORT_HELP)
# mutual TLS, client side: the certificate shown to a collector that requires one
_OPT_CLIENT_CERT = typer.Option(None, "--tls-cert", help="Client certificate chain (PEM) for a collector that "
                                "requires one (mutual TLS); needs --tls-key; implies --tls.",
                                rich_help_panel=_TRANSPORT_HELP)
_OPT_CLIENT_KEY = typer.Option(None, "--tls-key", help="Private key (PEM) for --tls-cert.",
                               rich_help_panel=_TRANSPORT_HELP)


def _client_options(compress, level, tls, tls_ca, tls_insecure, tls_name, layering, connect_timeout, request_timeout,
                    cert=None, key=None):
    from shipper.transport.stream import ClientOptions, TLSOptions

    if tls_insecure and tls_ca:
        raise typer.BadParameter("contradicts --tls-ca (verify with that CA, or do not verify): give one of them",
                                 param_hint="--tls-insecure")
    if bool(cert) != bool(key):
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint="--tls-cert")
    tls_options = None
    if tls or tls_ca or tls_insecure or cert:
        tls_options = TLSOptions(ca_file=tls_ca, insecure=tls_insecure, server_name=tls_name, cert_file=cert,
                                 key_file=key)
    return ClientOptions(
        connect_timeout=connect_timeout,
        request_timeout=request_timeout,
        compress=_compression(compress),
        compression_level=level,
        tls=tls_options,
        tls_layering=layering,
    )


def _compression(text: str) -> Optional[str]:
    value = text.lower()
    if value not in ("none", "deflate"):
        raise typer.BadParameter("use none or deflate", param_hint="--compress")
    return None if value == "none" else value


def _size(text: str, flag: str = "--roll-size") -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (raw[:-1], raw[-1]) if raw and raw[-1] in units else (raw, "")
    try:
        value = int(float(num) * units[unit])
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a size like 64M or 1G", param_hint=flag) from None
    if value <= 0:
        raise typer.BadParameter("must be greater than 0", param_hint=flag)
    return value


# --- collect's limits and access control, declared in one block (docs/configuration.md, "collect") ---
_LIMITS_HELP = "Limits and access"
_COLLECT_LIMIT_FLAGS = {  # parameter -> (flag, default, help)
    "max_connections": ("--max-connections", 256, "Most client connections at once (Flume AvroSource's threads); "
                        "one more is refused at once."),
    "idle_timeout": ("--idle-timeout", 600.0, "Seconds a connection may stay silent between calls (0: for ever)."),
    "frame_timeout": ("--frame-timeout", 60.0, "Seconds from a call's first byte to its last (partial calls, "
                      "slow clients)."),
    "tls_handshake_timeout": ("--tls-handshake-timeout", 10.0, "Seconds for a client's TLS handshake."),
    "memory_budget": ("--memory-budget", "128M", "Bytes received and not yet answered, all connections together "
                      "(each counted twice: raw and decoded); also bounds deflate inflation."),
    "max_call_bytes": ("--max-call-bytes", "32M", "Largest call (one frame, after inflation)."),
    "max_call_events": ("--max-call-events", 100_000, "Most events in one call."),
    "max_body_bytes": ("--max-body-bytes", "16M", "Largest event body."),
    "max_headers": ("--max-headers", 1024, "Most header entries of one event."),
    "max_header_bytes": ("--max-header-bytes", "256K", "Most header bytes of one event."),
    "max_call_headers": ("--max-call-headers", 200_000, "Most header entries of all events of one call."),
    "max_call_header_bytes": ("--max-call-header-bytes", "16M", "Most header bytes of all events of one call."),
    "max_protocol_bytes": ("--max-protocol-bytes", "64K", "Longest client protocol text in a handshake "
                           "(Flume's is 1.3K)."),
}


def _limit_opt(name: str):
    flag, default, text = _COLLECT_LIMIT_FLAGS[name]
    return typer.Option(default, flag, help=text, rich_help_panel=_LIMITS_HELP)


def _collect_limits(p: dict, allow: list[str]):
    """collect's limit flags -> ServerLimits (typer.BadParameter names a bad one)."""
    from shipper.avroipc import CallLimits
    from shipper.collector.limits import CHARGE_FACTOR, AllowList, ServerLimits

    for name in ("max_connections", "max_call_events", "max_headers", "max_call_headers"):
        if p[name] < 1:
            raise typer.BadParameter("must be 1 or more", param_hint=_COLLECT_LIMIT_FLAGS[name][0])
    for name in ("idle_timeout", "frame_timeout", "tls_handshake_timeout"):
        if p[name] < 0 or (p[name] == 0 and name != "idle_timeout"):
            raise typer.BadParameter("must be more than 0", param_hint=_COLLECT_LIMIT_FLAGS[name][0])
    sizes = {n: _size(p[n], _COLLECT_LIMIT_FLAGS[n][0]) for n in (
        "memory_budget", "max_call_bytes", "max_body_bytes", "max_header_bytes", "max_call_header_bytes",
        "max_protocol_bytes")}
    if sizes["memory_budget"] < CHARGE_FACTOR * sizes["max_call_bytes"]:
        raise typer.BadParameter(f"must be at least {CHARGE_FACTOR}x --max-call-bytes, or no call of the largest "
                                 "size could ever be taken", param_hint="--memory-budget")
    try:
        networks = AllowList.parse(allow)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--allow") from None
    call = CallLimits(
        max_events=p["max_call_events"], max_body_bytes=sizes["max_body_bytes"], max_headers_per_event=p["max_headers"],
        max_header_bytes_per_event=sizes["max_header_bytes"], max_headers_per_call=p["max_call_headers"],
        max_header_bytes_per_call=sizes["max_call_header_bytes"], max_protocol_bytes=sizes["max_protocol_bytes"],
    )
    return ServerLimits(
        max_connections=p["max_connections"], idle_timeout=p["idle_timeout"], frame_timeout=p["frame_timeout"],
        tls_handshake_timeout=p["tls_handshake_timeout"], memory_budget=sizes["memory_budget"],
        max_call_bytes=sizes["max_call_bytes"], call=call, allow=networks,
    )


def _file_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an octal mode like 0640", param_hint="--file-mode") from None
    if mode & ~0o666 or not mode & 0o600 == 0o600:
        raise typer.BadParameter("use an octal mode of read/write bits that lets the owner read and write, "
                                 "like 0640 or 0644", param_hint="--file-mode")
    return mode


def _check_out_dir(out: str, dir_mode: int) -> None:
    """Create --out (with ``dir_mode``) or check it: a writable directory, else one line and exit 2."""
    import os
    import tempfile

    from shipper.errors import ConfigError

    try:
        os.makedirs(out, mode=dir_mode, exist_ok=True)
        if not os.path.isdir(out):
            raise ConfigError(f"cannot use --out {out}: not a directory")
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".flume-ship-probe-")
        probe.close()
    except ConfigError as err:
        raise fail(err) from None
    except OSError as err:
        raise fail(ConfigError(f"cannot write in --out {out}: {err.strerror or err}; give a writable directory")) from None


@app.command()
def collect(
    listen: str = typer.Option(..., "--listen", help="HOST:PORT to listen on (port 0: any free port; the log "
                               "line 'listening on HOST:PORT' names the real one)."),
    out: str = typer.Option(..., "--out", help="Directory for the output files (created if missing, mode "
                            "--file-mode plus the search bits)."),
    fmt: str = typer.Option("text", "--format", help="text: each event's body and a newline (files *.log); "
                            "jsonl: one JSON object per event with headers and body (files *.jsonl); "
                            "avro: Avro container files of Flume's avro_event records (files *.avro)."),
    codec: str = typer.Option("deflate", "--codec", help="With --format avro: null, deflate, snappy or "
                              "zstandard (the last two when their libraries are installed)."),
    file_mode: str = typer.Option("0640", "--file-mode", help="Mode of the output files (octal); the directory "
                                  "gets the matching search bits. 0644 lets everyone read them."),
    roll_size: str = typer.Option("128M", "--roll-size", help="Start a new file when the current one would "
                                  "grow past this size (K, M, G suffixes)."),
    roll_interval: float = typer.Option(3600.0, "--roll-interval", help="Start a new file after this many "
                                        "seconds (0: never roll by time)."),
    fsync: bool = typer.Option(True, "--fsync/--no-fsync", help="fsync each batch before answering OK "
                               "(--no-fsync: answer once the data is in the OS page cache)."),
    compress: str = _OPT_COMPRESS,
    tls_cert: Optional[str] = typer.Option(None, "--tls-cert", help="Serve TLS with this certificate chain "
                                           "(PEM); needs --tls-key.", rich_help_panel=_TRANSPORT_HELP),
    tls_key: Optional[str] = typer.Option(None, "--tls-key", help="Private key (PEM) for --tls-cert.",
                                          rich_help_panel=_TRANSPORT_HELP),
    tls_client_ca: Optional[str] = typer.Option(None, "--tls-client-ca", help="Require every client to present "
                                                "a certificate signed by this CA (PEM): mutual TLS. Needs "
                                                "--tls-cert.", rich_help_panel=_LIMITS_HELP),
    allow: list[str] = typer.Option([], "--allow", help="Client network allowed to connect, as CIDR "
                                    "(10.0.0.0/8) or an address; repeatable or comma-separated. Default: any "
                                    "(Flume's ipFilterRules).", rich_help_panel=_LIMITS_HELP),
    layering: str = _OPT_LAYERING,
    metrics_listen: Optional[str] = typer.Option(None, "--metrics-listen", help="HOST:PORT to serve Prometheus "
                                                 "/metrics and /health on (port 0: any free port, logged)."),
    max_connections: int = _limit_opt("max_connections"),
    idle_timeout: float = _limit_opt("idle_timeout"),
    frame_timeout: float = _limit_opt("frame_timeout"),
    tls_handshake_timeout: float = _limit_opt("tls_handshake_timeout"),
    memory_budget: str = _limit_opt("memory_budget"),
    max_call_bytes: str = _limit_opt("max_call_bytes"),
    max_call_events: int = _limit_opt("max_call_events"),
    max_body_bytes: str = _limit_opt("max_body_bytes"),
    max_headers: int = _limit_opt("max_headers"),
    max_header_bytes: str = _limit_opt("max_header_bytes"),
    max_call_headers: int = _limit_opt("max_call_headers"),
    max_call_header_bytes: str = _limit_opt("max_call_header_bytes"),
    max_protocol_bytes: str = _limit_opt("max_protocol_bytes"),
    protocol: str = typer.Option("avro", "--protocol", help="avro: Flume's AvroSink and Avro RPC clients; "
                                 "thrift: Flume's ThriftSink and ThriftRpcClient (compact or binary, told "
                                 "apart per connection; no --compress)."),
) -> None:
    """Receive events from Flume AvroSinks or ThriftSinks (or flume-ship) and write them to rolling files.

    Answers OK for a batch only once it is written (and fsynced), FAILED when it cannot be
    written. Stops cleanly on SIGTERM or SIGINT: the batches being written are finished and
    answered, files are closed, exit 0 (a second signal exits 130 at once). Exit 2 for a bad
    flag, an address it cannot listen on, or an --out that is not a writable directory.
    """
    import os
    import signal

    from shipper.collector.server import Collector, CollectorOptions
    from shipper.transport.stream import Address, TLSOptions
    from shipper.collector.writer import FORMATS, RollingWriter, check_avro_codec

    if fmt not in FORMATS:
        raise typer.BadParameter("use text, jsonl or avro", param_hint="--format")
    if fmt == "avro":
        try:
            check_avro_codec(codec)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--codec") from None
    if protocol not in ("avro", "thrift"):
        raise typer.BadParameter("use avro or thrift", param_hint="--protocol")
    if protocol == "thrift" and _compression(compress):
        raise typer.BadParameter("Flume's Thrift RPC has no compression: drop it with --protocol thrift",
                                 param_hint="--compress")
    if roll_interval < 0:
        raise typer.BadParameter("must be 0 (off) or more", param_hint="--roll-interval")
    if bool(tls_cert) != bool(tls_key):
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint="--tls-cert")
    if tls_client_ca and not tls_cert:
        raise typer.BadParameter("mutual TLS needs TLS: give --tls-cert and --tls-key too", param_hint="--tls-client-ca")
    params = dict(locals())
    limits = _collect_limits(params, allow)
    mode = _file_mode(file_mode)
    _check_out_dir(out, mode | 0o100 | ((mode & 0o044) >> 2))
    options = CollectorOptions(
        listen=Address.parse(listen),
        compress=_compression(compress),
        tls=TLSOptions(cert_file=tls_cert, key_file=tls_key, client_ca_file=tls_client_ca) if tls_cert else None,
        tls_layering=layering,
        limits=limits,
    )
    writer = RollingWriter(out, fmt=fmt, roll_bytes=_size(roll_size), roll_seconds=roll_interval, fsync=fsync,
                           file_mode=mode, codec=codec)
    from shipper.collector.limits import return_freed_memory

    return_freed_memory()
    if protocol == "thrift":
        from shipper.collector.thrift_server import ThriftCollector

        collector = ThriftCollector(options, writer)
    else:
        collector = Collector(options, writer)
    address = collector.bind()
    metrics = None
    if metrics_listen:
        from shipper.ops.metrics import collect_metrics_server

        Address.parse(metrics_listen)
        metrics = collect_metrics_server(collector.stats, metrics_listen)
        log.info("metrics on http://%s/metrics", metrics.address)
    signals = 0

    def on_signal(signum, _frame):
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(130)
        log.info("%s: stopping after the batches in progress", signal.Signals(signum).name)
        collector.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("listening on %s (%s RPC, writing to %s, format %s, compression %s, tls %s)", address, protocol,
             out, fmt, options.compress or "none", ("on, client certificates required" if tls_client_ca else "on")
             if options.tls else "off")
    try:
        collector.serve_forever()
    finally:
        if metrics is not None:
            metrics.close()
    log.info("stopped; %d events written", writer.events_written)


@app.command()
def send(
    file: str = typer.Argument(..., help="File whose lines to send, or - for standard input."),
    to: str = typer.Option(..., "--to", help="Collector HOST:PORT (a Flume AvroSource or flume-ship collect), or thrift://HOST:PORT[?protocol=binary] (a ThriftSource)."),
    batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Events per appendBatch call."),
    in_flight: int = typer.Option(1, "--in-flight", min=1, help="Calls sent before waiting for their "
                                  "answers. 1 (like Flume's client) keeps the order everywhere; more is "
                                  "faster, and flume-ship collect keeps the order, but a Flume 1.10+ "
                                  "AvroSource may apply pipelined calls out of order."),
    header: list[str] = typer.Option([], "--header", help="K=V header added to every event (repeatable)."),
    compress: str = _OPT_COMPRESS,
    level: int = _OPT_LEVEL,
    tls: bool = _OPT_TLS,
    tls_ca: Optional[str] = _OPT_TLS_CA,
    tls_insecure: bool = _OPT_TLS_INSECURE,
    tls_name: Optional[str] = _OPT_TLS_NAME,
    tls_cert: Optional[str] = _OPT_CLIENT_CERT,
    tls_key: Optional[str] = _OPT_CLIENT_KEY,
    layering: str = _OPT_LAYERING,
    connect_timeout: float = _OPT_CONNECT_TIMEOUT,
    request_timeout: float = _OPT_REQUEST_TIMEOUT,
) -> None:
    """Send a file's lines once, one event per line (like flume-ng avro-client).

    Lines are sent as raw bytes without their newline (and a carriage return before it).
    Exit 0 only when every line was acknowledged OK; 3 when the collector is unreachable or
    did not accept a batch; 7 when the file cannot be read.
    """
    from shipper.sink.client import client_for, send_lines, split_lines
    from shipper.errors import InputError
    from shipper.transport.stream import Address

    headers = _headers(header)
    options = _client_options(compress, level, tls, tls_ca, tls_insecure, tls_name, layering,
                              connect_timeout, request_timeout, tls_cert, tls_key)
    address = Address.parse_collector(to)
    try:
        stream = sys.stdin.buffer if file == "-" else open(file, "rb")
    except OSError as err:
        raise fail(InputError(f"cannot read {file}: {err.strerror}")) from None
    progress = _Progress(file) if sys.stderr.isatty() else None
    client = client_for(address, options)
    try:
        sent = send_lines(client, split_lines(stream), batch_size=batch_size, headers=headers,
                          window=in_flight, progress=progress.update if progress else None)
    except OSError as err:
        raise fail(InputError(f"cannot read {file}: {err.strerror}")) from None
    except ShipperError as err:
        if progress:
            progress.done()
        acked = getattr(err, "acknowledged", 0)
        typer.echo(f"flume-ship: error: {err} ({acked} lines were acknowledged before this)", err=True)
        raise typer.Exit(err.exit_code) from None
    finally:
        client.close()
        if stream is not sys.stdin.buffer:
            stream.close()
    if progress:
        progress.done()
    log.info("sent %d lines to %s", sent, address)


class _Progress:
    """A one-line counter on a terminal's stderr, redrawn at most ten times a second."""

    def __init__(self, label: str) -> None:
        import time

        self.label, self.count, self._clock, self._last = label, 0, time.monotonic, 0.0

    def update(self, n: int) -> None:
        self.count += n
        now = self._clock()
        if now - self._last >= 0.1:
            self._last = now
            sys.stderr.write(f"\r{self.label}: {self.count} lines acknowledged")
            sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write(f"\r{self.label}: {self.count} lines acknowledged\n")
        sys.stderr.flush()


@app.command()
def ping(
    address: str = typer.Argument(..., help="Collector HOST:PORT (Avro) or thrift://HOST:PORT[?protocol=binary]."),
    compress: str = _OPT_COMPRESS,
    level: int = _OPT_LEVEL,
    tls: bool = _OPT_TLS,
    tls_ca: Optional[str] = _OPT_TLS_CA,
    tls_insecure: bool = _OPT_TLS_INSECURE,
    tls_name: Optional[str] = _OPT_TLS_NAME,
    tls_cert: Optional[str] = _OPT_CLIENT_CERT,
    tls_key: Optional[str] = _OPT_CLIENT_KEY,
    layering: str = _OPT_LAYERING,
    connect_timeout: float = _OPT_CONNECT_TIMEOUT,
    request_timeout: float = _OPT_REQUEST_TIMEOUT,
) -> None:
    """Diagnose a collector: resolve, TCP connect, TLS, Avro handshake (none for thrift://), an empty appendBatch.

    Prints each step with its time, and a plain verdict on the first failure.

    Use it after "Handshake timed out": it tells a refused port from a silent one, a TLS or
    compression mismatch from a middlebox. Exit 0 only when the collector is healthy, else 3.
    """
    from shipper.sink.client import probe
    from shipper.errors import EXIT_UNAVAILABLE
    from shipper.transport.stream import Address

    target = Address.parse_collector(address)
    options = _client_options(compress, level, tls, tls_ca, tls_insecure, tls_name, layering,
                              connect_timeout, request_timeout, tls_cert, tls_key)
    report = probe(target, options)
    typer.echo(f"ping {target}")
    for step in report.steps:
        took = f"  ({step.seconds * 1000:.1f} ms)" if step.seconds is not None else ""
        typer.echo(f"  {step.name:<12} {'ok' if step.ok else 'FAIL':<5} {step.detail}{took}")
    typer.echo(f"verdict: {report.verdict}")
    if not report.healthy:
        raise typer.Exit(EXIT_UNAVAILABLE)


# --------------------------------------------------------------------------- tail (the main job)


def _headers(pairs: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not K=V", param_hint="--header")
        headers[key] = value
    return headers


_DELIVERY_HELP = "Delivery"
_SOURCE_HELP = "Files and events"
_OPS_HELP = "Operations"
_OPT_CONFIG = typer.Option(None, "--config", envvar="FLUME_SHIP_CONFIG", help="TOML configuration file "
                           "(docs/configuration.md) [default: /etc/flume-ship/flume-ship.toml when it exists]. "
                           "Flags given on the command line override it.", rich_help_panel=_OPS_HELP)

# tail's flag parameters -> where they go in the configuration (section, key, how to convert).
_AGENT_FLAGS = {
    "state_dir": ("channel", "state_dir", None),
    "capacity": ("channel", "capacity", None),
    "min_free": ("channel", "min_free", None),
    "to": ("delivery", "collectors", lambda v: [p.strip() for p in v.split(",") if p.strip()]),
    "batch_size": ("delivery", "batch_size", None),
    "batch_bytes": ("delivery", "batch_bytes", None),
    "linger": ("delivery", "linger", None),
    "sinks": ("delivery", "sinks", None),
    "balance": ("delivery", "balance", None),
    "max_penalty": ("delivery", "max_penalty", None),
    "backoff_max": ("delivery", "backoff_max", None),
    "compress": ("delivery", "compress", str.lower),
    "level": ("delivery", "compression_level", None),
    "tls": ("delivery", "tls", None),
    "tls_ca": ("delivery", "tls_ca", None),
    "tls_insecure": ("delivery", "tls_insecure", None),
    "tls_name": ("delivery", "tls_server_name", None),
    "layering": ("delivery", "tls_layering", None),
    "tls_cert": ("delivery", "tls_cert", None),
    "tls_key": ("delivery", "tls_key", None),
    "connect_timeout": ("delivery", "connect_timeout", None),
    "request_timeout": ("delivery", "request_timeout", None),
    "drain_timeout": ("agent", "drain_timeout", None),
    "metrics_listen": ("agent", "metrics_listen", None),
    "stall_timeout": ("agent", "stall_timeout", None),
    "status_interval": ("agent", "status_interval", None),
    "max_open_files": ("agent", "max_open_files", None),
}
_SOURCE_FLAGS = {
    "from_end": ("from_end", None),
    "max_line": ("max_line_bytes", None),
    "no_timestamp": ("timestamp_header", lambda v: not v),
    "no_host": ("host_header", lambda v: not v),
    "no_file": ("file_header", lambda v: not v),
    "event_id": ("event_id", None),
    "multiline": ("multiline", None),
    "include_lines": ("include_lines", None),
    "exclude_lines": ("exclude_lines", None),
    "byte_offset_header": ("byte_offset_header", None),
    "exclude": ("exclude", None),
}


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # compared by name: typer may carry its own click
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _flag_of(ctx: typer.Context, name: str) -> str:
    for p in ctx.command.params:
        if p.name == name:
            return max(p.opts, key=len) if p.opts else name
    return name


def _overlay(ctx: typer.Context, paths: Optional[list[str]]):
    """The flags the user gave (not typer's defaults), as an overlay on the config file."""
    from shipper.agent.config import Overlay

    overlay = Overlay()
    params = ctx.params
    for name, (section, key, conv) in _AGENT_FLAGS.items():
        if _given(ctx, name):
            value = params[name]
            overlay.set(section, key, conv(value) if conv else value, _flag_of(ctx, name))
    for name, (key, conv) in _SOURCE_FLAGS.items():
        if _given(ctx, name):
            value = params[name]
            overlay.set_source(key, conv(value) if conv else value, _flag_of(ctx, name))
    if params.get("header"):
        overlay.extra_headers = _headers(params["header"])
    if paths:
        overlay.paths = list(paths)
    return overlay


def _print_problems(err) -> "typer.Exit":
    for problem in getattr(err, "problems", None) or [err]:
        typer.echo(f"flume-ship: error: {problem}", err=True)
    return typer.Exit(err.exit_code)


@app.command("tail")
def tail_cmd(
    ctx: typer.Context,
    paths: Optional[list[str]] = typer.Argument(None, help="Files or globs to tail (`*`, `**`); quote globs so "
                                                "the shell leaves them to flume-ship, which also finds files created "
                                                "later. Given here, they replace the config file's sources."),
    config: Optional[str] = _OPT_CONFIG,
    to: Optional[str] = typer.Option(None, "--to", help="Collectors as HOST:PORT[,HOST:PORT...]: Flume AvroSources "
                                     "or flume-ship collect; thrift://HOST:PORT[?protocol=binary] names a Flume "
                                     "ThriftSource, and both kinds mix in one group (or delivery.collectors in the "
                                     "config file).",
                                     rich_help_panel=_DELIVERY_HELP),
    state_dir: Optional[str] = typer.Option(None, "--state-dir", envvar="FLUME_SHIP_STATE_DIR",
                                            help="Where the channel and file offsets live (locked: one agent "
                                            "per directory). Default: /var/lib/flume-ship as root, else "
                                            "$XDG_STATE_HOME/flume-ship or ~/.local/state/flume-ship."),
    batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Most events in one appendBatch.",
                                   rich_help_panel=_DELIVERY_HELP),
    batch_bytes: str = typer.Option("4M", "--batch-bytes", help="Most event bytes in one appendBatch.",
                                    rich_help_panel=_DELIVERY_HELP),
    linger: float = typer.Option(0.2, "--linger", min=0.0, help="Seconds a partial batch waits for more "
                                 "events before it is sent.", rich_help_panel=_DELIVERY_HELP),
    sinks: int = typer.Option(1, "--sinks", min=1, max=64, help="Batches in flight at once (with more than 1, "
                              "batches may arrive out of order).", rich_help_panel=_DELIVERY_HELP),
    balance: str = typer.Option("failover", "--balance", help="failover (listed order, the first healthy "
                                "collector takes all), round_robin or random.", rich_help_panel=_DELIVERY_HELP),
    max_penalty: float = typer.Option(30.0, "--max-penalty", min=0.0, help="Longest time in seconds a failing "
                                      "collector is skipped: min(this, 2^failures).",
                                      rich_help_panel=_DELIVERY_HELP),
    backoff_max: float = typer.Option(30.0, "--backoff-max", min=0.1, help="Cap in seconds on the wait "
                                      "between retries while no collector is healthy (exponential, full "
                                      "jitter; retries never stop).", rich_help_panel=_DELIVERY_HELP),
    compress: str = _OPT_COMPRESS,
    level: int = _OPT_LEVEL,
    tls: bool = _OPT_TLS,
    tls_ca: Optional[str] = _OPT_TLS_CA,
    tls_insecure: bool = _OPT_TLS_INSECURE,
    tls_name: Optional[str] = _OPT_TLS_NAME,
    tls_cert: Optional[str] = _OPT_CLIENT_CERT,
    tls_key: Optional[str] = _OPT_CLIENT_KEY,
    layering: str = _OPT_LAYERING,
    connect_timeout: float = _OPT_CONNECT_TIMEOUT,
    request_timeout: float = _OPT_REQUEST_TIMEOUT,
    header: list[str] = typer.Option([], "--header", help="K=V header added to every event (repeatable).",
                                     rich_help_panel=_SOURCE_HELP),
    no_timestamp: bool = typer.Option(False, "--no-timestamp-header", help="Leave out the `timestamp` header "
                                      "(ms since the epoch).", rich_help_panel=_SOURCE_HELP),
    no_host: bool = typer.Option(False, "--no-host-header", help="Leave out the `host` header.",
                                 rich_help_panel=_SOURCE_HELP),
    no_file: bool = typer.Option(False, "--no-file-header", help="Leave out the `file` header (the path).",
                                 rich_help_panel=_SOURCE_HELP),
    event_id: bool = typer.Option(False, "--event-id", help="Add an `id` header made of the file identity and "
                                  "byte offset: stable across re-sends, for receiver-side dedup.",
                                  rich_help_panel=_SOURCE_HELP),
    from_end: bool = typer.Option(False, "--from-end", help="Start files seen for the first time at their end "
                                  "(default: at their beginning).", rich_help_panel=_SOURCE_HELP),
    multiline: Optional[str] = typer.Option(None, "--multiline", help="Join the lines of one event: java, python "
                                            "or go (stack traces, tracebacks, panics); own rules in the config "
                                            "file's multiline table.", rich_help_panel=_SOURCE_HELP),
    include_lines: list[str] = typer.Option([], "--include-lines", help="REGEX: ship only events it matches "
                                            "(repeatable: any of them).", rich_help_panel=_SOURCE_HELP),
    exclude_lines: list[str] = typer.Option([], "--exclude-lines", help="REGEX: drop (and count) events it "
                                            "matches (repeatable).", rich_help_panel=_SOURCE_HELP),
    exclude: list[str] = typer.Option([], "--exclude", help="GLOB of files not to tail (repeatable): a name "
                                      "like '*.gz', or a path when it holds a '/'.", rich_help_panel=_SOURCE_HELP),
    byte_offset_header: bool = typer.Option(False, "--byte-offset-header", help="Add `byteoffset`: the event's "
                                            "first byte in the file (Flume's byteOffsetHeader).",
                                            rich_help_panel=_SOURCE_HELP),
    max_line: str = typer.Option("2M", "--max-line-bytes", help="A longer line is split into events of this "
                                 "size, marked with a `split` header, and counted.", rich_help_panel=_SOURCE_HELP),
    capacity: str = typer.Option("1G", "--capacity", help="Channel capacity in bytes; when full, reading pauses "
                                 "(the files are the buffer)."),
    min_free: str = typer.Option("500M", "--min-free", help="Pause reading while the state directory's "
                                 "filesystem has less free space than this."),
    drain_timeout: float = typer.Option(10.0, "--drain-timeout", min=0.0, help="On SIGTERM/SIGINT, seconds to "
                                        "finish in-flight batches before giving them back to the channel."),
    once: bool = typer.Option(False, "--once", help="Read every file to its current end, ship everything, "
                              "then exit 0 (for cron)."),
    deadline: Optional[float] = typer.Option(None, "--deadline", min=0.1, help="With --once: exit 6 if "
                                             "delivery has not finished after this many seconds."),
    metrics_listen: Optional[str] = typer.Option(None, "--metrics-listen", envvar="FLUME_SHIP_METRICS_LISTEN", help="HOST:PORT to serve Prometheus "
                                                 "/metrics and /health on (port 0: any free port, logged).",
                                                 rich_help_panel=_OPS_HELP),
    stall_timeout: float = typer.Option(300.0, "--stall-timeout", min=0.1, help="/health answers 503 when events "
                                        "are queued and nothing was acknowledged for this many seconds.",
                                        rich_help_panel=_OPS_HELP),
    status_interval: float = typer.Option(2.0, "--status-interval", min=0.1, help="Seconds between rewrites of "
                                          "status.json in the state directory (read by flume-ship status).",
                                          rich_help_panel=_OPS_HELP),
    max_open_files: int = typer.Option(0, "--max-open-files", min=0, help="Most tailed files open at once; "
                                       "the others are read in turns (0: the open-file limit, raised to its "
                                       "hard maximum at start, less a reserve).", rich_help_panel=_SOURCE_HELP),
) -> None:
    """Tail files into the durable channel and ship them to Flume Avro collectors (the main job).

    Runs until SIGTERM/SIGINT, then finishes the batches in flight and exits 0 (a second signal
    exits 130 at once; nothing unacknowledged is lost either way). SIGHUP re-reads the --config
    file (sources and collectors added, changed or removed) without losing or repeating events.
    With --once, exits 0 when everything read is acknowledged, 6 when --deadline passes first.
    While no collector accepts, events wait in the channel and delivery is retried for ever.
    Exit 2 for a bad flag or configuration, 4 when another flume-ship uses the same --state-dir.
    """
    from shipper.agent.core import Agent
    from shipper.agent.config import ConfigFileError, default_config_path, load

    if deadline is not None and not once:
        raise typer.BadParameter("only makes sense with --once", param_hint="--deadline")
    path = config if config is not None else default_config_path()
    overlay = _overlay(ctx, paths)
    try:
        cfg = load(path or None, overlay)
    except ConfigFileError as err:
        raise _print_problems(err) from None
    agent = Agent(cfg, reload=lambda: load(path or None, overlay), once=once, deadline=deadline)
    agent.install_signal_handlers()
    raise typer.Exit(agent.run())


@app.command("validate")
def validate_cmd(
    config: Optional[str] = typer.Argument(None, help="The TOML file to check [default: --config, "
                                           "$FLUME_SHIP_CONFIG, or /etc/flume-ship/flume-ship.toml]."),
    config_opt: Optional[str] = typer.Option(None, "--config", help="Same as the argument."),
) -> None:
    """Check a configuration file: every key, type and value, collector addresses, overlapping sources.

    Prints each problem as FILE: KEY: WHY and exits 2, or a summary of what would run and exits 0.
    Nothing is started and no collector is contacted (use flume-ship ping for that).
    """
    from shipper.agent.config import ConfigFileError, default_config_path, load

    path = config or config_opt or default_config_path()
    if not path:
        typer.echo("flume-ship: error: no configuration file: give one, or create "
                   "/etc/flume-ship/flume-ship.toml", err=True)
        raise typer.Exit(2)
    try:
        cfg = load(path)
    except ConfigFileError as err:
        raise _print_problems(err) from None
    typer.echo(f"{path}: OK")
    typer.echo(f"  state dir: {cfg.state_path()}")
    typer.echo(f"  collectors ({cfg.delivery.balance}): {', '.join(cfg.delivery.collectors)}")
    for s in cfg.sources:
        headers = ", ".join(f"{k}={v}" for k, v in s.headers)
        typer.echo(f"  source {s.name}: {' '.join(s.paths)}" + (f" (headers {headers})" if headers else ""))
        ml = s.multiline
        rules = [f"multiline {ml if isinstance(ml, str) else dict(ml).get('preset', 'rule')}"] if ml else []
        rules += [f"{len(v)} {k}" for k, v in (("include_lines", s.include_lines),
                                               ("exclude_lines", s.exclude_lines), ("exclude", s.exclude)) if v]
        rules += [k for k in ("extract", "event_time", "encoding") if getattr(s, k)]
        if rules:
            typer.echo(f"    rules: {', '.join(rules)} (try them: flume-ship test-source {s.name} SAMPLE)")
    if cfg.agent.metrics_listen:
        typer.echo(f"  metrics: http://{cfg.agent.metrics_listen}/metrics")


@app.command("test-source")
def test_source_cmd(
    ctx: typer.Context,
    source: str = typer.Argument("default", help="The source's name: NAME of a sources.NAME table in the config file."),
    file: str = typer.Argument("-", help="A sample of the log to cut (default: stdin)."),
    config: Optional[str] = _OPT_CONFIG,
    multiline: Optional[str] = typer.Option(None, "--multiline", help="Try this preset (java, python, go) "
                                            "instead of the source's multiline rule."),
    include_lines: list[str] = typer.Option([], "--include-lines", help="REGEX (repeatable): try these instead."),
    exclude_lines: list[str] = typer.Option([], "--exclude-lines", help="REGEX (repeatable): try these instead."),
) -> None:
    """Print the events, headers and drops a source's rules make of FILE (or stdin); ship nothing.

    The end of the input counts as the end of the file (what is held is shipped, as with
    tail --once), so a multiline rule can be written against a saved sample. Exit 0, 2 for a bad
    rule or configuration (each problem printed), 7 when FILE cannot be read.
    """
    from shipper.agent.config import ConfigFileError, Overlay, default_config_path, load_source
    from shipper.tail.preview import preview, render

    overlay = Overlay()
    for name, key in (("multiline", "multiline"), ("include_lines", "include_lines"),
                      ("exclude_lines", "exclude_lines")):
        if _given(ctx, name):
            overlay.set_source(key, ctx.params[name], _flag_of(ctx, name))
    path = config if config is not None else default_config_path()
    try:
        src = load_source(path or None, source, overlay)
        options = src.tail_options()
    except ConfigFileError as err:
        raise _print_problems(err) from None
    try:
        if file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(file, "rb") as fh:
                data = fh.read()
    except OSError as exc:
        typer.echo(f"flume-ship: error: cannot read {file}: {exc.strerror or exc} (give a readable file, "
                   "or - for stdin)", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    rows, summary = preview(data, options, file_name="<stdin>" if file == "-" else file)
    for line in render(rows, summary):
        typer.echo(line)


@app.command("status")
def status_cmd(
    state_dir: Optional[str] = typer.Option(None, "--state-dir", envvar="FLUME_SHIP_STATE_DIR",
                                            help="The agent's state directory [default: channel.state_dir of "
                                            "the config file, else the default of tail]."),
    config: Optional[str] = _OPT_CONFIG,
    as_json: bool = typer.Option(False, "--json", help="Print the whole status document as JSON (for scripts)."),
) -> None:
    """Show per-file offsets and bytes behind, the channel's depth, and each collector's state.

    Works while the agent runs (from the status file it rewrites every few seconds) and when it
    is stopped (from the channel database, read-only, and the files themselves). Exit 0, or 5
    when the state directory holds no channel.
    """
    import json as _json

    from shipper.ops.status import collect, render

    directory = state_dir or _state_dir_from_config(config)
    doc = collect(directory)
    if as_json:
        typer.echo(_json.dumps(doc, indent=2, sort_keys=True))
    else:
        typer.echo(render(doc), nl=False)


def _state_dir_from_config(config: Optional[str]) -> str:
    from shipper.agent.config import ConfigFileError, default_config_path, load_raw
    from shipper.channel.statedir import default_state_dir

    path = config or default_config_path()
    if path:
        try:
            value = load_raw(path).get("channel", {}).get("state_dir")
        except ConfigFileError as err:
            raise _print_problems(err) from None
        if isinstance(value, str) and value:
            return value
    return str(default_state_dir())


def main() -> None:
    """Run the app; a ShipperError becomes one line on stderr and its exit code."""
    try:
        app()
    except ShipperError as err:
        typer.echo(f"flume-ship: error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
