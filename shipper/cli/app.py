"""The ``flume-ship`` application: the typer app, global options, and :func:`report`.

Each command group lives in its own module of ``shipper.cli`` and registers itself on ``app``
(imported by ``shipper.cli``). Commands stay thin: parse flags into typed options, call into the layer that does the work, and
turn a :class:`shipper.errors.ShipperError` into one line on stderr and its documented exit code
(README, "Exit codes"). A traceback is printed only for a bug (exit 1).
"""

from __future__ import annotations

from typing import Optional

import typer

from shipper import __version__
from shipper.errors import EXIT_OK, ShipperError
from shipper.ops.logs import setup_logging

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
        raise typer.Exit(EXIT_OK)


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
    5 state directory unusable, 6 --once deadline exceeded, 7 input missing or unreadable,
    8 --once interrupted with events queued, 9 a collect --workers worker died, 10 gave up
    (--give-up-after), 130 interrupted before draining finished.
    """
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise typer.BadParameter("use debug, info, warning or error", param_hint="--log-level")
    if log_format not in ("text", "json"):
        raise typer.BadParameter("use text or json", param_hint="--log-format")
    setup_logging(log_level, log_format)


def report(err: ShipperError, note: str = "") -> "typer.Exit":
    """Tell the user about an error (one line per problem, ``note`` after the last) and return
    the exit to raise with the error's exit code. Every command reports its errors here."""
    lines = err.lines()
    for i, line in enumerate(lines):
        typer.echo(f"flume-ship: error: {line}{note if i == len(lines) - 1 else ''}", err=True)
    return typer.Exit(err.exit_code)
