"""``flume-ship collect``: run the Avro or Thrift collector (shipper.collector) until stopped.

collect has no configuration file, so its flags are declared here: the limits in one table
(``COLLECT_LIMIT_FLAGS``: flag, default, help), which docs/configuration.md's "collect" section
follows (tests/ops/test_docs.py checks both). ``with_flags`` gives them to the command, which
gets them as one dict and turns them, with ``--allow``, into a ``ServerLimits``
(:func:`collect_limits`).
"""

from __future__ import annotations

import logging
from typing import Optional

import typer

from shipper.cli.app import app, report
from shipper.cli.options import OPT_COMPRESS, OPT_LAYERING, TRANSPORT_HELP, compression_flag, size_flag, with_flags
from shipper.errors import ConfigError

log = logging.getLogger("flume-ship")

# --- collect's limits and access control, declared in one block (docs/configuration.md, "collect") ---
LIMITS_HELP = "Limits and access"
COLLECT_LIMIT_FLAGS = {  # parameter -> (flag, default, help)
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


# (parameter, type, option) of each, for with_flags: the type is its default's (int, float or a size text)
LIMIT_FLAGS = [(name, type(default), typer.Option(default, flag, help=text, rich_help_panel=LIMITS_HELP))
               for name, (flag, default, text) in COLLECT_LIMIT_FLAGS.items()]


def collect_limits(p: dict, allow: list[str]):
    """collect's limit flags (by parameter name) -> ServerLimits (typer.BadParameter names a bad one)."""
    from shipper.avroipc import CallLimits
    from shipper.collector.limits import CHARGE_FACTOR, AllowList, ServerLimits

    for name in ("max_connections", "max_call_events", "max_headers", "max_call_headers"):
        if p[name] < 1:
            raise typer.BadParameter("must be 1 or more", param_hint=COLLECT_LIMIT_FLAGS[name][0])
    for name in ("idle_timeout", "frame_timeout", "tls_handshake_timeout"):
        if p[name] < 0 or (p[name] == 0 and name != "idle_timeout"):
            raise typer.BadParameter("must be more than 0", param_hint=COLLECT_LIMIT_FLAGS[name][0])
    sizes = {n: size_flag(p[n], COLLECT_LIMIT_FLAGS[n][0]) for n in (
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


def file_mode_flag(text: str) -> int:
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

    if os.path.lexists(out) and not os.path.isdir(out):
        raise report(ConfigError(f"--out {out} exists and is not a directory: collect writes rolling files "
                                 "into a directory; give a new or existing directory"))
    try:
        os.makedirs(out, mode=dir_mode, exist_ok=True)
        if not os.path.isdir(out):
            raise ConfigError(f"--out {out} is not a directory: give a new or existing directory")
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".flume-ship-probe-")
        probe.close()
    except ConfigError as err:
        raise report(err) from None
    except OSError as err:
        raise report(ConfigError(f"cannot write in --out {out}: {err.strerror or err}; give a writable directory")) from None


@app.command()
@with_flags(LIMIT_FLAGS, "limit_flags", build=dict, before="protocol")
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
    compress: str = OPT_COMPRESS,
    tls_cert: Optional[str] = typer.Option(None, "--tls-cert", help="Serve TLS with this certificate chain "
                                           "(PEM); needs --tls-key.", rich_help_panel=TRANSPORT_HELP),
    tls_key: Optional[str] = typer.Option(None, "--tls-key", help="Private key (PEM) for --tls-cert.",
                                          rich_help_panel=TRANSPORT_HELP),
    tls_client_ca: Optional[str] = typer.Option(None, "--tls-client-ca", help="Require every client to present "
                                                "a certificate signed by this CA (PEM): mutual TLS. Needs "
                                                "--tls-cert.", rich_help_panel=LIMITS_HELP),
    allow: list[str] = typer.Option([], "--allow", help="Client network allowed to connect, as CIDR "
                                    "(10.0.0.0/8) or an address; repeatable or comma-separated. Default: any "
                                    "(Flume's ipFilterRules).", rich_help_panel=LIMITS_HELP),
    layering: str = OPT_LAYERING,
    metrics_listen: Optional[str] = typer.Option(None, "--metrics-listen", help="HOST:PORT to serve Prometheus "
                                                 "/metrics and /health on (port 0: any free port, logged)."),
    protocol: str = typer.Option("avro", "--protocol", help="avro: Flume's AvroSink and Avro RPC clients; "
                                 "thrift: Flume's ThriftSink and ThriftRpcClient (compact or binary, told "
                                 "apart per connection; no --compress)."),
    workers: int = typer.Option(1, "--workers", metavar="N", help="Processes serving the port, each with its "
                                "own files (events-wK-...; one worker keeps the events-... names). "
                                "--max-connections and --memory-budget are totals shared among them. One "
                                "per core is a good start."),
    limit_flags: dict = None,
) -> None:
    """Receive events from Flume AvroSinks or ThriftSinks (or flume-ship) and write them to rolling files.

    Answers OK for a batch only once it is written (and fsynced), FAILED when it cannot be
    written. Stops cleanly on SIGTERM or SIGINT: the batches being written are finished and
    answered, files are closed, exit 0 (a second signal exits 130 at once). Exit 2 for a bad
    flag, an address it cannot listen on, or an --out that is not a writable directory. With
    --workers N, a worker that dies stops the others cleanly and collect exits 9.

    Example: flume-ship collect --listen 0.0.0.0:4141 --out /var/spool/flume-ship

    Example: flume-ship collect --protocol thrift --listen 127.0.0.1:4353 --out ./received
    """
    import os
    import signal

    from shipper.collector.server import Collector, CollectorOptions
    from shipper.collector.writer import FORMATS, RollingWriter, check_avro_codec
    from shipper.transport import Address, TLSOptions

    if fmt not in FORMATS:
        raise typer.BadParameter("use text, jsonl or avro", param_hint="--format")
    if fmt == "avro":
        try:
            check_avro_codec(codec)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--codec") from None
    if protocol not in ("avro", "thrift"):
        raise typer.BadParameter("use avro or thrift", param_hint="--protocol")
    if protocol == "thrift" and compression_flag(compress):
        raise typer.BadParameter("Flume's Thrift RPC has no compression: drop it with --protocol thrift",
                                 param_hint="--compress")
    if roll_interval < 0:
        raise typer.BadParameter("must be 0 (off) or more", param_hint="--roll-interval")
    if bool(tls_cert) != bool(tls_key):
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint="--tls-cert")
    if tls_client_ca and not tls_cert:
        raise typer.BadParameter("mutual TLS needs TLS: give --tls-cert and --tls-key too", param_hint="--tls-client-ca")
    limits = collect_limits(limit_flags, allow)
    mode = file_mode_flag(file_mode)
    if workers != 1:
        from shipper.collector.workers import check_workers

        try:
            check_workers(limits, workers)
        except ConfigError as err:
            raise report(err) from None
    options = CollectorOptions(
        listen=Address.parse(listen),
        compress=compression_flag(compress),
        tls=TLSOptions(cert_file=tls_cert, key_file=tls_key, client_ca_file=tls_client_ca) if tls_cert else None,
        tls_layering=layering,
        limits=limits,
    )
    if metrics_listen:
        Address.parse(metrics_listen)
    from shipper.collector.limits import fewer_gc_passes, return_freed_memory

    return_freed_memory()
    fewer_gc_passes()
    if protocol == "thrift":
        from shipper.collector.thrift_server import ThriftCollector as server_class
    else:
        server_class = Collector

    def make_writer(prefix: str = "events") -> RollingWriter:
        return RollingWriter(out, fmt=fmt, roll_bytes=size_flag(roll_size), roll_seconds=roll_interval,
                             fsync=fsync, file_mode=mode, codec=codec, prefix=prefix)

    # Bind first: a busy port or a bad address fails before --out is created.
    collector = server_class(options, make_writer())
    address = collector.bind()
    _check_out_dir(out, mode | 0o100 | ((mode & 0o044) >> 2))
    what = (f"{protocol} RPC, writing to {out}, format {fmt}, compression {options.compress or 'none'}, tls "
            + (("on, client certificates required" if tls_client_ca else "on") if options.tls else "off"))
    if workers != 1:
        _serve_workers(collector, server_class, options, make_writer, workers, address, what, metrics_listen)
        return
    metrics = None
    if metrics_listen:
        from shipper.ops.metrics import collect_metrics_server

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
    log.info("listening on %s (%s)", address, what)
    try:
        collector.serve_forever()
    finally:
        if metrics is not None:
            metrics.close()
    log.info("stopped; %d events written", collector.writer.events_written)


def _serve_workers(bound, server_class, options, make_writer, workers: int, address, what: str,
                   metrics_listen: Optional[str]) -> None:
    """collect --workers N: fork the workers onto the bound socket, supervise them until they end."""
    from shipper.collector.workers import start_workers, worker_limits

    listener = bound.release_listener()

    def make_collector(k: int):
        from dataclasses import replace

        mine = replace(options, limits=worker_limits(options.limits, workers, k - 1))
        return server_class(mine, make_writer(f"events-w{k}"))

    try:
        supervisor = start_workers(workers, listener, make_collector)  # (its signal handlers in place)
    finally:
        listener.close()  # the workers hold it
    metrics = None
    try:
        if metrics_listen:
            from shipper.ops.metrics import collect_metrics_server

            metrics = collect_metrics_server(supervisor.stats, metrics_listen)
            log.info("metrics on http://%s/metrics", metrics.address)
    except BaseException:  # (a busy --metrics-listen): the workers stop before the error is told
        supervisor.stop()
        supervisor.run(quiet=True)
        raise
    log.info("listening on %s (%d workers, pids %s; %s)", address, workers,
             " ".join(str(p.pid) for p in supervisor.procs), what)
    try:
        supervisor.run()
    finally:
        if metrics is not None:
            metrics.close()
    log.info("stopped; %d events written", supervisor.stats.snapshot()["events_written"])
