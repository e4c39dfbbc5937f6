"""``flume-ship send`` and ``ping``: one-shot use of the sink's client against one collector."""

from __future__ import annotations

import logging
import sys

import typer

from shipper.cli.app import app, report
from shipper.cli.options import header_flags, with_transport_flags
from shipper.agent.config import MAX_INT
from shipper.errors import EXIT_UNAVAILABLE, DeliveryError, InputError, ShipperError

log = logging.getLogger("flume-ship")


@app.command()
@with_transport_flags()
def send(
    file: str = typer.Argument(..., help="File whose lines to send, or - for standard input."),
    to: str = typer.Option(..., "--to", help="Collector HOST:PORT (a Flume AvroSource or flume-ship collect), or "
                           "thrift://HOST:PORT[?protocol=binary] (a ThriftSource)."),
    batch_size: int = typer.Option(1000, "--batch-size", min=1, max=MAX_INT, help="Events per appendBatch call."),
    in_flight: int = typer.Option(1, "--in-flight", min=1, max=1024, help="Calls sent before waiting for their "
                                  "answers. 1 (like Flume's client) keeps the order everywhere; more is "
                                  "faster, and flume-ship collect keeps the order, but a Flume 1.10+ "
                                  "AvroSource may apply pipelined calls out of order."),
    header: list[str] = typer.Option([], "--header", help="K=V header added to every event (repeatable)."),
    progress_interval: float = typer.Option(30.0, "--progress-interval", min=0.0, max=86400.0,
                                            help="Seconds between progress log lines when stderr is not a "
                                            "terminal (0: none); on a terminal a live line is redrawn instead."),
    transport: object = None,
) -> None:
    """Send a file's lines once, one event per line (like flume-ng avro-client).

    Lines are sent as raw bytes without their newline (and a carriage return before it).
    Exit 0 only when every line was acknowledged OK; 3 when the collector is unreachable or
    did not accept a batch; 7 when the file cannot be read.

    Example: flume-ship send --to collector:4141 /var/log/app.log

    Example: flume-ship send --to collector:4141 --header env=prod --compress deflate old.log
    """
    from shipper.sink.client import client_for, send_lines, split_lines
    from shipper.transport import Address

    headers = header_flags(header)
    options = transport
    address = Address.parse_collector(to)
    try:
        stream = sys.stdin.buffer if file == "-" else open(file, "rb")
    except OSError as err:
        raise report(InputError(f"cannot read {file}: {err.strerror}; give a readable file, or - for "
                                "standard input")) from None
    progress = _progress(file, stream, batch_size, progress_interval)
    client = client_for(address, options)
    progress.start()
    try:
        sent = send_lines(client, split_lines(_counted(stream, progress)), batch_size=batch_size, headers=headers,
                          window=in_flight, progress=progress.acked)
    except OSError as err:
        progress.stop()  # the error goes below the final progress line, not into it
        raise report(InputError(f"cannot read {file}: {err.strerror}; give a readable file, or - for "
                                "standard input")) from None
    except ShipperError as err:
        progress.stop()
        acked = err.acknowledged if isinstance(err, DeliveryError) else 0
        raise report(err, f" ({acked} lines were acknowledged before this)") from None
    finally:
        progress.stop()
        client.close()
        if stream is not sys.stdin.buffer:
            stream.close()
    log.info("sent %d lines to %s", sent, address)


def _progress(file: str, stream, batch_size: int, interval: float):
    """The progress display (shipper.ops.progress): redrawn on a terminal, logged off one."""
    import os
    import stat
    import time

    from shipper.ops.progress import FileSendProgress, TerminalLine

    try:
        st = os.fstat(stream.fileno())
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError):
        size = None
    terminal = TerminalLine() if TerminalLine.wanted() else None
    return FileSendProgress("stdin" if file == "-" else file, size, batch_size, clock=time.monotonic,
                            interval=interval, terminal=terminal, log=log)


def _counted(stream, progress):
    """The stream's raw lines, counted (newlines included) and reported a batch at a time."""
    size, lines, nbytes = progress.batch_size, 0, 0
    for raw in stream:
        lines += 1
        nbytes += len(raw)
        if lines == size:
            progress.batch_read(lines, nbytes)
            lines = nbytes = 0
        yield raw
    if lines:
        progress.batch_read(lines, nbytes)


@app.command()
@with_transport_flags()
def ping(
    address: str = typer.Argument(..., help="Collector HOST:PORT (Avro) or thrift://HOST:PORT[?protocol=binary]."),
    transport: object = None,
) -> None:
    """Diagnose a collector: resolve, TCP connect, TLS, Avro handshake (none for thrift://), an empty appendBatch.

    Prints each step with its time, and a plain verdict on the first failure.

    Use it after "Handshake timed out": it tells a refused port from a silent one, a TLS or
    compression mismatch from a middlebox. Exit 0 only when the collector is healthy, else 3.

    Example: flume-ship ping collector:4141

    Example: flume-ship ping thrift://collector:4353 --tls-ca ca.pem
    """
    from shipper.sink.probe import probe
    from shipper.transport import Address

    target = Address.parse_collector(address)
    options = transport
    report = probe(target, options)
    typer.echo(f"ping {target}")
    for step in report.steps:
        took = f"  ({step.seconds * 1000:.1f} ms)" if step.seconds is not None else ""
        typer.echo(f"  {step.name:<12} {'ok' if step.ok else 'FAIL':<5} {step.detail}{took}")
    typer.echo(f"verdict: {report.verdict}")
    if not report.healthy:
        raise typer.Exit(EXIT_UNAVAILABLE)
