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
from shipper.errors import ShipperError
from shipper.logs import setup_logging

log = logging.getLogger("flume-ship")

app = typer.Typer(
    name="flume-ship",
    help="Tail log files into a durable on-disk channel and ship them to Apache Flume Avro collectors.",
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
        None, "--state-dir", help="State directory (default: /var/lib/flume-ship for root, else "
        "$XDG_STATE_HOME/flume-ship or ~/.local/state/flume-ship)."
    ),
) -> None:
    """Run the full integrity check on the channel, read-only (safe while an agent runs).

    Exit 0 when healthy, 5 when the database is corrupt or unusable.
    """
    from shipper.channel import verify
    from shipper.errors import EXIT_STATE
    from shipper.statedir import default_state_dir

    report = verify(state_dir or default_state_dir())
    for line in report.lines():
        typer.echo(line)
    if not report.healthy:
        raise typer.Exit(EXIT_STATE)


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
