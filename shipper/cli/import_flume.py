"""``flume-ship import-flume``: turn a Flume edge agent's .properties into our TOML."""

from __future__ import annotations

from typing import Optional

import typer

from shipper.cli.app import app, report
from shipper.errors import ConfigError


@app.command("import-flume")
def import_flume_cmd(
    properties: str = typer.Argument(..., help="The Flume agent's .properties file."),
    agent: Optional[str] = typer.Option(None, "--agent", metavar="NAME", help="The agent's name (needed when the file has "
                                        "several agents)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", metavar="FILE", help="Write the TOML here (default: standard "
                                      "output)."),
) -> None:
    """Convert a Flume agent (TAILDIR, interceptors, channels, Avro/Thrift sinks, sink groups, selectors)
    to a flume-ship configuration. Every Flume key it could not map is listed, with why, in a comment.
    Check the result with flume-ship validate. Exit 2 when the file cannot be read or has no such agent.

    Example: flume-ship import-flume /etc/flume/conf/flume.conf --agent a1 --out /etc/flume-ship/flume-ship.toml
    """
    from shipper.agent.flumeconf import convert

    try:
        with open(properties, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        raise report(ConfigError(f"{properties}: cannot read: {exc.strerror or exc}"))
    try:
        toml = convert(text, agent, properties)
    except ConfigError as exc:
        raise report(exc)
    if out is None:
        typer.echo(toml, nl=False)
        return
    try:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(toml)
    except OSError as exc:
        raise report(ConfigError(f"--out: cannot write {out}: {exc.strerror or exc}"))
    typer.echo(f"wrote {out}; check it with: flume-ship validate {out}", err=True)
