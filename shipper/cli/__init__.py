"""The ``flume-ship`` command line: one module per command group, registered on one typer app.

- :mod:`shipper.cli.app`: the app, global options (``--log-level``, ``--version``) and
  :func:`~shipper.cli.app.report`, the one function that tells the user about an error.
- :mod:`shipper.cli.options`: flags and parsers shared by commands (transport, headers, state dir).
- :mod:`shipper.cli.tail`: ``tail`` and ``validate``; :mod:`shipper.cli.collect`: ``collect``;
  :mod:`shipper.cli.send_ping`: ``send`` and ``ping``; :mod:`shipper.cli.status`: ``status``;
  :mod:`shipper.cli.channel`: ``channel verify`` and ``channel dead-letters``; :mod:`shipper.cli.top`:
  ``top``; :mod:`shipper.cli.import_flume`: ``import-flume``.

``main`` is the console script's entry point.
"""

import sys

from shipper.cli import channel, collect, send_ping, tail, status, top, import_flume  # noqa: F401  (registers the commands, in help order)
from shipper.cli.app import app, report
from shipper.errors import EXIT_INTERRUPTED, ShipperError

__all__ = ["app", "main"]


def main() -> None:
    """Run the app; a ShipperError becomes one line on stderr and its exit code."""
    import typer.main

    from shipper.cli.polish import hoist_globals, polish

    command = polish(typer.main.get_command(app))
    try:
        command(args=hoist_globals(sys.argv[1:], set(getattr(command, "commands", {}))), prog_name="flume-ship")
    except ShipperError as err:
        sys.exit(report(err).exit_code)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)

