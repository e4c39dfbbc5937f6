"""``flume-ship collect``: run the Avro collector (shipper.collector) until stopped."""

from __future__ import annotations

import logging
from typing import Optional

import typer

from shipper.cli.app import app, report
from shipper.cli.options import OPT_COMPRESS, OPT_LAYERING, TRANSPORT_HELP, compression_flag, size_flag
from shipper.errors import ConfigError

log = logging.getLogger("flume-ship")


@app.command()
def collect(
    listen: str = typer.Option(..., "--listen", help="HOST:PORT to listen on (port 0: any free port; the log "
                               "line 'listening on HOST:PORT' names the real one)."),
    out: str = typer.Option(..., "--out", help="Directory for the output files (created if missing)."),
    fmt: str = typer.Option("text", "--format", help="text: each event's body and a newline (files *.log); "
                            "jsonl: one JSON object per event with headers and body (files *.jsonl)."),
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
    layering: str = OPT_LAYERING,
    protocol: str = typer.Option("avro", "--protocol", help="avro: Flume's AvroSink and Avro RPC clients; "
                                 "thrift: Flume's ThriftSink and ThriftRpcClient (compact or binary, told "
                                 "apart per connection; no --compress)."),
) -> None:
    """Receive events from Flume AvroSinks or ThriftSinks (or flume-ship) and write them to rolling files.

    Answers OK for a batch only once it is written (and fsynced), FAILED when it cannot be
    written. Stops cleanly on SIGTERM or SIGINT: the batches being written are finished and
    answered, files are closed, exit 0 (a second signal exits 130 at once).

    Example: flume-ship collect --listen 0.0.0.0:4141 --out /var/spool/flume-ship

    Example: flume-ship collect --protocol thrift --listen 127.0.0.1:4353 --out ./received
    """
    import os
    import signal

    from shipper.collector.server import Collector, CollectorOptions
    from shipper.transport import Address, TLSOptions
    from shipper.collector.writer import FORMATS, RollingWriter

    if fmt not in FORMATS:
        raise typer.BadParameter("use text or jsonl", param_hint="--format")
    if protocol not in ("avro", "thrift"):
        raise typer.BadParameter("use avro or thrift", param_hint="--protocol")
    if protocol == "thrift" and compression_flag(compress):
        raise typer.BadParameter("Flume's Thrift RPC has no compression: drop it with --protocol thrift",
                                 param_hint="--compress")
    if roll_interval < 0:
        raise typer.BadParameter("must be 0 (off) or more", param_hint="--roll-interval")
    if bool(tls_cert) != bool(tls_key):
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint="--tls-cert")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise report(ConfigError(f"cannot use --out {out}: {err.strerror}")) from None
    writer = RollingWriter(out, fmt=fmt, roll_bytes=size_flag(roll_size), roll_seconds=roll_interval, fsync=fsync)
    options = CollectorOptions(
        listen=Address.parse(listen),
        compress=compression_flag(compress),
        tls=TLSOptions(cert_file=tls_cert, key_file=tls_key) if tls_cert else None,
        tls_layering=layering,
    )
    if protocol == "thrift":
        from shipper.collector.thrift_server import ThriftCollector

        collector = ThriftCollector(options, writer)
    else:
        collector = Collector(options, writer)
    address = collector.bind()
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
             out, fmt, options.compress or "none", "on" if options.tls else "off")
    collector.serve_forever()
    log.info("stopped; %d events written", writer.events_written)
