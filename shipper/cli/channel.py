"""``flume-ship channel verify``: the read-only integrity check of the channel."""

from __future__ import annotations

from typing import Optional

import typer

from shipper.cli.app import app
from shipper.cli.options import state_dir_from_config
from shipper.errors import EXIT_STATE


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

    result = verify(state_dir or state_dir_from_config(config))
    for line in result.lines():
        typer.echo(line)
    if not result.healthy:
        raise typer.Exit(EXIT_STATE)
