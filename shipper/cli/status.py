"""``flume-ship status``: the status document of a running or stopped agent."""

from __future__ import annotations

from typing import Optional

import typer

from shipper.cli.app import app
from shipper.cli.options import OPT_AGENT_STATE_DIR, OPT_CONFIG, state_dir_from_config


@app.command("status")
def status_cmd(
    state_dir: Optional[str] = OPT_AGENT_STATE_DIR,
    config: Optional[str] = OPT_CONFIG,
    as_json: bool = typer.Option(False, "--json", help="Print the whole status document as JSON (for scripts)."),
) -> None:
    """Show per-file offsets and bytes behind, the channel's depth, and each collector's state.

    Works while the agent runs (from the status file it rewrites every few seconds) and when it
    is stopped (from the channel database, read-only, and the files themselves). Exit 0, or 5
    when the state directory holds no channel.

    Example: flume-ship status --state-dir /var/lib/flume-ship

    Example: flume-ship status --config /etc/flume-ship/flume-ship.toml --json
    """
    import json as _json

    from shipper.ops.status import gather, render

    directory = state_dir or state_dir_from_config(config)
    doc = gather(directory)
    if as_json:
        typer.echo(_json.dumps(doc.to_json(), indent=2, sort_keys=True))
    else:
        typer.echo(render(doc), nl=False)
